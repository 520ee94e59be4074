"""Exp 3: scales x standardisation x smoothing on all sets (features + KMeans only)."""
import sys
import numpy as np
import lab

name = sys.argv[1]
mc = int(sys.argv[2]) if len(sys.argv) > 2 else None
d = lab.get_set(name, mc)
oh = lab.one_hot_types(d)
ks = (5, 10, 20, 50, 100)
ops = {k: lab.spatial_knn(d, k) for k in ks}
c = {k: ops[k] @ oh for k in ks}
print(f"== {name} n={d.adata.n_obs} K={d.n_labels}", flush=True)
std = lambda x: lab.per_slice_standardise(x, d)
def ms(scales): return np.hstack([std(c[k]) for k in scales])
cands = {
    "std[20]": std(c[20]),
    "std[50]": std(c[50]),
    "std[10,20,50]": ms((10, 20, 50)),
    "std[10,20,50,100]": ms((10, 20, 50, 100)),
    "std[20,50,100]": ms((20, 50, 100)),
    "std[10,20,50] sm10x1": lab.smooth(ms((10, 20, 50)), ops[10], 1),
    "std[10,20,50] sm20x1": lab.smooth(ms((10, 20, 50)), ops[20], 1),
    "std[10,20,50] sm20x2": lab.smooth(ms((10, 20, 50)), ops[20], 2),
    "std[10,20,50,100] sm10x2": lab.smooth(ms((10, 20, 50, 100)), ops[10], 2),
    "std[10,20,50,100] sm20x1": lab.smooth(ms((10, 20, 50, 100)), ops[20], 1),
    "std[10,20,50]+std(expr_nbr) sm20x1": lab.smooth(np.hstack([ms((10, 20, 50)), 0.5 * std(np.asarray(d.adata.obsm["X_data_nbr"]))]), ops[20], 1),
}
for tag, x in cands.items():
    rows = [lab.evaluate(d, lab.km(x, d, s)) for s in range(3)]
    lab.report(tag, rows)
