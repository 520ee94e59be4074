"""Child process of test_parallel.py: osmFISH niches on 4 simulated devices vs one device.

Needs XLA_FLAGS=--xla_force_host_platform_device_count=4. The same seeds, batches and
per-batch randomness on both sides; only the step grouping differs (4 batches per step
with averaged gradients vs one batch per step). Prints one JSON line.
"""
import json
import sys

import jax
import numpy as np
from sklearn.metrics import adjusted_rand_score

import scniche_jax as sj


def prepared_osmfish():
    adata = sj.datasets.osmfish()
    adata.X = np.log1p(adata.X / adata.X.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
    sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=20, verbose=False)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
    return adata


def niche_ari(adata, seed, devices):
    a = adata.copy()
    sj.fit(a, epochs=100, seed=seed, batch_num=4, devices=devices, progress=False)
    sj.tl.clustering(a, 11)
    return adjusted_rand_score(a.obs["Niche"], a.obs["scNiche"])


def main(seeds):
    assert len(jax.devices()) == 4
    adata = prepared_osmfish()
    single = [niche_ari(adata, s, None) for s in seeds]
    parallel = [niche_ari(adata, s, jax.devices()) for s in seeds]
    print(json.dumps({"seeds": seeds, "single": single, "parallel": parallel}))


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2, 3, 4])
