"""Exp 9a': hybrid standardisation: composition z-scored over all cells, expression-neighbour
view z-scored per slice (expression carries per-slice technical offsets; composition does not).
Same construction as ``probe_readout_sweep.py`` (its std key here is "hybrid"); adds w=2.

Usage: python probe_readout_hybrid.py OUT.jsonl
"""
import itertools
import json
import sys
import time

import numpy as np

import lab
from probe_readout_sweep import SETS, SEEDS, unit
from scniche_jax import improved as imp

SCALES = [(20, 50, 100), (10, 30, 100), (10, 20, 50, 100)]
EXPR_W = (0.5, 1.0, 2.0)
SMOOTH = [(10, 2), (10, 3), (10, 4), (20, 1), (20, 2), (30, 1)]


def main(out_path):
    out = open(out_path, "a")
    for name, mc in SETS:
        d = lab.get_set(name, mc)
        g = lab.groups_of(d).astype(object)
        one = np.zeros(d.adata.n_obs, dtype=object)
        coords = d.adata.obsm["spatial"]
        comp = {k: imp.multiscale_composition(coords, d.adata.obs[d.celltype_key], g, (k,))
                for k in sorted({k for s in SCALES for k in s})}
        ops = {k: imp.spatial_mean_operator(coords, g, k) for k in {k for k, _ in SMOOTH}}
        nbr = unit(imp.standardise_per_slice(np.asarray(d.adata.obsm["X_data_nbr"], np.float64), g))
        t0 = time.time()
        for scales, w in itertools.product(SCALES, EXPR_W):
            base = np.hstack([unit(np.hstack([imp.standardise_per_slice(comp[k], one) for k in scales])), w * nbr])
            for sk, st in SMOOTH:
                x = base
                for _ in range(st):
                    x = ops[sk] @ x
                for seed in SEEDS:
                    r = lab.evaluate(d, lab.km(x, d, seed))
                    out.write(json.dumps({"set": name, "std": "hybrid", "scales": list(scales), "w_expr": w,
                                          "smooth_k": sk, "steps": st, "seed": seed, **r}) + "\n")
                out.flush()
            print(f"{name} {scales} w={w} t={time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
