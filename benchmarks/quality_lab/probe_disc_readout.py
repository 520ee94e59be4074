"""Exp 14b: raw embeddings (frozen vs trained discriminator) under readouts with a larger embedding share.

Fits ``variant="improved"`` with the readout features and smoothing off (obsm = the embedding
z-scored per slice), then readout = z ⊕ wc·composition ⊕ we·X_data_nbr (improved.readout),
smoothed 1 × 30, ``tl.clustering``. Usage: python probe_disc_readout.py OUT.jsonl SET MODE SEED...
"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import niche_quality as nq  # noqa: E402
import probe_train_discriminator as ptd  # noqa: E402


def main(out_path, name, mode, seeds):
    if mode == "trained":
        ptd.patch()
    import scniche_jax as sj
    from scniche_jax import improved as imp
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    o = sj.ImprovedOptions()
    views = imp.improved_views(d.adata, o)
    _, sk, spk = imp.data_keys(d.adata, o)
    groups = imp.slice_groups(d.adata.n_obs, None if sk is None else d.adata.obs[sk])
    out = open(out_path, "a")
    for seed in seeds:
        a = d.adata.copy()
        sj.fit(a, variant="improved", epochs=100, seed=seed, progress=False,
               improved_options=sj.ImprovedOptions(concat_composition=0.0, concat_expression=0.0, smooth_steps=0))
        z = np.asarray(a.obsm["X_scniche"], np.float64)
        for w in (0.0, 1.0, 2.0, 4.0, 8.0):
            rep = imp.readout([z], [(views["X_ms_comp"], w), (views["X_data_nbr_std"], w)], groups)
            b = d.adata.copy()
            b.obsm["X_ro"] = imp.smooth_embedding(rep, a.obsm[spk], groups, 30, 1)
            sj.tl.clustering(b, n_niches=d.n_labels, use_rep="X_ro")
            sc = nq.score_run(d.truth, d.labelled, d.slices, b.obs["scNiche"].astype(str).to_numpy())
            rec = {"set": name, "mode": mode, "seed": seed, "w": w, "ari": sc["all"]["ari"], "ari_slice": sc["slice_mean"]["ari"]}
            out.write(json.dumps(rec) + "\n"); out.flush(); print(rec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4:]])
