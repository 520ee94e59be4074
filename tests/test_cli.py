"""The scniche-jax command line, end to end in subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

MERFISH = Path(__file__).resolve().parents[2] / "shared" / "data" / "merfish_hypothalamus_2slices.h5ad"


def _cli(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "scniche_jax.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def merfish_subset(tmp_path_factory):
    if not MERFISH.exists():
        pytest.skip(f"{MERFISH} not present")
    a = ad.read_h5ad(MERFISH)
    keep = np.concatenate([np.nonzero((a.obs["slice"] == s).to_numpy())[0][:400] for s in a.obs["slice"].unique()])
    sub = a[keep].copy()
    path = tmp_path_factory.mktemp("cli") / "merfish_subset.h5ad"
    sub.write_h5ad(path)
    return path


def test_fit_embed_cluster_end_to_end(merfish_subset, tmp_path):
    out = tmp_path / "run"
    fit = _cli("fit", merfish_subset, "--out", out, "--sample-key", "slice", "--epochs", 4, "--n-niches", 5,
               "--quiet", "--k-cutoff", 10, "--batch-num", "auto", "--cells-per-batch", 400)
    assert fit.returncode == 0, fit.stderr
    summary = json.loads(fit.stdout.strip().splitlines()[-1])
    assert summary["cells"] == 800 and summary["epochs_run"] == 4 and sum(summary["niches"].values()) == 800
    assert summary["batch_size"] == 400
    assert sorted(os.listdir(out)) == ["adata.h5ad", "checkpoint", "config.json", "model.pt"]
    results = ad.read_h5ad(out / "adata.h5ad")
    assert results.obsm["X_scniche"].shape == (800, 10) and "scNiche" in results.obs

    embedded = tmp_path / "embedded.h5ad"
    emb = _cli("embed", out, merfish_subset, "--out", embedded, "--sample-key", "slice", "--k-cutoff", 10)
    assert emb.returncode == 0, emb.stderr
    assert ad.read_h5ad(embedded).obsm["X_scniche"].shape == (800, 10)

    clustered = tmp_path / "clustered.h5ad"
    cl = _cli("cluster", embedded, "--n-niches", 3, "--out", clustered)
    assert cl.returncode == 0, cl.stderr
    assert set(ad.read_h5ad(clustered).obs["scNiche"].cat.categories) == {"Niche0", "Niche1", "Niche2"}


@pytest.mark.parametrize("args,message", [
    (["fit", "missing.h5ad", "--out", "o"], "does not exist"),
    (["fit", "{input}", "--out", "/nonexistent/deeper/o"], "does not exist"),
    (["fit", "{input}", "--out", "o", "--celltype-key", "nope"], "no cell-type column 'nope'"),
    (["fit", "{input}", "--out", "o", "--batch-num", "2000", "--sample-key", "slice"], "batch_num"),
    (["fit", "{input}", "--out", "o", "--cells-per-batch", "100", "--sample-key", "slice"], "only applies to"),
    (["cluster", "{input}", "--n-niches", "3", "--out", "c.h5ad"], "no 'X_scniche'"),
])
def test_bad_input_exits_2_with_one_line(merfish_subset, tmp_path, args, message):
    args = [a.replace("{input}", str(merfish_subset)) for a in args]
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = [l for l in result.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]


def test_help_for_each_command():
    for command in ("fit", "embed", "cluster"):
        result = _cli(command, "--help")
        assert result.returncode == 0 and "usage: scniche-jax" in result.stdout
