"""The CLI checks every argument before any work (issue 28): input file, K against the cells, --out
writable and never overwritten silently; --version; help with defaults for every option; cluster
chooses K like fit."""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scniche_jax.cli import build_parser, main


def _cli(*args, cwd=None):
    """A subprocess, as a user runs it (for what prints warnings)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "scniche_jax.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def _main(*args, cwd=None):
    """``main`` in this process (fast): a result with returncode, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit_:  # argparse
                code = exit_.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _one_line_error(result, message):
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """60 synthetic cells (log-normalised) with an embedding of two clear groups in obsm['X_scniche']."""
    import scniche_jax as sj

    a = sj.datasets.synthetic(60, n_niches=2, n_cell_types=4, n_genes=8, seed=0)
    rng = np.random.default_rng(0)
    a.obsm["X_scniche"] = (np.repeat(np.eye(3, dtype=np.float32) * 10, 20, axis=0)
                           + rng.normal(0, 0.1, (60, 3)).astype(np.float32))
    path = tmp_path_factory.mktemp("cli_input") / "small.h5ad"
    a.write_h5ad(path)
    return path


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot write in (root ignores permissions: /proc then)."""
    if os.geteuid() == 0:
        yield "/proc"
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    yield str(folder)
    folder.chmod(0o700)


def test_a_folder_as_input_is_named_a_folder(tmp_path):
    (tmp_path / "adir").mkdir()
    _one_line_error(_main("fit", "adir", "--out", "o", cwd=tmp_path), "input 'adir' is a folder, not an .h5ad file")
    _one_line_error(_main("cluster", "adir", "--out", "c.h5ad", cwd=tmp_path), "is a folder, not an .h5ad file")


def test_n_niches_larger_than_the_cells_is_refused_before_training(small, tmp_path):
    _one_line_error(_main("fit", small, "--out", tmp_path / "run", "--n-niches", 5000),
                    "--n-niches 5000 exceeds the 60 cells of the input")
    _one_line_error(_main("fit", small, "--out", tmp_path / "run", "--n-niches-range", 2, 80),
                    "--n-niches-range 2 80 needs at least 81 cells, the input has 60")
    _one_line_error(_main("cluster", small, "--out", tmp_path / "c.h5ad", "--n-niches", 61),
                    "--n-niches 61 exceeds the 60 cells")
    assert not (tmp_path / "run").exists() and not (tmp_path / "c.h5ad").exists()


def test_an_unwritable_out_is_refused_before_any_work(small, unwritable):
    _one_line_error(_main("fit", small, "--out", os.path.join(unwritable, "run")), "cannot be written")
    _one_line_error(_main("cluster", small, "--n-niches", 2, "--out", os.path.join(unwritable, "c.h5ad")),
                    "cannot be written")


def test_existing_output_is_never_overwritten_silently(small, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    _one_line_error(_main("fit", small, "--out", run), "is not empty; pass --overwrite")
    assert (run / "keep.txt").read_text() == "mine"
    existing = tmp_path / "c.h5ad"
    existing.write_text("mine")
    _one_line_error(_main("cluster", small, "--n-niches", 2, "--out", existing), "exists; pass --overwrite")
    _one_line_error(_main("embed", tmp_path / "no-model", small, "--out", existing), "exists; pass --overwrite")
    assert existing.read_text() == "mine"


def test_bad_epochs_are_refused(small, tmp_path):
    _one_line_error(_main("fit", small, "--out", tmp_path / "run", "--epochs", 0), "--epochs must be >= 1, got 0")
    result = _main("fit", small, "--out", tmp_path / "run", "--epochs", "abc")
    assert result.returncode == 2 and "invalid int value: 'abc'" in result.stderr


def test_version():
    import scniche_jax

    result = _main("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"scniche-jax {scniche_jax.__version__}"


def test_every_option_has_help_and_the_help_shows_defaults():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
        assert "(default: " in sub.format_help()
    fit_help = subparsers.choices["fit"].format_help()
    assert "--seed SEED" in fit_help and "(default: 0)" in fit_help and "(default: Cell_type)" in fit_help


def test_cluster_chooses_k_like_fit_without_n_niches(small, tmp_path):
    import anndata as ad

    import scniche_jax as sj

    out = tmp_path / "c.h5ad"
    result = _main("cluster", small, "--out", out, "--n-niches-range", 2, 4, "--stability-max-cells", 0)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    expected = sj.tl.cluster_stability(ad.read_h5ad(small), n_niches=(2, 4), key_added="k")  # what fit runs
    assert summary["n_niches_chosen"] == expected and len(summary["niches"]) == expected
    assert ad.read_h5ad(out).obs["scNiche"].nunique() == expected and sum(summary["niches"].values()) == 60


def test_fit_on_raw_counts_warns_naming_normalize(tmp_path):
    import scniche_jax as sj

    a = sj.datasets.synthetic(120, n_niches=2, n_cell_types=4, n_genes=8, seed=1)
    a.X = np.round(np.expm1(a.X)).astype(np.float32)
    a.write_h5ad(tmp_path / "counts.h5ad")
    result = _cli("fit", tmp_path / "counts.h5ad", "--out", tmp_path / "run", "--epochs", 1, "--no-cluster",
                  "--quiet", "--n-neighbors", 5, "--n-comps", 5, "--no-torch-file")
    assert result.returncode == 0, result.stderr
    warning = [l for l in result.stderr.splitlines() if "warning:" in l]
    assert warning and "raw counts" in warning[0] and "--normalize" in warning[0] and "normalize_total" in warning[0]
    assert warning[0].startswith("scniche-jax fit: warning:")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["preprocessing"]["normalisation"] == "raw counts"
    assert sorted(os.listdir(tmp_path / "run")) == ["adata.h5ad", "config.json", "history.png", "state", "summary.txt"]
    assert "no clustering (--no-cluster)" in (tmp_path / "run" / "summary.txt").read_text()


def test_normalize_on_cells_without_counts_is_refused(tmp_path):
    import scniche_jax as sj

    a = sj.datasets.synthetic(60, n_niches=2, n_cell_types=4, n_genes=8, seed=1)
    a.X = np.round(np.expm1(a.X)).astype(np.float32)
    a.X[:2] = 0
    a.write_h5ad(tmp_path / "counts.h5ad")
    _one_line_error(_main("fit", tmp_path / "counts.h5ad", "--out", tmp_path / "run", "--normalize"),
                    "2 cells have no counts, so --normalize cannot scale them")
    assert not (tmp_path / "run").exists()
