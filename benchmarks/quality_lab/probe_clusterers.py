"""Exp 13: other clusterers on the improved readout without the model (``run_views_only``'s features).

KMeans (nq.kmeans, 3 seeds) vs Ward agglomerative, over-cluster (KMeans 3K) + Ward merge of the
centroids (weighted by size), spectral clustering on the readout's kNN graph, and the readout
without smoothing for each. Usage: python probe_clusterers.py OUT.jsonl SET
"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import niche_quality as nq  # noqa: E402


def readout(d, steps):
    import scniche_jax as sj
    from scniche_jax import improved as imp
    o = sj.ImprovedOptions()
    views = imp.improved_views(d.adata, o)
    _, sample_key, spatial_key = imp.data_keys(d.adata, o)
    groups = imp.slice_groups(d.adata.n_obs, None if sample_key is None else d.adata.obs[sample_key])
    rep = imp.readout([], [(views["X_ms_comp"], o.concat_composition), (views["X_data_nbr_std"], o.concat_expression)])
    return imp.smooth_embedding(rep, d.adata.obsm[spatial_key], groups, o.smooth_k, steps).astype(np.float64)


def over_merge(x, k, seed, factor=3):
    from sklearn.cluster import AgglomerativeClustering
    fine = nq.kmeans(x, k * factor, seed)
    cent = np.stack([x[fine == c].mean(0) for c in range(k * factor)])
    sizes = np.bincount(fine, minlength=k * factor)
    # Ward on centroids repeated by sqrt size approximates Ward on cells; use plain Ward on centroids
    rep = np.repeat(cent, np.maximum(1, sizes // 20), axis=0)
    owner = np.repeat(np.arange(k * factor), np.maximum(1, sizes // 20))
    lab = AgglomerativeClustering(k, linkage="ward").fit_predict(rep)
    coarse = np.array([np.bincount(lab[owner == c]).argmax() for c in range(k * factor)])
    return coarse[fine]


def main(out_path, name):
    from sklearn.cluster import AgglomerativeClustering, SpectralClustering
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    out = open(out_path, "a")
    for steps in (1, 0):
        x = readout(d, steps)
        cands = {}
        for seed in (0, 1, 2):
            cands[f"km s{seed}"] = nq.kmeans(x, d.n_labels, seed)
            cands[f"over3-ward s{seed}"] = over_merge(x, d.n_labels, seed)
        cands["ward"] = AgglomerativeClustering(d.n_labels, linkage="ward").fit_predict(x)
        cands["spectral"] = SpectralClustering(d.n_labels, affinity="nearest_neighbors", n_neighbors=30,
                                               random_state=0, assign_labels="cluster_qr").fit_predict(x)
        for tag, lab in cands.items():
            sc = nq.score_run(d.truth, d.labelled, d.slices, np.asarray(lab).astype(str))
            rec = {"set": name, "steps": steps, "tag": tag, "ari": sc["all"]["ari"], "ari_slice": sc["slice_mean"]["ari"]}
            out.write(json.dumps(rec) + "\n"); out.flush(); print(rec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
