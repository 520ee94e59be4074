"""Seconds per epoch and peak RSS of scniche-jax training on synthetic niche data.

Each configuration runs in its own subprocess (so peak RSS is its own): preprocessing,
graphs and consensus, then ``--warmup`` epochs (compilation) and ``--epochs`` timed epochs.
Prints one JSON line per configuration and a table.

    python benchmarks/epoch_time.py                       # the default grid
    python benchmarks/epoch_time.py --only 4000:full:bf16

The allocator matters on CPU (glibc malloc page-faults large XLA buffers): the script
reports ``LD_PRELOAD``; run it once plainly and once with
``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DEFAULT_GRID = ["1000:full:bf16", "1000:full:fp32", "2000:full:bf16", "2000:full:fp32",
                "4000:full:bf16", "4000:full:fp32", "16000:16:bf16", "16000:16:fp32"]
REFERENCE = {  # seconds per epoch and peak RSS (GB) of the PyTorch reference on the same 2-core CPU
    "1000:full": (0.079, 0.88), "2000:full": (0.358, 1.58), "4000:full": (2.656, 2.29), "16000:16": (1.351, 0.98)}


def run_one(spec: str, epochs: int, warmup: int) -> dict:
    import jax
    import numpy as np

    import scniche_jax as sj
    from scniche_jax.batching import reference_batch_indices
    from scniche_jax.model import read_views
    from scniche_jax.networks import GraphFusionNetwork
    from scniche_jax.pipeline import batch_at, build_host_batches
    from scniche_jax.step import StepSettings, init_state, loss_block_size, train_epoch

    n_cells, mode, precision = spec.split(":")
    n_cells = int(n_cells)
    batch_num = None if mode == "full" else int(mode)
    adata = sj.datasets.synthetic(n_cells, n_niches=8, n_cell_types=12, n_genes=50, seed=0)
    t0 = time.perf_counter()
    sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=20, verbose=False)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
    t_pp = time.perf_counter() - t0
    print(f"[{spec}] preprocessing {t_pp:.1f} s", file=sys.stderr, flush=True)

    views = ("X_cn_norm", "X_data", "X_data_nbr")
    features = read_views(adata, views)
    batches = [np.arange(n_cells)] if batch_num is None else reference_batch_indices(n_cells, batch_num)
    size = batches[0].size
    # The block fit uses on this platform (StepSettings.of): cache-sized on a CPU.
    settings = StepSettings(n_views=len(views), precision=precision,
                            block_size=loss_block_size(1024, size, jax.devices()[0].platform))
    key = jax.random.key(0)
    gfn = GraphFusionNetwork(size).init(key, jax.numpy.zeros((1, size)))["params"]
    t0 = time.perf_counter()
    graph_batches = jax.device_put(build_host_batches(features, batches, gfn, 20, 5, "gpu", 1024))
    jax.block_until_ready(graph_batches)
    t_graphs = time.perf_counter() - t0
    print(f"[{spec}] graphs and consensus {t_graphs:.1f} s", file=sys.stderr, flush=True)
    state = init_state(key, batch_at(graph_batches, 0), settings, 0.01)
    t0 = time.perf_counter()
    for e in range(warmup):
        state, losses = train_epoch(state, graph_batches, jax.random.fold_in(key, e), settings)
        float(losses.total.sum())
    t_compile = time.perf_counter() - t0
    print(f"[{spec}] warm-up {t_compile:.1f} s", file=sys.stderr, flush=True)
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        state, losses = train_epoch(state, graph_batches, jax.random.fold_in(key, warmup + e), settings)
        float(losses.total.sum())  # the host loop's one read per epoch
        times.append(time.perf_counter() - t0)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    stats = jax.devices()[0].memory_stats() or {}
    device_peak_gb = stats.get("peak_bytes_in_use", 0) / 1e9 or None
    return {"config": spec, "cells": n_cells, "batches": batch_num or 1, "batch_size": size,
            "precision": precision, "epoch_s_median": float(np.median(times)), "epoch_s_min": float(np.min(times)), "epoch_s_total": float(np.sum(times)),
            "preprocess_s": t_pp, "graphs_and_consensus_s": t_graphs, "warmup_s": t_compile, "peak_rss_gb": peak_gb, "device_peak_gb": device_peak_gb,
            "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc", "device": str(jax.devices()[0]),
            "jax": jax.__version__}


def run_fit(spec: str, few: int = 5, many: int = 15, repeats: int = 3) -> dict:
    """Seconds per epoch as a user waits for them: ``(fit(many) - fit(few)) / (many - few)``.

    Run by ``parity/bench.py`` next to the reference timed the same way.

    ``sj.fit`` with its defaults (LR plateau, history, best-epoch restore, embedding) after one
    warm-up fit (compilation); each count is timed ``repeats`` times, alternating, medians used.
    Graph building and the final embedding are in both fits and cancel.
    """
    import numpy as np

    import scniche_jax as sj

    n_cells, mode, precision = spec.split(":")
    n_cells = int(n_cells)
    batch_num = None if mode == "full" else int(mode)
    adata = sj.datasets.synthetic(n_cells, n_niches=8, n_cell_types=12, n_genes=50, seed=0)
    sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=20, verbose=False)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)

    def timed_fit(n_epochs: int) -> float:
        start = time.perf_counter()
        sj.fit(adata, epochs=n_epochs, batch_num=batch_num, precision=precision, progress=False)
        return time.perf_counter() - start

    t_warmup = timed_fit(2)
    times = {few: [], many: []}
    for _ in range(repeats):
        for n_epochs in (few, many):
            times[n_epochs].append(timed_fit(n_epochs))
    fit_few, fit_many = float(np.median(times[few])), float(np.median(times[many]))
    return {"config": spec, "fit_epoch_s": (fit_many - fit_few) / (many - few), "fit_s_by_epochs":
            {str(few): times[few], str(many): times[many]}, "warmup_fit_s": t_warmup,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="configs CELLS:full|BATCHES:bf16|fp32")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-fit", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fit-epochs", type=int, nargs=2, default=(5, 15), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.epochs, args.warmup)))
        return
    if args.child_fit:
        few, many = args.fit_epochs
        print(json.dumps(run_fit(args.child_fit, few, many, args.repeats)))
        return
    rows = []
    for spec in args.only or DEFAULT_GRID:
        out = subprocess.run([sys.executable, __file__, "--child", spec, "--epochs", str(args.epochs),
                              "--warmup", str(args.warmup)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        ref = REFERENCE.get(":".join(spec.split(":")[:2]))
        if ref:
            row["reference_epoch_s"], row["reference_peak_rss_gb"] = ref
            row["speedup"] = ref[0] / row["epoch_s_median"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{'config':<16}{'epoch s':>10}{'ref s':>8}{'speedup':>9}{'RSS GB':>8}{'ref GB':>8}"
          f"{'graphs s':>10}  allocator")
    for r in rows:
        print(f"{r['config']:<16}{r['epoch_s_median']:>10.4f}{r.get('reference_epoch_s', float('nan')):>8.3f}"
              f"{r.get('speedup', float('nan')):>9.1f}{r['peak_rss_gb']:>8.2f}"
              f"{r.get('reference_peak_rss_gb', float('nan')):>8.2f}{r['graphs_and_consensus_s']:>10.2f}  {r['allocator']}")


if __name__ == "__main__":
    main()
