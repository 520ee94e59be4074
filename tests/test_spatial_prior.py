"""The spatial Potts prior on niche labels (clustering.potts_refine, tl.clustering(spatial_prior=...))."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import scniche_jax as sj
from scniche_jax.clustering import potts_refine, spatial_neighbour_shares


def _line_case():
    """21 cells on a line: positions 0-10 feature 0 except position 5 (0.55), positions 11-20 feature 1."""
    coords = np.stack([np.arange(21.0), np.zeros(21)], axis=1)
    x = np.where(np.arange(21) <= 10, 0.0, 1.0)[:, None]
    x[5] = 0.55
    start = (np.arange(21) > 10).astype(int)
    start[5] = 1  # nearer the mean of 1 in feature space
    return coords, x, start


def _flip_threshold(x, labels):
    """The weight above which cell 5 (both neighbours labelled 0) moves to niche 0, by hand."""
    means = np.array([x[labels == c].mean() for c in (0, 1)])
    d = (x[:, 0][:, None] - means[None]) ** 2
    spread = d[np.arange(len(x)), labels].mean()
    return (d[5, 0] - d[5, 1]) / spread  # share difference is 1 - 0


def test_neighbour_shares_are_row_stochastic_exclude_self_and_stay_in_their_slice():
    rng = np.random.default_rng(0)
    coords = rng.uniform(size=(60, 2))
    groups = np.array(["a"] * 30 + ["b"] * 30)
    w = spatial_neighbour_shares(coords, groups, 5).toarray()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(np.diag(w) == 0)
    assert w[:30, 30:].sum() == 0 and w[30:, :30].sum() == 0
    assert np.all((w > 0).sum(axis=1) == 5)
    # the five nearest of cell 0 within its slice, by hand
    dist = np.linalg.norm(coords[:30] - coords[0], axis=1)
    assert set(np.flatnonzero(w[0])) == set(np.argsort(dist)[1:6])
    small = spatial_neighbour_shares(coords[:4], None, 10).toarray()  # fewer cells than neighbours
    np.testing.assert_allclose(small, (1 - np.eye(4)) / 3)


def test_potts_flips_exactly_the_ambiguous_cell_above_the_hand_computed_weight():
    coords, x, start = _line_case()
    shares = spatial_neighbour_shares(coords, None, 2)
    threshold = _flip_threshold(x, start)
    below, passes = potts_refine(x, start, shares, threshold * 0.99)
    np.testing.assert_array_equal(below, start)
    assert passes == 0
    above, passes = potts_refine(x, start, shares, threshold * 1.01)
    expected = start.copy()
    expected[5] = 0
    np.testing.assert_array_equal(above, expected)
    assert passes == 1
    same, passes = potts_refine(x, start, shares, 0.0)
    np.testing.assert_array_equal(same, start)
    assert passes == 0


def test_potts_keeps_a_cell_whose_features_are_clear():
    coords, x, start = _line_case()
    x[5] = 0.95  # a clear niche-1 cell inside niche 0: only a far larger weight moves it
    shares = spatial_neighbour_shares(coords, None, 2)
    threshold = _flip_threshold(x, start)
    assert threshold > 1000
    np.testing.assert_array_equal(potts_refine(x, start, shares, 10.0)[0], start)


def _noisy_halves(seed=0, side=30):
    """A side × side grid, left half niche 0, right half niche 1, features = niche + heavy noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    coords = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(float)
    truth = (coords[:, 0] >= side / 2).astype(int)
    feats = truth[:, None] * 2.0 + rng.normal(scale=1.3, size=(truth.size, 3))
    a = ad.AnnData(obs=pd.DataFrame({"slice": ["s0"] * truth.size}, index=[f"c{i}" for i in range(truth.size)]))
    a.obsm["X_scniche"] = feats.astype(np.float32)
    a.obsm["spatial"] = coords
    return a, truth


def test_clustering_with_the_prior_recovers_noisy_regions_better():
    a, truth = _noisy_halves()
    plain = sj.tl.clustering(a, n_niches=2, copy=True)
    prior = sj.tl.clustering(a, n_niches=2, spatial_prior=1.5, spatial_neighbors=8, copy=True)
    ari_plain = adjusted_rand_score(truth, plain.obs["scNiche"].cat.codes)
    ari_prior = adjusted_rand_score(truth, prior.obs["scNiche"].cat.codes)
    # measured: 0.668 without the prior, 0.922 with it
    assert ari_plain < 0.7 and ari_prior > 0.9
    assert list(prior.obs["scNiche"].cat.categories) == ["Niche0", "Niche1"]
    zero = sj.tl.clustering(a, n_niches=2, spatial_prior=0, copy=True)
    assert (zero.obs["scNiche"] == plain.obs["scNiche"]).all()


def test_clustering_prior_reads_the_recorded_slice_column_and_never_mixes_slices():
    a, _ = _noisy_halves()
    b = a.copy()
    # the same tissue twice, as two slices on top of each other
    both = ad.concat([a, b], index_unique="-")
    both.obs["slice"] = ["s0"] * a.n_obs + ["s1"] * b.n_obs
    both.uns["CN_params"] = {"sample_key": "slice", "spatial_key": "spatial"}
    sj.tl.clustering(both, n_niches=2, spatial_prior=1.5, spatial_neighbors=8)
    codes = both.obs["scNiche"].cat.codes.to_numpy()
    # identical slices, identical features: identical labels only if neighbours stay within a slice
    np.testing.assert_array_equal(codes[: a.n_obs], codes[a.n_obs:])


@pytest.mark.parametrize("kwargs,message", [
    ({"spatial_prior": -1.0}, "spatial_prior must be a number >= 0"),
    ({"spatial_prior": True}, "spatial_prior must be a number >= 0"),
    ({"spatial_prior": float("nan")}, "spatial_prior must be a number >= 0"),
    ({"spatial_prior": 1.0, "spatial_neighbors": 0}, "spatial_neighbors"),
    ({"spatial_prior": 1.0, "spatial_key": "nope"}, "nope"),
    ({"spatial_prior": 1.0, "sample_key": "nope"}, "sample_key='nope' is not a column"),
])
def test_clustering_prior_bad_input_raises_before_any_change(kwargs, message):
    a, _ = _noisy_halves(side=10)
    before = a.copy()
    with pytest.raises(ValueError, match=message):
        sj.tl.clustering(a, n_niches=2, **kwargs)
    assert "scNiche" not in a.obs and list(a.obs.columns) == list(before.obs.columns)


def test_improved_options_carry_the_prior_for_clustering():
    options = sj.ImprovedOptions()
    assert options.clustering_kwargs == {"spatial_prior": 1.5, "spatial_neighbors": 75}
    assert sj.ImprovedOptions(spatial_prior=0).clustering_kwargs["spatial_prior"] == 0.0
    assert sj.ImprovedOptions.from_dict(options.to_dict()) == options
    with pytest.raises(ValueError, match="spatial_prior must be >= 0"):
        sj.ImprovedOptions(spatial_prior=-0.5)
    with pytest.raises(ValueError, match="spatial_neighbors"):
        sj.ImprovedOptions(spatial_neighbors=0)


def test_neighbour_shares_with_duplicate_coordinates_still_exclude_self():
    w = spatial_neighbour_shares(np.zeros((6, 2)), None, 2).toarray()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(np.diag(w) == 0) and np.all((w > 0).sum(axis=1) >= 2)
