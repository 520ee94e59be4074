import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from scniche_jax import pp
from scniche_jax.datasets import synthetic


def _adata(n, n_types, seed):
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"Cell_type": rng.choice([f"t{i}" for i in range(n_types)], n),
                        "Sample": rng.choice(["s1", "s0"], n)}, index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(X=rng.poisson(2.0, size=(n, 7)).astype(np.float32), obs=obs)
    a.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    return a


def _loop_neighbours(coords, k):
    from sklearn.neighbors import NearestNeighbors
    return NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords)[1]


@settings(max_examples=15, deadline=None)
@given(st.integers(12, 60), st.integers(1, 6), st.integers(1, 10), st.integers(0, 1000))
def test_neighbourhood_composition_matches_a_cell_loop(n, n_types, k, seed):
    k = min(k, n - 1)
    a = _adata(n, n_types, seed)
    pp.cal_spatial_neighbors(a, "Cell_type", n_neighbors=k, verbose=False)
    idx = _loop_neighbours(a.obsm["spatial"], k)
    order = a.uns["CN_order"]
    assert order == sorted(a.obs["Cell_type"].unique())
    labels = a.obs["Cell_type"].to_numpy()
    for i in range(n):
        expected = [np.sum(labels[idx[i]] == t) for t in order]
        assert a.obsm["X_cn"][i].tolist() == expected
    assert a.obsm["X_cn"].dtype == np.int64
    np.testing.assert_allclose(a.obsm["X_cn_norm"].sum(1), 1.0)
    assert np.all(a.obsm["X_cn"].sum(1) == k + 1)


@settings(max_examples=15, deadline=None)
@given(st.integers(12, 60), st.integers(1, 10), st.integers(0, 1000))
def test_neighbourhood_expression_matches_a_cell_loop(n, k, seed):
    k = min(k, n - 1)
    a = _adata(n, 3, seed)
    pp.cal_spatial_exp(a, n_neighbors=k, verbose=False)
    idx = _loop_neighbours(a.obsm["spatial"], k)[:, 1:]
    expected = np.stack([a.X[idx[i]].mean(0) for i in range(n)])
    np.testing.assert_allclose(a.obsm["X_data_nbr"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.obsm["X_data"], a.X)


def test_radius_mode_includes_the_cell_itself():
    a = _adata(40, 3, 0)
    pp.cal_spatial_neighbors(a, "Cell_type", mode="radius", rad_cutoff=1e-9, verbose=False)
    assert np.all(a.obsm["X_cn"].sum(1) == 1)
    pp.cal_spatial_exp(a, mode="radius", rad_cutoff=1e-9, verbose=False)
    np.testing.assert_allclose(a.obsm["X_data_nbr"], a.X, rtol=1e-6)


def test_pca_gives_requested_components_and_is_seeded():
    a = synthetic(300, seed=1)
    b = a.copy()
    pp.cal_spatial_exp(a, is_pca=True, n_comps=5, verbose=False)
    pp.cal_spatial_exp(b, is_pca=True, n_comps=5, verbose=False)
    assert a.obsm["X_data"].shape == (300, 5)
    np.testing.assert_array_equal(a.obsm["X_data_nbr"], b.obsm["X_data_nbr"])


def test_multi_slices_share_order_and_leave_input_untouched():
    a = _adata(80, 4, 3)
    a.obs.loc[a.obs["Sample"] == "s0", "Cell_type"] = "t0"  # slice s0 lacks the other types
    before = a.copy()
    out = pp.process_multi_slices(a, "Cell_type", "Sample", n_neighbors=5, verbose=False)
    assert out.uns["CN_order"] == sorted(a.obs["Cell_type"].unique())
    assert list(out.obs["Sample"].unique()) == ["s0", "s1"]
    assert out.obsm["X_cn"].shape == (80, len(out.uns["CN_order"]))
    assert set(a.obsm.keys()) == set(before.obsm.keys()) and a.uns.keys() == before.uns.keys()
    s0 = out[out.obs["Sample"] == "s0"]
    assert np.all(s0.obsm["X_cn"][:, 1:] == 0)


@pytest.mark.parametrize("mutate,match", [
    (lambda a: a.obs.drop(columns="Cell_type", inplace=True), "no cell-type column 'Cell_type'.*available"),
    (lambda a: a.obsm.pop("spatial"), "no 'spatial'"),
    (lambda a: a.obsm.__setitem__("spatial", a.obsm["spatial"][:, :1]), "2 columns"),
    (lambda a: a.obsm["spatial"].__setitem__((3, 0), np.nan), "NaN/inf"),
])
def test_bad_input_to_neighbours(mutate, match):
    a = _adata(30, 3, 0)
    mutate(a)
    before = a.copy()
    with pytest.raises(ValueError, match=match):
        pp.cal_spatial_neighbors(a, "Cell_type", verbose=False)
    assert set(a.obsm.keys()) == set(before.obsm.keys()) and set(a.uns.keys()) == set(before.uns.keys())


def test_too_few_cells_for_k():
    a = _adata(10, 3, 0)
    with pytest.raises(ValueError, match="fewer than k \\+ 1"):
        pp.cal_spatial_neighbors(a, "Cell_type", n_neighbors=20, verbose=False)
    with pytest.raises(ValueError, match="fewer than k \\+ 1"):
        pp.cal_spatial_exp(a, n_neighbors=20, verbose=False)
    assert "X_cn" not in a.obsm and "X_data" not in a.obsm


def test_expression_with_nan_is_refused():
    a = _adata(30, 3, 0)
    a.X[2, 1] = np.inf
    with pytest.raises(ValueError, match="adata.X holds 1 NaN/inf"):
        pp.cal_spatial_exp(a, verbose=False)


def test_sparse_and_integer_expression_is_accepted():
    import scipy.sparse as sp
    a = _adata(40, 3, 0)
    dense = a.X.copy()
    a.X = sp.csr_matrix(dense.astype(np.int64))
    pp.cal_spatial_exp(a, n_neighbors=5, verbose=False)
    b = _adata(40, 3, 0)
    pp.cal_spatial_exp(b, n_neighbors=5, verbose=False)
    np.testing.assert_allclose(a.obsm["X_data_nbr"], b.obsm["X_data_nbr"], rtol=1e-6)


def test_multi_slices_refuse_duplicate_names_and_tiny_slices():
    a = _adata(60, 3, 0)
    a.obs_names = ["x"] * 60
    with pytest.raises(ValueError, match="obs_names_make_unique"):
        pp.process_multi_slices(a, "Cell_type", "Sample", n_neighbors=5, verbose=False)
    b = _adata(60, 3, 0)
    b.obs["Sample"] = "s0"
    b.obs.iloc[:3, b.obs.columns.get_loc("Sample")] = "tiny"
    with pytest.raises(ValueError, match="slice 'tiny' has 3 cells"):
        pp.process_multi_slices(b, "Cell_type", "Sample", n_neighbors=5, verbose=False)
    with pytest.raises(ValueError, match="no sample column 'batch'.*available"):
        pp.process_multi_slices(b, "Cell_type", "batch", n_neighbors=5, verbose=False)


# ----------------------------------------------------------------- scanpy conventions (issue 11)

def test_copy_false_returns_none_and_copy_true_a_new_anndata():
    a = _adata(40, 3, 0)
    assert pp.cal_spatial_neighbors(a, "Cell_type", n_neighbors=5, verbose=False) is None
    assert "X_cn" in a.obsm
    b = _adata(40, 3, 0)
    out = pp.cal_spatial_exp(b, n_neighbors=5, verbose=False, copy=True)
    assert isinstance(out, ad.AnnData) and out is not b
    assert "X_data_nbr" in out.obsm and "X_data_nbr" not in b.obsm
    out = pp.cal_spatial_neighbors(b, "Cell_type", n_neighbors=5, verbose=False, copy=True)
    assert "X_cn" in out.obsm and "X_cn" not in b.obsm


def test_key_added_names_the_outputs():
    a = _adata(40, 3, 0)
    pp.cal_spatial_neighbors(a, "Cell_type", n_neighbors=5, verbose=False, key_added="nbhd")
    assert {"nbhd", "nbhd_norm"} <= set(a.obsm) and "X_cn" not in a.obsm
    assert a.uns["nbhd_order"] == sorted(a.obs["Cell_type"].unique()) and "CN_order" not in a.uns
    pp.cal_spatial_exp(a, n_neighbors=5, verbose=False, key_added="expr")
    assert {"expr", "expr_nbr"} <= set(a.obsm) and "X_data" not in a.obsm


def test_old_names_warn_and_give_the_same_result():
    a, b = _adata(40, 3, 0), _adata(40, 3, 0)
    with pytest.warns(DeprecationWarning, match="k_cutoff= is deprecated.*n_neighbors="):
        pp.cal_spatial_neighbors(a, "Cell_type", k_cutoff=7, verbose=False)
    pp.cal_spatial_neighbors(b, "Cell_type", n_neighbors=7, verbose=False)
    np.testing.assert_array_equal(a.obsm["X_cn"], b.obsm["X_cn"])
    assert np.all(a.obsm["X_cn"].sum(1) == 8)
    with pytest.warns(DeprecationWarning) as record:
        pp.cal_spatial_exp(a, is_pca=True, n_comps=3, k_cutoff=7, random_state=3, verbose=False)
    messages = " ".join(str(w.message) for w in record)
    assert "k_cutoff= is deprecated" in messages and "random_state= is deprecated and will be removed; use seed=" in messages
    pp.cal_spatial_exp(b, is_pca=True, n_comps=3, n_neighbors=7, seed=3, verbose=False)
    np.testing.assert_array_equal(a.obsm["X_data_nbr"], b.obsm["X_data_nbr"])
    with pytest.warns(DeprecationWarning):
        out = pp.process_multi_slices(_adata(80, 3, 1), "Cell_type", "Sample", k_cutoff=5, verbose=False)
    assert np.all(out.obsm["X_cn"].sum(1) == 6)
    with pytest.raises(TypeError, match="both 'k_cutoff'.*and 'n_neighbors'"):
        pp.cal_spatial_neighbors(a, "Cell_type", k_cutoff=5, n_neighbors=5, verbose=False)


def test_use_graph_reads_squidpy_connectivities():
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    a = _adata(50, 3, 2)
    # what squidpy.gr.spatial_neighbors writes: a symmetric 0/1 (here kNN) graph without self-loops
    knn = NearestNeighbors(n_neighbors=5).fit(a.obsm["spatial"]).kneighbors_graph(a.obsm["spatial"])
    knn.setdiag(0)
    graph = ((knn + knn.T) > 0).astype(np.float32)
    a.obsp["spatial_connectivities"] = sp.csr_matrix(graph)
    pp.cal_spatial_neighbors(a, "Cell_type", use_graph=True, verbose=False)
    pp.cal_spatial_exp(a, use_graph="spatial_connectivities", verbose=False)
    dense = graph.toarray()
    labels = a.obs["Cell_type"].to_numpy()
    for i in range(a.n_obs):
        members = np.flatnonzero(dense[i])
        expected = [np.sum(labels[np.r_[i, members]] == t) for t in a.uns["CN_order"]]
        assert a.obsm["X_cn"][i].tolist() == expected
        np.testing.assert_allclose(a.obsm["X_data_nbr"][i], a.X[members].mean(0), rtol=1e-5)
    b = _adata(50, 3, 2)
    with pytest.raises(ValueError, match="no 'spatial_connectivities'.*squidpy.gr.spatial_neighbors"):
        pp.cal_spatial_neighbors(b, "Cell_type", use_graph=True, verbose=False)
    assert "X_cn" not in b.obsm


def test_old_names_from_inside_the_package_do_not_warn():
    import warnings

    a = _adata(30, 3, 0)
    code = "pp.cal_spatial_neighbors(a, 'Cell_type', k_cutoff=4, verbose=False)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(code, {"__name__": "scniche_jax.cli", "pp": pp, "a": a})  # e.g. the command line, not yet renamed
    assert np.all(a.obsm["X_cn"].sum(1) == 5)
    with pytest.warns(DeprecationWarning):
        exec(code, {"__name__": "user_script", "pp": pp, "a": a})


def test_duplicate_obs_names_are_refused_before_any_work():
    a = _adata(40, 3, 0)
    a.obs_names = ["cell"] * a.n_obs
    keys = set(a.obsm)
    for call in (lambda: pp.cal_spatial_neighbors(a, "Cell_type", n_neighbors=5, verbose=False),
                 lambda: pp.cal_spatial_exp(a, n_neighbors=5, verbose=False)):
        with pytest.raises(ValueError, match="obs_names are not unique.*obs_names_make_unique"):
            call()
    assert set(a.obsm) == keys
