"""Exp 16: a spatial Potts prior on the niche labels (ICM), instead of (or after) smoothing the features.

Exp 11's majority vote ignores the features, so it erodes thin layers. Here a cell keeps the
label its features favour unless its spatial neighbours disagree by more than the features
do: iterated conditional modes on

    E_i(c) = ||x_i - mu_c||^2 / s  -  beta * (share of i's k spatial neighbours labelled c),

s the mean squared distance of a cell to its own centroid (so beta is in units of a typical
within-cluster spread), centroids re-estimated each pass, synchronous updates, at most 20
passes. Start: KMeans (``tl.clustering``) of the same readout.

For each set and seed: ``sj.fit(variant="improved", smooth_steps=0)`` once (readout before
smoothing cached in CACHE); the default readout is that, smoothed once over 30 cells.
Usage: [ICM_EPOCHS=100 ICM_K=10,20 ICM_BETAS=0.25,0.5,1,2,4 ICM_READOUTS=sm,raw] python probe_icm.py OUT.jsonl SET SEED [SEED...]
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import niche_quality as nq  # noqa: E402

CACHE = Path("/tmp/exp16")


def neighbour_operator(coords, groups, k):
    """Row-stochastic matrix over each cell's k nearest cells of its slice, the cell itself left out."""
    from scniche_jax.clustering import spatial_neighbour_shares
    return spatial_neighbour_shares(coords, groups, k)


def icm(x, labels, op, beta, passes=20):
    """The prior's labels (the package's ``potts_refine``, which began as this probe's loop)."""
    from scniche_jax.clustering import potts_refine
    return potts_refine(x, labels, op, beta, passes)[0]


def kmeans_start(d, rep):
    """``tl.clustering`` (KMeans, K = labels) of a representation: the prior's start labels."""
    import scniche_jax as sj
    a = d.adata.copy()
    a.obsm["X_scniche"] = np.asarray(rep, np.float32)
    sj.tl.clustering(a, n_niches=d.n_labels)
    return a.obs["scNiche"].cat.codes.to_numpy()


def main(out_path, name, seeds):
    import scniche_jax as sj
    from scniche_jax import improved as imp
    CACHE.mkdir(exist_ok=True)
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups = imp.slice_groups(d.adata.n_obs, None if d.sample_key is None else d.adata.obs[d.sample_key])
    coords = np.asarray(d.adata.obsm["spatial"])
    out = open(out_path, "a")
    ks = [int(k) for k in os.environ.get("ICM_K", "10,20").split(",")]
    betas = [float(b) for b in os.environ.get("ICM_BETAS", "0.25,0.5,1,2,4").split(",")]
    readouts = os.environ.get("ICM_READOUTS", "sm,raw").split(",")
    ops = {k: neighbour_operator(coords, groups, k) for k in ks}
    smooth = imp.spatial_mean_operator(coords, groups, 30)
    for seed in seeds:
        zpath = CACHE / f"raw_{name}_{seed}.npy"
        if zpath.exists():
            raw = np.load(zpath)
            fit_s = float("nan")
        else:
            a = d.adata.copy()
            t0 = time.time()
            sj.fit(a, variant="improved", epochs=int(os.environ.get("ICM_EPOCHS", 100)), seed=seed, progress=False,
                   improved_options=sj.ImprovedOptions(smooth_steps=0),
                   batch_num="auto" if a.n_obs > 20000 else None)
            fit_s = time.time() - t0
            raw = np.asarray(a.obsm["X_scniche"], np.float64)
            np.save(zpath, raw)
        reps = {name: rep for name, rep in (("sm", smooth @ raw), ("raw", raw)) if name in readouts}
        cands = {}
        for rname, rep in reps.items():
            base = kmeans_start(d, rep)
            cands[f"{rname}-km"] = base
            for k, op in ops.items():
                for beta in betas:
                    cands[f"{rname}-icm{k}b{beta}"] = icm(rep, base, op, beta)
        for tag, lab in cands.items():
            sc = nq.score_run(d.truth, d.labelled, d.slices, np.asarray(lab).astype(str))
            rec = {"set": name, "seed": seed, "tag": tag, "ari": sc["all"]["ari"],
                   "ari_slice": sc["slice_mean"]["ari"], "nmi": sc["all"]["nmi"], "f1": sc["all"]["f1"],
                   "fit_s": fit_s}
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(name, seed, tag, round(rec["ari"], 3), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
