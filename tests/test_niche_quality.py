"""Smoke test of the niche-quality benchmark (tiny synthetic data; the numbers are not checked)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import scniche_jax as sj

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _labelled_two_slices(path: Path) -> None:
    a = sj.datasets.synthetic(n_cells=300, n_niches=3, n_cell_types=6, n_genes=12, seed=1)
    a.obs["slice"] = np.where(np.arange(a.n_obs) < 150, "s1", "s2")
    truth = a.obs["Niche"].astype(str).to_numpy()
    truth[:7] = "unassigned"  # kept as neighbours, never scored
    a.obs["Niche"] = truth
    a.write_h5ad(path)


def test_harness_writes_json_markdown_and_plot(tmp_path):
    data = tmp_path / "toy_two_slices.h5ad"
    _labelled_two_slices(data)
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "benchmarks/niche_quality.py", "--sets", str(data), "--methods", "baseline_k10",
           "reference", "improved", "improved-auto_k", "--seeds", "0", "--epochs", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in result["runs"]}
    assert set(runs) == {"baseline_k10", "reference", "improved", "improved-auto_k"}
    for r in runs.values():
        assert r["set"] == "toy_two_slices" and r["seed"] == 0 and r["n_labels"] == 3
        assert set(r["scores"]["per_slice"]) == {"s1", "s2"}
        for part in (r["scores"]["all"], r["scores"]["slice_mean"]):
            assert -1 <= part["ari"] <= 1 and 0 <= part["nmi"] <= 1 and 0 <= part["f1"] <= 1
    for name in ("reference", "improved", "improved-auto_k"):
        assert runs[name]["epochs_run"] == 2 and runs[name]["s_per_epoch"] > 0
    chosen = runs["improved-auto_k"]["k_chosen"]
    assert 2 <= chosen <= 12 and "k_chosen" not in runs["improved"]
    row = next(r for r in result["summary"] if r["method"] == "improved-auto_k")
    assert row["k_chosen"] == [chosen] and row["k_error"]["mean"] == chosen - 3
    md = (out / "results.md").read_text()
    assert "| baseline_k10 |" in md and "| reference |" in md and "| improved |" in md and "toy_two_slices" in md
    assert f"| {chosen} ({chosen - 3:+.1f}) |" in md
    assert (out / "ari.png").stat().st_size > 0
    # a second invocation keeps the finished runs instead of recomputing them
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert again.returncode == 0 and "seed 0:" not in again.stderr


def test_scores_leave_out_unlabelled_and_match_clusters():
    import niche_quality as nq
    truth = np.array(["a", "a", "b", "b", "c", "c"])
    perfect = np.array(["x", "x", "y", "y", "z", "z"])
    assert nq.scores(truth, perfect) == {"ari": 1.0, "nmi": 1.0, "f1": 1.0}
    # two clusters merged: one label is unmatched, its F1 is 0
    merged = np.array(["x", "x", "x", "x", "z", "z"])
    assert abs(nq.hungarian_macro_f1(truth, merged) - (1.0 + 2 / 3 + 0.0) / 3) < 1e-12
    assert nq._is_unlabelled(["unassigned", "NoAnnotation", "nan", "L1"]).tolist() == [True, True, True, False]
    labelled = np.array([True] * 5 + [False])
    slices = np.array(["s1", "s1", "s1", "s2", "s2", "s2"])
    sc = nq.score_run(truth, labelled, slices, perfect)
    assert sc["all"]["ari"] == 1.0 and set(sc["per_slice"]) == {"s1", "s2"}
