"""The benchmark scripts still run (tiny sizes; their numbers are not checked here)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _json_of(*args: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_scale_benchmark_runs_every_phase():
    out = _json_of("benchmarks/scale.py", "--cells", "2500", "--epochs", "1", "--warmup", "1")
    assert out["batches"] == 2 and out["batch_size"] == 1250
    assert out["epoch_s_median"] > 0 and out["peak_rss_gb"] >= out["peak_rss_after_graphs_gb"] > 0
    assert out["host_batches_gb"] <= out["estimate_host_gb"]


def test_epoch_time_benchmark_child_runs():
    out = _json_of("benchmarks/epoch_time.py", "--child", "600:full:fp32", "--epochs", "1", "--warmup", "1")
    assert out["cells"] == 600 and out["batches"] == 1 and out["epoch_s_median"] > 0


def test_epoch_time_through_fit_runs():
    out = _json_of("benchmarks/epoch_time.py", "--child-fit", "300:full:bf16", "--fit-epochs", "1", "3",
                   "--repeats", "1")
    assert out["config"] == "300:full:bf16" and set(out["fit_s_by_epochs"]) == {"1", "3"}
    assert out["fit_s_by_epochs"]["3"][0] > 0 and out["warmup_fit_s"] > 0
