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
import niche_quality as nq  # noqa: E402
from lab import adopted_operators, write_scores  # noqa: E402
from probe_exp20 import block, CACHE, SCALES  # noqa: E402

WEIGHTS = tuple(float(w) for w in os.environ.get("E23_WEIGHTS", "0,1,2,3").split(","))


def main(out_path, name, seeds):
    import scniche_jax as sj
    from scniche_jax import clustering as cl
    from scniche_jax import improved as imp
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups, coords, smooth, shares = adopted_operators(d)
    order = d.adata.uns.get("CN_order")
    views = imp.improved_views(d.adata.copy(), sj.ImprovedOptions())
    n_comp = views["X_ms_comp"].shape[1]
    radius = imp.radius_composition(coords, d.adata.obs[d.celltype_key], groups, SCALES, order)
    own = imp.radius_composition(coords, d.adata.obs[d.celltype_key], groups, (1,), order)  # radius 0: itself
    own = (own - own.mean(0)) / np.sqrt(own.var(0).sum())
    out = open(out_path, "a")
    for seed in seeds:
        raw = np.load(CACHE / f"raw_{name}_{seed}.npy")
        n_emb = raw.shape[1] - n_comp - views["X_data_nbr_std"].shape[1]
        base = [raw[:, :n_emb + n_comp], block(radius, 3.0), raw[:, n_emb + n_comp:]]
        for w in WEIGHTS:
            x = np.asarray(smooth @ np.hstack(base + ([own * w] if w else [])), np.float32)
            km = cl.kmeans_labels(x, d.n_labels, 123, 10)
            write_scores(out, d, seed, f"own-w{w:g}", cl.potts_refine(x, km, shares, 1.5)[0])
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
