"""The fast consensus build returns the reference's fused matrix, edges and loss_gre bit for bit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from scniche_jax.consensus import (PreparedGfn, _dense_rows, build_consensus, consensus_from_fused,
                                   fused_matrix, fused_matrix_reference, fused_threshold, gfn_rows,
                                   graph_fusion_loss, padded_rows, round_fused, screen_values,
                                   view_adjacency_sum)
from scniche_jax.graphs import build_view_graph
from scniche_jax.networks import GraphFusionNetwork


def random_views(n, seed, k=10, n_views=3):
    rng = np.random.default_rng(seed)
    return [build_view_graph(rng.normal(size=(n, 6)).astype(np.float32), k, 5) for _ in range(n_views)]


def gfn_params(n, seed, scale=1.0):
    """A GFN; ``scale`` > 1 spreads its outputs over the rounding threshold (many candidates)."""
    params = GraphFusionNetwork(n).init(jax.random.key(seed), jnp.zeros((1, n)))["params"]
    out = dict(params["output"], kernel=params["output"]["kernel"] * scale)
    return {"hidden": params["hidden"], "output": out}


def reference_consensus(gfn, views, semantics, block):
    """The consensus exactly as it was built before the screen (dense blocks for every row)."""
    fused = fused_matrix_reference(gfn, view_adjacency_sum(views), block)
    senders, receivers = consensus_from_fused(fused)
    return fused, senders, receivers, graph_fusion_loss(fused, views, semantics)


def assert_same(a: sp.csr_matrix, b: sp.csr_matrix):
    assert a.shape == b.shape
    assert np.array_equal(a.toarray(), b.toarray())


@pytest.mark.parametrize("n,block,scale,seed", [
    (300, 64, 1.0, 0),     # many rows near the threshold at this size: the screen re-checks them
    (300, 64, 6.0, 1),     # outputs spread far over the threshold: proven ones and proven zeros
    (513, 128, 3.0, 2),    # a last block padded with zero rows
    (700, 1024, 2.0, 3),   # one block
])
def test_fast_build_equals_the_reference_bit_for_bit(n, block, scale, seed):
    views = random_views(n, seed)
    gfn = gfn_params(n, seed, scale)
    fused, senders, receivers, loss = reference_consensus(gfn, views, "cpu", block)
    for method in ("screen", "exact", "auto"):
        got = build_consensus(PreparedGfn.of(gfn), views, "cpu", block, method=method)
        assert_same(got.fused, fused)
        assert np.array_equal(got.senders, senders) and np.array_equal(got.receivers, receivers)
        assert got.loss_gre == loss
    assert fused.nnz > 0


def test_screen_bound_covers_the_reference_everywhere():
    """|screen − reference| <= bound for every entry, and the bound is useful (few candidates)."""
    n, block = 400, 128
    views = random_views(n, 5)
    for scale in (1.0, 4.0):
        gfn = gfn_params(n, 5, scale)
        S = view_adjacency_sum(views)
        idx, val = padded_rows(S)
        g, bound = jax.jit(screen_values)(PreparedGfn.of(gfn).screen_arrays, jnp.asarray(idx), jnp.asarray(val))
        g, bound = np.asarray(g), np.asarray(bound)
        ref = np.concatenate([np.asarray(gfn_rows(gfn, _dense_rows(jnp.asarray(idx[s:s + block]),
                                                                   jnp.asarray(val[s:s + block]), n), n))
                              for s in range(0, n, block)])
        err = np.abs(g - ref)
        assert (err <= bound).all()
        assert err.max() > 0  # bf16 really differs from the reference ...
        assert bound.max() < 0.05 * scale  # ... and the bound stays small


def test_threshold_is_the_rounding_step():
    t = np.float32(fused_threshold())
    below = np.nextafter(t, np.float32(0))
    values = np.asarray(round_fused(jnp.asarray([below, t, np.float32(0.0), np.float32(2.0)])))
    assert values.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_screen_proves_large_graphs_without_reference_blocks(monkeypatch):
    """At 2,500 cells the GFN outputs stay far from the threshold: no row needs the reference."""
    import scniche_jax.consensus as consensus

    n = 2500
    views = random_views(n, 7, k=20)
    gfn = gfn_params(n, 7)
    calls = []
    real = consensus._exact_rows
    monkeypatch.setattr(consensus, "_exact_rows", lambda *a, **k: calls.append(a[3].size) or real(*a, **k))
    got = fused_matrix(gfn, view_adjacency_sum(views), method="screen")
    assert calls == []
    monkeypatch.undo()
    assert_same(got, fused_matrix_reference(gfn, view_adjacency_sum(views)))


@pytest.mark.parametrize("row_nnz", [17, 40, 70])
def test_screen_on_rows_of_any_length(row_nnz):
    """Any sparse S with small integer entries (rows of 17–70 nonzeros: padded widths 32–80)."""
    n = 260
    rng = np.random.default_rng(row_nnz)
    rows = np.repeat(np.arange(n), row_nnz)
    cols = np.concatenate([rng.choice(n, row_nnz, replace=False) for _ in range(n)])
    keep = rows != 3  # an empty row
    S = sp.csr_matrix((rng.integers(1, 4, keep.sum()).astype(np.float32), (rows[keep], cols[keep])), shape=(n, n))
    gfn = gfn_params(n, row_nnz, 3.0)
    assert_same(fused_matrix(gfn, S, block=100, method="screen", screen_block=96), fused_matrix_reference(gfn, S, 100))
