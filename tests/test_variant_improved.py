"""variant="improved" through the user's calls: pp defaults, fit / Model, tl.clustering, save/load, CLI."""
import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import scniche_jax as sj
from scniche_jax import improved as imp
from scniche_jax.config import DEFAULT_VIEWS, ImprovedOptions, ModelConfig


@pytest.fixture(scope="module")
def two_slices():
    a = sj.datasets.synthetic(n_cells=600, n_niches=4, n_cell_types=6, n_genes=12, seed=3)
    a.obs["slice"] = np.where(np.arange(a.n_obs) < 300, "s1", "s2")
    return sj.pp.process_multi_slices(a, celltype_key="Cell_type", sample_key="slice", verbose=False)


@pytest.fixture(scope="module")
def fitted(two_slices):
    """Both variants, 10 epochs each, clustered into the 4 true niches."""
    out = {}
    for variant in ("reference", "improved"):
        a = two_slices.copy()
        model = sj.fit(a, variant=variant, epochs=10, progress=False)
        sj.tl.clustering(a, n_niches=4)
        out[variant] = (model, a)
    return out


def test_improved_finds_the_niches_the_reference_misses(fitted):
    # 10 epochs, seeds 0-4: reference 0.14-0.24, improved 0.718-0.719 (the bounds hold on any seed)
    scores = {v: adjusted_rand_score(a.obs["Niche"], a.obs["scNiche"]) for v, (_, a) in fitted.items()}
    assert scores["improved"] > 0.6 and scores["improved"] > scores["reference"] + 0.3, scores


def test_improved_writes_only_the_embedding_and_embed_reproduces_it(two_slices, fitted):
    model, a = fitted["improved"]
    assert set(a.obsm) == set(two_slices.obsm) | {"X_scniche"}
    assert set(a.uns) == set(two_slices.uns) and "CN_params" in a.uns
    n_types, n_comps = len(two_slices.uns["CN_order"]), two_slices.obsm["X_data_nbr"].shape[1]
    # embedding ⊕ 3-scale composition, k nearest and within radii ⊕ neighbourhood expression
    assert a.obsm["X_scniche"].shape == (a.n_obs, 10 + 2 * 3 * n_types + n_comps)
    assert model.config.views == ImprovedOptions().view_names and model.config.deterministic_embedding
    again = model.embed(two_slices)
    np.testing.assert_allclose(again, a.obsm["X_scniche"], atol=1e-5)


def test_the_embedding_is_the_readout_of_the_model_output(two_slices, fitted):
    model, a = fitted["improved"]
    options = model.config.improved_options
    raw = model._embed_batches(_rebuilt_run(model, two_slices), two_slices.n_obs)
    views = imp.improved_views(two_slices, options)
    expected = imp.finish_embedding(raw, two_slices, views, options)
    np.testing.assert_allclose(expected, a.obsm["X_scniche"], atol=1e-5)
    # the readout differs from the raw embedding: smoothing is on, and z-scoring per slice
    assert not np.allclose(expected[:, :10], raw)


def _rebuilt_run(model, adata):
    from scniche_jax.model import _Run
    from scniche_jax.parallel import Placement
    from scniche_jax.pipeline import build_host_batches, embedding_batches
    from scniche_jax.step import StepSettings

    features, comp = model._view_matrices(adata)
    d = model.data_shape
    batches = embedding_batches(adata.n_obs, d.batch_size, d.batch_num, model.config.seed)
    host = build_host_batches(features, batches, model.gfn_params, model.config.n_neighbors, model.config.mik,
                              model.config.gre_semantics, 1024, **model._consensus_options())
    placement = Placement.of(None)
    return _Run(batches, placement.put_batches(host), placement, StepSettings.of(model.config, model.batch_config),
                comp)


def test_majority_consensus_is_not_empty_where_the_fusion_network_is():
    """At 2,400 cells per graph the frozen fusion network keeps no edge; the majority graph keeps thousands."""
    import jax
    import jax.numpy as jnp

    from scniche_jax.networks import GraphFusionNetwork
    from scniche_jax.pipeline import build_host_batches

    a = sj.datasets.synthetic(n_cells=2400, n_niches=4, n_cell_types=6, n_genes=12, seed=0)
    sj.pp.cal_spatial_neighbors(a, verbose=False)
    sj.pp.cal_spatial_exp(a, verbose=False)
    views = list(imp.improved_views(a).values())
    gfn = GraphFusionNetwork(a.n_obs).init(jax.random.key(0), jnp.zeros((1, a.n_obs)))["params"]
    batches = [np.arange(a.n_obs)]
    edges = {}
    for consensus in ("gfn", "majority"):
        host = build_host_batches(views, batches, gfn, 20, 5, "gpu", 1024, consensus=consensus)
        senders, receivers = np.asarray(host.consensus.senders), np.asarray(host.consensus.receivers)
        edges[consensus] = int(np.sum(senders != receivers))  # one batch: no padding edges
    assert edges["gfn"] == 0 and edges["majority"] > 5 * a.n_obs, edges


def test_save_and_load_keep_the_variant(fitted, two_slices, tmp_path):
    model, a = fitted["improved"]
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"]["variant"] == "improved"
    assert config["model"]["improved_options"]["scales"] == [20, 50, 100]
    loaded = sj.load(tmp_path / "m")
    assert loaded.config == model.config
    np.testing.assert_allclose(loaded.embed(two_slices), a.obsm["X_scniche"], atol=1e-5)


def test_a_save_from_before_the_readout_options_loads_with_the_readout_it_had(fitted, two_slices, tmp_path):
    model, a = fitted["improved"]
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    assert config["model"]["improved_options"].pop("concat_radius_composition") == 3.0
    assert config["model"]["improved_options"].pop("embedding_weight") == 0.5
    path.write_text(json.dumps(config))
    old = sj.load(tmp_path / "m")
    assert (old.config.improved_options.concat_radius_composition, old.config.improved_options.embedding_weight) == (0, 1)
    # the same model, read out as before these options existed: no radius block, the embedding at weight 1
    n_types = len(two_slices.uns["CN_order"])
    before, now = old.embed(two_slices), a.obsm["X_scniche"]
    assert before.shape[1] == now.shape[1] - 3 * n_types
    np.testing.assert_allclose(before[:, :10], 2 * now[:, :10], atol=2e-5)
    np.testing.assert_allclose(before[:, 10:10 + 3 * n_types], now[:, 10:10 + 3 * n_types], atol=1e-5)


def test_every_piece_is_its_own_option(two_slices):
    options = ImprovedOptions(smooth_steps=0, concat_composition=0.0, concat_radius_composition=0.0,
                              concat_expression=0.0, slice_readout=False, embedding_weight=1.0)
    a = two_slices.copy()
    model = sj.fit(a, variant="improved", improved_options=options, epochs=2, progress=False)
    assert a.obsm["X_scniche"].shape == (a.n_obs, 10)          # no readout: the model's embedding itself
    assert ModelConfig.from_dict(model.config.to_dict()) == model.config
    comp_only = ModelConfig(variant="improved", improved_options=ImprovedOptions(expression_views=False))
    assert comp_only.views == ("X_ms_comp",)


@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="improved", views=["X_cn_norm"]), "computes its own views"),
    (dict(improved_options=ImprovedOptions()), "only applies to variant='improved'"),
    (dict(variant="improved", improved_options=ImprovedOptions(sample_key="nope")), "sample_key='nope'"),
    (dict(variant="best"), "variant must be one of"),
])
def test_bad_options_raise_before_work(two_slices, kwargs, match):
    a = two_slices.copy()
    with pytest.raises(ValueError, match=match):
        sj.fit(a, epochs=1, progress=False, **kwargs)
    assert set(a.obsm) == set(two_slices.obsm)


def test_without_the_cell_type_column_the_error_names_the_fix(two_slices):
    a = two_slices.copy()
    del a.uns["CN_params"]
    a.obs = a.obs.drop(columns=["Cell_type"])
    with pytest.raises(ValueError, match="celltype_key"):
        sj.fit(a, variant="improved", epochs=1, progress=False)
    assert "X_scniche" not in a.obsm


def test_cli_views_match_the_config():
    from scniche_jax import cli

    assert cli.DEFAULT_VIEWS == DEFAULT_VIEWS
