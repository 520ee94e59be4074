"""Paired time per epoch (the jitted training epoch only), reference vs improved.

Builds each variant's graph batches once, compiles, then times blocks of epochs
alternately (so both see the same machine load) and reports the minimum and median.
"""
import sys
import time

import jax
import numpy as np

import lab
from scniche_jax import improved as imp
from scniche_jax.config import ScnicheConfig
from scniche_jax.inputs import build_host_batches, check_settings, step_settings, view_features
from scniche_jax.model import GraphFusionNetwork
from scniche_jax.train import batch_at, init_state, train_epoch
from quality_lab.variants import patched_consensus

name = sys.argv[1] if len(sys.argv) > 1 else "osmfish_cortex"
d = lab.get_set(name)
opts = imp.ImprovedOptions()
a = d.adata.copy()
views = imp.improved_views(a, d.celltype_key, d.sample_key, opts)
for k, v in views.items():
    a.obsm[k] = v


def setup(keys, improved):
    feats = view_features(a, keys)
    batches, size = check_settings(a.n_obs, keys, (10,), (32, 10), 20, 5, None, 100, 0.01, "bf16", 0.1, "gpu", 1024)
    cfg = ScnicheConfig(views=tuple(keys), input_sizes=tuple(f.shape[1] for f in feats), batch_size=size)
    gfn = GraphFusionNetwork(size).init(jax.random.key(0), jax.numpy.zeros((1, size)))["params"]
    if improved:
        with patched_consensus(opts):
            host = build_host_batches(feats, batches, gfn, cfg)
    else:
        host = build_host_batches(feats, batches, gfn, cfg)
    settings = step_settings(cfg)
    state = init_state(jax.random.key(1), batch_at(host, 0), settings)
    gb = jax.device_put(host)
    state, _ = train_epoch(state, gb, jax.random.key(2), settings)  # compile
    jax.block_until_ready(state)
    return [state, gb, settings]


runs = {"reference": setup(("X_cn_norm", "X_data", "X_data_nbr"), False), "improved": setup(tuple(views), True)}
times = {k: [] for k in runs}
for rep in range(6):
    for k, (state, gb, settings) in runs.items():
        t0 = time.perf_counter()
        for e in range(5):
            state, _ = train_epoch(state, gb, jax.random.key(10 + e), settings)
        jax.block_until_ready(state)
        times[k].append((time.perf_counter() - t0) / 5)
        runs[k][0] = state
for k, v in times.items():
    print(f"{name} {k}: min {min(v):.4f} s/epoch, median {np.median(v):.4f}")
print(f"{name} ratio improved/reference: min {min(times['improved']) / min(times['reference']):.2f}, "
      f"median {np.median(times['improved']) / np.median(times['reference']):.2f}")
