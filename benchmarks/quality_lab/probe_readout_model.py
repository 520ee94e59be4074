"""Exp 9c: model-based improved with alternative readouts (one fit, many readouts).
(Ran against the pre-variant API, `quality_lab/variants.py`, removed when `variant="improved"` landed.)

Emulates ``variants.run_improved`` with the package's pure functions (``scniche_jax.improved``;
the package is only imported): views from ``improved_views`` (default scales (10,20,50) for
training, as the current variant), ``sj.fit`` with the majority consensus patched in, then
for each readout spec: [embedding z-scored per slice or over all cells, unit total variance,
× wz] ⊕ [z-scored composition at the readout scales, unit total variance, × wc] ⊕
[X_data_nbr z-scored per slice or over all cells, unit total variance, × we]; smoothed ``steps`` × mean over ``k`` nearest
spatial neighbours in slice; ``sj.tl.clustering`` (KMeans, seed 123, n_init 10).
Data prep: ``nq.load_set``; scores: ``nq.score_run``.

Usage: python probe_readout_model.py OUT.jsonl SET MAX_CELLS|none SEED SPEC...
  SPEC = "zstd;wz;comp_std;scales;wc;expr_std;we;k;steps", e.g. "slice;1;all;20,50,100;2;slice;2;30;1"
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import niche_quality as nq  # noqa: E402
from scniche_jax import improved as imp  # noqa: E402
from variants import patched_consensus  # noqa: E402


def unit(x, groups):
    x = imp.standardise_per_slice(np.asarray(x, np.float64), groups)
    return x / np.sqrt(x.shape[1])


def main(out_path, name, max_cells, seed, specs, epochs=100):
    import scniche_jax as sj
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad", max_cells)
    a = d.adata.copy()
    opts = imp.ImprovedOptions()
    groups = imp.slice_groups(a.n_obs, None if d.sample_key is None else a.obs[d.sample_key])
    one = np.zeros(a.n_obs, dtype=object)
    views = imp.improved_views(a, d.celltype_key, d.sample_key, opts)
    for k, v in views.items():
        a.obsm[k] = v
    batch_num = "auto" if a.n_obs > 10000 else None
    t0 = time.time()
    with patched_consensus(opts):
        m = sj.fit(a, views=list(views), epochs=epochs, seed=seed, progress=False, batch_num=batch_num,
                   deterministic_embedding=True)
    fit_s = time.time() - t0
    z = np.array(a.obsm["X_scniche"], np.float64)
    np.save(f"/tmp/exp9/z_{name}_{seed}.npy", z)
    print(f"{name} n={a.n_obs} fit {fit_s:.0f}s epochs {len(m.history['loss']['total'])}", flush=True)
    comp_cache, op_cache = {}, {}
    nbr = np.asarray(a.obsm["X_data_nbr"], np.float64)
    out = open(out_path, "a")
    for spec in specs:
        zstd, wz, cstd, scales, wc, estd, we, k, steps = spec.split(";")
        wz, wc, we, k, steps = float(wz), float(wc), float(we), int(k), int(steps)
        scales = tuple(int(s) for s in scales.split(","))
        parts = [wz * unit(z, groups if zstd == "slice" else one)] if wz > 0 else []
        cg = groups if cstd == "slice" else one
        if wc > 0:
            for s in scales:
                if s not in comp_cache:
                    comp_cache[s] = imp.multiscale_composition(a.obsm["spatial"], a.obs[d.celltype_key], groups, (s,))
            comp = np.hstack([imp.standardise_per_slice(comp_cache[s], cg) for s in scales])
            parts.append(wc * comp / np.sqrt(comp.shape[1]))
        if we > 0:
            parts.append(we * unit(nbr, groups if estd == "slice" else one))
        x = np.hstack(parts)
        if k not in op_cache:
            op_cache[k] = imp.spatial_mean_operator(a.obsm["spatial"], groups, k)
        for _ in range(steps):
            x = op_cache[k] @ x
        a.obsm["X_ro"] = x.astype(np.float32)
        sj.tl.clustering(a, n_niches=d.n_labels, use_rep="X_ro")
        sc = nq.score_run(d.truth, d.labelled, d.slices, a.obs["scNiche"].astype(str).to_numpy())
        rec = {"set": name, "max_cells": max_cells, "seed": seed, "spec": spec, "ari": sc["all"]["ari"],
               "ari_slice": sc["slice_mean"]["ari"], "f1": sc["all"]["f1"], "fit_s": fit_s}
        out.write(json.dumps(rec) + "\n"); out.flush()
        print(f"{spec:40s} ARI {rec['ari']:.3f} slice {rec['ari_slice']:.3f} F1 {rec['f1']:.3f}", flush=True)


if __name__ == "__main__":
    mc = None if sys.argv[3] == "none" else int(sys.argv[3])
    main(sys.argv[1], sys.argv[2], mc, int(sys.argv[4]), sys.argv[5:])
