"""Data parallelism across 4 simulated CPU devices, in a subprocess (XLA_FLAGS is read at import)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from scniche_jax.batching import auto_batch_num
from scniche_jax.config import BatchConfig
from scniche_jax.parallel import Placement, check_devices

HERE = Path(__file__).resolve().parent


def run_child(script: str, *args: str, timeout: int = 900) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(HERE / script), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices_follow_the_documented_step_semantics():
    out = run_child("data_parallel_check.py")
    assert out["batch_devices"] == 4 and out["batch_shards"] == [[2, 1, 100, 15]]  # (steps, 1 per device, B, mik·V)
    assert out["params_replicated"]
    assert out["params_moved"] > 1e-3  # training did something
    assert out["params_rel_error"] < 1e-5 and out["adam_rel_error"] < 1e-5 and out["loss_rel_error"] < 1e-6
    assert out["embed_rel_error"] < 1e-6
    assert out["one_device_rel_error"] == 0.0
    not_multiple, full_graph = out["errors"]
    assert "batch_num=6 is not a multiple of the 4 devices" in not_multiple and "batch_num=4 or 8" in not_multiple
    assert "set batch_num to a multiple of 4" in full_graph


def test_device_checks_name_the_fix():
    cpu = jax.devices()[0]
    assert check_devices(cpu) == [cpu] and check_devices(None) is None
    with pytest.raises(ValueError, match="same device more than once"):
        check_devices([cpu, cpu])
    with pytest.raises(ValueError, match="list of jax devices"):
        check_devices(["cpu"])
    with pytest.raises(ValueError, match="list of jax devices"):
        check_devices(3)
    with pytest.raises(ValueError, match="batch_num=6 is not a multiple of the 4 devices"):
        BatchConfig(batch_num=6, n_devices=4)
    assert Placement.of([cpu]).mesh is None and Placement.of(None).n_devices == 1


def test_auto_batch_num_rounds_up_to_the_devices():
    assert auto_batch_num(10_000, "cpu") == 10
    assert auto_batch_num(10_000, "cpu", n_devices=4) == 12
    assert auto_batch_num(800, "cpu") is None
    assert auto_batch_num(800, "cpu", n_devices=4) == 4


@pytest.mark.skipif(os.environ.get("SCNICHE_SLOW") != "1",
                    reason="10 osmFISH fits of 100 epochs (~15 min on 2 cores): set SCNICHE_SLOW=1")
def test_osmfish_niches_on_four_devices_match_one_device():
    """Mean ARI vs the 11 regions over 5 seeds, 4 devices vs 1 (batch_num=4, 100 epochs)."""
    out = run_child("data_parallel_osmfish.py", timeout=1800)
    single, parallel = sum(out["single"]) / 5, sum(out["parallel"]) / 5
    print(f"osmFISH ARI one device {single:.3f} {out['single']}, four devices {parallel:.3f} {out['parallel']}")
    assert min(single, parallel) > 0.5  # both find the niches
    assert abs(parallel - single) <= 0.02
