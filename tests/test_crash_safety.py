"""A process killed (SIGKILL) in the middle of a save leaves the previous save loadable."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import scniche_jax as sj
from conftest import synthetic_views

HERE = Path(__file__).resolve().parent
TRAIN = dict(progress=False, precision="fp32", lr_patience=None, restore_best=False)


def _run_child(mode: str, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(HERE / "crash_child.py"), mode, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr[-3000:])
    return done


def _data():
    return synthetic_views(200, n_niches=3, n_cell_types=5, n_genes=15, seed=0, n_neighbors=10, n_comps=6)


def test_killed_during_model_save_keeps_the_previous_save(tmp_path):
    _run_child("save", tmp_path)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.pt", "state"]
    loaded = sj.load(tmp_path / "m")
    assert loaded.history.epochs_run == 3  # the first save, not the torn second one
    np.testing.assert_array_equal(loaded.embed(_data()), np.load(tmp_path / "first_embedding.npy"))
    # The next save cleans up what the killed one left beside the folder.
    loaded.save(tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m")) == []


def test_killed_during_a_checkpoint_resumes_from_the_last_complete_one(tmp_path):
    _run_child("checkpoint", tmp_path)
    steps = tmp_path / "ck" / "steps"
    assert sorted(int(p.name) for p in steps.iterdir() if p.name.isdigit()) == [2, 4]
    assert any("tmp" in p.name for p in steps.iterdir())  # killed with step 6 half published
    resumed = sj.load(tmp_path / "ck")
    assert resumed.history.epochs_run == 4
    adata = _data()
    resumed.train(adata, epochs=6, **TRAIN)
    straight = sj.Model(n_neighbors=10, seed=1)
    straight.train(adata, epochs=10, **TRAIN)
    for x, y in zip(jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert resumed.history.loss == straight.history.loss
