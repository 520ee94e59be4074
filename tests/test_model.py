"""The Model lifecycle: construct, train, train again (exact continuation), embed, refuse misuse."""
import jax
import numpy as np
import pytest

import scniche_jax as sj
from conftest import synthetic_views
from scniche_jax import loop as loop_module
from scniche_jax.model import read_views
from scniche_jax.optimizer import plateau_lr, with_learning_rate
from scniche_jax.pipeline import batch_at, build_host_batches, plan_batches
from scniche_jax.step import StepSettings, init_state, train_epoch

EXACT = dict(progress=False, precision="fp32", restore_best=False, lr_patience=None)


@pytest.fixture(scope="module")
def small():
    return synthetic_views(240, n_niches=3, n_cell_types=5, n_genes=15, seed=2, n_neighbors=10, n_comps=6)


def _max_abs(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("batch_num", [None, 3])
def test_training_again_continues_exactly(small, batch_num):
    """fit(epochs=10) then train(epochs=10) is fit(epochs=20): parameters, Adam state, embedding."""
    once = small.copy()
    straight = sj.fit(once, n_neighbors=10, epochs=20, batch_num=batch_num, **EXACT)
    twice = small.copy()
    model = sj.fit(twice, n_neighbors=10, epochs=10, batch_num=batch_num, **EXACT)
    model.train(twice, epochs=10, batch_num=batch_num, **EXACT)
    assert model.history.epochs_run == 20 and model.history.loss == straight.history.loss
    assert _max_abs(model.params, straight.params) <= 1e-6
    assert _max_abs(model.opt_state, straight.opt_state) <= 1e-6
    np.testing.assert_allclose(model.embed(twice), once.obsm["X_scniche"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch_num", [None, 3])
def test_continuation_is_exact_across_lr_cuts(small, batch_num):
    """fit(10) + train(10) == fit(20) bit for bit with the plateau schedule on and cutting in both halves."""
    kw = dict(progress=False, precision="fp32", restore_best=False, lr_patience=0, lr_factor=0.5, min_lr=0.0,
              batch_num=batch_num)
    straight = sj.fit(small.copy(), n_neighbors=10, epochs=20, **kw)
    twice = small.copy()
    model = sj.fit(twice, n_neighbors=10, epochs=10, **kw)
    first_half = list(model.history.lr)
    model.train(twice, epochs=10, **kw)
    lrs = straight.history.lr
    assert len(set(lrs[:10])) > 1 and len(set(lrs[9:])) > 1, lrs  # cuts in the first call and the second
    assert first_half == lrs[:10] and model.history.lr == lrs
    assert model.history.loss == straight.history.loss
    for a, b in zip(model._loop.plateau, straight._loop.plateau):
        assert np.asarray(a).dtype == np.asarray(b).dtype and np.asarray(a) == np.asarray(b)
    assert _max_abs(model.params, straight.params) == 0.0
    assert _max_abs(model.opt_state, straight.opt_state) == 0.0


def test_the_lr_schedule_and_stopping_continue(small):
    kw = dict(progress=False, precision="fp32", lr_patience=0, ari_every=2, ari_k=3)
    straight = sj.fit(small.copy(), n_neighbors=10, epochs=12, **kw)
    model = sj.fit(small.copy(), n_neighbors=10, epochs=6, **kw)
    model.train(small.copy(), epochs=6, **kw)
    assert model.history.lr == straight.history.lr and min(straight.history.lr) < 0.01  # the LR was cut
    assert model.history.ari == straight.history.ari
    assert _max_abs(model.params, straight.params) == 0.0


def test_a_different_lr_restarts_the_schedule(small):
    model = sj.Model(n_neighbors=10)
    model.train(small, epochs=2, progress=False)
    model.train(small, epochs=2, lr=0.002, progress=False)
    assert model.history.lr == [0.01, 0.01, 0.002, 0.002]
    assert float(model.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.002)


def test_lr_cuts_reach_the_optimizer(small, monkeypatch):
    """Each epoch's parameters equal a hand-driven run of the compiled epoch at the halved LR."""
    halve = lambda plateau, loss, config, min_scale=None: plateau._replace(scale=plateau_lr(plateau) / 2)
    monkeypatch.setattr(loop_module, "plateau_update", halve)
    model = sj.Model(n_neighbors=10, dropout=0.0, seed=4)
    model.train(small, epochs=3, **EXACT)
    assert model.history.lr == [0.01, 0.005, 0.0025]

    features = read_views(small, model.config.views)
    batches = plan_batches(small.n_obs, None, 10)
    host = build_host_batches(features, batches, model.gfn_params, 10, 5, "gpu", 1024)
    settings = StepSettings(dropout=0.0, precision="fp32")
    k_init, _, k_train, _ = jax.random.split(jax.random.key(4), 4)
    state = init_state(k_init, batch_at(host, 0), settings, 0.01)
    device_batches = jax.device_put(host)
    for epoch, lr in enumerate((0.01, 0.005, 0.0025)):
        state = state._replace(opt_state=with_learning_rate(state.opt_state, lr))
        state, _ = train_epoch(state, device_batches, jax.random.fold_in(k_train, epoch), settings)
    assert _max_abs(model.params, state.params) == 0.0


def test_lifecycle_errors_name_the_fix(small):
    model = sj.Model(n_neighbors=10)
    with pytest.raises(ValueError, match="not trained yet.*model.train"):
        model.embed(small)
    with pytest.raises(ValueError, match="not trained yet"):
        model.save("unused")
    model.train(small, epochs=1, progress=False)
    with pytest.raises(ValueError, match="continue with batch_num=None"):
        model.train(small, epochs=1, batch_num=2, progress=False)
    assert model.history.epochs_run == 1
    with pytest.raises(ValueError, match="n_neighbors must be an integer"):
        sj.Model(n_neighbors=0)
    with pytest.raises(ValueError, match="variant must be one of"):
        sj.Model(variant="better")
    with pytest.raises(TypeError, match="unexpected keyword"):
        sj.Model(epochs=3)
    with pytest.warns(DeprecationWarning, match="k_graph= is deprecated"):
        assert sj.Model(k_graph=12).config.n_neighbors == 12


def test_repr_and_history(small):
    model = sj.Model(n_neighbors=10)
    assert "not trained" in repr(model) and model.history.epochs_run == 0
    model.train(small, epochs=2, progress=False)
    assert "epochs run=2" in repr(model)
    assert model.history["loss"]["total"] == model.history.loss["total"]  # the older dictionary access
    assert model.history.early_stop.stopped_by == "epochs"
