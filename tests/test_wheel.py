"""The package as a user gets it: ``python -m build`` gives an sdist and a wheel carrying the bundled
data; the wheel, installed (not editable) into a fresh virtual environment, runs the main job on the
bundled data from outside the source tree, through the Python API and the ``scniche-jax`` command."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = "scniche_jax/data/osmfish_cortex.h5ad"


def _run(cmd, cwd, env=None, timeout=300):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """sdist and wheel of a copy of the package sources (the work tree stays free of build output)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "scniche_jax", src / "scniche_jax",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    # no isolation: the build backend (setuptools) comes from this environment, nothing is downloaded
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src], cwd=tmp)
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    return tmp, wheels[0], sdists[0]


def test_sdist_and_wheel_carry_the_bundled_data_licence_and_version(built):
    _, wheel, sdist = built
    expected = version("scniche-jax")
    assert wheel.name.startswith(f"scniche_jax-{expected}-") and sdist.name == f"scniche_jax-{expected}.tar.gz"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"scniche_jax-{expected}.dist-info/METADATA").decode()
    assert DATA in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "LICENSE not in the wheel"
    assert not any(n.startswith(("tests/", "parity/", "benchmarks/", "docs/")) for n in names)
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "Classifier: Topic :: Scientific/Engineering :: Bio-Informatics" in metadata
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert f"scniche_jax-{expected}/{DATA}" in members
    assert f"scniche_jax-{expected}/LICENSE" in members


def test_installed_wheel_runs_the_main_job_on_bundled_data(built):
    tmp, wheel, _ = built
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip())
    # The fresh environment sees this one's installed dependencies through a .pth line, placed after its
    # own site-packages; this environment's editable scniche-jax is not activated there (.pth files of
    # a directory named by a .pth line are not processed).
    (purelib / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel],
         cwd=tmp)

    run_dir = tmp / "elsewhere"       # not the source tree: nothing of the checkout on sys.path
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    job = r"""
import json, numpy as np, scniche_jax as sj
from importlib import resources
adata = sj.datasets.osmfish()
adata.X = np.log1p(adata.X / adata.X.sum(1, keepdims=True) * 1e4)
sj.pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", n_neighbors=20, verbose=False)
sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
model = sj.fit(adata, epochs=3, progress=False)
sj.tl.clustering(adata, n_niches=11)
adata.write_h5ad("osmfish_prepared.h5ad")
print(json.dumps({"module": sj.__file__, "data": str(resources.files("scniche_jax") / "data" / "osmfish_cortex.h5ad"),
                  "version": sj.__version__, "cells": adata.n_obs, "z": list(adata.obsm["X_scniche"].shape),
                  "niches": int(adata.obs["scNiche"].nunique()), "epochs": len(model.history.loss["total"])}))
"""
    out = json.loads(_run([python, "-c", job], cwd=run_dir, env=env).strip().splitlines()[-1])
    assert Path(out["module"]).is_relative_to(env_dir), f"scniche_jax imported from {out['module']}, not the wheel"
    assert Path(out["data"]).is_relative_to(env_dir) and Path(out["data"]).is_file()
    assert out["version"] == version("scniche-jax")
    assert out["cells"] == 4839 and out["z"] == [4839, 10] and out["niches"] == 11 and out["epochs"] == 3

    # the console script of the wheel, on the file the job wrote
    cli = env_dir / ("Scripts" if os.name == "nt" else "bin") / "scniche-jax"
    summary = _run([cli, "fit", run_dir / "osmfish_prepared.h5ad", "--out", run_dir / "run1", "--celltype-key",
                    "Cell_type", "--epochs", "2", "--n-niches", "5", "--quiet"], cwd=run_dir, env=env)
    assert (run_dir / "run1" / "model.pt").is_file() and (run_dir / "run1" / "adata.h5ad").is_file(), summary
