"""Exp 20: composition over a fixed radius instead of the k nearest cells.

A cell near the border of a dense layer reaches its k nearest cells sooner on the dense side,
so k-nearest composition tilts towards the dense layer and moves the niche border into the
sparse one. Here the readout's composition block (cached Exp 16 readouts) is rebuilt from the
cell-type fractions within a radius (``radius``) or under a Gaussian kernel (``gauss``,
sd = radius / 2), the radius per slice = the median distance to the k-th nearest cell, k in
the variant's scales (20, 50, 100); ``knn`` rebuilds today's block (a check). Then smoothing
over 10 cells, KMeans and the prior (β 1.5, 75 neighbours), as adopted.
Usage: python probe_exp20.py OUT.jsonl SET SEED [SEED...]
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import niche_quality as nq  # noqa: E402
from lab import adopted_operators, write_scores  # noqa: E402

CACHE = Path("/tmp/exp16")
SCALES = (20, 50, 100)
BETA = float(__import__("os").environ.get("E20_BETA", "1.5"))
WEIGHT = float(__import__("os").environ.get("E20_WEIGHT", "4"))  # weight of the rebuilt block
MODES = tuple(__import__("os").environ.get("E20_MODES", "knn,radius,gauss").split(","))
EXTRAS = tuple(float(v) for v in __import__("os").environ.get("E20_EXTRAS", "0,1").split(","))
DENSITY = tuple(float(v) for v in __import__("os").environ.get("E20_DENSITY", "0").split(","))  # weights of a log-density block


def kernel_composition(coords, one_hot, groups, k, mode):
    n = coords.shape[0]
    out = np.zeros((n, one_hot.shape[1]))
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        nn = NearestNeighbors().fit(coords[idx])
        dist_k, _ = nn.kneighbors(coords[idx], n_neighbors=min(k, idx.size))
        r = float(np.median(dist_k[:, -1]))
        reach = r if mode == "radius" else 1.5 * r  # the Gaussian (sd r/2) cut at 3 sd
        graph = nn.radius_neighbors_graph(coords[idx], radius=reach, mode="distance").tocoo()
        w = np.ones_like(graph.data) if mode == "radius" else np.exp(-0.5 * (graph.data / (r / 2)) ** 2)
        m = sp.csr_matrix((w, (graph.row, graph.col)), shape=(idx.size, idx.size)) + sp.eye(idx.size)
        m = sp.diags(1.0 / np.asarray(m.sum(1)).ravel()) @ m
        out[idx] = m @ one_hot[idx]
    return out


def log_density(coords, groups, k):
    """log of the number of cells within the radius of ``kernel_composition`` (per slice, z-scored)."""
    out = np.zeros(coords.shape[0])
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        nn = NearestNeighbors().fit(coords[idx])
        r = float(np.median(nn.kneighbors(coords[idx], n_neighbors=min(k, idx.size))[0][:, -1]))
        counts = np.array([len(v) for v in nn.radius_neighbors(coords[idx], radius=r, return_distance=False)])
        v = np.log(counts)
        out[idx] = (v - v.mean()) / (v.std() or 1.0)
    return out


def block(x, weight):
    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    return z * weight / np.sqrt(x.shape[1])


def main(out_path, name, seeds):
    from scniche_jax import improved as imp
    from scniche_jax import clustering as cl
    import scniche_jax as sj
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups, coords, smooth, shares = adopted_operators(d)
    order = d.adata.uns.get("CN_order")
    views = imp.improved_views(d.adata.copy(), sj.ImprovedOptions())
    n_comp = views["X_ms_comp"].shape[1]
    types = pd.Categorical(d.adata.obs[d.celltype_key].astype(str),
                           categories=[str(t) for t in order] if order is not None else None)
    one_hot = np.eye(len(types.categories))[types.codes]
    comps = {"knn": imp.multiscale_composition(coords, d.adata.obs[d.celltype_key], groups, SCALES, order)}
    if "pkg" in MODES:  # the package's radius_composition (each cell counted once)
        comps["pkg"] = imp.radius_composition(coords, d.adata.obs[d.celltype_key], groups, SCALES, order)
    for mode in ("radius", "gauss"):
        if mode not in MODES:
            continue
        comps[mode] = np.hstack([kernel_composition(coords, one_hot, groups, k, mode) for k in SCALES])
    density = np.stack([log_density(coords, groups, k) for k in SCALES], 1)
    out = open(out_path, "a")
    for seed in seeds:
        raw = np.load(CACHE / f"raw_{name}_{seed}.npy")
        n_emb = raw.shape[1] - n_comp - views["X_data_nbr_std"].shape[1]
        for mode, comp in ((m, c) for m, c in comps.items() if m in MODES):
            new = block(comp, WEIGHT)
            if mode == "knn":
                err = float(np.abs(new - raw[:, n_emb:n_emb + n_comp]).max())
                print("knn block rebuilt, max abs diff", err, flush=True)
            for extra in EXTRAS:  # 1.0: the new block beside today's instead of replacing it
                parts = [raw[:, :n_emb], new, raw[:, n_emb + n_comp:]]
                if extra:
                    parts.insert(1, raw[:, n_emb:n_emb + n_comp])
                for wd in DENSITY:
                    x = np.asarray(smooth @ np.hstack(parts + ([block(density, wd)] if wd else [])), np.float32)
                    km = cl.kmeans_labels(x, d.n_labels, 123, 10)
                    labels = cl.potts_refine(x, km, shares, BETA)[0]
                    tag = f"{mode}{'+knn' if extra else ''}{f'+dens{wd:g}' if wd else ''}-w{WEIGHT:g}-b{BETA:g}"
                    write_scores(out, d, seed, tag, labels)
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
