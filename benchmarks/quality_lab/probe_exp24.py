"""Exp 24: the embedding's weight in the readout, with the radius composition block.

Cached Exp 16 readouts: the embedding block (unit total variance) times e, the k-nearest
composition at weight 4, the package's ``radius_composition`` at weight w, the neighbourhood
expression at 4; smoothing over 10 cells, KMeans, the prior (β 1.5, 75 neighbours).
Env E (embedding weights) and W (radius weights), comma-separated.
Usage: python probe_exp24.py OUT.jsonl SET SEED...
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import cached_readout_set, write_scores  # noqa: E402
from probe_exp20 import block  # noqa: E402

EMBEDDING = tuple(float(e) for e in os.environ.get("E", "0,0.25,0.4,0.5,0.6,0.75,1").split(","))
RADIUS = tuple(float(w) for w in os.environ.get("W", "3,4").split(","))


def main(out_path, name, seeds):
    from scniche_jax import clustering as cl
    ctx = cached_readout_set(name)
    d, smooth, shares = ctx.d, ctx.smooth, ctx.shares
    out = open(out_path, "a")
    for seed in seeds:
        emb, comp, expr = ctx.blocks(seed)
        for w in RADIUS:
            for e in EMBEDDING:
                parts = [emb * e, comp, block(ctx.radius, w), expr]
                x = np.asarray(smooth @ np.hstack(parts), np.float32)
                km = cl.kmeans_labels(x, d.n_labels, 123, 10)
                write_scores(out, d, seed, f"emb{e:g}-w{w:g}", cl.potts_refine(x, km, shares, 1.5)[0])
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
