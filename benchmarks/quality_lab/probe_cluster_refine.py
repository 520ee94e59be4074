"""Exp 11: clustering the improved embedding differently (one fit per set and seed, many clusterings).

For each set and seed: ``sj.fit(variant="improved")`` once (embedding cached in CACHE), then
each clustering of ``obsm['X_scniche']``:

- ``km``: ``sj.tl.clustering`` (KMeans, seed 123, n_init 10), what the harness scores today;
- ``km+vote{k}x{n}``: then ``n`` passes of a majority vote over each cell's ``k`` nearest
  spatial cells (itself included, within its slice);
- ``gmm-{cov}``: a Gaussian mixture (K components, seed 123, KMeans init);
- ``km-pca{d}``: KMeans on the top ``d`` principal components.

Scores: ``nq.score_run`` (ARI over labelled cells, slice mean).
Usage: python probe_cluster_refine.py OUT.jsonl SET SEED [SEED...]
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import niche_quality as nq  # noqa: E402

CACHE = Path("/tmp/exp11")


def spatial_vote(labels, coords, groups, k, steps):
    from scniche_jax import improved as imp
    op = imp.spatial_mean_operator(coords, groups, k)
    n_lab = labels.max() + 1
    for _ in range(steps):
        onehot = np.zeros((labels.size, n_lab))
        onehot[np.arange(labels.size), labels] = 1
        votes = op @ onehot
        # ties keep the cell's own label
        best = votes.max(1)
        keep = votes[np.arange(labels.size), labels] >= best - 1e-12
        labels = np.where(keep, labels, votes.argmax(1))
    return labels


def main(out_path, name, seeds):
    import scniche_jax as sj
    from scniche_jax import improved as imp
    CACHE.mkdir(exist_ok=True)
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    groups = imp.slice_groups(d.adata.n_obs, None if d.sample_key is None else d.adata.obs[d.sample_key])
    coords = np.asarray(d.adata.obsm["spatial"])
    out = open(out_path, "a")
    for seed in seeds:
        zpath = CACHE / f"z_{name}_{seed}.npy"
        if zpath.exists():
            z = np.load(zpath)
            fit_s = float("nan")
        else:
            a = d.adata.copy()
            t0 = time.time()
            sj.fit(a, variant="improved", epochs=100, seed=seed, progress=False,
                   batch_num="auto" if a.n_obs > 20000 else None)
            fit_s = time.time() - t0
            z = np.asarray(a.obsm["X_scniche"], np.float64)
            np.save(zpath, z)
        a = d.adata.copy()
        a.obsm["X_scniche"] = z.astype(np.float32)
        sj.tl.clustering(a, n_niches=d.n_labels)
        base = a.obs["scNiche"].cat.codes.to_numpy()
        cands = {"km": base}
        for k in (10, 20, 30, 50):
            for steps in (1, 2, 5):
                cands[f"km+vote{k}x{steps}"] = spatial_vote(base, coords, groups, k, steps)
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture
        for cov in ("diag", "full"):
            try:
                cands[f"gmm-{cov}"] = GaussianMixture(d.n_labels, covariance_type=cov, random_state=123,
                                                      n_init=3).fit_predict(z)
            except Exception as err:  # noqa: BLE001
                print("gmm", cov, err)
        for dim in (10, 20):
            if dim < z.shape[1]:
                cands[f"km-pca{dim}"] = nq.kmeans(PCA(dim, random_state=0).fit_transform(z), d.n_labels, 123)
        for tag, lab in cands.items():
            sc = nq.score_run(d.truth, d.labelled, d.slices, np.asarray(lab).astype(str))
            rec = {"set": name, "seed": seed, "tag": tag, "ari": sc["all"]["ari"],
                   "ari_slice": sc["slice_mean"]["ari"],
                   "nmi": sc["all"]["nmi"], "f1": sc["all"]["f1"], "fit_s": fit_s}
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(name, seed, tag, round(rec["ari"], 3), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
