import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scniche_jax as sj
from conftest import synthetic_views


@pytest.fixture(scope="module")
def small():
    return synthetic_views(300, n_niches=4, n_cell_types=6, n_genes=20, seed=0, n_neighbors=10, n_comps=8)


def test_fit_full_graph_writes_only_the_embedding(small):
    a = small.copy()
    before_uns, before_obsm, before_obs = set(a.uns), set(a.obsm), list(a.obs.columns)
    model = sj.fit(a, epochs=5, n_neighbors=10, progress=False)
    assert set(a.uns) == before_uns and list(a.obs.columns) == before_obs
    assert set(a.obsm) == before_obsm | {"X_scniche"}
    z = a.obsm["X_scniche"]
    assert z.shape == (300, 10) and z.dtype == np.float32 and np.all(np.isfinite(z))
    hist = model.history["loss"]
    assert len(hist["total"]) == 5
    np.testing.assert_allclose(hist["total"], np.add(np.add(hist["gre"], hist["rec"]), hist["mim"]), rtol=1e-5)
    np.testing.assert_allclose(model.embed(a), z, rtol=1e-5, atol=1e-6)
    assert model.data_shape.batch_size == 300


def test_fit_is_reproducible_for_a_seed(small):
    a, b = small.copy(), small.copy()
    sj.fit(a, epochs=3, n_neighbors=10, progress=False, seed=3)
    sj.fit(b, epochs=3, n_neighbors=10, progress=False, seed=3)
    assert a.obsm["X_scniche"].tobytes() == b.obsm["X_scniche"].tobytes()  # bit-identical on CPU


def test_fit_batch_mode(small):
    a = small.copy()
    model = sj.fit(a, epochs=3, n_neighbors=10, batch_num=3, progress=False, precision="fp32")
    assert model.data_shape.batch_size == 100
    assert a.obsm["X_scniche"].shape == (300, 10)
    np.testing.assert_allclose(model.embed(a), a.obsm["X_scniche"], rtol=1e-5, atol=1e-6)
    b = small.copy()
    model = sj.fit(b, epochs=2, n_neighbors=10, batch_num=7, progress=False)  # 300 % 7 != 0
    assert model.data_shape.batch_size == 300 // 7 + 1
    assert np.all(np.isfinite(b.obsm["X_scniche"]))


def test_training_lowers_the_loss(small):
    a = small.copy()
    model = sj.fit(a, epochs=30, n_neighbors=10, progress=False, dropout=0.0)
    loss = model.history["loss"]["total"]
    assert loss[-1] < loss[0]


def test_reference_dropout_embedding_is_random(small):
    a = small.copy()
    model = sj.fit(a, epochs=2, n_neighbors=10, progress=False, deterministic_embedding=False)
    assert not np.allclose(model.embed(a, seed=1), model.embed(a, seed=2))


def test_int_float64_and_sparse_views_are_accepted(small):
    a = small.copy()
    a.obsm["X_cn"] = a.obsm["X_cn"].astype(np.int64)
    a.obsm["X_sparse"] = sp.csr_matrix(a.obsm["X_data"].astype(np.float64))
    sj.fit(a, views=["X_cn", "X_sparse"], epochs=2, n_neighbors=10, progress=False)
    assert a.obsm["X_scniche"].shape == (300, 10)


def _bad(a, **kw):
    args = dict(epochs=1, n_neighbors=10, progress=False)
    args.update(kw)
    return sj.fit(a, **args)


@pytest.mark.parametrize("mutate,kwargs,match", [
    (None, {"views": ["X_missing"]}, "no 'X_missing'.*available obsm keys.*X_cn_norm"),
    (lambda a: a.obsm["X_data"].__setitem__((5, 2), np.nan), {}, "X_data.*NaN/inf"),
    (lambda a: a.obsm["X_data"].__setitem__((5, 2), np.inf), {}, "NaN/inf"),
    (None, {"n_neighbors": 400}, "too small for n_neighbors=400"),
    (None, {"batch_num": 0}, "batch_num"),
    (None, {"batch_num": 100}, "batch_num <= "),
    (None, {"batch_num": 301}, "batch_num"),
    (None, {"precision": "fp16"}, "precision"),
    (None, {"mik": 30}, "mik=30"),
    (lambda a: a.obsm.__setitem__("X_data", np.zeros((a.n_obs, 2, 2))), {}, "2-D"),
    (lambda a: a.obsm.__setitem__("X_data", a.obsm["X_data"].astype(str)), {}, "numeric"),
])
def test_bad_input_raises_before_work_and_leaves_adata_untouched(small, mutate, kwargs, match):
    a = small.copy()
    if mutate is not None:
        mutate(a)
    keys = set(a.obsm)
    with pytest.raises(ValueError, match=match):
        _bad(a, **kwargs)
    assert set(a.obsm) == keys and "X_scniche" not in a.obsm


def test_deprecated_k_graph_still_works_and_warns(small):
    a, b = small.copy(), small.copy()
    with pytest.warns(DeprecationWarning, match="k_graph= is deprecated and will be removed; use n_neighbors="):
        sj.fit(a, epochs=2, k_graph=10, progress=False)
    sj.fit(b, epochs=2, n_neighbors=10, progress=False)
    np.testing.assert_array_equal(a.obsm["X_scniche"], b.obsm["X_scniche"])
    with pytest.raises(TypeError, match="got both 'k_graph'"):
        sj.fit(small.copy(), epochs=1, k_graph=10, n_neighbors=12, progress=False)
    with pytest.raises(TypeError, match="unexpected keyword"):
        sj.fit(small.copy(), epochs=1, n_neighbours=10, progress=False)


def test_duplicate_obs_names_refused(small):
    a = small.copy()
    a.obs_names = ["same"] * a.n_obs
    with pytest.raises(ValueError, match="obs_names_make_unique"):
        _bad(a)


def test_clustering_labels(small):
    a = small.copy()
    sj.fit(a, epochs=2, n_neighbors=10, progress=False)
    sj.tl.clustering(a, 4)
    cat = a.obs["scNiche"]
    assert list(cat.cat.categories) == [f"Niche{i}" for i in range(4)] and cat.cat.ordered
    with pytest.raises(ValueError, match="no 'X_other'"):
        sj.tl.clustering(a, 4, use_rep="X_other")
    with pytest.raises(ValueError, match="n_niches"):
        sj.tl.clustering(a, None)
    with pytest.raises(ValueError, match="method"):
        sj.tl.clustering(a, 4, method="dbscan")


def test_write_h5ad_after_fit(small, tmp_path):
    a = small.copy()
    sj.fit(a, epochs=1, n_neighbors=10, progress=False)
    path = tmp_path / "out.h5ad"
    a.write_h5ad(path)
    assert ad.read_h5ad(path).obsm["X_scniche"].shape == (300, 10)


def test_graph_building_does_not_depend_on_threads(small, monkeypatch):
    import jax

    from scniche_jax import pipeline
    from scniche_jax.batching import reference_batch_indices
    from scniche_jax.model import read_views
    from scniche_jax.networks import GraphFusionNetwork

    views = ("X_cn_norm", "X_data", "X_data_nbr")
    features = read_views(small, views)
    batches = reference_batch_indices(small.n_obs, 3)
    size = batches[0].size
    gfn = GraphFusionNetwork(size).init(jax.random.key(0), np.zeros((1, size)))["params"]
    parallel = pipeline.build_host_batches(features, batches, gfn, 10, 5, "gpu", 1024)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 1)
    serial = pipeline.build_host_batches(features, batches, gfn, 10, 5, "gpu", 1024)
    for x, y in zip(jax.tree_util.tree_leaves(parallel), jax.tree_util.tree_leaves(serial)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
