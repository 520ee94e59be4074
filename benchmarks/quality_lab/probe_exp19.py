"""Exp 19: per-niche diagonal variances in the Potts energy (a hidden Markov random field).

ICM from the same KMeans start as ``clustering.potts_refine`` on the cached Exp 16 readouts,
energy ``(1/d)·[Σ_j (x_ij − μ_cj)² / σ²_cj + Σ_j log σ²_cj] − β·share_i(c)`` (per-niche
variances; ``potts_refine`` uses one shared spread). Usage: python probe_exp19.py OUT.jsonl SET SEED...
"""
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import niche_quality as nq  # noqa: E402
from lab import adopted_operators, write_scores  # noqa: E402

CACHE = Path("/tmp/exp16")
MODE = __import__("os").environ.get("E19_MODE", "diag")  # diag | shared_diag | spherical
BETAS = tuple(float(b) for b in __import__("os").environ.get("E19_BETAS", "0.5,1,1.5,2").split(","))
FLOORS = tuple(float(f) for f in __import__("os").environ.get("E19_FLOORS", "0.01,0.1").split(","))


def icm_diag(x, labels, shares, beta, floor, max_passes=20):
    n, d = x.shape
    k = labels.max() + 1
    rows = np.arange(n)
    for _ in range(max_passes):
        onehot = sp.csr_matrix((np.ones(n), (rows, labels)), shape=(n, k))
        sizes = np.maximum(np.asarray(onehot.sum(0)).ravel(), 1)
        mu = (onehot.T @ x) / sizes[:, None]
        var = (onehot.T @ (x ** 2)) / sizes[:, None] - mu ** 2
        var = np.maximum(var, floor * x.var(0)[None])
        if MODE == "shared_diag":  # one variance per column, pooled over niches
            var = np.repeat(((sizes[:, None] * var).sum(0) / sizes.sum())[None], k, 0)
        elif MODE == "spherical":  # one variance per niche
            var = np.repeat(var.mean(1, keepdims=True), d, 1)
        cost = np.stack([(((x - mu[c]) ** 2) / var[c]).sum(1) + np.log(var[c]).sum() for c in range(k)], 1) / d
        share = np.asarray((shares @ onehot).todense())
        new = np.argmin(cost - beta * share, 1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def main(out_path, name, seeds):
    from scniche_jax import clustering as cl
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    _, _, smooth, shares = adopted_operators(d)
    out = open(out_path, "a")
    for seed in seeds:
        x = np.asarray(smooth @ np.load(CACHE / f"raw_{name}_{seed}.npy"), np.float64)
        km = cl.kmeans_labels(x.astype(np.float32), d.n_labels, 123, 10)
        for floor in FLOORS:
            for beta in BETAS:
                labels = icm_diag(x, km.copy(), shares, beta, floor)
                write_scores(out, d, seed, f"{MODE}-f{floor:g}-b{beta:g}", labels)
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
