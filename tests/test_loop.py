"""Convergence-aware training end to end on small data."""
import math

import numpy as np
import pytest

import scniche_jax as sj
from conftest import synthetic_views
from scniche_jax import parallel as placement_module


@pytest.fixture(scope="module")
def small():
    return synthetic_views(240, n_niches=3, n_cell_types=5, n_genes=15, seed=1, n_neighbors=10, n_comps=6)


def _fit(a, **kw):
    args = dict(n_neighbors=10, progress=False)
    args.update(kw)
    return sj.fit(a, **args)


def test_loss_patience_stops_early(small):
    a = small.copy()
    uns = set(a.uns)
    model = _fit(a, epochs=200, patience=3, min_delta=0.05)
    stop = model.history["early_stop"]
    assert stop["stopped_by"] == "loss" and stop["stopped_epoch"] < 200
    assert len(model.history["loss"]["total"]) == stop["stopped_epoch"]
    assert stop["best_epoch"] == stop["stopped_epoch"] - 3
    assert set(a.uns) == uns


def test_restore_best_embeds_with_best_parameters(small):
    a = small.copy()
    model = _fit(a, epochs=200, patience=3, min_delta=0.05)
    assert model.history["early_stop"]["restored_best"]
    np.testing.assert_allclose(model.embed(a), a.obsm["X_scniche"], rtol=1e-5, atol=1e-6)


def test_ari_probe_stops_training(small, tmp_path):
    a = small.copy()
    uns = set(a.uns)
    model = _fit(a, epochs=100, ari_every=2, ari_k=3, ari_stop_threshold=0.9)
    h = model.history
    assert h["early_stop"]["stopped_by"] == "ari"
    assert h["early_stop"]["stopped_epoch"] < 100
    epochs = [e for e, _ in h["ari"]]
    assert epochs == list(range(4, h["early_stop"]["stopped_epoch"] + 1, 2))
    assert all(v >= 0.9 for _, v in h["ari"][-2:])
    assert set(a.uns) == uns
    a.write_h5ad(tmp_path / "after_fit.h5ad")


def test_ari_probe_in_batch_mode(small):
    a = small.copy()
    model = _fit(a, epochs=6, batch_num=2, ari_every=3, ari_k=3)
    assert [e for e, _ in model.history["ari"]] == [6]
    assert model.history["early_stop"]["stopped_by"] == "epochs"


def test_lr_is_cut_on_plateau_and_fixed_without_rule(small):
    a = small.copy()
    model = _fit(a, epochs=40, lr_patience=0, lr_factor=0.5)
    lrs = model.history["lr"]
    assert lrs[0] == 0.01 and min(lrs) < 0.01
    fixed = _fit(small.copy(), epochs=10, lr_patience=None)
    assert fixed.history["lr"] == [0.01] * 10


def test_interrupt_keeps_best_and_writes_embedding(small, monkeypatch):
    a = small.copy()
    real = placement_module.train_epoch
    calls = {"n": 0}

    def interrupted(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(placement_module, "train_epoch", interrupted)
    model = _fit(a, epochs=50)
    stop = model.history["early_stop"]
    assert stop["stopped_by"] == "interrupted" and stop["stopped_epoch"] == 3
    assert a.obsm["X_scniche"].shape == (240, 10) and np.all(np.isfinite(a.obsm["X_scniche"]))


def test_nonfinite_loss_stops_and_warns(small, monkeypatch):
    a = small.copy()
    real = placement_module.train_epoch
    calls = {"n": 0}

    def poisoned(state, batches, key, settings):
        calls["n"] += 1
        new_state, losses = real(state, batches, key, settings)
        if calls["n"] == 5:
            losses = losses._replace(total=losses.total * np.nan)
        return new_state, losses

    monkeypatch.setattr(placement_module, "train_epoch", poisoned)
    with pytest.warns(RuntimeWarning, match="non-finite loss at epoch 5"):
        model = _fit(a, epochs=20, restore_best=False)
    stop = model.history["early_stop"]
    assert stop["stopped_by"] == "nonfinite" and stop["stopped_epoch"] == 4
    assert all(math.isfinite(x) for x in model.history["loss"]["total"])
    assert np.all(np.isfinite(a.obsm["X_scniche"]))


def test_bad_stopping_arguments(small):
    a = small.copy()
    for kw, match in [({"patience": 0}, "patience"), ({"lr_factor": 1.5}, "lr_factor"),
                      ({"ari_stop_threshold": 0.9}, "ari_every"), ({"ari_every": 0}, "ari_every"),
                      ({"min_lr": 1.0}, "min_lr")]:
        with pytest.raises(ValueError, match=match):
            _fit(a, epochs=2, **kw)
    assert "X_scniche" not in a.obsm


def test_plot_history(small, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    model = _fit(small.copy(), epochs=6, ari_every=2, ari_k=3)
    fig = model.plot_history()
    assert len(fig.axes) == 3
    fig.savefig(tmp_path / "history.png")
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install 'scniche-jax\\[plot\\]'"):
        model.plot_history()
