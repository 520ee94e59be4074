"""Peer niche / domain methods for ``niche_quality.py``, each only when its package imports.

Install with ``pip install torch==2.13.0 && pip install -e ".[peers]" scvi-tools stagate-modern``
(the CPU torch wheel first, so that no CUDA build is pulled; ``scvi-tools`` is needed only by
``cellcharter_scvi``, ``stagate-modern`` only by ``stagate``). Single slices and several slices
(per-slice graphs).

- ``cellcharter_pca``: CellCharter's standard pipeline: scanpy PCA (30) of the log-normalised
  expression, squidpy Delaunay graph per slice, ``remove_long_links``,
  ``aggregate_neighbors(n_layers=3)``, ``tl.Cluster(K)`` (a Gaussian mixture).
- ``banksy``: pybanksy at lambda 0.8 (15 neighbours, scaled Gaussian, m ≤ 1), PCA 20, Leiden
  with its resolution bisected until it gives K clusters.
- ``cellcharter_scvi``: the same CellCharter pipeline on scVI latents instead of PCA (needs
  ``scvi-tools``): ``scvi.model.SCVI`` with its defaults (n_latent 10, 1 hidden layer of 128,
  ZINB), as in CellCharter's tutorial, on the raw counts (``layers['counts']``, or ``X`` of the
  set's ``.h5ad`` in ``../shared/data`` read again for the same cells, since the benchmark's
  preprocessing log-normalises ``X``); where the set has no counts (``allen_merfish_visp``:
  ``X`` is one-hot cell types) scVI runs on the ``X`` there is, and the run records
  ``scvi_input``. Several slices: the slice column is scVI's ``batch_key``.
  ``train(early_stopping=True)`` as in the tutorial, with scVI's default ``max_epochs`` (400
  below 20,000 cells) capped at ``SCVI_MAX_EPOCHS`` = 350 so one run stays under about 6
  minutes on a 2-core CPU (400 epochs took 369 s on the 5,257 cells of
  ``baristaseq_visp_3slices``). Seeded with ``scvi.settings.seed`` and ``tl.Cluster(random_state)``.
- ``stagate``: STAGATE (PyPI ``stagate-modern``, import ``STAGATE_pyG``) with its tutorial
  defaults: log-normalised expression (all genes; the tutorial's 3,000 HVGs exceed the panels),
  a ``Radius`` spatial network per slice (the per-slice networks are joined, no edges across
  slices) whose radius is set from the sorted neighbour distances so that cells have 6
  neighbours on average (the STAGATE authors advise 5-10; coordinates are in each set's own
  units, so no fixed radius fits all), ``train_STAGATE`` defaults (hidden
  [512, 30], 1000 epochs, lr 1e-3, ``random_seed`` = seed). Its clustering, ``mclust_R``
  (model EEE), needs R; here the embedding is clustered by scikit-learn's
  ``GaussianMixture(K, covariance_type="tied")`` (the EEE analogue: one shared full
  covariance), seeded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SCVI_MAX_EPOCHS = 350      # cap on scVI's default max_epochs (400 below 20,000 cells): <= ~6 min on 2 CPUs
STAGATE_MEAN_NEIGHBOURS = 6.0


def _expression_adata(ctx):
    import anndata as ad
    a = ctx.data.adata
    out = ad.AnnData(np.asarray(a.obsm["X_data"], np.float32), obs=a.obs[[]].copy())
    out.obsm["spatial"] = np.asarray(a.obsm["spatial"], np.float64)[:, :2]
    if ctx.data.sample_key is not None:
        import pandas as pd
        out.obs["sample"] = pd.Categorical(a.obs[ctx.data.sample_key].astype(str).to_numpy())
    return out


def _cellcharter_labels(a, use_rep: str, ctx) -> np.ndarray:
    """CellCharter on ``a.obsm[use_rep]``: Delaunay per slice, remove_long_links, 3 layers, tl.Cluster(K)."""
    import cellcharter as cc
    import squidpy as sq
    library = "sample" if "sample" in a.obs else None
    sq.gr.spatial_neighbors(a, library_key=library, coord_type="generic", delaunay=True, spatial_key="spatial")
    cc.gr.remove_long_links(a)
    cc.gr.aggregate_neighbors(a, n_layers=3, aggregations="mean", use_rep=use_rep, out_key="X_cellcharter",
                              sample_key=library)
    model = cc.tl.Cluster(n_clusters=ctx.data.n_labels, random_state=ctx.seed,
                          trainer_params={"accelerator": "cpu", "enable_progress_bar": False})
    model.fit(a, use_rep="X_cellcharter")
    return np.asarray(model.predict(a, use_rep="X_cellcharter")).astype(str)


def run_cellcharter(ctx) -> dict:
    import scanpy as sc
    a = _expression_adata(ctx)
    sc.pp.pca(a, n_comps=min(30, a.n_vars - 1), random_state=ctx.seed)
    return {"labels": _cellcharter_labels(a, "X_pca", ctx)}


def _is_counts(x) -> bool:
    x = np.asarray(x)
    return bool(x.size and np.all(x >= 0) and np.allclose(x, np.round(x)))


def _is_one_hot(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)) and np.all(x.sum(1) == 1))


def _raw_counts(ctx) -> tuple[np.ndarray, str]:
    """The cells' raw counts and where they came from (``X`` as stored when there are none).

    ``layers['counts']`` when present, else ``X`` of ``../shared/data/<set>.h5ad`` for the same
    cells (the benchmark log-normalises ``X`` in place); else the preprocessed ``X`` (one-hot
    or log-normalised).
    """
    import anndata as ad
    a = ctx.data.adata

    def dense(m):
        return np.asarray(m.toarray() if hasattr(m, "toarray") else m, np.float32)

    if "counts" in a.layers and _is_counts(dense(a.layers["counts"])):
        return dense(a.layers["counts"]), "layers['counts']"
    path = DATA_DIR / f"{ctx.data.name}.h5ad"
    if path.exists():
        src = ad.read_h5ad(path)
        rows = src.obs_names.get_indexer(a.obs_names)
        if np.all(rows >= 0) and list(src.var_names) == list(a.var_names):
            x = dense(src.X)[rows]
            if _is_counts(x) and not _is_one_hot(x):
                return x, f"raw counts (X of {path.name})"
    x = np.asarray(a.obsm["X_data"], np.float32)
    return x, ("one-hot X (no counts)" if _is_one_hot(x) else "log-normalised X (no counts)")


def run_cellcharter_scvi(ctx) -> dict:
    import scvi
    import torch
    a = _expression_adata(ctx)
    counts, source = _raw_counts(ctx)
    a.layers["counts"] = counts
    scvi.settings.seed = ctx.seed
    torch.manual_seed(ctx.seed)
    scvi.model.SCVI.setup_anndata(a, layer="counts", batch_key="sample" if "sample" in a.obs else None)
    model = scvi.model.SCVI(a)
    from scvi.model._utils import get_max_epochs_heuristic
    max_epochs = min(get_max_epochs_heuristic(a.n_obs), SCVI_MAX_EPOCHS)
    model.train(max_epochs=max_epochs, early_stopping=True, accelerator="cpu", devices=1,
                enable_progress_bar=False)
    a.obsm["X_scVI"] = np.asarray(model.get_latent_representation(), np.float32)
    epochs = len(model.history["elbo_train"]) if "elbo_train" in model.history else None
    return {"labels": _cellcharter_labels(a, "X_scVI", ctx), "scvi_input": source, "scvi_epochs": epochs,
            "scvi_max_epochs": max_epochs}


def _radius_for(xy: np.ndarray, mean_neighbours: float) -> float:
    """The radius at which cells have ``mean_neighbours`` neighbours on average (self excluded)."""
    from sklearn.neighbors import NearestNeighbors
    k = int(min(xy.shape[0] - 1, 4 * mean_neighbours + 10))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    dist = np.sort(dist[:, 1:].ravel())
    dist = dist[dist > 0]  # Cal_Spatial_Net drops pairs at distance 0 (cells at the same position)
    # mean count within r = (number of pairs with 0 < distance <= r) / n; exact while r <= every cell's k-th distance
    return float(dist[min(int(round(mean_neighbours * xy.shape[0])), dist.size) - 1])


def run_stagate(ctx) -> dict:
    import anndata as ad
    import pandas as pd
    import STAGATE_pyG
    from sklearn.mixture import GaussianMixture
    a = _expression_adata(ctx)
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    groups = a.obs["sample"].astype(str).to_numpy() if "sample" in a.obs else np.zeros(a.n_obs, dtype=str)
    nets, radii = [], []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        b = ad.AnnData(np.zeros((idx.size, 1), np.float32), obs=pd.DataFrame(index=a.obs_names[idx]))
        b.obsm["spatial"] = a.obsm["spatial"][idx]
        r = _radius_for(b.obsm["spatial"], STAGATE_MEAN_NEIGHBOURS)
        STAGATE_pyG.Cal_Spatial_Net(b, rad_cutoff=r, model="Radius", verbose=False)
        nets.append(b.uns["Spatial_Net"])
        radii.append(r)
    a.uns["Spatial_Net"] = pd.concat(nets, ignore_index=True)
    STAGATE_pyG.train_STAGATE(a, random_seed=ctx.seed, verbose=False, device="cpu")
    z = np.asarray(a.obsm["STAGATE"], np.float64)
    gmm = GaussianMixture(n_components=ctx.data.n_labels, covariance_type="tied", random_state=ctx.seed)
    return {"labels": gmm.fit_predict(z).astype(str),
            "stagate_mean_neighbours": float(len(a.uns["Spatial_Net"]) / a.n_obs),
            "stagate_radius": float(np.mean(radii))}


def _leiden_k(x, k, seed):
    import anndata as ad
    import scanpy as sc
    from sklearn.neighbors import KNeighborsTransformer
    a = ad.AnnData(np.asarray(x, np.float32))
    # exact neighbours: scanpy's pynndescent path (from 8,192 cells) breaks under scipy >= 1.17
    sc.pp.neighbors(a, n_neighbors=15, use_rep="X", random_state=seed,
                    transformer=KNeighborsTransformer(n_neighbors=15, mode="distance"))
    lo, hi, best = 0.01, 3.0, None
    for _ in range(20):
        mid = (lo + hi) / 2
        sc.tl.leiden(a, resolution=mid, random_state=seed, key_added="l", flavor="igraph", n_iterations=2)
        n = a.obs["l"].nunique()
        best = a.obs["l"].astype(str).to_numpy()
        if n == k:
            break
        lo, hi = (mid, hi) if n < k else (lo, mid)
    # the search can end away from K (e.g. disconnected kNN components): report what it reached
    return best, {"leiden_resolution": float(mid), "n_clusters": int(n)}


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
    labels, reached = _leiden_k(pcs, ctx.data.n_labels, ctx.seed)
    return {"labels": labels, **reached}


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
    try:
        import cellcharter  # noqa: F401
        import scvi  # noqa: F401
        import squidpy  # noqa: F401
        out["cellcharter_scvi"] = Method(run_cellcharter_scvi, "peer", "CellCharter on scVI latents (raw counts, "
                                         "slice = batch; defaults, early stopping, max_epochs ≤ "
                                         f"{SCVI_MAX_EPOCHS}): Delaunay, remove_long_links, aggregate_neighbors(3), "
                                         "tl.Cluster(K)")
    except ImportError:
        pass
    try:
        import STAGATE_pyG  # noqa: F401
        out["stagate"] = Method(run_stagate, "peer", "STAGATE (stagate-modern) defaults, radius net per slice "
                                f"({STAGATE_MEAN_NEIGHBOURS:g} neighbours on average), GaussianMixture(K, tied)")
    except ImportError:
        pass
    if not out:
        raise ImportError("no peer package installed (pip install -e '.[peers]')")
    return out
