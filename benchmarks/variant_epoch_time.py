"""Time per training epoch of ``variant="improved"`` against ``variant="reference"``, paired.

Trains each variant for one epoch through ``Model`` (graphs built, step compiled), then times
blocks of the compiled epoch alternately, so that both see the same machine load, and prints
the minimum and median seconds per epoch and their ratio. The views, graphs, readout and
smoothing are one-off costs, printed separately (seconds of the first ``train`` call and of
``embed``).

    python benchmarks/variant_epoch_time.py                       # osmFISH, full graph
    python benchmarks/variant_epoch_time.py --set baristaseq_visp_3slices --blocks 6
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> dict:
    import niche_quality as nq
    import scniche_jax as sj

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="osmfish_cortex")
    parser.add_argument("--max-cells", type=int, default=None)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--epochs-per-block", type=int, default=5)
    parser.add_argument("--batch-num", default=None, help="None (full graph), an integer or 'auto'")
    args = parser.parse_args(argv)
    batch_num = None if args.batch_num is None else (args.batch_num if args.batch_num == "auto" else int(args.batch_num))
    data = nq.load_set(nq.find_sets([args.set])[0], args.max_cells)
    runs, one_off = {}, {}
    for variant in ("reference", "improved"):
        model = sj.Model(variant=variant)
        t0 = time.perf_counter()
        run = model._train(data.adata, epochs=1, lr=0.01, lr_patience=None, lr_factor=0.5, min_lr=1e-6, patience=None,
                           min_delta=0.0, restore_best=False, ari_every=None, ari_k=10, ari_stop_threshold=None,
                           ari_stop_patience=2, batch_num=batch_num, cells_per_batch=None, precision="bf16",
                           block_size=1024, memory_limit=None, devices=None, checkpoint_dir=None,
                           checkpoint_every=10, progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        model._final_embedding(data.adata, run)
        one_off[variant] = {"first_train_call_s": round(first, 3), "embedding_s": round(time.perf_counter() - t0, 3)}
        runs[variant] = [model._state, run]
    times = {v: [] for v in runs}
    for block in range(args.blocks):
        for variant, (state, run) in runs.items():
            t0 = time.perf_counter()
            for e in range(args.epochs_per_block):
                state, _ = run.placement.train_epoch(state, run.graph_batches, jax.random.key(100 * block + e),
                                                     run.settings)
            jax.block_until_ready(state)
            times[variant].append((time.perf_counter() - t0) / args.epochs_per_block)
            runs[variant][0] = state
    result = {"set": data.name, "cells": int(data.adata.n_obs), "batch_num": batch_num, "one_off": one_off,
              "s_per_epoch": {v: {"min": round(min(t), 4), "median": round(float(np.median(t)), 4)}
                              for v, t in times.items()},
              "ratio_min": round(min(times["improved"]) / min(times["reference"]), 3),
              "ratio_median": round(float(np.median(times["improved"]) / np.median(times["reference"])), 3)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
