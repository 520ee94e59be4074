import jax
import jax.numpy as jnp
import numpy as np

from scniche_jax.graphs import gcn_edge_weights, graphs_tuple
from scniche_jax.networks import Discriminator, GraphConv, GraphFusionNetwork, MGAE, discriminator_logits


def test_graphconv_uses_out_degree_of_source_and_in_degree_of_destination():
    # asymmetric graph: 0→1, 0→2, 1→2, 2→2 (self-loop); 3 nodes
    senders = np.array([0, 0, 1, 2], np.int32)
    receivers = np.array([1, 2, 2, 2], np.int32)
    x = np.array([[1.0, 2.0], [3.0, 5.0], [7.0, 11.0]], np.float32)
    kernel = np.array([[1.0, 0.5], [-1.0, 2.0]], np.float32)
    bias = np.array([0.25, -0.5], np.float32)
    # by hand: outdeg = [2, 1, 1], indeg = [0→1 clamp, 1, 3]
    xw = x @ kernel
    out = np.zeros((3, 2))
    out[1] = (1 / np.sqrt(2)) * xw[0] / np.sqrt(1)
    out[2] = ((1 / np.sqrt(2)) * xw[0] + (1 / np.sqrt(1)) * xw[1] + (1 / np.sqrt(1)) * xw[2]) / np.sqrt(3)
    out += bias
    graph = graphs_tuple(senders, receivers, 3, nodes=x)
    params = {"params": {"kernel": kernel, "bias": bias}}
    got = GraphConv(2).apply(params, x, graph)
    np.testing.assert_allclose(np.asarray(got), out, rtol=1e-6)
    np.testing.assert_allclose(gcn_edge_weights(senders, receivers, 3),
                               [1 / np.sqrt(2), 1 / np.sqrt(2 * 3), 1 / np.sqrt(3), 1 / np.sqrt(3)], rtol=1e-6)


def test_graphconv_narrowing_and_widening_agree():
    senders = np.array([0, 1, 1, 2, 2], np.int32)
    receivers = np.array([1, 0, 2, 2, 0], np.int32)
    x = jax.random.normal(jax.random.key(0), (3, 4))
    graph = graphs_tuple(senders, receivers, 3, nodes=x)
    for width in (2, 8):
        params = GraphConv(width).init(jax.random.key(1), x, graph)
        k, b = params["params"]["kernel"], params["params"]["bias"]
        dense = np.zeros((3, 3))
        np.add.at(dense, (receivers, senders), gcn_edge_weights(senders, receivers, 3))
        np.testing.assert_allclose(GraphConv(width).apply(params, x, graph), dense @ np.asarray(x) @ k + b, rtol=1e-5, atol=1e-6)


def test_initialisers_follow_reference_distributions():
    n = 64
    gfn = GraphFusionNetwork(n).init(jax.random.key(0), jnp.zeros((1, n)))["params"]
    assert gfn["hidden"]["kernel"].shape == (n, n // 2)
    assert np.abs(gfn["hidden"]["kernel"]).max() <= 1 / np.sqrt(n)
    assert np.abs(gfn["output"]["bias"]).max() <= 1 / np.sqrt(n // 2)
    assert np.abs(gfn["hidden"]["bias"]).max() > 0
    disc = Discriminator(10).init(jax.random.key(1), jnp.zeros((1, 10)), jnp.zeros((1, 10)))["params"]
    assert disc["layer0"]["kernel"].shape == (20, 10)
    assert np.abs(disc["layer0"]["kernel"]).max() <= 1 / np.sqrt(20)
    x = jnp.ones((5, 7))
    graph = graphs_tuple(np.arange(5, dtype=np.int32), np.arange(5, dtype=np.int32), 5, nodes=x)
    conv = GraphConv(9).init(jax.random.key(2), x, graph)["params"]
    assert np.all(conv["bias"] == 0)
    assert np.abs(conv["kernel"]).max() <= np.sqrt(6 / (7 + 9))


def test_mgae_shapes_and_dropout_masks_per_view():
    n = 20
    senders = np.concatenate([np.arange(n), np.arange(n)]).astype(np.int32)
    receivers = np.concatenate([np.arange(n), (np.arange(n) + 1) % n]).astype(np.int32)
    views = tuple(graphs_tuple(senders, receivers, n, nodes=np.random.default_rng(v).normal(size=(n, 3 + v)).astype(np.float32))
                  for v in range(3))
    consensus = graphs_tuple(np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32), n)
    model = MGAE((6, 5), (8, 4), 3, 0.5)
    params = model.init(jax.random.key(0), views, consensus)
    z, dec = model.apply(params, views, consensus, deterministic=True)
    assert z.shape == (n, 4) and all(np.array_equal(d, z) for d in dec)
    z2, dec2 = model.apply(params, views, consensus, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert not np.array_equal(dec2[0], dec2[1])
    # Each decoder input is z with its own inverted-dropout mask: every entry is 0 or z / (1 - p).
    for d in dec2:
        d, z = np.asarray(d), np.asarray(z2)
        kept = d != 0
        np.testing.assert_allclose(d[kept], z[kept] / 0.5, rtol=1e-6)
        assert 0.2 < kept.mean() < 0.8
    # Fusion dropout acts before the shared encoder: z itself moves with the dropout key.
    z3, _ = model.apply(params, views, consensus, deterministic=False, rngs={"dropout": jax.random.key(4)})
    assert not np.allclose(np.asarray(z2), np.asarray(z3))


def test_feature_major_discriminator_equals_the_module():
    """``discriminator_logits`` on transposed pairs gives the flax Discriminator's logits."""
    d, n = 10, 257
    disc = Discriminator(d).init(jax.random.key(3), jnp.zeros((1, d)), jnp.zeros((1, d)))["params"]
    rng = np.random.default_rng(0)
    left, right = (jnp.asarray(rng.normal(size=(n, d)), jnp.float32) for _ in range(2))
    with jax.default_matmul_precision("highest"):
        rows = Discriminator(d).apply({"params": disc}, left, right)
        columns = discriminator_logits(disc, left.T, right.T)
    np.testing.assert_allclose(np.asarray(columns), np.asarray(rows), rtol=1e-6, atol=1e-6)
    assert float(jnp.std(rows)) > 1e-3  # the pairs give different logits: the check has teeth
