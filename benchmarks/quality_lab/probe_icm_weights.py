"""Exp 16c: readout block weights under the adopted smoothing and Potts prior.

The cached pre-smoothing readout (``probe_icm.py``) is [embedding (unit total variance) ⊕
4·composition ⊕ 4·neighbourhood expression]; its blocks are rescaled here (embedding weight
``we``, composition ``wc``, expression ``wx``), smoothed over 10 cells, clustered by
``tl.clustering(spatial_prior=beta, spatial_neighbors=75)``.
Usage: [W_EMB=0,1 W_COMP=2,4,6 W_EXPR=2,4,6 W_BETAS=1.5,2] python probe_icm_weights.py OUT.jsonl SET SEED [SEED...]
"""
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import niche_quality as nq  # noqa: E402
from probe_icm import CACHE  # noqa: E402

import os  # noqa: E402


def _floats(name, default):
    return tuple(float(v) for v in os.environ.get(name, default).split(","))


EMB = _floats("W_EMB", "0,1")
COMP = _floats("W_COMP", "2,4,6")
EXPR = _floats("W_EXPR", "2,4,6")
BETAS = _floats("W_BETAS", "1.5,2")


def main(out_path, name, seeds):
    import scniche_jax as sj
    from scniche_jax import improved as imp
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups = imp.slice_groups(d.adata.n_obs, None if d.sample_key is None else d.adata.obs[d.sample_key])
    coords = np.asarray(d.adata.obsm["spatial"])
    views = imp.improved_views(d.adata.copy(), sj.ImprovedOptions())
    n_comp = views["X_ms_comp"].shape[1]
    smooth = imp.spatial_mean_operator(coords, groups, 10)
    out = open(out_path, "a")
    for seed in seeds:
        raw = np.load(CACHE / f"raw_{name}_{seed}.npy")
        n_emb = raw.shape[1] - n_comp - views["X_data_nbr_std"].shape[1]
        blocks = (raw[:, :n_emb], raw[:, n_emb:n_emb + n_comp] / 4.0, raw[:, n_emb + n_comp:] / 4.0)
        for we, wc, wx in itertools.product(EMB, COMP, EXPR):
            rep = smooth @ np.hstack([we * blocks[0], wc * blocks[1], wx * blocks[2]])
            for beta in BETAS:
                a = d.adata.copy()
                a.obsm["X_scniche"] = np.asarray(rep, np.float32)
                sj.tl.clustering(a, n_niches=d.n_labels, spatial_prior=beta, spatial_neighbors=75)
                sc = nq.score_run(d.truth, d.labelled, d.slices, a.obs["scNiche"].astype(str).to_numpy())
                rec = {"set": name, "seed": seed, "tag": f"e{we:g}-c{wc:g}-x{wx:g}-b{beta:g}",
                       "ari": sc["all"]["ari"], "ari_slice": sc["slice_mean"]["ari"]}
                out.write(json.dumps(rec) + "\n")
            out.flush()
        print(name, seed, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
