"""Exp 17: clustering-side changes for BaristaSeq on the cached Exp 16 readouts.

Variants (all on ``smooth10 @ raw`` unless noted, K = number of labels, Potts p 75):
``base`` (the adopted default), ``kern`` (Gaussian-weighted neighbour shares),
``c100wW`` (the 100-cell composition, already one of the readout's scales, appended once more at weight W before smoothing),
``best5`` (five KMeans seeds, each refined, the lowest Potts energy kept).
Usage: python probe_exp17.py OUT.jsonl SET SEED [SEED...]
"""
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import niche_quality as nq  # noqa: E402
from lab import adopted_operators, write_scores  # noqa: E402

CACHE = Path("/tmp/exp16")


def kernel_shares(coords, groups, p, frac):
    coords = np.asarray(coords, np.float64)[:, :2]
    rows, cols, vals = [], [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        dist, nb = NearestNeighbors(n_neighbors=p + 1).fit(coords[idx]).kneighbors(coords[idx])
        h = dist[:, max(1, int(p * frac))][:, None]
        w = np.exp(-0.5 * (dist / np.maximum(h, 1e-12)) ** 2)
        src = np.repeat(idx, p + 1)
        dst = idx[nb.ravel()]
        keep = src != dst
        rows.append(src[keep]); cols.append(dst[keep]); vals.append(w.ravel()[keep])
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(coords.shape[0],) * 2)
    return sp.diags(1.0 / np.asarray(m.sum(1)).ravel()) @ m


def energy(x, labels, shares, beta):
    n_lab = labels.max() + 1
    onehot = sp.csr_matrix((np.ones(labels.size), (np.arange(labels.size), labels)), shape=(labels.size, n_lab))
    sizes = np.asarray(onehot.sum(0)).ravel()
    means = (onehot.T @ x) / np.maximum(sizes, 1)[:, None]
    d = ((x - means[labels]) ** 2).sum(1)
    s = d.mean()
    share_own = np.asarray((shares @ onehot).todense())[np.arange(labels.size), labels]
    return float((d / s).sum() - beta * share_own.sum())


def main(out_path, name, seeds):
    from scniche_jax import improved as imp
    from scniche_jax import clustering as cl
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups, coords, smooth, shares = adopted_operators(d)
    kshares = {f: kernel_shares(coords, groups, 75, f) for f in (0.33, 0.66)}
    c100 = imp.standardise_per_slice(imp.multiscale_composition(coords, d.adata.obs[d.celltype_key], groups, [100]),
                                     groups)
    out = open(out_path, "a")

    def rec(tag, labels, seed):
        write_scores(out, d, seed, tag, labels)

    for seed in seeds:
        raw = np.load(CACHE / f"raw_{name}_{seed}.npy")
        x = np.asarray(smooth @ raw, np.float32)
        km = cl.kmeans_labels(x, d.n_labels, 123, 10)
        for beta in (1.5, 2.0):
            rec(f"base-b{beta:g}", cl.potts_refine(x, km, shares, beta)[0], seed)
            for f, ks in kshares.items():
                rec(f"kern{f:g}-b{beta:g}", cl.potts_refine(x, km, ks, beta)[0], seed)
        for w in (2.0, 4.0):
            xc = np.asarray(smooth @ np.hstack([raw, w * c100]), np.float32)
            kmc = cl.kmeans_labels(xc, d.n_labels, 123, 10)
            rec(f"c100w{w:g}-b1.5", cl.potts_refine(xc, kmc, shares, 1.5)[0], seed)
        best = None
        for ks in range(5):
            l0 = cl.kmeans_labels(x, d.n_labels, 123 + ks, 10)
            l1 = cl.potts_refine(x, l0, shares, 1.5)[0]
            e = energy(x.astype(np.float64), l1, shares, 1.5)
            if best is None or e < best[0]:
                best = (e, l1)
        rec("best5-b1.5", best[1], seed)
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
