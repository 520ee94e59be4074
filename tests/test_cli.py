"""The scniche-jax command line, end to end in subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import time

import anndata as ad
import numpy as np
import pytest


def _cli(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "scniche_jax.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def merfish_subset(tmp_path_factory):
    """Two synthetic slices of 400 cells each (log-normalised expression, cell types, spatial)."""
    import scniche_jax as sj

    slices = []
    for seed in (0, 1):
        a = sj.datasets.synthetic(400, n_niches=4, n_cell_types=9, n_genes=40, seed=seed)
        a.X = np.log1p(a.X / a.X.sum(1, keepdims=True) * 1e4).astype(np.float32)
        a.obs["slice"] = f"slice{seed}"
        a.obs_names = [f"s{seed}_{name}" for name in a.obs_names]
        slices.append(a)
    both = ad.concat(slices)
    path = tmp_path_factory.mktemp("cli") / "two_slices.h5ad"
    both.write_h5ad(path)
    return path


def test_fit_embed_cluster_end_to_end(merfish_subset, tmp_path):
    out = tmp_path / "run"
    fit = _cli("fit", merfish_subset, "--out", out, "--sample-key", "slice", "--epochs", 4, "--n-niches", 5,
               "--quiet", "--n-neighbors", 10, "--batch-num", "auto", "--cells-per-batch", 400)
    assert fit.returncode == 0, fit.stderr
    summary = json.loads(fit.stdout.strip().splitlines()[-1])
    assert summary["cells"] == 800 and summary["epochs_run"] == 4 and sum(summary["niches"].values()) == 800
    assert summary["batch_size"] == 400
    assert sorted(os.listdir(out)) == ["adata.h5ad", "composition.png", "config.json", "history.png", "model.pt",
                                       "niches.png", "state", "summary.txt"]
    assert summary["plots"] == ["composition.png", "history.png", "niches.png"]
    text = (out / "summary.txt").read_text()
    assert "800 cells" in text and "5 niches (--n-niches)" in text and "trained 4 epochs" in text
    results = ad.read_h5ad(out / "adata.h5ad")
    assert results.obsm["X_scniche"].shape == (800, 10) and "scNiche" in results.obs

    embedded = tmp_path / "embedded.h5ad"
    emb = _cli("embed", out, merfish_subset, "--out", embedded, "--sample-key", "slice", "--n-neighbors", 10)
    assert emb.returncode == 0, emb.stderr
    assert ad.read_h5ad(embedded).obsm["X_scniche"].shape == (800, 10)

    clustered = tmp_path / "clustered.h5ad"
    cl = _cli("cluster", embedded, "--n-niches", 3, "--out", clustered)
    assert cl.returncode == 0, cl.stderr
    assert set(ad.read_h5ad(clustered).obs["scNiche"].cat.categories) == {"Niche0", "Niche1", "Niche2"}
    smoothed = tmp_path / "smoothed.h5ad"
    cl = _cli("cluster", embedded, "--n-niches", 3, "--out", smoothed, "--spatial-prior", 1.5,
              "--spatial-neighbors", 10)
    assert cl.returncode == 0, cl.stderr
    assert ad.read_h5ad(smoothed).obs["scNiche"].nunique() <= 3
    bad = _cli("cluster", embedded, "--n-niches", 3, "--out", tmp_path / "bad.h5ad", "--spatial-prior", -1)
    assert bad.returncode == 2 and "spatial_prior must be a number >= 0" in bad.stderr
    assert not (tmp_path / "bad.h5ad").exists()


@pytest.mark.parametrize("args,message", [
    (["fit", "missing.h5ad", "--out", "o"], "does not exist"),
    (["fit", "{input}", "--out", "/nonexistent/deeper/o"], "does not exist"),
    (["fit", "{input}", "--out", "o", "--celltype-key", "nope"], "no cell-type column 'nope'"),
    (["fit", "{input}", "--out", "o", "--batch-num", "2000", "--sample-key", "slice"], "batch_num"),
    (["fit", "{input}", "--out", "o", "--cells-per-batch", "100", "--sample-key", "slice"], "only applies to"),
    (["cluster", "{input}", "--n-niches", "3", "--out", "c.h5ad"], "no 'X_scniche'"),
    (["fit", "{input}", "--out", "o", "--stability-max-cells", "12"], "--stability-max-cells must be 0"),
    (["fit", "{input}", "--out", "o", "--improved-options", '{"smooth_k": 5}'], "only applies to --variant improved"),
    (["fit", "{input}", "--out", "o", "--variant", "improved", "--improved-options", "smooth_k=5"], "is not JSON"),
    (["fit", "{input}", "--out", "o", "--variant", "improved", "--improved-options", '{"nope": 1}'],
     "unknown ImprovedOptions entries ['nope']"),
    (["fit", "{input}", "--out", "o", "--variant", "improved", "--improved-options", '{"spatial_prior": -1}'],
     "--improved-options: spatial_prior must be >= 0"),
    (["fit", "{input}", "--out", "o", "--n-niches-range", "5", "3"], "--n-niches-range must be"),
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


def test_help_answers_without_loading_jax():
    """``scniche-jax --help`` imports neither JAX nor numpy (it used to take 9-21 s)."""
    code = ("import sys, time; t = time.perf_counter(); from scniche_jax.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(time.perf_counter() - t, 'jax' in sys.modules, 'numpy' in sys.modules, file=sys.stderr)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - started
    seconds, jax_loaded, numpy_loaded = done.stderr.split()
    assert jax_loaded == "False" and numpy_loaded == "False"
    assert "usage: scniche-jax" in done.stdout and wall < 2.0, wall


def test_fit_without_n_niches_chooses_them_by_stability(merfish_subset, tmp_path):
    out = tmp_path / "auto"
    fit = _cli("fit", merfish_subset, "--out", out, "--sample-key", "slice", "--epochs", 2, "--quiet",
               "--n-neighbors", 10, "--n-niches-range", 3, 6, "--stability-max-cells", 500)
    assert fit.returncode == 0, fit.stderr
    summary = json.loads(fit.stdout.strip().splitlines()[-1])
    assert 3 <= summary["n_niches_chosen"] <= 6 and len(summary["niches"]) == summary["n_niches_chosen"]
    results = ad.read_h5ad(out / "adata.h5ad")
    assert results.obs["scNiche"].nunique() == summary["n_niches_chosen"] and not results.uns


def test_improved_variant_fits_and_embeds(merfish_subset, tmp_path):
    out = tmp_path / "improved"
    fit = _cli("fit", merfish_subset, "--out", out, "--sample-key", "slice", "--epochs", 2, "--n-niches", 4,
               "--quiet", "--variant", "improved", "--improved-options", '{"concat_radius_composition": 4}')
    assert fit.returncode == 0, fit.stderr
    # the embedding ⊕ 9 cell types at 3 scales, k nearest and within radii ⊕ 20 PCs of neighbourhood expression
    width = 10 + 3 * 9 + 3 * 9 + 20
    assert ad.read_h5ad(out / "adata.h5ad").obsm["X_scniche"].shape == (800, width)
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["variant"] == "improved" and config["improved_options"]["concat_radius_composition"] == 4
    embedded = tmp_path / "embedded.h5ad"
    emb = _cli("embed", out, merfish_subset, "--out", embedded, "--sample-key", "slice")
    assert emb.returncode == 0, emb.stderr
    np.testing.assert_allclose(ad.read_h5ad(embedded).obsm["X_scniche"],
                               ad.read_h5ad(out / "adata.h5ad").obsm["X_scniche"], atol=1e-5)
