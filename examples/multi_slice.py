"""Several slices, preprocessed per slice and trained in batches.

On your own data (X log-normalised, a cell-type column, a slice column, obsm['spatial']):
    python examples/multi_slice.py --h5ad my_slices.h5ad --celltype-key Cell_type --sample-key slice \\
        --niches 8 --out my_run
Without --h5ad it runs on a synthetic tissue (sj.datasets.synthetic) dealt into two interleaved
sections, like two neighbouring serial sections, so it works as it comes. A public two-slice set to try: the MERFISH hypothalamus of Moffitt et
al., Science 2018 (Dryad, CC0).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

import scniche_jax as sj


def two_synthetic_slices(n_cells: int = 3000, n_niches: int = 6, seed: int = 0):
    """One synthetic tissue whose cells are dealt at random into two sections, obs['slice']."""
    adata = sj.datasets.synthetic(n_cells=n_cells, n_niches=n_niches, n_cell_types=10, n_genes=40, seed=seed)
    every_other = np.random.default_rng(seed).random(adata.n_obs) < 0.5
    adata.obs["slice"] = pd.Categorical(np.where(every_other, "section1", "section2"))
    return adata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h5ad", default=None,
                        help="your .h5ad (X log-normalised); default: a synthetic two-slice set")
    parser.add_argument("--celltype-key", default="Cell_type", help="obs column of cell types")
    parser.add_argument("--sample-key", default="slice", help="obs column naming each cell's slice")
    parser.add_argument("--out", default="multi_slice_run")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-num", default="4", help="number of batches or 'auto'")
    parser.add_argument("--niches", type=int, default=6)
    args = parser.parse_args()

    if args.h5ad is None:
        adata = two_synthetic_slices(n_niches=args.niches)
    else:
        import anndata as ad

        adata = ad.read_h5ad(args.h5ad)
    adata = sj.pp.process_multi_slices(adata, celltype_key=args.celltype_key, sample_key=args.sample_key,
                                       n_neighbors=20, is_pca=True, n_comps=20)
    batch_num = args.batch_num if args.batch_num == "auto" else int(args.batch_num)
    model = sj.fit(adata, batch_num=batch_num, epochs=args.epochs, ari_every=5, ari_k=args.niches,
                   ari_stop_threshold=0.95)
    sj.tl.clustering(adata, n_niches=args.niches)
    out = model.save(Path(args.out), adata=adata, overwrite=True)
    try:
        sj.pl.niches(adata, sample_key=args.sample_key, save=out / "niches.png")
        sj.pl.composition(adata, key=args.celltype_key, save=out / "composition.png")
    except ImportError as err:
        print(f"plots skipped: {err}")
    print(json.dumps({"cells": adata.n_obs, "batch_size": model.data_shape.batch_size,
                      "early_stop": model.history.to_dict()["early_stop"], "out": str(out)}))


if __name__ == "__main__":
    main()
