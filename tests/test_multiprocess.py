"""Two processes joined by ``jax.distributed`` (gloo on the CPU) train like one process with two devices."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHILD = HERE / "multiprocess_child.py"
TIMEOUT = 150  # seconds for everything; normally ~30 s on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(commands, timeout):
    """Runs the commands concurrently; kills all of them if one fails or time runs out."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for c in commands]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
        outputs = [p.communicate()[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, f"child failed (rc {p.returncode}):\n{out[-4000:]}"


def test_two_processes_match_one_process_with_two_devices(tmp_path):
    single, multi = tmp_path / "single.npz", tmp_path / "multi.npz"
    port = free_port()
    started = time.monotonic()
    run_all([[sys.executable, str(CHILD), "single", str(single)],
             [sys.executable, str(CHILD), "multi", str(multi), str(port), "0"],
             [sys.executable, str(CHILD), "multi", str(multi), str(port), "1"]], TIMEOUT)
    print(f"three children in {time.monotonic() - started:.1f} s")
    a, b = np.load(single), np.load(multi)
    assert a["local_batches"].tolist() == [0, 1, 2, 3]  # one process holds every batch
    assert b["local_batches"].tolist() == [0, 2]        # process 0 holds its device's batches
    params = [k for k in a.files if k not in ("losses", "z", "local_batches")]
    assert params and sorted(params) == sorted(k for k in b.files if k not in ("losses", "z", "local_batches"))
    moved = 0.0
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in params)
    print(f"largest parameter difference {worst:.2e}")
    assert worst <= 1e-6
    for k in params:
        moved = max(moved, float(np.abs(a[k]).max()))
    assert moved > 0
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-6)
    assert a["losses"].shape == (3, 4)
    np.testing.assert_allclose(b["z"], a["z"], rtol=0, atol=1e-5)
