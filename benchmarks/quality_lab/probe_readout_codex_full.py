"""Exp 9b: the full CODEX spleen set (245,280 cells, 3 slices, K=4), no model.

1. naive baseline: cell-type composition of the k nearest neighbours (itself included, within
   slice; ``nq.composition``), KMeans K=4, n_init=3 (OpenMP limited to 1 thread), seeds 0, 1;
2. features-only settings given on the command line, "std;scales;w_expr;smooth_k;steps" with std in
   slice / all / hybrid (composition over all cells, expression per slice) (same construction as
   ``probe_readout_sweep.py``: z-scored multi-scale composition, unit total variance, optional
   w × expression-neighbour block, smoothed, KMeans n_init=3).

X is a one-hot of cell type, so no pp is run unless a setting needs ``X_data_nbr``; the data
are read directly (truth/labelled/slices as in ``nq.load_set``).

Usage: python probe_readout_codex_full.py OUT.jsonl baseline
       python probe_readout_codex_full.py OUT.jsonl feat "slice;20,50,100;0;20;2" ...
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import niche_quality as nq  # noqa: E402
from scniche_jax import improved as imp  # noqa: E402

PATH = nq.DATA_DIR / "codex_spleen_3slices.h5ad"
SEEDS = (0, 1)


def load():
    import anndata as ad
    a = ad.read_h5ad(PATH)
    a.X = np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X, np.float32)
    truth = a.obs["Niche"].astype(str).to_numpy()
    labelled = ~nq._is_unlabelled(truth)
    slices = a.obs["slice"].astype(str).to_numpy()
    return a, truth, labelled, slices, len(set(truth[labelled].tolist()))


def score(truth, labelled, slices, labels):
    sc = nq.score_run(truth, labelled, slices, labels)
    return {"ari": sc["all"]["ari"], "ari_slice": sc["slice_mean"]["ari"], "f1": sc["all"]["f1"],
            "nmi": sc["all"]["nmi"]}


def main(out_path, mode, specs):
    out = open(out_path, "a")
    a, truth, labelled, slices, K = load()
    print(f"n={a.n_obs} K={K} labelled={labelled.sum()}", flush=True)
    if mode == "baseline":
        for k in (10, 20, 30, 50, 100):
            t0 = time.time()
            x = nq.composition(a, "Cell_type", "slice", k)
            for seed in SEEDS:
                t1 = time.time()
                r = score(truth, labelled, slices, nq.kmeans(x, K, seed, n_init=3))
                rec = {"method": f"baseline k{k}", "seed": seed, **r, "km_s": time.time() - t1}
                out.write(json.dumps(rec) + "\n"); out.flush()
                print(rec, flush=True)
            print(f"k{k} total {time.time() - t0:.0f}s", flush=True)
        return
    groups = imp.slice_groups(a.n_obs, slices)
    one = np.zeros(a.n_obs, dtype=object)
    comp_cache, op_cache = {}, {}
    for spec in specs:
        std, scales, w, sk, steps = spec.split(";")
        scales, w, sk, steps = tuple(int(s) for s in scales.split(",")), float(w), int(sk), int(steps)
        gg = groups if std == "slice" else one          # composition z-scoring
        ge = one if std == "all" else groups           # expression: per slice for "slice" and "hybrid"
        t0 = time.time()
        for k in scales:
            if k not in comp_cache:
                comp_cache[k] = imp.multiscale_composition(a.obsm["spatial"], a.obs["Cell_type"], groups, (k,))
        x = np.hstack([imp.standardise_per_slice(comp_cache[k], gg) for k in scales])
        x = x / np.sqrt(x.shape[1])
        if w > 0:
            if "X_data_nbr" not in a.obsm:
                import scniche_jax as sj
                a = sj.pp.process_multi_slices(a, celltype_key="Cell_type", sample_key="slice", verbose=False)
            nbr = imp.standardise_per_slice(np.asarray(a.obsm["X_data_nbr"], np.float64), ge)
            x = np.hstack([x, w * nbr / np.sqrt(nbr.shape[1])])
        if sk not in op_cache:
            op_cache[sk] = imp.spatial_mean_operator(a.obsm["spatial"], groups, sk)
        for _ in range(steps):
            x = op_cache[sk] @ x
        prep_s = time.time() - t0
        for seed in SEEDS:
            t1 = time.time()
            r = score(truth, labelled, slices, nq.kmeans(x, K, seed, n_init=3))
            rec = {"method": f"features {spec}", "seed": seed, **r, "prep_s": prep_s, "km_s": time.time() - t1}
            out.write(json.dumps(rec) + "\n"); out.flush()
            print(rec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
