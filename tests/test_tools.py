"""Clustering tools and plots."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scniche_jax as sj
from scniche_jax.clustering import stability_scores


def _blobs(k, n=300, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(k, 4))
    x = np.concatenate([c + rng.normal(size=(n // k, 4)) for c in centres])
    return x.astype(np.float32)


def _embedded(k, n=300, seed=0):
    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    a.obsm["X_scniche"] = _blobs(k, n, seed)
    return a


def test_stability_scores_structure_and_early_stop():
    x = _blobs(4)
    scores, best, runs = stability_scores(x, (2, 7), max_runs=4, n_init=3)
    assert sorted(scores) == [2, 3, 4, 5, 6, 7]
    assert best == max(scores, key=lambda k: np.mean(scores[k]))
    # run r compares with the r earlier runs: 0 + 1 + ... + (runs - 1) values per k
    assert all(len(v) == runs * (runs - 1) // 2 for v in scores.values())
    assert all(0 <= min(v) and max(v) <= 2 for v in scores.values())
    assert stability_scores(x, (2, 7), max_runs=4, n_init=3) == (scores, best, runs)
    _, _, quick = stability_scores(x, (2, 7), max_runs=6, tol=10.0, n_init=1)
    assert quick == 3  # the first change that can be measured is after the third run


def test_cluster_stability_on_four_equal_blobs_matches_the_criterion_by_hand():
    # Known answer of the reference's criterion: stability(k) = FM(k-1 vs k) + FM(k vs k+1).
    # Four equal, well-separated blobs of 100: k=3 merges two blobs, FM = sqrt(19800 / 29800);
    # k=5 halves one blob, FM = sqrt(17300 / 19800); so stability(4) = 0.8151 + 0.9347 = 1.750.
    a = _embedded(4, 400, seed=0)
    best = sj.tl.cluster_stability(a, (2, 7), max_runs=3, n_init=3)
    means = a.uns["robustness_df"].groupby("K")["Stability"].mean()
    assert means[4] == pytest.approx(np.sqrt(19800 / 29800) + np.sqrt(17300 / 19800), abs=0.01)
    assert means[2] < means[4] and means[3] < means[4]  # never fewer niches than blobs
    # The criterion (the reference's, kept as it is) is biased one step up on equal isotropic
    # blobs: halving a blob at k=5 and at k=6 splits consistently, FM(5 vs 6) > FM(3 vs 4).
    assert best in (4, 5) and a.uns["best_k"] == best
    assert list(a.uns["robustness_df"].columns) == ["K", "Stability"]
    assert sorted(a.uns["robustness_df"]["K"].unique()) == [2, 3, 4, 5, 6, 7]


def test_cluster_stability_key_added_and_bad_input():
    a = _embedded(4)
    best = sj.tl.cluster_stability(a, (3, 5), max_runs=3, n_init=2, key_added="stability")
    assert a.uns["stability"]["best_k"] == best and "best_k" not in a.uns and "robustness_df" not in a.uns
    assert list(a.uns["stability"]["robustness_df"].columns) == ["K", "Stability"]
    with pytest.raises(ValueError, match="n_niches"):
        sj.tl.cluster_stability(a, (1, 5))
    with pytest.raises(ValueError, match="no 'X_missing'.*available obsm keys"):
        sj.tl.cluster_stability(a, use_rep="X_missing")


def test_cluster_stability_max_cells_searches_the_documented_subset():
    from scniche_jax.clustering import stability_scores, stability_subset
    a = _embedded(4, 400, seed=0)
    best = sj.tl.cluster_stability(a, (2, 6), max_runs=3, n_init=2, seed=5, max_cells=120)
    idx = stability_subset(400, 120, 5)
    assert idx.shape == (120,) and np.all(np.diff(idx) > 0)
    scores, expected, _ = stability_scores(a.obsm["X_scniche"][idx], (2, 6), 3, 1e-2, 5, 2)
    assert best == expected
    table = a.uns["robustness_df"]
    np.testing.assert_array_equal(table["Stability"].to_numpy(), [v for k in sorted(scores) for v in scores[k]])
    # A different draw is a different search; at or above the cell count every cell is used.
    assert not np.array_equal(stability_subset(400, 120, 6), idx)
    assert stability_subset(400, 400, 5) is None and stability_subset(400, None, 5) is None
    whole = _embedded(4, 400, seed=0)
    assert sj.tl.cluster_stability(whole, (2, 6), max_runs=3, n_init=2, max_cells=400) == \
        sj.tl.cluster_stability(_embedded(4, 400, seed=0), (2, 6), max_runs=3, n_init=2)
    untouched = _embedded(4, 400, seed=0)
    for bad in (0, 6, 2.5, True):  # at least one cell more than the largest K
        with pytest.raises(ValueError, match="max_cells must be an integer >= 7"):
            sj.tl.cluster_stability(untouched, (2, 6), max_cells=bad)
    assert "best_k" not in untouched.uns and "robustness_df" not in untouched.uns


def test_cluster_stability_old_names_warn_and_work():
    a = _embedded(4)
    with pytest.warns(DeprecationWarning, match="n_clusters= is deprecated.*n_niches="):
        best = sj.tl.cluster_stability(a, n_clusters=(3, 5), max_runs=3, n_init=2)
    assert best == sj.tl.cluster_stability(_embedded(4), n_niches=(3, 5), max_runs=3, n_init=2)
    with pytest.warns(DeprecationWarning, match="random_state= is deprecated.*seed="):
        sj.tl.cluster_stability(a, n_niches=(3, 5), max_runs=3, n_init=2, random_state=1)


def test_clustering_recovers_blobs_and_follows_scanpy_copy_convention():
    a = _embedded(3)
    assert sj.tl.clustering(a, n_niches=3) is None
    labels = a.obs["scNiche"]
    assert list(labels.cat.categories) == ["Niche0", "Niche1", "Niche2"] and labels.cat.ordered
    truth = np.repeat(np.arange(3), 100)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, labels.cat.codes) == 1.0
    b = _embedded(3)
    out = sj.tl.clustering(b, 3, key_added="niche", copy=True)
    assert isinstance(out, ad.AnnData) and "niche" in out.obs and "niche" not in b.obs and "scNiche" not in out.obs


def test_clustering_old_names_warn_and_give_the_same_labels():
    a, b = _embedded(3), _embedded(3)
    with pytest.warns(DeprecationWarning) as record:
        sj.tl.clustering(a, target_k=3, add_key="old", random_state=5)
    messages = " ".join(str(w.message) for w in record)
    for old, new in (("target_k", "n_niches"), ("add_key", "key_added"), ("random_state", "seed")):
        assert f"{old}= is deprecated and will be removed; use {new}=" in messages
    sj.tl.clustering(b, n_niches=3, key_added="old", seed=5)
    assert (a.obs["old"] == b.obs["old"]).all()
    with pytest.raises(TypeError, match="both 'target_k'"):
        sj.tl.clustering(a, target_k=3, n_niches=3)


def test_leiden_needs_its_extra_or_runs():
    a = _embedded(3, 90)
    try:
        import scanpy  # noqa: F401
        import leidenalg  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'scniche-jax\[leiden\]'"):
            sj.tl.clustering(a, method="leiden")
    else:
        with pytest.warns(DeprecationWarning, match="n_neighbor="):
            sj.tl.clustering(a, method="leiden", n_neighbor=10)
        assert a.obs["scNiche"].str.startswith("Niche").all()
        assert a.obs["scNiche"].nunique() == 3


def test_leiden_on_more_cells_than_scanpys_exact_neighbour_limit():
    # From 8,192 cells scanpy's own neighbour search failed under scipy 1.17 (session 9).
    pytest.importorskip("leidenalg")
    from scniche_jax.clustering import leiden_labels
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 3000)
    x = (centres[truth] + rng.normal(size=(9000, 2))).astype(np.float32)
    labels = leiden_labels(x, resolution=0.05, n_neighbors=15)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, labels) > 0.95


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    a = sj.datasets.synthetic(200, n_niches=3, n_cell_types=4, seed=0)
    a.obs["scNiche"] = a.obs["Niche"].astype(str)
    a.obs["slice"] = np.where(np.arange(200) < 100, "s0", "s1")
    fig = sj.pl.niches(a, sample_key="slice")
    assert len([ax for ax in fig.axes if ax.collections]) == 2
    fig.savefig(tmp_path / "niches.png")
    ax = sj.pl.composition(a, key="Cell_type")
    ax.figure.savefig(tmp_path / "composition.png")
    with pytest.raises(ValueError, match="no niche column 'nope'"):
        sj.pl.niches(a, groupby="nope")
    with pytest.raises(ValueError, match="no cell-type column 'CT'"):
        sj.pl.composition(a, key="CT")


def test_plots_accept_the_old_keywords():
    pytest.importorskip("matplotlib")
    a = sj.datasets.synthetic(120, n_niches=3, n_cell_types=4, seed=0)
    a.obs["niche"] = a.obs["Niche"].astype(str)
    with pytest.warns(DeprecationWarning, match="key= is deprecated.*groupby="):
        fig = sj.pl.niches(a, key="niche")
    assert fig.axes[0].get_title() == "niche"
    with pytest.warns(DeprecationWarning) as record:
        ax = sj.pl.composition(a, key="niche", celltype_key="Cell_type")
    assert any("celltype_key" in str(w.message) for w in record)
    assert ax.get_xlabel() == "niche" and len(ax.get_xticks()) == 3


def test_clustering_refuses_nonfinite_embedding():
    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(30)]))
    z = _blobs(3, 30)
    z[4, 1] = np.nan
    a.obsm["X_scniche"] = z
    with pytest.raises(ValueError, match="NaN/inf"):
        sj.tl.clustering(a, 3)
    assert "scNiche" not in a.obs
