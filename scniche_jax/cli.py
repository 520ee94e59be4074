"""The ``scniche-jax`` command line: fit, embed and cluster on .h5ad files.

Bad input exits with status 2 and a one-line message (no traceback).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

EXIT_BAD_INPUT = 2
# config.DEFAULT_VIEWS, spelled out so that `--help` imports no numpy (tests/test_cli.py checks they agree)
DEFAULT_VIEWS = ("X_cn_norm", "X_data", "X_data_nbr")


class CliError(Exception):
    """A problem with the user's input, reported in one line."""


def _read(path: str):
    import anndata as ad

    p = Path(path)
    if p.is_dir():
        raise CliError(f"input {path!r} is a folder, not an .h5ad file; pass the .h5ad file itself"
                       + (" (for 'embed' the model folder comes first, then the .h5ad)" if any(p.glob("config.json"))
                          else ""))
    if not p.is_file():
        raise CliError(f"input file {path!r} does not exist")
    try:
        return ad.read_h5ad(p)
    except Exception as err:  # h5py/anndata raise many types for a bad file
        raise CliError(f"cannot read {path!r} as .h5ad ({type(err).__name__}: {err})") from err


def _batch_num(value: str):
    if value == "auto":
        return "auto"
    try:
        number = int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"must be an integer or 'auto', got {value!r}") from err
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _probe_writable(folder: Path, what: str) -> None:
    """Writes and removes a file in ``folder``: permissions, read-only mounts and quotas all show here."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".scniche-write-test-"):
            pass
    except OSError as err:
        raise CliError(f"{what} cannot be written in {str(folder)!r} ({err.strerror or err}); choose a folder "
                       "you can write to") from err


def _check_out_folder(path: str, overwrite: bool) -> Path:
    """``fit --out``: a folder that can be written and, without --overwrite, is new or empty."""
    from .persistence import check_writable_dir

    out = check_writable_dir(path, "--out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CliError(f"--out {str(path)!r} is not empty; pass --overwrite or choose another folder")
    _probe_writable(out if out.is_dir() else out.parent, f"--out {str(path)!r}")
    return out


def _check_out_file(path: str, overwrite: bool) -> Path:
    """``embed`` / ``cluster --out``: a writable .h5ad path that, without --overwrite, does not exist yet."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        raise CliError(f"--out {path!r} is a folder; pass the path of the .h5ad file to write")
    if not p.parent.is_dir():
        raise CliError(f"the folder of --out {path!r} does not exist")
    if p.exists() and not overwrite:
        raise CliError(f"--out {path!r} exists; pass --overwrite")
    _probe_writable(p.parent, f"--out {path!r}")
    return p


def _check_k(adata, n_niches, n_niches_range) -> None:
    """--n-niches / --n-niches-range against the number of cells (before any training)."""
    if n_niches is not None:
        if n_niches < 1:
            raise CliError(f"--n-niches must be >= 1, got {n_niches}")
        if n_niches > adata.n_obs:
            raise CliError(f"--n-niches {n_niches} exceeds the {adata.n_obs} cells of the input; choose at most "
                           f"{adata.n_obs}")
    elif n_niches_range is not None and n_niches_range[1] + 1 > adata.n_obs:
        raise CliError(f"--n-niches-range {n_niches_range[0]} {n_niches_range[1]} needs at least "
                       f"{n_niches_range[1] + 1} cells, the input has {adata.n_obs}; lower MAX or pass --n-niches")


def _check_range(args) -> None:
    low, high = args.n_niches_range
    if not 2 <= low <= high:
        raise CliError(f"--n-niches-range must be MIN MAX with 2 <= MIN <= MAX, got {low} {high}")
    if args.stability_max_cells < 0 or 0 < args.stability_max_cells <= args.n_niches_range[1]:
        raise CliError(f"--stability-max-cells must be 0 (every cell) or more than the largest K searched "
                       f"({args.n_niches_range[1]}), got {args.stability_max_cells}")


def _choose_k(adata, args, use_rep: str = "X_scniche") -> int:
    """K by the stability of KMeans over --n-niches-range, as ``fit`` does without --n-niches."""
    import scniche_jax as sj

    k = sj.tl.cluster_stability(adata, n_niches=tuple(args.n_niches_range), use_rep=use_rep, key_added="stability",
                                max_cells=args.stability_max_cells or None)
    del adata.uns["stability"]  # the results file keeps the niches, not the search
    return int(k)


def _preprocess(adata, args):
    import numpy as np

    import scniche_jax as sj

    missing = [v for v in args.views if v not in adata.obsm]
    if not missing:
        return adata
    if args.celltype_key not in adata.obs:
        raise CliError(f"views {missing} are missing and adata.obs has no cell-type column "
                       f"{args.celltype_key!r} to compute them (columns: {sorted(adata.obs.columns)}); "
                       "pass --celltype-key")
    if args.normalize:
        from .validation import looks_like_counts

        if not looks_like_counts(adata.X):
            import warnings

            warnings.warn("--normalize was given but X does not look like raw counts (non-negative integers); "
                          "it is normalised and log1p-transformed again: drop --normalize if X is normalised already.",
                          UserWarning, stacklevel=2)
        counts = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        if (totals <= 0).any():
            raise CliError(f"{int((totals <= 0).sum())} cells have no counts, so --normalize cannot scale them; "
                           "drop them first (e.g. sc.pp.filter_cells(adata, min_counts=1))")
        adata.X = np.log1p(counts / totals * 1e4).astype(np.float32)
    n_comps = min(args.n_comps, adata.n_vars - 1, adata.n_obs - 1)
    if args.sample_key:
        return sj.pp.process_multi_slices(adata, celltype_key=args.celltype_key, sample_key=args.sample_key,
                                          n_neighbors=args.n_neighbors, is_pca=True, n_comps=n_comps, verbose=False)
    sj.pp.cal_spatial_neighbors(adata, celltype_key=args.celltype_key, n_neighbors=args.n_neighbors, verbose=False)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=n_comps, n_neighbors=args.n_neighbors, verbose=False)
    return adata


def _improved_options(args):
    """``--improved-options`` as an ``ImprovedOptions`` (None when not given), checked before any work."""
    if args.improved_options is None:
        return None
    if args.variant != "improved":
        raise CliError("--improved-options only applies to --variant improved")
    import json

    from .config import ImprovedOptions

    try:
        fields = json.loads(args.improved_options)
    except json.JSONDecodeError as err:
        raise CliError(f"--improved-options is not JSON ({err}); e.g. '{{\"concat_radius_composition\": 4}}'") from err
    if not isinstance(fields, dict):
        raise CliError(f"--improved-options must be a JSON object of ImprovedOptions fields, got {args.improved_options!r}")
    try:
        return ImprovedOptions.from_dict(fields)
    except (TypeError, ValueError) as err:
        raise CliError(f"--improved-options: {err}") from err


def cmd_fit(args) -> dict:
    import jax

    import scniche_jax as sj

    out = _check_out_folder(args.out, args.overwrite)
    _check_range(args)
    if args.epochs < 1:
        raise CliError(f"--epochs must be >= 1, got {args.epochs}")
    improved_options = _improved_options(args)
    adata = _read(args.input)
    if not args.no_cluster:
        _check_k(adata, args.n_niches, args.n_niches_range)
    adata = _preprocess(adata, args)
    start = time.perf_counter()
    model = sj.fit(adata, views=None if args.variant == "improved" else args.views, variant=args.variant,
                   improved_options=improved_options,
                   batch_num=args.batch_num, epochs=args.epochs, patience=args.patience,
                   ari_every=args.ari_every, ari_stop_threshold=args.ari_stop_threshold if args.ari_every else None,
                   seed=args.seed, progress=not args.quiet, precision=args.precision,
                   cells_per_batch=args.cells_per_batch, devices=jax.devices() if args.all_devices else None)
    seconds = time.perf_counter() - start
    n_niches, chosen = args.n_niches, None
    if n_niches is None and not args.no_cluster:  # pick K by the stability of KMeans over K
        n_niches = chosen = _choose_k(adata, args)
    if n_niches:
        # The improved variant's embedding is clustered with its spatial prior.
        prior = model.config.improved_options.clustering_kwargs if args.variant == "improved" else {}
        sj.tl.clustering(adata, n_niches=n_niches, **prior)
    model.save(out, adata=adata, overwrite=args.overwrite, torch_format=not args.no_torch_file)
    stop = model.history.early_stop
    summary = {"command": "fit", "cells": adata.n_obs, "out": str(out.resolve()), "epochs_run": stop.stopped_epoch,
               "stopped_by": stop.stopped_by, "final_loss": model.history.loss["total"][-1],
               "fit_seconds": round(seconds, 2), "batch_size": model.data_shape.batch_size}
    if chosen is not None:
        summary["n_niches_chosen"] = int(chosen)
    if n_niches:
        summary["niches"] = {str(k): int(v) for k, v in adata.obs["scNiche"].value_counts().sort_index().items()}
    if not args.no_plots:
        summary["plots"] = _plots(out, adata, model, bool(n_niches), args.celltype_key, args.sample_key)
    (out / "summary.txt").write_text(_human_summary(summary, args))
    return summary


def _plots(out: Path, adata, model, clustered: bool, celltype_key: str, sample_key) -> list:
    """niches.png, composition.png and history.png in ``out`` (those that apply); none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import scniche_jax as sj

    written = []
    jobs = [("history", lambda path: sj.pl.history(model, save=path))]
    if clustered and "spatial" in adata.obsm:
        sample = sample_key if sample_key in adata.obs else None
        jobs.append(("niches", lambda path: sj.pl.niches(adata, sample_key=sample, save=path)))
    if clustered and celltype_key in adata.obs:
        jobs.append(("composition", lambda path: sj.pl.composition(adata, key=celltype_key, save=path)))
    for name, draw in jobs:
        path = out / f"{name}.png"
        draw(path)
        plt.close("all")
        written.append(path.name)
    return sorted(written)


def _human_summary(summary: dict, args) -> str:
    """The run in a few sentences, beside the JSON line (``summary.txt``)."""
    lines = [f"scniche-jax fit of {args.input}",
             f"{summary['cells']:,} cells, variant {args.variant}, graphs of {summary['batch_size']:,} cells",
             f"trained {summary['epochs_run']} epochs in {summary['fit_seconds']:.1f} s "
             f"(stopped by {summary['stopped_by']}); final loss {summary['final_loss']:.4g}"]
    if "niches" in summary:
        how = (f"the most stable K in {args.n_niches_range[0]}..{args.n_niches_range[1]}"
               if "n_niches_chosen" in summary else "--n-niches")
        lines.append(f"{len(summary['niches'])} niches ({how}); cells per niche:")
        lines += [f"  {name}: {count:,}" for name, count in summary["niches"].items()]
    else:
        lines.append("no clustering (--no-cluster)")
    lines.append(f"written to {summary['out']}: config.json, state/"
                 + ("" if args.no_torch_file else ", model.pt") + ", adata.h5ad (obs with the niches, obsm['X_scniche'])"
                 + (", " + ", ".join(summary["plots"]) if summary.get("plots") else ""))
    return "\n".join(lines) + "\n"


def cmd_embed(args) -> dict:
    import scniche_jax as sj

    _check_out_file(args.out, args.overwrite)
    model = sj.load(args.model)
    adata = _read(args.input)
    args.views = list(DEFAULT_VIEWS if model.config.variant == "improved" else model.config.views)
    adata = _preprocess(adata, args)
    adata.obsm[args.key_added] = model.embed(adata)
    _write(adata, args.out, args.overwrite)
    return {"command": "embed", "cells": adata.n_obs, "out": str(Path(args.out).resolve())}


def cmd_cluster(args) -> dict:
    import scniche_jax as sj

    _check_out_file(args.out, args.overwrite)
    if args.method == "kmeans":
        _check_range(args)
    adata = _read(args.input)
    if args.use_rep not in adata.obsm:
        raise CliError(f"the input's obsm has no {args.use_rep!r} (obsm keys: {sorted(adata.obsm.keys())}); pass "
                       "--use-rep naming the embedding, or run 'scniche-jax fit' / 'embed' first")
    n_niches, chosen = args.n_niches, None
    if args.method == "kmeans":
        _check_k(adata, n_niches, args.n_niches_range)
        if n_niches is None:  # as fit: the most stable K
            n_niches = chosen = _choose_k(adata, args, args.use_rep)
    sj.tl.clustering(adata, n_niches=n_niches, method=args.method, use_rep=args.use_rep,
                     spatial_prior=args.spatial_prior, spatial_neighbors=args.spatial_neighbors)
    _write(adata, args.out, args.overwrite)
    summary = {"command": "cluster", "cells": adata.n_obs, "out": str(Path(args.out).resolve()),
               "niches": {str(k): int(v) for k, v in adata.obs["scNiche"].value_counts().sort_index().items()}}
    if chosen is not None:
        summary["n_niches_chosen"] = chosen
    return summary


def _write(adata, path: str, overwrite: bool) -> None:
    p = Path(path).expanduser().resolve()
    if not p.parent.is_dir():
        raise CliError(f"the folder of --out {path!r} does not exist")
    if p.exists() and not overwrite:
        raise CliError(f"--out {path!r} exists; pass --overwrite")
    from .persistence import write_atomically

    try:
        write_atomically(p, adata.write_h5ad)
    except OSError as err:
        raise CliError(f"cannot write {path!r}: {err}") from err


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="scniche-jax", description="Cell niches from single-cell spatial omics "
                                     "(scNiche in JAX).", formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_pp(p):
        p.add_argument("--celltype-key", default="Cell_type", help="obs column of cell types")
        p.add_argument("--sample-key", default=None, help="obs column of slice ids: preprocess each slice")
        p.add_argument("--n-neighbors", "--k-cutoff", dest="n_neighbors", type=int, default=20,
                       help="spatial neighbours for the views (--k-cutoff is the old name)")
        p.add_argument("--n-comps", type=int, default=20, help="PCA components of the expression views")
        p.add_argument("--normalize", action="store_true",
                       help="X holds raw counts: normalise to 1e4 per cell and log1p first "
                            "(as sc.pp.normalize_total + sc.pp.log1p)")
        p.add_argument("--overwrite", action="store_true", help="replace existing output")

    def add_k_search(p):
        p.add_argument("--n-niches-range", type=int, nargs=2, default=[2, 12], metavar=("MIN", "MAX"),
                       help="range searched when --n-niches is not given")
        p.add_argument("--stability-max-cells", type=int, default=50_000, metavar="N",
                       help="the K search (tl.cluster_stability's max_cells) uses a random subset of at most N "
                            "cells (0 = every cell, as the reference)")

    f = sub.add_parser("fit", help="preprocess if needed, train, save the model and the results, cluster",
                       formatter_class=formatter)
    f.add_argument("input", help="input .h5ad (obsm['spatial'] and a cell-type column, or the views)")
    f.add_argument("--out", required=True, help="output folder: model files and adata.h5ad with the results")
    f.add_argument("--views", nargs="+", default=list(DEFAULT_VIEWS), help="obsm keys of the views (reference variant)")
    f.add_argument("--variant", choices=["reference", "improved"], default="reference",
                   help="'reference' reproduces scNiche exactly; 'improved' finds niches closer to the tissue's "
                        "(multi-scale composition views, spatially smoothed readout)")
    f.add_argument("--improved-options", default=None, metavar="JSON",
                   help="with --variant improved: sj.ImprovedOptions fields as a JSON object, "
                        "e.g. '{\"concat_radius_composition\": 4}' (the rest keep their defaults)")
    f.add_argument("--batch-num", type=_batch_num, default=None,
                   help="number of batches, or 'auto'; none trains on the full graph, whose frozen fusion "
                        "weight (and model.pt) is 4*B^2 bytes for B cells (94 MB at 4,839, 1.6 GB at 20,000)")
    f.add_argument("--cells-per-batch", type=int, default=None,
                   help="with --batch-num auto: cells per batch (none: 1000 on a CPU, 5000 on a GPU)")
    f.add_argument("--all-devices", action="store_true",
                   help="train data-parallel on every device JAX sees (batch number a multiple of their count)")
    f.add_argument("--epochs", type=int, default=100, help="most training epochs")
    f.add_argument("--patience", type=int, default=None, help="stop when the loss stalls this many epochs")
    f.add_argument("--ari-every", type=int, default=None, help="probe the niches' ARI every N epochs")
    f.add_argument("--ari-stop-threshold", type=float, default=0.95, help="with --ari-every: stop at this ARI")
    f.add_argument("--n-niches", type=int, default=None,
                   help="cluster into this many niches (KMeans); without it the most stable number is chosen")
    add_k_search(f)
    f.add_argument("--no-cluster", action="store_true", help="train and save only, no niches")
    f.add_argument("--seed", type=int, default=0, help="seed of every random choice in training")
    f.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="B² loss matmul operands (auto: fp32 on a CPU, bf16 on a GPU)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--no-plots", action="store_true", help="skip niches.png, composition.png and history.png")
    f.add_argument("--no-torch-file", action="store_true",
                   help="skip model.pt, the reference's file (4*B^2 bytes for graphs of B cells); the model "
                        "folder still loads, its fusion network rebuilt from the seed")
    add_pp(f)
    f.set_defaults(run=cmd_fit)

    e = sub.add_parser("embed", help="embed an .h5ad with a saved model", formatter_class=formatter)
    e.add_argument("model", help="model folder written by 'fit' (or a model.pt)")
    e.add_argument("input", help="input .h5ad with the model's views, or spatial data to preprocess")
    e.add_argument("--out", required=True, help="output .h5ad")
    e.add_argument("--key-added", default="X_scniche", help="obsm key of the embedding written")
    add_pp(e)
    e.set_defaults(run=cmd_embed)

    c = sub.add_parser("cluster", help="cluster an embedding into niches", formatter_class=formatter)
    c.add_argument("input", help="input .h5ad with obsm[--use-rep]")
    c.add_argument("--n-niches", type=int, default=None,
                   help="number of niches (KMeans); without it the most stable number is chosen, as 'fit' does")
    add_k_search(c)
    c.add_argument("--method", choices=["kmeans", "leiden"], default="kmeans", help="clustering method")
    c.add_argument("--use-rep", default="X_scniche", help="obsm key of the embedding")
    c.add_argument("--spatial-prior", type=float, default=0.0,
                   help="weight of the spatial Potts prior on the niches (0: none; 1.5 for --variant improved)")
    c.add_argument("--spatial-neighbors", type=int, default=75, help="spatial neighbours of the prior")
    c.add_argument("--out", required=True, help="output .h5ad")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    c.set_defaults(run=cmd_cluster)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scniche-jax")
    except PackageNotFoundError:  # a source tree on sys.path without an install
        return "0+unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``scniche-jax`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import warnings

    def one_line(message, category, filename, lineno, line=None):  # no file path or source line for CLI users
        return f"scniche-jax {args.command}: warning: {message}\n"

    previous, warnings.formatwarning = warnings.formatwarning, one_line
    try:
        summary = args.run(args)
    except (CliError, ValueError, FileNotFoundError, PermissionError, ImportError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"scniche-jax {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        warnings.formatwarning = previous
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
