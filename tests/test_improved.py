"""Components of variant="improved" (scniche_jax.improved), each doing what it says."""
import numpy as np
import pytest

import scniche_jax as sj
from scniche_jax import improved as imp
from scniche_jax.graphs import build_view_graph


@pytest.fixture(scope="module")
def toy():
    a = sj.datasets.synthetic(n_cells=400, n_niches=4, n_cell_types=6, n_genes=12, seed=3)
    a.obs["slice"] = np.where(np.arange(a.n_obs) < 200, "s1", "s2")
    return sj.pp.process_multi_slices(a, celltype_key="Cell_type", sample_key="slice", verbose=False)


def test_spatial_mean_operator_is_a_within_slice_knn_mean():
    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(60, 2))
    groups = np.array(["a"] * 30 + ["b"] * 30, dtype=object)
    op = imp.spatial_mean_operator(xy, groups, 5).toarray()
    np.testing.assert_allclose(op.sum(1), 1.0)
    assert np.all(np.diag(op) == pytest.approx(0.2))          # the cell itself is one of its 5
    assert np.all((op > 0).sum(1) == 5)
    assert op[:30, 30:].sum() == 0 and op[30:, :30].sum() == 0  # slices never mix


def test_standardise_per_slice_zscores_each_slice_and_keeps_constant_columns_finite():
    x = np.column_stack([np.r_[np.arange(5.0), 10 + 3 * np.arange(5.0)], np.ones(10)])
    groups = np.array(["a"] * 5 + ["b"] * 5, dtype=object)
    z = imp.standardise_per_slice(x, groups)
    for g in "ab":
        m = groups == g
        np.testing.assert_allclose(z[m, 0].mean(), 0, atol=1e-12)
        np.testing.assert_allclose(z[m, 0].std(), 1)
    np.testing.assert_array_equal(z[:, 1], 0.0)


def test_multiscale_composition_rows_are_fractions_and_scale_one_is_the_cell_type():
    rng = np.random.default_rng(1)
    xy = rng.uniform(size=(50, 2))
    types = rng.choice(["A", "B", "C"], size=50)
    groups = imp.slice_groups(50)
    comp = imp.multiscale_composition(xy, types, groups, (1, 10))
    assert comp.shape == (50, 6)
    np.testing.assert_allclose(comp[:, :3].sum(1), 1)
    np.testing.assert_allclose(comp[:, 3:].sum(1), 1)
    np.testing.assert_array_equal(comp[:, :3].argmax(1), np.searchsorted(["A", "B", "C"], types))


def test_improved_views_from_what_pp_stored(toy):
    assert imp.infer_celltype_key(toy) == "Cell_type"
    assert toy.uns["CN_params"] == {"celltype_key": "Cell_type", "spatial_key": "spatial", "sample_key": "slice"}
    assert imp.data_keys(toy, imp.ImprovedOptions()) == ("Cell_type", "slice", "spatial")
    views = imp.improved_views(toy)
    assert list(views) == ["X_ms_comp", "X_data_std", "X_data_nbr_std"]
    n_types = len(toy.uns["CN_order"])
    assert views["X_ms_comp"].shape == (toy.n_obs, 3 * n_types)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in views.values())
    s1 = (toy.obs["slice"] == "s1").to_numpy()
    np.testing.assert_allclose(views["X_data_std"][s1].mean(0), 0, atol=1e-5)       # expression: per slice
    np.testing.assert_allclose(views["X_ms_comp"].mean(0), 0, atol=1e-5)            # composition: all cells
    assert np.abs(views["X_ms_comp"][s1].mean(0)).max() > 0.05
    per_slice = imp.improved_views(toy, imp.ImprovedOptions(composition_per_slice=True))
    np.testing.assert_allclose(per_slice["X_ms_comp"][s1].mean(0), 0, atol=1e-5)
    only = imp.improved_views(toy, imp.ImprovedOptions(scales=(), standardise=False, expression_views=False))
    np.testing.assert_allclose(only["X_ms_comp"], toy.obsm["X_cn_norm"], rtol=1e-6)


def test_majority_consensus_keeps_shared_edges_and_is_never_empty(toy):
    from scniche_jax.consensus import build_consensus, view_adjacency
    from scniche_jax.model import GraphFusionNetwork
    import jax
    import jax.numpy as jnp
    feats = imp.improved_views(toy)
    graphs = [build_view_graph(f, 20, 5) for f in feats.values()]
    cons = imp.majority_consensus(graphs, votes=2)
    n = toy.n_obs
    votes = sum(view_adjacency(g) for g in graphs).toarray()
    kept = cons.fused.toarray()
    np.testing.assert_array_equal(kept, kept.T)
    assert np.all(votes[kept > 0] >= 2)
    off = (votes >= 2) & ~np.eye(n, dtype=bool)
    np.testing.assert_array_equal(kept > 0, off)
    loops = cons.senders == cons.receivers
    assert loops.sum() == n and np.array_equal(np.sort(cons.senders[loops]), np.arange(n))
    assert (~loops).sum() > 5 * n                       # a real graph: several edges per cell
    # the reference's frozen GFN on the same graphs (kept as the default, untouched)
    gfn = GraphFusionNetwork(n).init(jax.random.key(0), jnp.zeros((1, n)))["params"]
    ref = build_consensus(gfn, graphs)
    assert ref.loss_gre > 0


def test_smooth_embedding(toy):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(toy.n_obs, 4))
    groups = imp.slice_groups(toy.n_obs, toy.obs["slice"])
    np.testing.assert_allclose(imp.smooth_embedding(z, toy.obsm["spatial"], groups, 10, 0), z, rtol=1e-6)
    sm = imp.smooth_embedding(z, toy.obsm["spatial"], groups, 10, 2)
    assert sm.var() < 0.5 * z.var()                     # averaging shrinks noise
    const = np.ones((toy.n_obs, 2))
    np.testing.assert_allclose(imp.smooth_embedding(const, toy.obsm["spatial"], groups, 10, 3), 1, rtol=1e-6)


def test_options_are_checked_and_the_reference_path_is_untouched():
    with pytest.raises(ValueError):
        imp.ImprovedOptions(consensus="threshold")
    with pytest.raises(ValueError):
        imp.ImprovedOptions(smooth_steps=-1)
    import scniche_jax.consensus as consensus
    import scniche_jax.pipeline as pipeline
    assert pipeline.build_consensus is consensus.build_consensus
    assert set(imp.ABLATIONS) >= {"improved", "improved-no_smoothing", "improved-gfn_consensus"}
    with pytest.raises(ValueError, match="concat_composition"):
        imp.ImprovedOptions(concat_composition=-1)
    with pytest.raises(ValueError, match="scales"):
        imp.ImprovedOptions(scales=(10, 0))


def test_readout_concatenates_unit_variance_parts():
    rng = np.random.default_rng(4)
    z1, z2, comp = rng.normal(size=(50, 3)) * 7, rng.normal(size=(50, 10)), rng.uniform(size=(50, 6))
    np.testing.assert_array_equal(imp.readout([z1]), z1.astype(np.float32))
    r = imp.readout([z1, z2], [(comp, 0.5), (z2, 0.0)])
    assert r.shape == (50, 19)
    var = [r[:, :3].var(0).sum(), r[:, 3:13].var(0).sum(), r[:, 13:].var(0).sum()]
    np.testing.assert_allclose(var, [1.0, 1.0, 0.25], rtol=1e-5)
    groups = np.array(["a"] * 25 + ["b"] * 25, dtype=object)
    per_slice = imp.readout([z1 + 10 * (groups == "b")[:, None]], groups=groups)
    np.testing.assert_allclose(per_slice[25:].mean(0), 0, atol=1e-5)             # slice offsets removed
    # the embedding's weight: 0.5 → total variance 0.25; 0 → left out, the features alone
    half = imp.readout([z1], [(comp, 2.0)], embedding_weight=0.5)
    np.testing.assert_allclose([half[:, :3].var(0).sum(), half[:, 3:].var(0).sum()], [0.25, 4.0], rtol=1e-5)
    np.testing.assert_allclose(imp.readout([z1], [(comp, 2.0)], embedding_weight=0.0), half[:, 3:], atol=1e-6)
    with pytest.raises(ValueError, match="readout is empty"):
        imp.readout([z1], [(comp, 0.0)], embedding_weight=0.0)
    with pytest.raises(ValueError, match="embedding_weight"):
        imp.ImprovedOptions(embedding_weight=0.0, concat_composition=0.0, concat_radius_composition=0.0,
                            concat_expression=0.0)
    with pytest.raises(ValueError, match="embedding_weight must be >= 0"):
        imp.ImprovedOptions(embedding_weight=-1)


def test_radius_composition_by_hand_and_within_slices():
    # Cells on a line at 0, 1, 2, 3 and 10; scale 2: the radius is the median distance to the
    # nearest other cell, 1 (inclusive), so cell 1 sees cells 0-2 and the isolated cell itself only.
    xy = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [10, 0]], float)
    expected = np.array([[1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1], [1, 0]])
    np.testing.assert_allclose(imp.radius_composition(xy, list("AABBA"), imp.slice_groups(5), (2,)), expected)
    # order sets the columns; a second slice on the same coordinates never mixes with the first
    both = imp.radius_composition(np.vstack([xy, xy]), list("AABBA") + list("BBBBB"),
                                  np.array(["s1"] * 5 + ["s2"] * 5, dtype=object), (2, 5), order=["B", "A"])
    np.testing.assert_allclose(both[:5, :2], expected[:, ::-1])
    np.testing.assert_allclose(both[5:, :2], [[1, 0]] * 5)
    np.testing.assert_allclose(both[:, 2:].sum(1), 1)                 # scale 5: every row a fraction
    with pytest.raises(ValueError, match="outside"):
        imp.radius_composition(xy, list("AABBC"), imp.slice_groups(5), (2,), order=["A", "B"])


def test_radius_composition_option_is_checked_and_widens_the_readout(toy):
    with pytest.raises(ValueError, match="concat_radius_composition"):
        imp.ImprovedOptions(concat_radius_composition=-1)
    with pytest.raises(ValueError, match="concat_radius_composition needs"):
        imp.ImprovedOptions(scales=(), concat_radius_composition=4.0)
    on = imp.ImprovedOptions(concat_radius_composition=4.0)
    assert imp.ImprovedOptions.from_dict(on.to_dict()) == on
    # the default: weight 3 with scales, none without (the radii are the scales')
    assert imp.ImprovedOptions().concat_radius_composition == 3.0
    assert imp.ImprovedOptions(scales=()).concat_radius_composition == 0.0
    # a configuration saved before the option existed was fitted without it, and loads so
    saved = imp.ImprovedOptions().to_dict()
    del saved["concat_radius_composition"]
    assert imp.ImprovedOptions.from_saved(saved).concat_radius_composition == 0.0
    assert imp.ImprovedOptions.from_dict(saved).concat_radius_composition == 3.0   # user input: today's default
    assert imp.ImprovedOptions.from_saved(saved).embedding_weight == 0.5           # in that save: kept
    views = imp.improved_views(toy)
    z = np.random.default_rng(0).normal(size=(toy.n_obs, 10))
    plain = imp.finish_embedding(z, toy, views, imp.ImprovedOptions(smooth_steps=0, concat_radius_composition=0))
    wide = imp.finish_embedding(z, toy, views, imp.ImprovedOptions(smooth_steps=0, concat_radius_composition=4.0))
    n_types = len(toy.uns["CN_order"])
    assert wide.shape[1] == plain.shape[1] + 3 * n_types
    # the readout puts it after the k-nearest composition, at weight 4: total variance 16
    start = 10 + 3 * n_types
    np.testing.assert_allclose(wide[:, :start], plain[:, :start], atol=1e-6)
    assert wide[:, start:start + 3 * n_types].var(0).sum() == pytest.approx(16, rel=1e-3)
