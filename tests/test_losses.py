import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scniche_jax.graphs import symmetric_knn_adjacency
from scniche_jax.losses import (MIM_EPS, dense_softplus_sum, edge_correction_sum, mutual_info_loss, one_minus,
                                reconstruction_loss, rowwise_dot, sample_negatives,
                                shuffle_by_keys)


def _symmetric_graph(n, k, seed):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, size=(n, k))], axis=1)
    adj = symmetric_knn_adjacency(idx).tocoo()
    return adj, adj.row.astype(np.int32), adj.col.astype(np.int32)


def _padded_edges(s, r, n_pad):
    """The padded edge list of a batch: ``n_pad`` extra edges 0 → 0 with mask 0."""
    pad = np.zeros(n_pad, np.int32)
    mask = np.concatenate([np.ones(s.size, np.float32), np.zeros(n_pad, np.float32)])
    return jnp.asarray(np.concatenate([s, pad])), jnp.asarray(np.concatenate([r, pad])), jnp.asarray(mask)


def _torch_bce_with_logits(x, y, pos_weight):
    """PyTorch BCEWithLogitsLoss(pos_weight) elementwise, written from its documented formula."""
    log_sig = -np.logaddexp(0, -x)
    log_one_minus = -np.logaddexp(0, x)
    return -(pos_weight * y * log_sig + (1 - y) * log_one_minus)


@pytest.mark.parametrize("n,block", [(37, 8), (64, 64), (50, 1024)])
def test_dense_softplus_sum_value_and_grad(n, block):
    z = jax.random.normal(jax.random.key(n), (n, 6)) * 0.7
    naive = lambda z: jnp.sum(jax.nn.softplus(z @ z.T))
    value, grad = jax.value_and_grad(lambda z: dense_softplus_sum(z, block, jnp.float32))(z)
    np.testing.assert_allclose(value, naive(z), rtol=1e-6)
    expected = jax.grad(naive)(z)
    # fp32 sums of n terms in another order: absolute error scales with the largest entry
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6 * float(jnp.abs(expected).max()))


def test_dense_softplus_sum_bf16_is_close():
    z = jax.random.normal(jax.random.key(0), (300, 10)) * 0.3
    exact = dense_softplus_sum(z, 64, jnp.float32)
    approx = dense_softplus_sum(z, 64, jnp.bfloat16)
    assert abs(float(approx - exact)) <= 2e-3 * abs(float(exact))


@pytest.mark.parametrize("chunk", [1 << 15, 16, 7])  # one chunk; several, the last padded
def test_edge_correction_matches_dense_formula(chunk, monkeypatch):
    monkeypatch.setattr("scniche_jax.losses.EDGE_CHUNK", chunk)
    n = 40
    adj, s, r = _symmetric_graph(n, 4, 0)
    senders, receivers, mask = _padded_edges(s, r, 9)
    z = jax.random.normal(jax.random.key(1), (n, 5)) * 0.8
    a = jnp.asarray(adj.toarray())
    pw = jnp.float32(3.7)

    def naive(z):
        x = z @ z.T
        return jnp.sum(a * ((pw - 1) * jax.nn.softplus(-x) - x))

    value, grad = jax.value_and_grad(lambda z: edge_correction_sum(z, senders, receivers, mask, pw))(z)
    np.testing.assert_allclose(value, naive(z), rtol=1e-5)
    np.testing.assert_allclose(grad, jax.grad(naive)(z), rtol=1e-4, atol=1e-5)


def test_reconstruction_loss_equals_bce_with_logits():
    n, views = 30, 3
    graphs = [_symmetric_graph(n, 3, seed) for seed in range(views)]
    edges = [_padded_edges(s, r, 5 * v) for v, (_, s, r) in enumerate(graphs)]
    zs = [jax.random.normal(jax.random.key(v), (n, 4)) for v in range(views)]
    pw = 2.5
    got = reconstruction_loss(zs, edges, jnp.float32(pw), block=7)
    expected = np.mean([
        _torch_bce_with_logits(np.asarray(z @ z.T, np.float64), adj.toarray(), pw).mean()
        for z, (adj, _, _) in zip(zs, graphs)])
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    shared = reconstruction_loss([zs[0]] * views, edges, jnp.float32(pw), shared_inputs=True)
    separate = reconstruction_loss([zs[0]] * views, edges, jnp.float32(pw))
    np.testing.assert_allclose(float(shared), float(separate), rtol=1e-6)


@pytest.mark.parametrize("logit,expected_pos,expected_neg", [
    (1e4, np.log(1.0 + MIM_EPS), np.log(MIM_EPS)),      # D == 1 exactly in fp32
    (-1e4, np.log(MIM_EPS), np.log(1.0 + MIM_EPS)),     # D == 0 exactly
])
def test_mim_epsilon_when_discriminator_saturates(logit, expected_pos, expected_neg):
    n, c = 6, 2
    z = jnp.ones((n, 3))
    disc = lambda left, right: jnp.full(left.shape[1:], logit, jnp.float32)
    mik = jnp.zeros((n, c), jnp.int32)
    neg = jnp.tile(jnp.arange(n, dtype=jnp.int32), (c, 1))
    loss = mutual_info_loss(disc, z, mik, neg)
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(float(loss), -c * (expected_pos + expected_neg), rtol=1e-6)
    grad = jax.grad(lambda z: mutual_info_loss(disc, z, mik, neg))(z)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_mim_matches_formula():
    n, c, d = 12, 3, 4
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(2 * d,)), jnp.float32)
    disc = lambda left, right: w @ jnp.concatenate([left, right], 0)   # feature-major pairs
    mik = jnp.asarray(rng.integers(0, n, size=(n, c)), jnp.int32)
    neg = jnp.asarray(np.stack([rng.permutation(n) for _ in range(c)]), jnp.int32)
    zn = np.asarray(z, np.float64)
    sig = lambda x: 1 / (1 + np.exp(-x))
    expected = 0.0
    for t in range(c):
        pos = sig(np.concatenate([zn, zn[np.asarray(mik[:, t])]], 1) @ np.asarray(w, np.float64))
        ng = sig(np.concatenate([zn, zn[np.asarray(neg[t])]], 1) @ np.asarray(w, np.float64))
        expected += -np.mean(np.log(pos + 1e-6) + np.log(1 - ng + 1e-6))
    np.testing.assert_allclose(float(mutual_info_loss(disc, z, mik, neg)), expected, rtol=1e-5)


def test_saturated_negative_term_keeps_pytorchs_order_of_operations():
    """log(1 − D + ε) where D rounds to 1: PyTorch adds ε to the rounded 1 − D, in fp32."""
    logits = np.linspace(8.0, 20.0, 2001).astype(np.float32)
    d = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)  # the fp32 sigmoid both libraries compute
    one_minus_d = (np.float32(1.0) - d).astype(np.float32)
    expected = np.log((one_minus_d + np.float32(MIM_EPS)).astype(np.float32).astype(np.float64))
    ours = np.asarray(jax.jit(lambda x: jnp.log(one_minus(x) + MIM_EPS))(d))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)  # a few ulps of log, not 0.05
    # the plain expression is what XLA folds to (1 + ε) − D: shown to differ, so the test can fail
    folded = np.asarray(jax.jit(lambda x: jnp.log(1.0 - x + MIM_EPS))(d))
    assert np.abs(folded - expected).max() > 1e-2


def test_sample_negatives_are_permutations():
    neg = np.asarray(sample_negatives(jax.random.key(0), 15, 257))
    assert neg.shape == (15, 257) and neg.dtype == np.int32
    for row in neg:
        assert np.array_equal(np.sort(row), np.arange(257))
    assert len({tuple(r) for r in neg}) == 15


def test_sample_negatives_sizes_and_ties():
    for n in (1, 2, 3, 1000, 1024, 1025):
        neg = np.asarray(sample_negatives(jax.random.key(n), 3, n))
        assert all(np.array_equal(np.sort(r), np.arange(n)) for r in neg), n
    # Every key tied: the order comes from the random bijection alone, and node 0 must precede
    # node 1 in half the rows (a sort that broke ties by index would give 1.0).
    rows, n = 20000, 8
    a = jax.random.bits(jax.random.key(1), (rows, 1), jnp.uint32) | jnp.uint32(1)
    b = jax.random.bits(jax.random.key(2), (rows, 1), jnp.uint32)
    perm = np.asarray(shuffle_by_keys(jnp.zeros((rows, n), jnp.uint32), a, b, 3))
    assert all(np.array_equal(np.sort(r), np.arange(n)) for r in perm[:100])
    first = np.argmax(perm == 0, axis=1) < np.argmax(perm == 1, axis=1)
    assert abs(first.mean() - 0.5) < 0.02
    # random keys dominate the bijection: the position of node 0 is uniform
    neg = np.asarray(sample_negatives(jax.random.key(3), 8000, 4))
    counts = np.bincount(np.argmax(neg == 0, axis=1), minlength=4)
    assert np.all(np.abs(counts / 8000 - 0.25) < 0.02)


def test_loss_block_size_is_cache_sized_on_cpu_only():
    from scniche_jax.step import loss_block_size
    assert loss_block_size(1024, 4000, "gpu") == 1024 and loss_block_size(1024, 4000, "tpu") == 1024
    assert loss_block_size(1024, 4000, "cpu") == 262          # 2^20 // 4000
    assert loss_block_size(1024, 5000, "cpu") == 256          # never below 256 rows
    assert loss_block_size(1024, 1000, "cpu") == 1024         # small graphs: unchanged (then ⌈B/2⌉)
    assert loss_block_size(128, 4000, "cpu") == 128           # an explicit smaller block is kept


def _order_sensitive_rows(n_rows: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Factors whose products are exact in float32 but whose row sums round, by order.

    Each product has at most 12 significant bits, so a fused multiply-add rounds like a
    multiply then an add, while the terms of a row span 2^-10 to 2^22: only the order of
    the additions decides each rounded sum, on any CPU.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(-255, 256, size=(n_rows, width)) * 2.0 ** rng.integers(-10, 11, size=(n_rows, width))
    b = rng.integers(-15, 16, size=(n_rows, width))
    return a.astype(np.float32), b.astype(np.float32)


def _index_order_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a[:, 0] * b[:, 0]
    for k in range(1, a.shape[1]):
        total = (total + a[:, k] * b[:, k]).astype(np.float32)
    return total


def test_rowwise_dot_sums_in_index_order():
    a, b = _order_sensitive_rows(4096, 10, seed=0)
    expected = _index_order_sum(a, b)
    reversed_order = _index_order_sum(a[:, ::-1], b[:, ::-1])
    assert np.mean(expected != reversed_order) > 0.2                      # the order matters here
    np.testing.assert_array_equal(np.asarray(jax.jit(rowwise_dot)(a, b)), expected)


def test_edge_logits_are_summed_in_index_order():
    """The edge term of the loss forms each logit ``z_i · z_j`` in index order, as PyTorch's
    matmul does: with ``pos_weight = 1`` and one real edge its value is exactly ``-z_i · z_j``."""
    n_edges, width = 64, 10
    a, b = _order_sensitive_rows(n_edges, width, seed=1)
    z = jnp.asarray(np.concatenate([a, b]))
    expected = _index_order_sum(a, b)
    senders, receivers = np.arange(n_edges, dtype=np.int32), np.arange(n_edges, 2 * n_edges, dtype=np.int32)
    value = jax.jit(edge_correction_sum)
    got = []
    for e in range(n_edges):            # one real edge at a time: the sum over edges adds only zeros
        mask = np.zeros(n_edges, np.float32)
        mask[e] = 1.0
        got.append(-float(value(z, senders, receivers, mask, jnp.float32(1.0))))
    assert np.mean(expected != _index_order_sum(a[:, ::-1], b[:, ::-1])) > 0.2
    np.testing.assert_array_equal(np.array(got, np.float32), expected)


def _primitives(jaxpr) -> list:
    """Every equation of a jaxpr, inside scans and other sub-jaxprs too."""
    found = []
    for eqn in jaxpr.eqns:
        found.append(eqn)
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (list, tuple)) else [value]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found.extend(_primitives(inner))
    return found


def test_edge_term_forms_its_logits_with_rowwise_dot():
    """The edge term's logits come from :func:`rowwise_dot`, never from a reduction over the
    feature axis, whose order XLA chooses per CPU and per fusion: in the jaxpr, no reduce_sum
    runs over axis 1 of a (edges, d) array (the only reduce_sum left sums over the edges)."""
    z = jnp.ones((8, 10), jnp.float32)
    edges = jnp.arange(6, dtype=jnp.int32)
    jaxpr = jax.make_jaxpr(edge_correction_sum)(z, edges, edges + 1, jnp.ones(6, jnp.float32), jnp.float32(2.0))
    sums = [e for e in _primitives(jaxpr.jaxpr) if e.primitive.name == "reduce_sum"]
    assert sums, "the edge term sums over its edges somewhere"
    assert all(tuple(e.params["axes"]) == (0,) for e in sums), [e.params["axes"] for e in sums]
    adds = [e for e in _primitives(jaxpr.jaxpr) if e.primitive.name == "add"]
    assert len(adds) >= z.shape[1] - 1          # the index-order sum: one add per feature after the first
