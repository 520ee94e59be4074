"""Exp 4: CODEX crop: larger scales, smoothing amounts, standardisation."""
import sys
import numpy as np
import lab

d = lab.get_set("codex_spleen_3slices", int(sys.argv[1]) if len(sys.argv) > 1 else 30000)
oh = lab.one_hot_types(d)
ks = (10, 20, 50, 100, 200)
ops = {k: lab.spatial_knn(d, k) for k in ks}
c = {k: ops[k] @ oh for k in ks}
std = lambda x: lab.per_slice_standardise(x, d)
print(f"== codex n={d.adata.n_obs}", flush=True)
cands = {
    "raw100": c[100], "raw200": c[200], "std100": std(c[100]), "std200": std(c[200]),
    "std[20,50,100,200]": np.hstack([std(c[k]) for k in (20, 50, 100, 200)]),
    "std[10,20,50] sm20x4": lab.smooth(np.hstack([std(c[k]) for k in (10, 20, 50)]), ops[20], 4),
    "std[10,20,50] sm20x8": lab.smooth(np.hstack([std(c[k]) for k in (10, 20, 50)]), ops[20], 8),
    "std[10,20,50] sm50x2": lab.smooth(np.hstack([std(c[k]) for k in (10, 20, 50)]), ops[50], 2),
    "raw[10,20,50] sm20x4": lab.smooth(np.hstack([c[k] for k in (10, 20, 50)]), ops[20], 4),
}
for tag, x in cands.items():
    rows = [lab.evaluate(d, lab.km(x, d, s)) for s in range(2)]
    lab.report(tag, rows)
