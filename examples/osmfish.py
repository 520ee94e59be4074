"""The main job on bundled data: osmFISH cortex → preprocessing → scNiche → 11 niches → ARI.

Run: python examples/osmfish.py [--epochs 100] [--batch-num 4] [--seed 0] [--out FOLDER]
                                [--variant reference|improved] [--overwrite]
``--variant improved`` trains the improved model and clusters its embedding with the variant's
spatial prior (docs/benchmarks.md, *Niche quality*).
Writes the model folder and, with matplotlib installed, niches.png, regions.png (the annotated
regions the ARI is measured against), composition.png and history.png into --out (default
``osmfish_<variant>``, so the two variants' runs sit side by side); an existing non-empty
folder is refused before any work unless --overwrite is given.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

import scniche_jax as sj
from scniche_jax.datasets import osmfish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-num", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default: osmfish_<variant>)")
    parser.add_argument("--variant", choices=["reference", "improved"], default="reference")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    args.out = args.out or f"osmfish_{args.variant}"
    if Path(args.out).is_dir() and any(Path(args.out).iterdir()) and not args.overwrite:
        parser.error(f"--out {args.out!r} exists and is not empty; pass --overwrite or choose another folder")

    adata = osmfish()
    counts = adata.X
    adata.X = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
    sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", n_neighbors=20)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20)

    start = time.perf_counter()
    model = sj.fit(adata, epochs=args.epochs, batch_num=args.batch_num, seed=args.seed, variant=args.variant)
    seconds = time.perf_counter() - start
    prior = model.config.improved_options.clustering_kwargs if args.variant == "improved" else {}
    sj.tl.clustering(adata, n_niches=11, **prior)
    ari = adjusted_rand_score(adata.obs["Niche"], adata.obs["scNiche"])
    out = model.save(args.out, adata=adata, overwrite=args.overwrite)
    plots = []
    try:
        for name, fig in (("niches", sj.pl.niches(adata, title=f"scNiche ({args.variant}), ARI {ari:.2f}")),
                          ("regions", sj.pl.niches(adata, groupby="Niche", title="annotated regions (the ARI's truth)")),
                          ("composition", sj.pl.composition(adata).figure), ("history", sj.pl.history(model))):
            fig.savefig(out / f"{name}.png", dpi=110)
            plots.append(str(out / f"{name}.png"))
    except ImportError as err:
        print(f"plots skipped ({err})")
    print(json.dumps({"out": str(out), "plots": plots,"cells": adata.n_obs, "epochs": args.epochs, "batch_num": args.batch_num,
                      "variant": args.variant,
                      "fit_seconds": round(seconds, 2), "final_loss": round(model.history.loss["total"][-1], 4),
                      "ari_vs_regions": round(float(ari), 4)}))


if __name__ == "__main__":
    main()
