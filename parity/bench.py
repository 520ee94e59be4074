"""Side-by-side benchmark: the PyTorch reference and scniche-jax on the same synthetic data.

Each measurement runs in its own process (so peak RSS is its own), reference and ours
alternating per configuration. Needs SCNICHE_REFERENCE_PYTHON and SCNICHE_REFERENCE_SRC
(see README.md); without them only our side runs.

    python parity/bench.py [--only 4000:full 16000:16 100000:prep] [--json bench.json]

Configurations: ``N:full`` (full graph), ``N:B`` (B batches), ``N:prep`` (preprocessing and
the three full view graphs only). Two speeds per configuration:

- *through fit*, what a user waits for per epoch: ``(fit(15 epochs) - fit(5 epochs)) / 10`` on
  both sides (ours: ``sj.fit`` with its defaults — precision 'auto', fp32 on a CPU — after a warm-up fit; the reference: a
  fresh ``Runner.fit`` for each count). Graph building, set-up and the final embedding cancel.
- *compiled epoch*: the reference's epochs timed inside its own loop; ours the jitted epoch
  alone (``benchmarks/epoch_time.py``), in bf16 and fp32. The gap between the through-fit and the
  compiled fp32 numbers is the host work around each epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT = ["1000:full", "2000:full", "4000:full", "16000:16", "16000:prep", "100000:prep"]
FIT_EPOCHS = (5, 15)  # per epoch through fit = (fit(15) - fit(5)) / 10, on both sides


def _ours_prep(n_cells: int) -> dict:
    import scniche_jax as sj
    from scniche_jax.graphs import build_view_graph

    adata = sj.datasets.synthetic(n_cells, n_niches=8, n_cell_types=12, n_genes=50, seed=0)
    start = time.perf_counter()
    sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=20, verbose=False)
    sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
    t_pp = time.perf_counter() - start
    start = time.perf_counter()
    for view in ("X_cn_norm", "X_data", "X_data_nbr"):
        build_view_graph(adata.obsm[view], 20, 5)
    return {"preprocess_s": t_pp, "graphs_s": time.perf_counter() - start,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def _run_json(cmd: list[str], out: Path, env=None, timeout: int = 3600) -> dict:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{result.stderr[-3000:]}")
    if out is not None:
        return json.loads(out.read_text())
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(spec: str, epochs: int, workdir: Path, reference: bool) -> dict:
    n, mode = spec.split(":")
    row = {"config": spec}
    if reference:
        import scniche_jax as sj

        h5ad = workdir / f"cells{n}.h5ad"
        if not h5ad.exists():
            sj.datasets.synthetic(int(n), n_niches=8, n_cell_types=12, n_genes=50, seed=0).write_h5ad(h5ad)
        args = ["--h5ad", str(h5ad), "--epochs", "0" if mode == "prep" else str(epochs + 2), "--warmup", "2"]
        if mode not in ("full", "prep"):
            args += ["--batch-num", mode]
        if mode != "prep":
            args += ["--fit-epochs", *map(str, FIT_EPOCHS)]
        env = dict(os.environ, SCNICHE_REFERENCE_SRC=os.environ["SCNICHE_REFERENCE_SRC"])
        out = workdir / "ref.json"
        row["reference"] = _run_json([os.environ["SCNICHE_REFERENCE_PYTHON"], str(HERE / "reference" / "run_reference.py"),
                                      "bench", *args, "--out", str(out)], out, env)
    if mode == "prep":
        row["ours"] = _run_json([sys.executable, __file__, "--child-prep", n], None)
        return row
    for precision in ("bf16", "fp32"):
        row[f"ours_{precision}"] = _run_json([sys.executable, str(ROOT / "benchmarks" / "epoch_time.py"), "--child",
                                              f"{spec}:{precision}", "--epochs", str(epochs), "--warmup", "2"], None)
    row["ours_fit"] = _run_json([sys.executable, str(ROOT / "benchmarks" / "epoch_time.py"), "--child-fit",
                                 f"{spec}:auto"], None)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| config | through fit: reference s/epoch | ours s/epoch (fit defaults) | speed-up | compiled epoch: "
             "reference (in its loop) | ours bf16 | ours fp32 | speed-up (fp32, the CPU default) | peak RSS ref / ours GB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ref = r.get("reference", {})
        if r["config"].endswith(":prep"):
            ours = r["ours"]
            ref_s = ref.get("preprocess_s", float("nan")) + ref.get("graphs_s", float("nan"))
            our_s = ours["preprocess_s"] + ours["graphs_s"]
            lines.append(f"| {r['config']} (pp + graphs) | {ref_s:.2f} s | {our_s:.2f} s | | {ref_s / our_s:.1f}× | | "
                         f"{ref.get('peak_rss_gb', float('nan')):.2f} / {ours['peak_rss_gb']:.2f} |")
            continue
        b, f, fit = r["ours_bf16"], r["ours_fp32"], r["ours_fit"]
        ref_epoch = ref.get("epoch_s_median", float("nan"))
        ref_fit = ref.get("fit_epoch_s", float("nan"))
        lines.append(f"| {r['config']} | {ref_fit:.4f} | {fit['fit_epoch_s']:.4f} | {ref_fit / fit['fit_epoch_s']:.1f}× | "
                     f"{ref_epoch:.4f} | {b['epoch_s_median']:.4f} | {f['epoch_s_median']:.4f} | "
                     f"{ref_epoch / f['epoch_s_median']:.1f}× | "
                     f"{ref.get('peak_rss_gb', float('nan')):.2f} / {b['peak_rss_gb']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Seconds per epoch against cells (full-graph configurations), both tools, log-log."""
    import matplotlib.pyplot as plt

    full = [r for r in rows if r["config"].endswith(":full")]
    n = [int(r["config"].split(":")[0]) for r in full]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    if all("reference" in r for r in full):
        ax.plot(n, [r["reference"]["epoch_s_median"] for r in full], "o-", label="reference (PyTorch + DGL)")
    ax.plot(n, [r["ours_bf16"]["epoch_s_median"] for r in full], "s-", label="scniche-jax bf16")
    ax.plot(n, [r["ours_fp32"]["epoch_s_median"] for r in full], "^--", label="scniche-jax fp32")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cells (full graph)")
    ax.set_ylabel("seconds per epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs after 2 warm-up epochs")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--plot", default=None, help="also draw epoch time against N into this PNG")
    parser.add_argument("--child-prep", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_prep:
        print(json.dumps(_ours_prep(int(args.child_prep))))
        return
    reference = bool(os.environ.get("SCNICHE_REFERENCE_PYTHON") and os.environ.get("SCNICHE_REFERENCE_SRC"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.only or DEFAULT:
            row = measure(spec, args.epochs, Path(tmp), reference)
            if "reference" in row:
                row["reference"]["fit_epochs"] = args.epochs + 2
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "allocator": os.environ.get("LD_PRELOAD") or
            "glibc malloc", "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=1))
    if args.plot:
        plot(rows, args.plot)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
