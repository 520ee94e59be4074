"""Exp 2: multi-scale, own type, light / edge-aware smoothing; on all sets."""
import sys
import numpy as np
import scipy.sparse as sp
import lab


def bilateral(x, d, k=20, steps=3, h=None):
    """Smooth over spatial kNN with weights exp(-|x_i-x_j|^2 / h) (edge-aware)."""
    base = lab.spatial_knn(d, k).tocoo()
    for _ in range(steps):
        dist = ((x[base.row] - x[base.col]) ** 2).sum(1)
        hh = np.median(dist[dist > 0]) if h is None else h
        w = sp.csr_matrix((np.exp(-dist / hh), (base.row, base.col)), shape=base.shape)
        w = sp.diags(1.0 / np.asarray(w.sum(1)).ravel()) @ w
        x = w @ x
    return x


name = sys.argv[1]
mc = int(sys.argv[2]) if len(sys.argv) > 2 else None
d = lab.get_set(name, mc)
oh = lab.one_hot_types(d)
ops = {k: lab.spatial_knn(d, k) for k in (5, 10, 20, 50)}
print(f"== {name} n={d.adata.n_obs} K={d.n_labels}", flush=True)
c = {k: ops[k] @ oh for k in ops}
ms = np.hstack([c[10], c[20], c[50]])
cands = {
    "comp10": c[10], "comp20": c[20], "comp50": c[50],
    "multi[10,20,50]": ms,
    "multi sm10x1": lab.smooth(ms, ops[10], 1),
    "multi sm10x2": lab.smooth(ms, ops[10], 2),
    "multi sm20x3": lab.smooth(ms, ops[20], 3),
    "multi bilat20x3": bilateral(ms, d, 20, 3),
    "comp20 bilat20x3": bilateral(c[20], d, 20, 3),
    "multi std": lab.per_slice_standardise(ms, d),
    "multi std sm10x2": lab.smooth(lab.per_slice_standardise(ms, d), ops[10], 2),
    "multi+own": np.hstack([ms, oh * 0.3]),
}
for tag, x in cands.items():
    rows = [lab.evaluate(d, lab.km(x, d, s)) for s in range(3)]
    lab.report(tag, rows)
