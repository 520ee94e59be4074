"""Two MERFISH slices of the mouse hypothalamus, preprocessed per slice and trained in batches.

Moffitt et al., Science 2018 (data: Dryad, CC0). The file is not bundled (3.3 MB):
    python examples/multi_slice.py --h5ad ../shared/data/merfish_hypothalamus_2slices.h5ad --out merfish_run
X is already normalised and log1p-transformed in that file.
"""
import argparse
import json
from pathlib import Path

import scniche_jax as sj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h5ad", default="../shared/data/merfish_hypothalamus_2slices.h5ad")
    parser.add_argument("--out", default="merfish_run")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-num", default="4", help="number of batches or 'auto'")
    parser.add_argument("--niches", type=int, default=8)
    args = parser.parse_args()

    import anndata as ad

    adata = ad.read_h5ad(args.h5ad)
    adata = sj.pp.process_multi_slices(adata, celltype_key="Cell_type", sample_key="slice", n_neighbors=20,
                                       is_pca=True, n_comps=20)
    batch_num = args.batch_num if args.batch_num == "auto" else int(args.batch_num)
    model = sj.fit(adata, batch_num=batch_num, epochs=args.epochs, ari_every=5, ari_k=args.niches,
                   ari_stop_threshold=0.95)
    sj.tl.clustering(adata, n_niches=args.niches)
    out = model.save(Path(args.out), adata=adata, overwrite=True)
    try:
        sj.pl.niches(adata, sample_key="slice").savefig(out / "niches.png", dpi=120)
        sj.pl.composition(adata, key="Cell_type").figure.savefig(out / "composition.png", dpi=120)
    except ImportError as err:
        print(f"plots skipped: {err}")
    print(json.dumps({"cells": adata.n_obs, "batch_size": model.data_shape.batch_size,
                      "early_stop": model.history.to_dict()["early_stop"], "out": str(out)}))


if __name__ == "__main__":
    main()
