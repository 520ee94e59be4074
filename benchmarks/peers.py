"""Peer niche / domain methods for ``niche_quality.py``, each only when its package imports.

Install with ``pip install torch==2.13.0 && pip install -e ".[peers]"`` (the CPU torch wheel
first, so that no CUDA build is pulled). Single slices and several slices (per-slice graphs).

- ``cellcharter_pca``: CellCharter's standard pipeline: scanpy PCA (30) of the log-normalised
  expression, squidpy Delaunay graph per slice, ``remove_long_links``,
  ``aggregate_neighbors(n_layers=3)``, ``tl.Cluster(K)`` (a Gaussian mixture).
- ``banksy``: pybanksy at lambda 0.8 (15 neighbours, scaled Gaussian, m ≤ 1), PCA 20, Leiden
  with its resolution bisected until it gives K clusters.
"""
from __future__ import annotations

import numpy as np


def _expression_adata(ctx):
    import anndata as ad
    a = ctx.data.adata
    out = ad.AnnData(np.asarray(a.obsm["X_data"], np.float32), obs=a.obs[[]].copy())
    out.obsm["spatial"] = np.asarray(a.obsm["spatial"], np.float64)[:, :2]
    if ctx.data.sample_key is not None:
        import pandas as pd
        out.obs["sample"] = pd.Categorical(a.obs[ctx.data.sample_key].astype(str).to_numpy())
    return out


def run_cellcharter(ctx) -> dict:
    import cellcharter as cc
    import scanpy as sc
    import squidpy as sq
    a = _expression_adata(ctx)
    sc.pp.pca(a, n_comps=min(30, a.n_vars - 1), random_state=ctx.seed)
    library = "sample" if "sample" in a.obs else None
    sq.gr.spatial_neighbors(a, library_key=library, coord_type="generic", delaunay=True, spatial_key="spatial")
    cc.gr.remove_long_links(a)
    cc.gr.aggregate_neighbors(a, n_layers=3, aggregations="mean", use_rep="X_pca", out_key="X_cellcharter",
                              sample_key=library)
    model = cc.tl.Cluster(n_clusters=ctx.data.n_labels, random_state=ctx.seed,
                          trainer_params={"accelerator": "cpu", "enable_progress_bar": False})
    model.fit(a, use_rep="X_cellcharter")
    return {"labels": np.asarray(model.predict(a, use_rep="X_cellcharter")).astype(str)}


def _leiden_k(x, k, seed):
    import anndata as ad
    import scanpy as sc
    a = ad.AnnData(np.asarray(x, np.float32))
    sc.pp.neighbors(a, n_neighbors=15, use_rep="X", random_state=seed)
    lo, hi, best = 0.01, 3.0, None
    for _ in range(20):
        mid = (lo + hi) / 2
        sc.tl.leiden(a, resolution=mid, random_state=seed, key_added="l", flavor="igraph", n_iterations=2)
        n = a.obs["l"].nunique()
        best = a.obs["l"].astype(str).to_numpy()
        if n == k:
            break
        lo, hi = (mid, hi) if n < k else (lo, mid)
    return best


def run_banksy(ctx) -> dict:
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy
    from sklearn.decomposition import PCA
    a = _expression_adata(ctx)
    groups = a.obs["sample"].to_numpy() if "sample" in a.obs else np.zeros(a.n_obs)
    parts = np.zeros(a.n_obs, dtype=object)
    mats = [None] * a.n_obs
    rows = []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        b = a[idx].copy()
        b.obs["x"], b.obs["y"] = b.obsm["spatial"][:, 0], b.obsm["spatial"][:, 1]
        bd = initialize_banksy(b, ("x", "y", "spatial"), num_neighbours=15, nbr_weight_decay="scaled_gaussian",
                               max_m=1, plt_edge_hist=False, plt_nbr_weights=False, plt_agf_angles=False,
                               plt_theta=False)
        bd, _ = generate_banksy_matrix(b, bd, [0.8], max_m=1, verbose=False)
        m = bd["scaled_gaussian"][0.8]["adata"].X
        rows.append((idx, np.asarray(m.toarray() if hasattr(m, "toarray") else m)))
    x = np.zeros((a.n_obs, rows[0][1].shape[1]))
    for idx, m in rows:
        x[idx] = m
    pcs = PCA(n_components=min(20, x.shape[1] - 1), random_state=ctx.seed).fit_transform(x)
    return {"labels": _leiden_k(pcs, ctx.data.n_labels, ctx.seed)}


def available_methods(Method) -> dict:
    out = {}
    try:
        import cellcharter  # noqa: F401
        import squidpy  # noqa: F401
        out["cellcharter_pca"] = Method(run_cellcharter, "peer", "CellCharter: PCA, Delaunay, remove_long_links, "
                                                                   "aggregate_neighbors(3), tl.Cluster(K)")
    except ImportError:
        pass
    try:
        import banksy  # noqa: F401
        import scanpy  # noqa: F401
        out["banksy"] = Method(run_banksy, "peer", "pybanksy lambda 0.8, PCA 20, Leiden tuned to K")
    except ImportError:
        pass
    if not out:
        raise ImportError("no peer package installed (pip install -e '.[peers]')")
    return out
