import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scniche_jax.graphs import build_view_graph, gcn_edge_weights, pos_weight


def test_view_graph_is_symmetric_binary_with_self_loops():
    x = np.random.default_rng(0).normal(size=(60, 4))
    g = build_view_graph(x, n_neighbors=5, mik=3)
    a = np.zeros((60, 60))
    np.add.at(a, (g.senders, g.receivers), 1)
    assert a.max() == 1 and np.array_equal(a, a.T)
    assert np.all(np.diag(a) == 1)
    assert np.all(a.sum(1) >= 6)
    assert g.mik.shape == (60, 3) and np.array_equal(g.mik[:, 0], np.arange(60))
    assert g.features.dtype == np.float32


def test_pos_weight_formula():
    assert pos_weight(256, 19722) == pytest.approx((256**2 - 19722 / 2) / 19722 * 2)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 25), st.integers(0, 60), st.integers(0, 10_000))
def test_gcn_edge_weights_are_in_the_unit_interval(n, n_edges, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n, n_edges).astype(np.int32)
    r = rng.integers(0, n, n_edges).astype(np.int32)
    w = gcn_edge_weights(s, r, n)
    assert np.all(w > 0) and np.all(w <= 1)
