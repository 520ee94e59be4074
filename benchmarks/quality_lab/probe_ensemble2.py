"""Exp 15: two models per run (seeds s and s + 1000), embeddings side by side in the readout.

Fits ``variant="improved"`` with readout features and smoothing off (obsm = the embedding z-scored
per slice) for each seed, caches it, then: single = readout(z_s) as the variant does; pair =
[z_s, z_s+1000] each at 1/√2 (the embeddings' total share unchanged) ⊕ 4·composition ⊕
4·X_data_nbr, smoothed 1 × 30, ``tl.clustering``. Usage: python probe_ensemble2.py OUT.jsonl SET SEED...
"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import niche_quality as nq  # noqa: E402

CACHE = Path("/tmp/exp15")


def main(out_path, name, seeds):
    import scniche_jax as sj
    from scniche_jax import improved as imp
    CACHE.mkdir(exist_ok=True)
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    o = sj.ImprovedOptions()
    views = imp.improved_views(d.adata, o)
    _, sk, spk = imp.data_keys(d.adata, o)
    groups = imp.slice_groups(d.adata.n_obs, None if sk is None else d.adata.obs[sk])

    def z_of(seed):
        p = CACHE / f"{name}_{seed}.npy"
        if not p.exists():
            a = d.adata.copy()
            sj.fit(a, variant="improved", epochs=100, seed=seed, progress=False,
                   improved_options=sj.ImprovedOptions(concat_composition=0.0, concat_expression=0.0, smooth_steps=0))
            np.save(p, np.asarray(a.obsm["X_scniche"], np.float64))
        return np.load(p)

    def unit(x, g=groups):
        x = imp.standardise_per_slice(x, g)
        return x / np.sqrt(x.shape[1])

    one = imp.slice_groups(d.adata.n_obs)
    feats = [o.concat_composition * unit(views["X_ms_comp"], one), o.concat_expression * unit(views["X_data_nbr_std"], one)]
    out = open(out_path, "a")
    for seed in seeds:
        zs = [z_of(seed), z_of(seed + 1000)]
        for tag, parts in (("single", [unit(zs[0])]), ("pair", [unit(z) / np.sqrt(2) for z in zs])):
            rep = np.hstack(parts + feats).astype(np.float32)
            b = d.adata.copy()
            b.obsm["X_ro"] = imp.smooth_embedding(rep, b.obsm[spk], groups, o.smooth_k, o.smooth_steps)
            sj.tl.clustering(b, n_niches=d.n_labels, use_rep="X_ro")
            sc = nq.score_run(d.truth, d.labelled, d.slices, b.obs["scNiche"].astype(str).to_numpy())
            rec = {"set": name, "seed": seed, "tag": tag, "ari": sc["all"]["ari"], "ari_slice": sc["slice_mean"]["ari"]}
            out.write(json.dumps(rec) + "\n"); out.flush(); print(rec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
