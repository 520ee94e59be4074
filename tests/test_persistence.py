"""Saving, loading, torch interop, safe loading and resume."""
import json
import os
import pickle
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

import scniche_jax as sj
from conftest import synthetic_views
from scniche_jax import model as model_module
from scniche_jax import persistence as persistence_module
from scniche_jax.datasets import synthetic
from scniche_jax.torch_format import UnsafeTorchFileError, load_torch, save_torch

KEYS_JSON = Path(__file__).resolve().parents[1] / "parity" / "fixtures" / "reference_golden_n256_state_dict_keys.json"


@pytest.fixture(scope="module")
def n256():
    """256 cells with views of widths 10, 20, 20, like the reference fixture."""
    return synthetic_views(256, n_niches=5, n_cell_types=10, n_genes=30, seed=0, n_neighbors=20, n_comps=20)


@pytest.fixture(scope="module")
def trained(n256):
    a = n256.copy()
    model = sj.fit(a, epochs=4, progress=False)
    return model, a


def test_save_load_roundtrip_is_bit_identical(trained, tmp_path):
    model, a = trained
    path = model.save(tmp_path / "model", adata=a)
    assert sorted(os.listdir(path)) == ["adata.h5ad", "config.json", "model.pt", "state"]
    loaded = sj.load(path)
    for x, y in zip(*(np.concatenate([np.ravel(l) for l in __import__("jax").tree_util.tree_leaves(m.params)])
                      for m in (model, loaded))):
        assert x == y
    np.testing.assert_array_equal(loaded.embed(a), model.embed(a))
    np.testing.assert_array_equal(loaded.embed(a), a.obsm["X_scniche"])
    assert loaded.history == model.history and loaded.config == model.config
    assert loaded.data_shape == model.data_shape and loaded.optimizer_config == model.optimizer_config
    results = __import__("anndata").read_h5ad(path / "adata.h5ad")
    assert set(results.obsm) == {"X_scniche", "spatial"} and results.X is None and not results.uns
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["views"] == list(model.config.views) and config["data"]["batch_size"] == 256
    assert set(config) == {"format", "model", "data", "optimizer", "stopping", "batching", "preprocessing"}
    assert config["preprocessing"]["genes"] == list(a.var_names) and loaded.preprocessing == model.preprocessing


def test_model_pt_has_the_reference_keys_and_shapes(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    data = load_torch(tmp_path / "m" / "model.pt")
    reference = json.loads(KEYS_JSON.read_text())
    assert {k: list(v.shape) for k, v in data["model_state"].items()} == reference["MGAE"]
    assert {k: list(v.shape) for k, v in data["discriminator_state"].items()} == reference["Discriminator"]
    assert list(data["model_state"]) == list(reference["MGAE"])
    assert data["config"] == {"input_size": [10, 20, 20], "hidden_size_v": [10], "hidden_size": [32, 10],
                              "views": 3, "batch_size": 256, "latent_dim": 10,
                              "choose_views": ["X_cn_norm", "X_data", "X_data_nbr"]}
    assert data["training"]["loss"] == model.history["loss"]["total"]
    assert set(data["training"]) == {"loss", "lr", "ari", "early_stop"}


def test_model_pt_only_folder_and_from_torch(trained, tmp_path):
    model, a = trained
    save_torch(model.to_torch_dict(), tmp_path / "model.pt")
    for source in (tmp_path / "model.pt", tmp_path):
        other = sj.load(source)
        np.testing.assert_allclose(other.embed(a), model.embed(a), rtol=1e-6, atol=1e-7)


def _torch_reference_modules(torch, n_cells, dims, hidden_v=10, hidden=(32, 10)):
    """Modules with the reference's parameter names and shapes (written from the key list)."""
    nn = torch.nn

    class GraphConvParams(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(i, o))
            self.bias = nn.Parameter(torch.empty(o))

    class Fusion(nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = nn.ParameterList([nn.Parameter(torch.empty(hidden_v, hidden_v)) for _ in dims])

    class GFN(nn.Module):
        def __init__(self):
            super().__init__()
            self.gfn = nn.Sequential(nn.Linear(n_cells, n_cells // 2), nn.ReLU(), nn.Linear(n_cells // 2, n_cells))

    class MGAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers_per_view = nn.ModuleList([nn.ModuleList([GraphConvParams(d, hidden_v)]) for d in dims])
            self.layer_m = nn.ModuleList([GraphConvParams(hidden_v, hidden[0]), GraphConvParams(*hidden)])
            self.featfusion = Fusion()
            self.gfn = GFN()

    class Discriminator(nn.Module):
        def __init__(self, d=hidden[-1]):
            super().__init__()
            self.discriminator = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(),
                                               nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1), nn.Sigmoid())

    return MGAE(), Discriminator()


def test_real_torch_loads_our_model_pt(trained, tmp_path):
    torch = pytest.importorskip("torch")
    model, _ = trained
    model.save(tmp_path / "m")
    data = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    torch.load(tmp_path / "m" / "model.pt", weights_only=True, mmap=True)
    mgae, disc = _torch_reference_modules(torch, 256, [10, 20, 20])
    mgae.load_state_dict(data["model_state"], strict=True)
    disc.load_state_dict(data["discriminator_state"], strict=True)
    # the discriminator computes what ours computes
    import jax.numpy as jnp
    x = np.random.default_rng(0).normal(size=(7, 20)).astype(np.float32)
    from scniche_jax.step import StepSettings
    ours = StepSettings().discriminator.apply({"params": model.discriminator_params},
                                                        jnp.asarray(x[:, :10]), jnp.asarray(x[:, 10:]))
    theirs = disc.discriminator(torch.from_numpy(x)).detach().numpy()[:, 0]
    np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(ours))), theirs, rtol=1e-5, atol=1e-6)
    # and torch's own files come back through our reader
    torch.save({"model_state": mgae.state_dict(), "discriminator_state": disc.state_dict(),
                "config": data["config"], "training": data["training"]}, tmp_path / "torch_written.pt")
    again = sj.Model.from_torch(tmp_path / "torch_written.pt")
    np.testing.assert_array_equal(again.params["shared_layer0"]["kernel"], model.params["shared_layer0"]["kernel"])


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    _zip_with_pickle(tmp_path / "evil.pt", payload)
    with pytest.raises(UnsafeTorchFileError, match="os.system"):
        load_torch(tmp_path / "evil.pt")
    with pytest.raises(UnsafeTorchFileError):
        sj.Model.from_torch(tmp_path / "evil.pt")
    assert not marker.exists()
    builtin = pickle.dumps({"x": eval}, protocol=2)  # a builtin global
    _zip_with_pickle(tmp_path / "evil2.pt", builtin)
    with pytest.raises(UnsafeTorchFileError, match="eval'"):
        load_torch(tmp_path / "evil2.pt")


def test_corrupted_files_raise_clear_errors(trained, tmp_path):
    model, _ = trained
    path = model.save(tmp_path / "m")
    raw = (path / "model.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated.pt is truncated or corrupted"):
        sj.Model.from_torch(tmp_path / "truncated.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_torch(tmp_path / "garbage.pt")
    for f in (path / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "state" in str(f):
            f.write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="state.*(truncated or corrupted|unknown format)"):
        sj.load(path)
    with pytest.raises(ValueError, match="does not exist"):
        sj.load(tmp_path / "nothing_here")


def test_interrupted_save_keeps_the_previous_save(trained, tmp_path, monkeypatch):
    model, a = trained
    path = model.save(tmp_path / "m")
    before = sorted(p.name for p in path.iterdir())

    def broken(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_module, "save_torch", broken)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in path.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left
    np.testing.assert_array_equal(sj.load(path).embed(a), model.embed(a))


def test_save_refuses_bad_paths(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ValueError, match="does not exist"):
        model.save(tmp_path / "missing" / "deeper")
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match="overwrite=True"):
        model.save(tmp_path / "m")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        model.save(tmp_path / "afile")



def test_save_refuses_an_unwritable_folder(trained, tmp_path, monkeypatch):
    model, _ = trained
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    if os.access(ro, os.W_OK):  # root ignores permission bits: make the check see what a user would
        real_access = os.access
        monkeypatch.setattr(persistence_module.os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    with pytest.raises(ValueError, match="not writable"):
        model.save(ro / "m")
    assert list(ro.iterdir()) == []


def test_resume_equals_an_uninterrupted_run(n256, tmp_path):
    kw = dict(precision="fp32", progress=False, seed=5, lr_patience=1, ari_every=3, ari_k=4)
    straight = sj.fit(n256.copy(), epochs=20, **kw)
    first = sj.fit(n256.copy(), epochs=10, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=5, **kw)
    assert len(first.history["loss"]["total"]) == 10
    resumed = sj.fit(n256.copy(), epochs=20, checkpoint_dir=str(tmp_path / "ck"), resume=True, **kw)
    import jax
    for x, y in zip(jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.history["lr"] == straight.history["lr"] and resumed.history["ari"] == straight.history["ari"]
    assert sorted(int(p.name) for p in (tmp_path / "ck" / "steps").iterdir() if p.name.isdigit()) == [5, 10, 20]
    with pytest.raises(ValueError, match="other settings.*hidden_size"):
        sj.fit(n256.copy(), epochs=20, hidden_size=(16, 10), checkpoint_dir=str(tmp_path / "ck"), resume=True, **kw)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        sj.fit(n256.copy(), epochs=2, resume=True, progress=False)


def _same_plateau(a, b):
    return all(np.asarray(x).dtype == np.asarray(y).dtype and np.asarray(x) == np.asarray(y) for x, y in zip(a, b))


def test_saved_lr_schedule_round_trips_and_old_saves_load(n256, tmp_path, monkeypatch):
    """The optax plateau state survives save/load bit for bit; an older save's ``[lr, best,
    num_bad_epochs]`` list loads into it; both continue as the uninterrupted run."""
    kw = dict(precision="fp32", progress=False, lr_patience=0, restore_best=False)
    model = sj.fit(n256.copy(), epochs=6, seed=5, **kw)
    assert len(set(model.history.lr)) > 1  # the LR was cut before saving
    loaded = sj.load(model.save(tmp_path / "new", torch_format=False))
    assert _same_plateau(loaded._loop.plateau, model._loop.plateau)
    monkeypatch.setattr(model_module, "plateau_to_dict",
                        lambda pl: [float(pl.scale), float(pl.best_value), int(pl.plateau_count)])
    old = sj.load(model.save(tmp_path / "old", torch_format=False))
    monkeypatch.undo()
    assert _same_plateau(old._loop.plateau, model._loop.plateau)
    straight = sj.fit(n256.copy(), epochs=10, seed=5, **kw)
    for m in (loaded, old):
        m.train(n256.copy(), epochs=4, **kw)
        assert m.history.lr == straight.history.lr and m.history.loss == straight.history.loss
        assert _same_plateau(m._loop.plateau, straight._loop.plateau)
        for x, y in zip(jax.tree_util.tree_leaves(m.params), jax.tree_util.tree_leaves(straight.params)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_embed_new_data(trained):
    model, a = trained
    bigger = synthetic(600, n_niches=5, n_cell_types=10, n_genes=30, seed=3)
    sj.pp.cal_spatial_neighbors(bigger, "Cell_type", n_neighbors=20, verbose=False)
    sj.pp.cal_spatial_exp(bigger, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
    z = model.embed(bigger)
    assert z.shape == (600, 10) and np.all(np.isfinite(z))
    assert "X_scniche" not in bigger.obsm
    small = bigger[:100].copy()
    with pytest.raises(ValueError, match="fewer than the model's graph size of 256"):
        model.embed(small)
    wrong = bigger.copy()
    wrong.obsm["X_data"] = wrong.obsm["X_data"][:, :5]
    with pytest.raises(ValueError, match="has 5 columns but the model was trained on 20"):
        model.embed(wrong)
