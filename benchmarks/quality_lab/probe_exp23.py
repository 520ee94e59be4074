"""Exp 23: the cell's own type in the readout.

Layer annotations follow the excitatory types (L2/3 IT, L4, L5, L6), so at a border a neuron's
own type says which side it is on, while its 20-100-cell composition is mixed. Cached Exp 16
readouts with the radius block at weight 3 (the new default), plus a one-hot block of the
cell's own type (not z-scored: rare types would dominate), scaled so its total variance is w²;
smoothing over 10 cells, KMeans, prior β 1.5. Usage: python probe_exp23.py OUT.jsonl SET SEED...
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import cached_readout_set, write_scores  # noqa: E402
from probe_exp20 import block  # noqa: E402

WEIGHTS = tuple(float(w) for w in os.environ.get("E23_WEIGHTS", "0,1,2,3").split(","))


def main(out_path, name, seeds):
    from scniche_jax import clustering as cl
    from scniche_jax import improved as imp
    ctx = cached_readout_set(name)
    d, smooth, shares = ctx.d, ctx.smooth, ctx.shares
    own = imp.radius_composition(ctx.coords, d.adata.obs[d.celltype_key], ctx.groups, (1,),
                                 d.adata.uns.get("CN_order"))  # radius 0: itself
    own = (own - own.mean(0)) / np.sqrt(own.var(0).sum())
    out = open(out_path, "a")
    for seed in seeds:
        emb, comp, expr = ctx.blocks(seed)
        base = [np.hstack([emb, comp]), block(ctx.radius, 3.0), expr]
        for w in WEIGHTS:
            x = np.asarray(smooth @ np.hstack(base + ([own * w] if w else [])), np.float32)
            km = cl.kmeans_labels(x, d.n_labels, 123, 10)
            write_scores(out, d, seed, f"own-w{w:g}", cl.potts_refine(x, km, shares, 1.5)[0])
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
