"""Exp 16b: smoothing neighbours x Potts neighbours x weight, on the readouts cached by probe_icm.py.

For each cached pre-smoothing readout (``/tmp/exp16/raw_SET_SEED.npy``): smooth once over
``ks`` cells (0 = none), KMeans (``tl.clustering``), then ICM (``probe_icm.icm``) over ``kp``
neighbours at each weight. Usage: [GRID_SMOOTH_K=0,10,20,30 GRID_POTTS_K=10,20,30 GRID_BETAS=0.5,1,1.5,2,3] python probe_icm_grid.py OUT.jsonl SET SEED [SEED...]
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import niche_quality as nq  # noqa: E402
from probe_icm import CACHE, icm, kmeans_start, neighbour_operator  # noqa: E402

import os  # noqa: E402

SMOOTH_K = tuple(int(k) for k in os.environ.get("GRID_SMOOTH_K", "0,10,20,30").split(","))
POTTS_K = tuple(int(k) for k in os.environ.get("GRID_POTTS_K", "10,20,30").split(","))
BETAS = tuple(float(b) for b in os.environ.get("GRID_BETAS", "0.5,1,1.5,2,3").split(","))


def main(out_path, name, seeds):
    from scniche_jax import improved as imp
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups = imp.slice_groups(d.adata.n_obs, None if d.sample_key is None else d.adata.obs[d.sample_key])
    coords = np.asarray(d.adata.obsm["spatial"])
    ops = {k: neighbour_operator(coords, groups, k) for k in POTTS_K}
    smooth = {k: imp.spatial_mean_operator(coords, groups, k) for k in SMOOTH_K if k}
    out = open(out_path, "a")
    for seed in seeds:
        raw = np.load(CACHE / f"raw_{name}_{seed}.npy")
        for ks in SMOOTH_K:
            rep = smooth[ks] @ raw if ks else raw
            base = kmeans_start(d, rep)
            cands = {f"s{ks}-km": base}
            for kp, op in ops.items():
                for beta in BETAS:
                    cands[f"s{ks}-p{kp}-b{beta}"] = icm(rep, base, op, beta)
            for tag, lab in cands.items():
                sc = nq.score_run(d.truth, d.labelled, d.slices, np.asarray(lab).astype(str))
                rec = {"set": name, "seed": seed, "tag": tag, "ari": sc["all"]["ari"],
                       "ari_slice": sc["slice_mean"]["ari"]}
                out.write(json.dumps(rec) + "\n")
            out.flush()
            print(name, seed, ks, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
