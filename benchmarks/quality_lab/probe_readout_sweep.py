"""Exp 9a: features-only readout sweep (no model) on the four labelled sets.

Grid: composition scales × smoothing (k, steps) × views (composition alone, or + w ×
expression-neighbour view) × standardisation (per slice / over all cells), KMeans K = #labels,
seeds 0-2 (n_init=10, ``nq.kmeans``). Uses the package's pure functions
(``scniche_jax.improved``): ``multiscale_composition`` (k cells incl. itself, within slice),
``spatial_mean_operator`` (smoothing, k cells incl. itself, within slice).

Block weighting (as in ``improved.readout``): every column z-scored (per slice or over all
cells), each view block scaled to unit total variance, the expression-neighbour block then
multiplied by ``w``; blocks side by side, then smoothed ``steps`` times, then KMeans.
Single-slice sets: "all-cells" z-scoring is identical to per-slice, so it is not re-run.

Usage: python probe_readout_sweep.py OUT.jsonl
"""
import itertools
import json
import sys
import time

import numpy as np

import lab
from scniche_jax import improved as imp

SETS = [("osmfish_cortex", None), ("allen_merfish_visp", None), ("baristaseq_visp_3slices", None),
        ("codex_spleen_3slices", 12000)]
SCALES = [(10, 20, 50), (10, 20, 50, 100), (20, 50, 100), (10, 30, 100)]
SMOOTH_K = (10, 20, 30, 50)
SMOOTH_STEPS = (1, 2, 3, 4)
EXPR_W = (0.0, 0.5, 1.0)
STDS = ("slice", "all")
SEEDS = (0, 1, 2)


def zscore(x, groups):
    return imp.standardise_per_slice(x, groups)


def unit(x):
    return x / np.sqrt(x.shape[1])


def main(out_path):
    out = open(out_path, "a")
    for name, mc in SETS:
        d = lab.get_set(name, mc)
        g = lab.groups_of(d).astype(object)
        one = np.zeros(d.adata.n_obs, dtype=object)
        coords = d.adata.obsm["spatial"]
        ks = sorted({k for s in SCALES for k in s})
        comp = {k: imp.multiscale_composition(coords, d.adata.obs[d.celltype_key], g, (k,)) for k in ks}
        ops = {k: imp.spatial_mean_operator(coords, g, k) for k in SMOOTH_K}
        nbr = np.asarray(d.adata.obsm["X_data_nbr"], np.float64)
        stds = STDS if d.slices is not None else ("slice",)
        t0 = time.time()
        for std, scales, w in itertools.product(stds, SCALES, EXPR_W):
            gg = g if std == "slice" else one
            base = unit(np.hstack([zscore(comp[k], gg) for k in scales]))
            if w > 0:
                base = np.hstack([base, w * unit(zscore(nbr, gg))])
            for sk in SMOOTH_K:
                x = base
                for st in range(1, max(SMOOTH_STEPS) + 1):
                    x = ops[sk] @ x
                    if st not in SMOOTH_STEPS:
                        continue
                    for seed in SEEDS:
                        r = lab.evaluate(d, lab.km(x, d, seed))
                        rec = {"set": name, "std": std, "scales": list(scales), "w_expr": w, "smooth_k": sk,
                               "steps": st, "seed": seed, **r}
                        out.write(json.dumps(rec) + "\n")
                    out.flush()
            print(f"{name} {std} {scales} w={w} done t={time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
