"""Exp 21: the radius composition block (Exp 20) and pooled per-column variances (Exp 19) together.

Cached Exp 16 readouts; the package's ``radius_composition`` beside the k-nearest block at
weight W (E21_WEIGHTS), smoothing over 10 cells, KMeans, then either the adopted prior
(``potts_refine``, β 1.5) or Exp 19's ICM with one variance per column pooled over niches
(``shared_diag``, floor 0.1, β in E21_BETAS). Usage: python probe_exp21.py OUT.jsonl SET SEED...
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import cached_readout_set, write_scores  # noqa: E402
import probe_exp19 as e19  # noqa: E402
from probe_exp20 import block  # noqa: E402

WEIGHTS = tuple(float(w) for w in os.environ.get("E21_WEIGHTS", "0,3,4").split(","))
BETAS = tuple(float(b) for b in os.environ.get("E21_BETAS", "1.5,2").split(","))


def main(out_path, name, seeds):
    from scniche_jax import clustering as cl
    e19.MODE = "shared_diag"
    ctx = cached_readout_set(name)
    d, smooth, shares = ctx.d, ctx.smooth, ctx.shares
    out = open(out_path, "a")
    for seed in seeds:
        emb, comp, expr = ctx.blocks(seed)
        for w in WEIGHTS:
            parts = [emb, comp] + ([block(ctx.radius, w)] if w else []) + [expr]
            x = np.asarray(smooth @ np.hstack(parts), np.float32)
            km = cl.kmeans_labels(x, d.n_labels, 123, 10)
            write_scores(out, d, seed, f"potts-w{w:g}-b1.5", cl.potts_refine(x, km, shares, 1.5)[0])
            for beta in BETAS:
                labels = e19.icm_diag(np.asarray(x, np.float64), km.copy(), shares, beta, 0.1)
                write_scores(out, d, seed, f"shared_diag-w{w:g}-b{beta:g}", labels)
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
