"""Exp 22: fixed-radius neighbourhoods for the smoothing and the prior, not only the composition.

Exp 20 found that the k nearest cells tilt a border cell's composition towards the dense side.
The readout's smoothing (10 nearest cells) and the Potts prior's shares (75 nearest) use k
nearest cells too, so the same tilt may push borders there. Here either is replaced by the cells
within a per-slice radius (the median distance to the k-th nearest cell, itself included), on
the cached Exp 16 readouts, with or without the radius composition block (weight E22_WEIGHTS).
Usage: python probe_exp22.py OUT.jsonl SET SEED...
"""
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import cached_readout_set, write_scores  # noqa: E402
from probe_exp20 import block  # noqa: E402

WEIGHTS = tuple(float(w) for w in os.environ.get("E22_WEIGHTS", "0,3").split(","))
BETAS = tuple(float(b) for b in os.environ.get("E22_BETAS", "1.5").split(","))


def radius_operator(coords, groups, k, include_self):
    """Row-stochastic N×N: the cells within the slice's radius for k (median distance to the k-th nearest, itself included)."""
    n = coords.shape[0]
    rows, cols = [], []
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        nn = NearestNeighbors().fit(coords[idx])
        r = float(np.median(nn.kneighbors(n_neighbors=min(k, idx.size) - 1)[0][:, -1]))
        m = nn.radius_neighbors_graph(radius=r, mode="connectivity").tocoo()
        rows += [idx[m.row]] + ([idx] if include_self else [])
        cols += [idx[m.col]] + ([idx] if include_self else [])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    w = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    s = np.asarray(w.sum(1)).ravel()
    return (sp.diags(1.0 / np.maximum(s, 1)) @ w).tocsr()


def main(out_path, name, seeds):
    from scniche_jax import clustering as cl
    ctx = cached_readout_set(name)
    d, smooth_knn, shares_knn = ctx.d, ctx.smooth, ctx.shares
    smooth_rad = radius_operator(ctx.coords, ctx.groups, 10, True)
    shares_rad = radius_operator(ctx.coords, ctx.groups, 76, False)
    out = open(out_path, "a")
    for seed in seeds:
        emb, comp, expr = ctx.blocks(seed)
        for w in WEIGHTS:
            parts = [emb, comp] + ([block(ctx.radius, w)] if w else []) + [expr]
            feats = np.hstack(parts)
            for sname, smooth in (("sk", smooth_knn), ("sr", smooth_rad)):
                x = np.asarray(smooth @ feats, np.float32)
                km = cl.kmeans_labels(x, d.n_labels, 123, 10)
                for pname, shares in (("pk", shares_knn), ("pr", shares_rad)):
                    for beta in BETAS:
                        labels = cl.potts_refine(x, km, shares, beta)[0]
                        write_scores(out, d, seed, f"w{w:g}-{sname}-{pname}-b{beta:g}", labels)
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
