"""Child of test_multiprocess.py: data-parallel training on two devices, in one or two processes.

    python multiprocess_child.py single OUT.npz               # one process, two host devices
    python multiprocess_child.py multi OUT.npz PORT PROCESS   # one of two processes, one device each

Each run trains the same batches for a few epochs through ``Placement`` and writes parameters,
losses and the embedding to OUT.npz (process 0 only in ``multi``).
"""
import os
import sys

mode, out = sys.argv[1], sys.argv[2]
os.environ["JAX_PLATFORMS"] = "cpu"
if mode == "single":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
else:
    os.environ.pop("XLA_FLAGS", None)

import jax  # noqa: E402

if mode == "multi":
    port, process_id = int(sys.argv[3]), int(sys.argv[4])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=60)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from scniche_jax.batching import reference_batch_indices  # noqa: E402
from scniche_jax.networks import GraphFusionNetwork  # noqa: E402
from scniche_jax.parallel import Placement  # noqa: E402
from scniche_jax.pipeline import batch_at, build_host_batches  # noqa: E402
from scniche_jax.step import StepSettings, init_state  # noqa: E402


def main():
    devices = jax.devices()
    assert len(devices) == 2, devices
    rng = np.random.default_rng(0)
    n_cells = 240
    features = [rng.normal(size=(n_cells, width)).astype(np.float32) for width in (6, 8, 8)]
    batches = reference_batch_indices(n_cells, 4)
    size = batches[0].size
    settings = StepSettings(n_views=3, precision="fp32")
    gfn = GraphFusionNetwork(size).init(jax.random.key(1), jnp.zeros((1, size)))["params"]
    placement = Placement.of(devices)
    assert placement.multi_process == (mode == "multi")
    mine = placement.local_batches(len(batches))
    # Each process builds only the batches of its own devices.
    host = build_host_batches(features, [batches[i] for i in mine], gfn, 10, 5, "gpu", 1024)
    device_batches = placement.put_batches(host, n_batches=len(batches))
    init = jax.jit(init_state, static_argnums=(2, 3))  # one compile instead of many eager ones
    state = placement.put_state(init(jax.random.key(0), jax.tree_util.tree_map(jnp.asarray, batch_at(host, 0)),
                                     settings, 0.01))
    losses = []
    for epoch in range(3):  # 3 epochs x 2 steps
        state, loss = placement.train_epoch(state, device_batches, jax.random.fold_in(jax.random.key(7), epoch),
                                            settings)
        losses.append(np.asarray(loss.total))
    z = np.asarray(placement.embed(state.params, device_batches, None, settings))
    params = placement.fetch(state.params)
    if jax.process_index() == 0:
        leaves = {jax.tree_util.keystr(path): np.asarray(leaf)
                  for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
        np.savez(out, losses=np.stack(losses), z=z, local_batches=mine, **leaves)
    print("done", jax.process_index(), flush=True)


if __name__ == "__main__":
    main()
