"""Runs the PyTorch reference (ZJUFanLab/scNiche) on a dataset; executed by the reference's
own Python (``$SCNICHE_REFERENCE_PYTHON``), never imported by scniche-jax.

Only the reference's preprocessing and trainer subpackages are loaded (its top-level
package also pulls in squidpy and seaborn for plotting). Results go to a JSON file and an
``.npz`` of embeddings; nothing is pickled.

    $SCNICHE_REFERENCE_PYTHON parity/reference/run_reference.py osmfish --h5ad data.h5ad \\
        --seeds 0 1 2 --out results.json [--batch-num 4]
"""
import argparse
import importlib
import json
import os
import sys
import time
import types


def import_reference(src: str):
    """``scniche.preprocess`` and ``scniche.trainer`` from a checkout, without its __init__."""
    package = types.ModuleType("scniche")
    package.__path__ = [os.path.join(src, "scniche")]
    sys.modules["scniche"] = package
    return importlib.import_module("scniche.preprocess"), importlib.import_module("scniche.trainer")


def osmfish(args) -> None:
    import anndata as ad
    import numpy as np
    import torch
    from sklearn.metrics import adjusted_rand_score

    torch.set_num_threads(args.threads)
    pp, tr = import_reference(os.environ["SCNICHE_REFERENCE_SRC"])
    results = {"versions": {"torch": torch.__version__, "numpy": np.__version__}, "runs": []}
    embeddings = {}
    for seed in args.seeds:
        adata = ad.read_h5ad(args.h5ad)
        counts = np.asarray(adata.X, dtype=np.float64)
        adata.X = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
        np.random.seed(seed)
        torch.manual_seed(seed)
        adata = pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", k_cutoff=20, verbose=False)
        adata = pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, k_cutoff=20, verbose=False)
        start = time.perf_counter()
        if args.batch_num:
            adata = pp.prepare_data_batch(adata, batch_num=args.batch_num, verbose=False)
            torch.manual_seed(seed)
            runner = tr.Runner_batch(adata, device="cpu", verbose=False)
        else:
            adata = pp.prepare_data(adata, verbose=False)
            torch.manual_seed(seed)
            runner = tr.Runner(adata, device="cpu", verbose=False)
        adata = runner.fit(lr=0.01, epochs=args.epochs)
        seconds = time.perf_counter() - start
        adata = tr.clustering(adata, target_k=args.k)
        ari = float(adjusted_rand_score(adata.obs["Niche"], adata.obs["scNiche"]))
        results["runs"].append({"seed": seed, "ari": ari, "fit_seconds": seconds,
                                "labels": [str(x) for x in adata.obs["scNiche"]]})
        embeddings[f"seed{seed}"] = adata.obsm["X_scniche"]
        print(json.dumps({"seed": seed, "ari": ari, "fit_seconds": round(seconds, 1)}), flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle)
    np.savez(os.path.splitext(args.out)[0] + ".npz", **embeddings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("osmfish", help="pipeline of the osmFISH ARI comparison")
    p.add_argument("--h5ad", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--k", type=int, default=11)
    p.add_argument("--batch-num", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    {"osmfish": osmfish}[args.job](args)


if __name__ == "__main__":
    main()
