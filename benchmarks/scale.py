"""Preprocessing, graph building and training at scale: seconds and peak RSS per phase.

Synthetic niche cells (``sj.datasets.synthetic``, 12 cell types, 50 genes) in batch mode with
about ``--cells-per-batch`` cells per batch (the reference's batch split), default views and
sizes. Phases: preprocessing (``pp.cal_spatial_neighbors`` + ``pp.cal_spatial_exp`` with PCA
20), graph building (per-batch kNN graphs in a thread pool, fusion network and consensus
graph once per batch, stacked host batches), placing them on the device, ``--warmup`` epochs
(compilation), ``--epochs`` timed epochs and the final embedding. Peak RSS is the process's
high-water mark after each phase (``ru_maxrss``), so it includes everything before it.
Prints progress to stderr and one JSON line to stdout.

    python benchmarks/scale.py --cells 100000
    python benchmarks/scale.py --cells 10000000 --cells-per-batch 5000 --fast-data --out scale_10m.json
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/scale.py --cells 1000000

On a GPU the same script runs the device side there (``--cells-per-batch 5000``).
``--fast-data`` skips the slow CPU phases at 10M cells: the three view matrices are drawn
directly from the simulator's niches and cell types (the same widths and structure as the
preprocessed views) instead of running preprocessing. Every phase prints as it ends, so a run
cut short by a timeout still shows how far it got; ``--out`` writes the JSON after every phase.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def fast_views(n_cells: int, seed: int = 0, n_niches: int = 8, n_cell_types: int = 12, n_comps: int = 20):
    """The three default views drawn directly: neighbourhood cell-type mix, PCA-like expression
    and neighbourhood expression, each following the cell's niche and type (float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    niche = rng.integers(0, n_niches, n_cells)
    mixes = rng.dirichlet(np.full(n_cell_types, 0.3), size=n_niches).astype(np.float32)
    cdf = np.cumsum(mixes, axis=1)
    cell_type = np.minimum((rng.random(n_cells, dtype=np.float32)[:, None] > cdf[niche]).sum(axis=1),
                           n_cell_types - 1)
    type_means = rng.normal(0, 3, (n_cell_types, n_comps)).astype(np.float32)
    composition = mixes[niche] + rng.normal(0, 0.05, (n_cells, n_cell_types)).astype(np.float32)
    composition = np.clip(composition, 0, None)
    composition /= composition.sum(axis=1, keepdims=True) + 1e-6
    expression = type_means[cell_type] + rng.standard_normal((n_cells, n_comps), dtype=np.float32)
    neighbourhood = (mixes @ type_means)[niche] + 0.3 * rng.standard_normal((n_cells, n_comps), dtype=np.float32)
    return [composition.astype(np.float32), expression, neighbourhood.astype(np.float32)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--cells-per-batch", type=int, default=None,
                        help="default: batch_num='auto' (1,000 on a CPU, 5,000 on a GPU)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs")
    parser.add_argument("--warmup", type=int, default=1, help="epochs before timing (compilation)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--skip-training", action="store_true", help="stop after graph building")
    parser.add_argument("--fast-data", action="store_true",
                        help="draw the view matrices directly (no preprocessing); for 10M cells")
    parser.add_argument("--out", default=None, help="also write the JSON here (rewritten after every phase)")
    args = parser.parse_args()

    import jax
    import numpy as np

    import scniche_jax as sj
    from scniche_jax.batching import auto_batch_num, cells_from_batches, reference_batch_indices
    from scniche_jax.config import BatchConfig, ModelConfig
    from scniche_jax.memory import BatchShapes, estimate
    from scniche_jax.model import read_views
    from scniche_jax.networks import GraphFusionNetwork
    from scniche_jax.pipeline import batch_at, build_host_batches
    from scniche_jax.step import StepSettings, embed_batches, init_state, train_epoch

    def say(message: str) -> None:
        print(f"[{args.cells:,} cells] {message}", file=sys.stderr, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(out, f)

    out = {"cells": args.cells, "device": str(jax.devices()[0]), "jax": jax.__version__,
           "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc", "cpu_count": os.cpu_count(),
           "precision": args.precision}
    views = ("X_cn_norm", "X_data", "X_data_nbr")
    if args.fast_data:
        t0 = time.perf_counter()
        features = fast_views(args.cells, seed=0)
        out["synthetic_s"] = time.perf_counter() - t0
        out["preprocess_s"] = 0.0
        out["data"] = "fast: view matrices drawn directly"
        say(f"synthetic views {out['synthetic_s']:.1f} s (no preprocessing), peak RSS {peak_rss_gb():.2f} GB")
    else:
        t0 = time.perf_counter()
        adata = sj.datasets.synthetic(args.cells, n_niches=8, n_cell_types=12, n_genes=50, seed=0)
        out["synthetic_s"] = time.perf_counter() - t0
        say(f"synthetic data {out['synthetic_s']:.1f} s, peak RSS {peak_rss_gb():.2f} GB")

        t0 = time.perf_counter()
        sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=20, verbose=False)
        sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
        out["preprocess_s"] = time.perf_counter() - t0
        out["peak_rss_after_preprocess_gb"] = peak_rss_gb()
        say(f"preprocessing {out['preprocess_s']:.1f} s, peak RSS {out['peak_rss_after_preprocess_gb']:.2f} GB")
        features = read_views(adata, views)
        del adata  # the training side works from the view features alone
    platform = jax.devices()[0].platform
    batch_num = auto_batch_num(args.cells, platform, args.cells_per_batch) or 1
    batches = reference_batch_indices(args.cells, batch_num)
    size = batches[0].size
    out.update(batches=batch_num, batch_size=size)
    model_config, batch_config = ModelConfig(views=views), BatchConfig(precision=args.precision)
    input_sizes = tuple(f.shape[1] for f in features)
    gfn = GraphFusionNetwork(size).init(jax.random.key(1), jax.numpy.zeros((1, size)))["params"]
    t0 = time.perf_counter()
    host = build_host_batches(features, batches, gfn, model_config.n_neighbors, model_config.mik, "gpu",
                              batch_config.block_size, progress=True)
    out["graphs_s"] = time.perf_counter() - t0
    out["peak_rss_after_graphs_gb"] = peak_rss_gb()
    out["preprocess_and_graphs_s"] = out["preprocess_s"] + out["graphs_s"]
    say(f"graphs and consensus {out['graphs_s']:.1f} s, peak RSS {out['peak_rss_after_graphs_gb']:.2f} GB")

    if args.skip_training:
        out["host_batches_gb"] = sum(x.nbytes for x in jax.tree_util.tree_leaves(host)) / 1e9
        say("done (--skip-training)")
        print(json.dumps(out))
        return
    shapes = BatchShapes.of(batch_at(host, 0))
    predicted = estimate(args.cells, batch_num, input_sizes, model_config, batch_config, shapes=shapes)
    out["estimate_device_gb"], out["estimate_host_gb"] = predicted.device / 1e9, predicted.host / 1e9
    out["host_batches_gb"] = sum(x.nbytes for x in jax.tree_util.tree_leaves(host)) / 1e9

    settings = StepSettings.of(model_config, batch_config)
    state = init_state(jax.random.key(0), batch_at(host, 0), settings, 0.01)
    t0 = time.perf_counter()
    graph_batches = jax.device_put(host)
    jax.block_until_ready(graph_batches)
    del host
    out["device_put_s"] = time.perf_counter() - t0
    say(f"device transfer {out['device_put_s']:.1f} s ({out['host_batches_gb']:.2f} GB)")
    key = jax.random.key(2)
    t0 = time.perf_counter()
    for epoch in range(args.warmup):
        state, losses = train_epoch(state, graph_batches, jax.random.fold_in(key, epoch), settings)
        float(losses.total.sum())
    out["warmup_s"] = time.perf_counter() - t0
    say(f"warm-up {out['warmup_s']:.1f} s")
    times = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        state, losses = train_epoch(state, graph_batches, jax.random.fold_in(key, args.warmup + epoch), settings)
        float(losses.total.sum())  # the host loop's one read per epoch
        times.append(time.perf_counter() - t0)
        say(f"epoch {epoch + 1}: {times[-1]:.2f} s")
    out["epoch_s_median"], out["epoch_s_all"] = float(np.median(times)), times
    t0 = time.perf_counter()
    z = cells_from_batches(np.asarray(embed_batches(state.params, graph_batches, None, settings)), batches, args.cells)
    out["embedding_s"] = time.perf_counter() - t0
    say(f"embedding {out['embedding_s']:.1f} s")
    assert z.shape == (args.cells, model_config.latent_dim) and np.isfinite(z).all()
    out["peak_rss_gb"] = peak_rss_gb()
    stats = jax.devices()[0].memory_stats() or {}
    out["device_peak_gb"] = stats.get("peak_bytes_in_use", 0) / 1e9 or None
    say(f"epoch {out['epoch_s_median']:.2f} s (median), peak RSS {out['peak_rss_gb']:.2f} GB, "
        f"device peak {out['device_peak_gb'] or 0:.1f} GB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
