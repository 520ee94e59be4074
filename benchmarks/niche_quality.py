"""Niche quality on labelled spatial data: ARI, NMI and macro-F1 per method, set and seed.

For every labelled ``.h5ad`` (``obs['Niche']``, or ``uns['ground_truth_key']``) and every
method and seed: ARI, NMI and macro-F1 after Hungarian matching of clusters to labels, per
slice and over all cells, and the wall time. Writes ``results.json`` (every run, plus the
seed mean ± sd), ``results.md`` (tables) and ``ari.png`` (ARI per method per set, seed
spread) to ``--out``.

    python benchmarks/niche_quality.py                                  # all sets, all methods
    python benchmarks/niche_quality.py --sets osmfish_cortex --methods 'baseline_k*' reference
    python benchmarks/niche_quality.py --sets ../shared/data/allen_merfish_visp.h5ad --seeds 0 1
    python benchmarks/niche_quality.py --max-cells 600 --epochs 2 --seeds 0   # smoke run

Methods (``--list`` prints them):

- ``baseline_k{10,20,30,50}``: for each cell the cell-type composition of its k nearest
  spatial neighbours (itself included), within its slice; KMeans with K = number of labels.
- ``reference``: ``sj.fit`` with today's defaults (``epochs``), ``tl.clustering(n_niches=K)``.
- ``improved``: ``sj.fit(variant="improved")``, clustered with the variant's spatial prior
  (``ImprovedOptions().clustering_kwargs``); its ablations ``improved-no_*`` turn one
  piece off (``scniche_jax.improved.ABLATIONS``); ``improved-no_model`` clusters the
  variant's read-out, smoothed views without training (what the model adds).
- ``reference-auto_k``, ``improved-auto_k``: the same fits, with K chosen by
  ``tl.cluster_stability`` over 2–12 (what the CLI's ``fit`` without ``--n-niches`` does);
  the tables show the chosen K and its mean distance from the number of labels.
- peers (``benchmarks/peers.py``), each only when its package imports: ``cellcharter_pca``
  and ``banksy`` (``pip install -e ".[peers]"``), ``cellcharter_scvi`` (also ``scvi-tools``)
  and ``stagate`` (``stagate-modern``).

Preprocessing is the users' default path: counts are total-count normalised and log1p'd
(one-hot or already log-normalised ``X`` is left alone), then ``pp.process_multi_slices``
(several slices) or ``pp.cal_spatial_neighbors`` + ``pp.cal_spatial_exp`` with their
defaults (k_cutoff=20, no PCA). Cells labelled ``unassigned`` / ``NoAnnotation`` / ``nan``
stay in the data (they are neighbours) but are left out of every score. Sets above
``--batch-above`` cells train in batch mode (``batch_num="auto"``).

Results accumulate: runs already in ``--out/results.json`` for the same (set, method, seed,
settings) are kept and not rerun unless ``--rerun``, so sets can be run one at a time.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".." / "shared" / "data"
UNLABELLED = {"unassigned", "noannotation", "nan", "none", "", "na"}
sys.path.insert(0, str(ROOT / "benchmarks"))


# --------------------------------------------------------------------------- scores

def hungarian_macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the true labels after a one-to-one matching of clusters to labels.

    The matching maximises the number of agreeing cells (Hungarian algorithm on the
    contingency table); clusters left unmatched count as wrong for every cell.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import f1_score

    t_codes, t_inv = np.unique(truth, return_inverse=True)
    p_codes, p_inv = np.unique(pred, return_inverse=True)
    table = np.zeros((p_codes.size, t_codes.size), np.int64)
    np.add.at(table, (p_inv, t_inv), 1)
    rows, cols = linear_sum_assignment(-table)
    mapping = np.full(p_codes.size, -1)
    mapping[rows] = cols
    return float(f1_score(t_inv, mapping[p_inv], labels=np.arange(t_codes.size), average="macro", zero_division=0))


def scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    return {"ari": float(adjusted_rand_score(truth, pred)),
            "nmi": float(normalized_mutual_info_score(truth, pred)),
            "f1": hungarian_macro_f1(truth, pred)}


def score_run(truth: np.ndarray, labelled: np.ndarray, slices: Optional[np.ndarray], pred: np.ndarray) -> dict:
    """Scores over all labelled cells, per slice, and the mean over slices."""
    pred = np.asarray(pred).astype(str)
    out = {"all": scores(truth[labelled], pred[labelled])}
    if slices is not None:
        per = {}
        for s in sorted(set(slices.tolist())):
            m = labelled & (slices == s)
            per[str(s)] = scores(truth[m], pred[m])
        out["per_slice"] = per
        out["slice_mean"] = {k: float(np.mean([v[k] for v in per.values()])) for k in ("ari", "nmi", "f1")}
    else:
        out["slice_mean"] = dict(out["all"])
    return out


# --------------------------------------------------------------------------- data

@dataclass
class LabelledSet:
    name: str
    adata: "object"          # preprocessed AnnData (pp outputs in obsm)
    celltype_key: str
    truth_key: str
    sample_key: Optional[str]
    truth: np.ndarray        # str labels, per cell of ``adata``
    labelled: np.ndarray     # bool mask: scored cells
    slices: Optional[np.ndarray]
    n_labels: int
    prep_s: float
    note: str


def find_sets(selection: Optional[list[str]]) -> list[Path]:
    import anndata as ad
    if selection:
        paths = []
        for item in selection:
            p = Path(item)
            if not p.suffix:
                p = DATA_DIR / f"{item}.h5ad"
            paths.append(p)
        return paths
    out = []
    for p in sorted(DATA_DIR.glob("*.h5ad")):
        a = ad.read_h5ad(p, backed="r")
        key = a.uns.get("ground_truth_key", "Niche") if "ground_truth_key" in a.uns else "Niche"
        if key in a.obs:
            out.append(p)
        a.file.close()
    return out


def _is_unlabelled(values) -> np.ndarray:
    return np.array([str(v).strip().lower() in UNLABELLED for v in values])


def _crop(adata, sample_key, max_cells: Optional[int], fraction: Optional[float], seed: int = 0):
    """A contiguous window per slice (``max_cells`` in all) or a random fraction of cells."""
    if max_cells is None and fraction is None:
        return adata
    rng = np.random.default_rng(seed)
    groups = (np.zeros(adata.n_obs, int) if sample_key is None
              else adata.obs[sample_key].astype(str).to_numpy())
    keep = np.zeros(adata.n_obs, bool)
    names = sorted(set(groups.tolist()))
    for g in names:
        idx = np.flatnonzero(groups == g)
        if fraction is not None:
            n = max(int(round(fraction * idx.size)), 1)
            keep[rng.choice(idx, size=n, replace=False)] = True
        else:
            n = min(idx.size, max(int(max_cells * idx.size / adata.n_obs), 1))
            xy = np.asarray(adata.obsm["spatial"])[idx, :2]
            centre = np.median(xy, axis=0)
            keep[idx[np.argsort(((xy - centre) ** 2).sum(1), kind="stable")[:n]]] = True
    return adata[keep].copy()


def load_set(path: Path, max_cells=None, fraction=None) -> LabelledSet:
    import anndata as ad
    import scniche_jax as sj

    adata = ad.read_h5ad(path)
    name = path.stem
    celltype_key = adata.uns.get("celltype_key", "Cell_type")
    truth_key = adata.uns.get("ground_truth_key", "Niche")
    sample_key = adata.uns.get("sample_key")
    if sample_key is None and "slice" in adata.obs:
        sample_key = "slice"
    if sample_key is not None and adata.obs[sample_key].nunique() < 2:
        sample_key = None
    adata = _crop(adata, sample_key, max_cells, fraction)
    t0 = time.perf_counter()
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, np.float32)
    one_hot = bool(np.all((x == 0) | (x == 1)) and np.all(x.sum(1) == 1))
    counts = bool(np.all(x >= 0) and np.allclose(x, np.round(x)))
    note = "X one-hot (left as is)" if one_hot else ("X counts: normalise_total 1e4 + log1p" if counts
                                                       else "X used as stored")
    if counts and not one_hot and not adata.uns.get("X_is_log1p_normalized", False):
        total = x.sum(1, keepdims=True)
        adata.X = np.log1p(x / np.maximum(total, 1) * 1e4).astype(np.float32)
    else:
        adata.X = x
    if sample_key is not None:
        adata = sj.pp.process_multi_slices(adata, celltype_key=celltype_key, sample_key=sample_key, verbose=False)
    else:
        sj.pp.cal_spatial_neighbors(adata, celltype_key=celltype_key, verbose=False)
        sj.pp.cal_spatial_exp(adata, verbose=False)
    prep = time.perf_counter() - t0
    truth = adata.obs[truth_key].astype(str).to_numpy()
    labelled = ~_is_unlabelled(truth)
    slices = None if sample_key is None else adata.obs[sample_key].astype(str).to_numpy()
    return LabelledSet(name, adata, celltype_key, truth_key, sample_key, truth, labelled, slices,
                       int(len(set(truth[labelled].tolist()))), prep, note)


# --------------------------------------------------------------------------- methods

@dataclass
class Context:
    data: LabelledSet
    seed: int
    epochs: int
    batch_above: int


@dataclass
class Method:
    fn: Callable[[Context], dict]   # returns {"labels": ..., optional "epochs_run", "fit_s", ...}
    kind: str                       # baseline / scniche / improved / ablation / peer
    description: str


def kmeans(x: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="openmp"):
        return KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit_predict(np.asarray(x, np.float64))


def composition(adata, celltype_key: str, sample_key: Optional[str], k: int) -> np.ndarray:
    """Cell-type fractions among each cell's k nearest spatial neighbours (itself included), per slice."""
    import pandas as pd
    from scniche_jax.pp import spatial_neighbour_matrix
    codes = pd.Categorical(adata.obs[celltype_key].astype(str)).codes
    n_types = codes.max() + 1
    one_hot = np.zeros((adata.n_obs, n_types), np.float64)
    one_hot[np.arange(adata.n_obs), codes] = 1.0
    out = np.zeros_like(one_hot)
    groups = (np.zeros(adata.n_obs, int) if sample_key is None else adata.obs[sample_key].astype(str).to_numpy())
    xy = np.asarray(adata.obsm["spatial"], np.float64)[:, :2]
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        nbrs = spatial_neighbour_matrix(xy[idx], "knn", min(k - 1, idx.size - 1), None, include_self=True)
        out[idx] = nbrs @ one_hot[idx] / k
    return out


def baseline(k: int) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        d = ctx.data
        x = composition(d.adata, d.celltype_key, d.sample_key, k)
        return {"labels": kmeans(x, d.n_labels, ctx.seed)}
    return run


def batch_mode(ctx: Context):
    return "auto" if ctx.data.adata.n_obs > ctx.batch_above else None


def clustering_kwargs(fit_kwargs: dict) -> dict:
    """``tl.clustering`` keywords for a fit: the improved variant's spatial prior, nothing for the reference."""
    import scniche_jax as sj
    if fit_kwargs.get("variant") != "improved":
        return {}
    return (fit_kwargs.get("improved_options") or sj.ImprovedOptions()).clustering_kwargs


K_RANGE = (2, 12)  # the CLI's default --n-niches-range
STABILITY_MAX_CELLS = 50_000  # the CLI's default --stability-max-cells


def run_variant(ctx: Context, choose_k: bool = False, **fit_kwargs) -> dict:
    """``sj.fit`` (with ``fit_kwargs``, e.g. ``variant="improved"``) + ``tl.clustering(n_niches=K)`` (+ the variant's spatial prior).

    With ``choose_k`` the number of niches is not the number of labels but what the CLI's
    ``fit`` without ``--n-niches`` picks: ``tl.cluster_stability`` over ``K_RANGE``.
    """
    import scniche_jax as sj
    adata = ctx.data.adata.copy()
    t0 = time.perf_counter()
    model = sj.fit(adata, epochs=ctx.epochs, seed=ctx.seed, progress=False, batch_num=batch_mode(ctx), **fit_kwargs)
    fit_s = time.perf_counter() - t0
    n_niches, extra = ctx.data.n_labels, {}
    if choose_k:
        t1 = time.perf_counter()
        n_niches = sj.tl.cluster_stability(adata, n_niches=K_RANGE, max_cells=STABILITY_MAX_CELLS)
        extra = {"k_chosen": int(n_niches), "k_search_s": time.perf_counter() - t1}
    sj.tl.clustering(adata, n_niches=n_niches, **clustering_kwargs(fit_kwargs))
    epochs_run = len(model.history["loss"]["total"])
    return {"labels": adata.obs["scNiche"].astype(str).to_numpy(), "fit_s": fit_s, "epochs_run": epochs_run,
            "s_per_epoch": fit_s / max(epochs_run, 1), "batch_num": model.data_shape.batch_num, **extra}


def run_reference(ctx: Context) -> dict:
    return run_variant(ctx)


def run_views_only(ctx: Context) -> dict:
    """The improved variant without its model: its readout features, smoothed, KMeans.

    ``finish_embedding`` with the embedding at weight 0 is exactly the readout of the features.
    """
    import dataclasses

    import scniche_jax as sj
    from scniche_jax import improved as imp
    adata = ctx.data.adata.copy()
    options = dataclasses.replace(sj.ImprovedOptions(), embedding_weight=0.0)
    views = imp.improved_views(adata, options)
    adata.obsm["X_scniche"] = imp.finish_embedding(np.zeros((adata.n_obs, 1)), adata, views, options)
    sj.tl.clustering(adata, n_niches=ctx.data.n_labels, **options.clustering_kwargs)
    return {"labels": adata.obs["scNiche"].astype(str).to_numpy()}


def _peer_methods() -> dict[str, Method]:
    out = {}
    try:
        import peers  # benchmarks/peers.py: adapters, each only when its package imports
        out.update(peers.available_methods(Method))
    except ImportError as err:  # pragma: no cover - depends on the environment
        print(f"peers: none ({err})", file=sys.stderr)
    return out


def _improved_methods() -> dict[str, Method]:
    """``variant="improved"`` and its one-piece-off ablations (``scniche_jax.improved.ABLATIONS``)."""
    from scniche_jax.improved import ABLATIONS

    def make(kwargs):
        return lambda ctx: run_variant(ctx, variant="improved", **kwargs)

    out = {name: Method(make(kwargs), "improved" if name == "improved" else "ablation",
                        f"sj.fit(variant='improved', {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
           for name, kwargs in ABLATIONS.items()}
    out["improved-no_model"] = Method(run_views_only, "ablation",
                                      "the improved readout features without the embedding, smoothed, KMeans + spatial prior (no model)")
    return out


def all_methods() -> dict[str, Method]:
    methods = {f"baseline_k{k}": Method(baseline(k), "baseline",
                                        f"kNN composition (k={k}, itself included, per slice) + KMeans")
               for k in (10, 20, 30, 50)}
    methods["reference"] = Method(run_reference, "scniche", "sj.fit defaults (variant='reference') + tl.clustering")
    methods.update(_improved_methods())
    for name, kwargs in (("reference", {}), ("improved", {"variant": "improved"})):
        methods[f"{name}-auto_k"] = Method(
            lambda ctx, kwargs=kwargs: run_variant(ctx, choose_k=True, **kwargs), "auto_k",
            f"as {name}, but K chosen by tl.cluster_stability over {K_RANGE} (the CLI without --n-niches)")
    methods.update(_peer_methods())
    return methods


# --------------------------------------------------------------------------- running and reporting

def machine_note() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0], "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def set_label(run: dict) -> str:
    """The set's name, with the subset when the run used one (subsets are separate table columns)."""
    subset = run.get("subset") or {}
    tags = [f"{subset['max_cells']} cells" for _ in [0] if subset.get("max_cells")]
    tags += [f"{subset['subsample']:g} of the cells" for _ in [0] if subset.get("subsample")]
    return run["set"] + (f" ({', '.join(tags)})" if tags else "")


def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((set_label(r), r["method"]), []).append(r)
    out = []
    for (set_name, method), rs in sorted(groups.items()):
        def stat(path):
            vals = [r["scores"][path[0]][path[1]] for r in rs]
            return {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
        row = {"set": set_name, "method": method, "kind": rs[0]["kind"], "n_seeds": len(rs),
               "seeds": sorted(r["seed"] for r in rs), "n_cells": rs[0]["n_cells"],
               "wall_s": float(np.mean([r["wall_s"] for r in rs]))}
        for metric in ("ari", "nmi", "f1"):
            row[metric] = stat(("all", metric))
            row[f"slice_mean_{metric}"] = stat(("slice_mean", metric))
        spe = [r["s_per_epoch"] for r in rs if r.get("s_per_epoch")]
        row["s_per_epoch"] = float(np.mean(spe)) if spe else None
        row["n_labels"] = rs[0].get("n_labels")
        chosen = [r["k_chosen"] for r in rs if r.get("k_chosen") is not None]
        if chosen:
            row["k_chosen"] = chosen
            row["k_error"] = {"mean": float(np.mean(np.array(chosen) - row["n_labels"])),
                              "mean_abs": float(np.mean(np.abs(np.array(chosen) - row["n_labels"])))}
        out.append(row)
    return out


def _pm(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


KIND_ORDER = {"baseline": 0, "scniche": 1, "improved": 2, "auto_k": 3, "ablation": 4, "peer": 5}
"""Row order of the tables and the plot: by kind of method, then by name."""


def markdown(summary: list[dict], meta: dict) -> str:
    sets = sorted({r["set"] for r in summary})
    methods = []
    for r in summary:
        if r["method"] not in methods:
            methods.append(r["method"])
    kinds = {r["method"]: r["kind"] for r in summary}
    methods.sort(key=lambda m: (KIND_ORDER.get(kinds[m], 9), m))
    by = {(r["set"], r["method"]): r for r in summary}
    lines = ["# Niche quality", "",
             f"Generated by `benchmarks/niche_quality.py` ({meta.get('time', '')}, {meta.get('cpus')} CPUs, "
             f"1-min load {meta.get('load_avg_1m', 0):.2f} at the start of the last invocation). "
             "ARI over all labelled cells, mean ± sd over seeds (n = seeds).", "",
             "| method | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for m in methods:
        cells = []
        for s in sets:
            r = by.get((s, m))
            cells.append("—" if r is None else f"{_pm(r['ari'])} (n={r['n_seeds']})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for s in sets:
        lines += ["", f"## {s}", "",
                  "| method | ARI all | ARI slice mean | NMI all | macro-F1 all | K (chosen − labels) | wall s | s/epoch | cells | seeds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m in methods:
            r = by.get((s, m))
            if r is None:
                continue
            spe = "—" if r["s_per_epoch"] is None else f"{r['s_per_epoch']:.3f}"
            k = r.get("n_labels") or "—"
            if r.get("k_chosen"):
                k = f"{', '.join(map(str, r['k_chosen']))} ({r['k_error']['mean']:+.1f})"
            lines.append(f"| {m} | {_pm(r['ari'])} | {_pm(r['slice_mean_ari'])} | {_pm(r['nmi'])} | {_pm(r['f1'])} | "
                         f"{k} | {r['wall_s']:.1f} | {spe} | {r['n_cells']} | {r['n_seeds']} |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], runs: list[dict], path: Path) -> Optional[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    sets = sorted({r["set"] for r in summary})
    n_cols = min(3, len(sets))
    n_rows = -(-len(sets) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(6.5 * n_cols, 4.6 * n_rows), squeeze=False)
    for ax in axes.ravel()[len(sets):]:
        ax.set_visible(False)
    for ax, s in zip(axes.ravel(), sets):
        rows = sorted((r for r in summary if r["set"] == s), key=lambda r: (KIND_ORDER.get(r["kind"], 9), r["method"]))
        names = [r["method"] for r in rows]
        means = [r["ari"]["mean"] for r in rows]
        sds = [r["ari"]["sd"] for r in rows]
        colours = {"baseline": "#999999", "scniche": "#1f77b4", "improved": "#d62728", "ablation": "#ff9896",
                   "auto_k": "#9467bd", "peer": "#2ca02c"}
        ax.bar(range(len(rows)), means, yerr=sds, color=[colours.get(r["kind"], "#777") for r in rows], capsize=3)
        for i, name in enumerate(names):
            vals = [x["scores"]["all"]["ari"] for x in runs if set_label(x) == s and x["method"] == name]
            ax.scatter(np.full(len(vals), i), vals, s=8, color="k", zorder=3)
        ax.set_xticks(range(len(rows)), names, rotation=70, ha="right", fontsize=7)
        ax.set_title(s, fontsize=9)
        ax.set_ylabel("ARI (all labelled cells)")
        ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(out: Path, runs: list[dict], meta: dict) -> None:
    summary = summarise(runs)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(markdown(summary, meta))
    plot(summary, runs, out / "ari.png")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="*", help="set names in ../shared/data (no .h5ad) or paths; default: all labelled")
    parser.add_argument("--methods", nargs="*", help="method names or glob patterns; default: all available")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-cells", type=int, help="keep a contiguous window of about this many cells (per slice share)")
    parser.add_argument("--subsample", type=float, help="keep this random fraction of the cells of each slice")
    parser.add_argument("--batch-above", type=int, default=20000, help="train in batch mode (batch_num='auto') above this many cells")
    parser.add_argument("--out", default="out/niche_quality")
    parser.add_argument("--rerun", action="store_true", help="rerun runs already in results.json")
    parser.add_argument("--list", action="store_true", help="print the available methods and exit")
    parser.add_argument("--merge", nargs="*", default=[], help="add the runs of these results.json files (or their "
                        "folders) to --out, rewrite the tables and exit")
    args = parser.parse_args(argv)

    methods = all_methods()
    if args.list:
        for name, m in methods.items():
            print(f"{name:28s} {m.kind:9s} {m.description}")
        return {}
    chosen = list(methods) if not args.methods else [
        name for name in methods if any(fnmatch.fnmatch(name, pat) for pat in args.methods)]
    unknown = [p for p in (args.methods or []) if not any(fnmatch.fnmatch(n, p) for n in methods)]
    if unknown:
        parser.error(f"unknown methods {unknown}; available: {sorted(methods)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    if (out / "results.json").exists():
        runs = json.loads((out / "results.json").read_text())["runs"]
    meta = machine_note()
    if args.merge:
        for other in args.merge:
            p = Path(other)
            p = p / "results.json" if p.is_dir() else p
            for r in json.loads(p.read_text())["runs"]:
                key = ("set", "method", "seed", "subset", "epochs")
                runs = [x for x in runs if any(x.get(k) != r.get(k) for k in key)] + [r]
        write_outputs(out, runs, meta)
        print(json.dumps({"out": str(out), "runs": len(runs)}))
        return {"runs": runs, "summary": summarise(runs)}
    subset = {"max_cells": args.max_cells, "subsample": args.subsample}
    for path in find_sets(args.sets):
        data = load_set(path, args.max_cells, args.subsample)
        print(f"[{data.name}] {data.adata.n_obs} cells, K={data.n_labels}, "
              f"{int(data.labelled.sum())} labelled, slices={None if data.slices is None else len(set(data.slices))}, "
              f"prep {data.prep_s:.1f}s; {data.note}", file=sys.stderr, flush=True)
        for name in chosen:
            m = methods[name]
            uses_epochs = m.kind != "baseline" and m.kind != "peer"
            for seed in args.seeds:
                ident = {"set": data.name, "method": name, "seed": seed, "subset": subset,
                         "epochs": args.epochs if uses_epochs else None}
                if not args.rerun and any(all(r.get(k) == v for k, v in ident.items()) for r in runs):
                    continue
                runs = [r for r in runs if not all(r.get(k) == v for k, v in ident.items())]
                ctx = Context(data, seed, args.epochs, args.batch_above)
                t0 = time.perf_counter()
                result = m.fn(ctx)
                wall = time.perf_counter() - t0
                labels = result.pop("labels")
                sc = score_run(data.truth, data.labelled, data.slices, labels)
                record = dict(ident, kind=m.kind, n_cells=int(data.adata.n_obs), n_labels=data.n_labels,
                              n_found=len(set(np.asarray(labels).tolist())), wall_s=wall, scores=sc, **{k: v for k, v in result.items() if np.isscalar(v) or v is None})
                runs.append(record)
                print(f"  {name:26s} seed {seed}: ARI {sc['all']['ari']:.3f} (slice mean {sc['slice_mean']['ari']:.3f}) "
                      f"NMI {sc['all']['nmi']:.3f} F1 {sc['all']['f1']:.3f}  {wall:.1f}s", file=sys.stderr, flush=True)
                write_outputs(out, runs, meta)
    write_outputs(out, runs, meta)
    summary = summarise(runs)
    print(json.dumps({"out": str(out), "runs": len(runs), "rows": len(summary)}))
    return {"runs": runs, "summary": summary}


if __name__ == "__main__":
    main()
