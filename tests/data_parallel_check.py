"""Child process of test_parallel.py: needs XLA_FLAGS=--xla_force_host_platform_device_count=4.

Prints one JSON line with what it measured; the test asserts on it.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from conftest import synthetic_views  # noqa: E402

from scniche_jax.batching import reference_batch_indices  # noqa: E402
from scniche_jax.model import read_views  # noqa: E402
from scniche_jax.networks import GraphFusionNetwork  # noqa: E402
from scniche_jax.parallel import (data_mesh, parallel_embed_batches, parallel_train_epoch, place_batches,  # noqa: E402
                                  replicate)
from scniche_jax.pipeline import batch_at, build_host_batches  # noqa: E402
from scniche_jax.step import (StepSettings, apply_gradients, batch_gradients, embed_batches, init_state,  # noqa: E402
                              train_epoch)


def documented_epoch(state, host, key, settings, n_devices):
    """The module docstring's semantics, one device: mean of D batch gradients, one Adam step."""
    n = host.mik.shape[0]
    keys = jax.random.split(key, n)
    losses = []
    for step in range(n // n_devices):
        grads = []
        for i in range(step * n_devices, (step + 1) * n_devices):
            g, loss = jax.jit(batch_gradients, static_argnames="settings")(state, batch_at(host, i), keys[i], settings)
            grads.append(g)
            losses.append(float(loss.total))
        mean = jax.tree_util.tree_map(lambda *g: sum(g) / n_devices, *grads)
        state = apply_gradients(state, mean)
    return state, np.asarray(losses)


def max_rel(a, b):
    leaves = zip(jax.tree_util.tree_leaves(jax.device_get(a)), jax.tree_util.tree_leaves(jax.device_get(b)))
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max() / (np.abs(np.asarray(y)).max() + 1e-12))
               for x, y in leaves)


def main():
    devices = jax.devices()
    assert len(devices) == 4, devices
    adata = synthetic_views(800, n_niches=4, n_cell_types=6, n_genes=20, seed=0, n_neighbors=10, n_comps=8)
    views = ("X_cn_norm", "X_data", "X_data_nbr")
    features = read_views(adata, views)
    batches = reference_batch_indices(adata.n_obs, 8)
    size = batches[0].size
    settings = StepSettings(n_views=len(views), precision="fp32")
    gfn = GraphFusionNetwork(size).init(jax.random.key(1), jnp.zeros((1, size)))["params"]
    host = build_host_batches(features, batches, gfn, 10, 5, "gpu", 1024)
    state0 = init_state(jax.random.key(0), batch_at(host, 0), settings, 0.01)
    out = {}

    mesh = data_mesh(devices)
    sharded = place_batches(host, mesh)
    out["batch_shards"] = sorted({tuple(s.data.shape) for s in sharded.mik.addressable_shards})
    out["batch_devices"] = len(sharded.mik.sharding.device_set)
    state, expected = replicate(state0, mesh), state0
    losses, expected_losses = [], []
    for epoch in range(2):
        key = jax.random.fold_in(jax.random.key(7), epoch)
        state, loss = parallel_train_epoch(state, sharded, key, settings, mesh)
        expected, exp_loss = documented_epoch(expected, host, key, settings, 4)
        losses.append(np.asarray(loss.total))
        expected_losses.append(exp_loss)
    out["params_replicated"] = all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
                                   for leaf in jax.tree_util.tree_leaves(state.params))
    out["params_rel_error"] = max_rel(state.params, expected.params)
    out["adam_rel_error"] = max_rel(state.opt_state, expected.opt_state)
    out["loss_rel_error"] = float(np.max(np.abs(np.concatenate(losses) - np.concatenate(expected_losses))
                                         / np.abs(np.concatenate(expected_losses))))
    out["params_moved"] = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(
        jax.tree_util.tree_leaves(jax.device_get(state.params)), jax.tree_util.tree_leaves(state0.params)))
    z_parallel = parallel_embed_batches(state.params, sharded, None, settings, mesh)
    z_single = embed_batches(jax.device_get(state.params), jax.device_put(host, devices[0]), None, settings)
    out["embed_rel_error"] = max_rel(z_parallel, z_single)

    # One device in a mesh is the plain epoch.
    one = data_mesh(devices[:1])
    key = jax.random.key(3)
    s_mesh, l_mesh = parallel_train_epoch(replicate(state0, one), place_batches(host, one), key, settings, one)
    s_plain, l_plain = train_epoch(jax.device_put(state0, devices[0]), jax.device_put(host, devices[0]), key, settings)
    out["one_device_rel_error"] = max(max_rel(s_mesh.params, s_plain.params), max_rel(l_mesh, l_plain))

    import scniche_jax as sj
    messages = []
    for batch_num in (6, None):
        before = set(adata.obsm)
        try:
            sj.fit(adata, n_neighbors=10, batch_num=batch_num, devices=devices, progress=False)
        except ValueError as err:
            messages.append(str(err))
        assert set(adata.obsm) == before
    out["errors"] = messages
    print(json.dumps(out))


if __name__ == "__main__":
    main()
