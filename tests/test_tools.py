"""Clustering tools and plots."""
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


def test_cluster_stability_writes_reference_keys():
    import anndata as ad
    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(300)]))
    a.obsm["X_scniche"] = _blobs(3)
    best = sj.tl.cluster_stability(a, (2, 5), max_runs=3, n_init=2)
    assert 2 <= best <= 5
    assert a.uns["best_k"] == best and list(a.uns["robustness_df"].columns) == ["K", "Stability"]
    with pytest.raises(ValueError, match="n_clusters"):
        sj.tl.cluster_stability(a, (1, 5))
    with pytest.raises(ValueError, match="no 'X_missing'.*available obsm keys"):
        sj.tl.cluster_stability(a, use_rep="X_missing")


def test_leiden_needs_its_extra_or_runs():
    import anndata as ad
    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(90)]))
    a.obsm["X_scniche"] = _blobs(3, 90)
    try:
        import scanpy  # noqa: F401
        import leidenalg  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'scniche-jax\[leiden\]'"):
            sj.tl.clustering(a, method="leiden")
    else:
        sj.tl.clustering(a, method="leiden")
        assert a.obs["scNiche"].str.startswith("Niche").all()


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    a = sj.datasets.synthetic(200, n_niches=3, n_cell_types=4, seed=0)
    a.obs["scNiche"] = a.obs["Niche"].astype(str)
    a.obs["slice"] = np.where(np.arange(200) < 100, "s0", "s1")
    fig = sj.pl.niches(a, sample_key="slice")
    assert len([ax for ax in fig.axes if ax.collections]) == 2
    fig.savefig(tmp_path / "niches.png")
    fig = sj.pl.composition(a, celltype_key="Cell_type")
    fig.savefig(tmp_path / "composition.png")
    with pytest.raises(ValueError, match="no niche column 'nope'"):
        sj.pl.niches(a, key="nope")
    with pytest.raises(ValueError, match="no cell-type column 'CT'"):
        sj.pl.composition(a, celltype_key="CT")


def test_clustering_refuses_nonfinite_embedding():
    import anndata as ad
    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(30)]))
    z = _blobs(3, 30)
    z[4, 1] = np.nan
    a.obsm["X_scniche"] = z
    with pytest.raises(ValueError, match="NaN/inf"):
        sj.tl.clustering(a, 3)
    assert "scNiche" not in a.obs
