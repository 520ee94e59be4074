"""Exp 1: how far do features + spatial smoothing + KMeans go, without the model?"""
import sys
import numpy as np
import lab

sets = sys.argv[1:] or ["osmfish_cortex"]
for name in sets:
    d = lab.get_set(name)
    oh = lab.one_hot_types(d)
    ops = {k: lab.spatial_knn(d, k) for k in (10, 20, 50)}
    print(f"== {name} n={d.adata.n_obs} K={d.n_labels}")
    cands = {
        "comp20": ops[20] @ oh,
        "comp50": ops[50] @ oh,
        "comp20 smooth20x3": lab.smooth(ops[20] @ oh, ops[20], 3),
        "comp20 smooth20x6": lab.smooth(ops[20] @ oh, ops[20], 6),
        "comp50 smooth20x3": lab.smooth(ops[50] @ oh, ops[20], 3),
        "multi[10,20,50]": np.hstack([ops[10] @ oh, ops[20] @ oh, ops[50] @ oh]),
        "multi[10,20,50] smooth20x3": lab.smooth(np.hstack([ops[10] @ oh, ops[20] @ oh, ops[50] @ oh]), ops[20], 3),
        "X_cn_norm smooth20x3 (pp)": lab.smooth(np.asarray(d.adata.obsm["X_cn_norm"]), ops[20], 3),
        "X_data_nbr smooth20x3": lab.smooth(np.asarray(d.adata.obsm["X_data_nbr"]), ops[20], 3),
    }
    for tag, x in cands.items():
        rows = [lab.evaluate(d, lab.km(x, d, s)) for s in range(3)]
        lab.report(tag, rows)
