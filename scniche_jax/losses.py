"""Training losses (as the reference computes them), memory-lean.

The reconstruction loss ``mean_v BCEWithLogits(z_v z_vᵀ, A_v, pos_weight)`` is split into
a dense part over all B² pairs, ``Σ softplus(x_ij)``, and a correction over the edges of
``A_v``, ``Σ_{(i,j)∈A_v} (pos_weight − 1)·softplus(−x_ij) − x_ij``. The dense part runs in
row blocks and returns its gradient from the same pass (custom VJP), so no B×B array is
ever materialised; the edge part runs over the padded edge lists of the view graphs
(``A_v`` is symmetric, which makes both gradients ``2 Σ_j f'(x_ij) z_j``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

MIM_EPS = 1e-6


def _softplus_and_sigmoid(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``softplus(x)`` and ``sigmoid(x)`` sharing one ``exp(-|x|)``."""
    e = jnp.exp(-jnp.abs(x))
    softplus = jnp.maximum(x, 0.0) + jnp.log1p(e)
    sigmoid = jnp.where(x >= 0, 1.0, e) / (1.0 + e)
    return softplus, sigmoid


def _matmul(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    precision = jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None
    return jnp.dot(a.astype(dtype), b.astype(dtype), precision=precision,
                   preferred_element_type=jnp.float32)


def loss_block(n_cells: int, block_size: int) -> int:
    """Rows per block of the B² loss: ``block_size``, but at least two blocks.

    XLA unrolls a one-trip loop, and the views' B² intermediates then live side by side
    (measured: 8 B×B fp32 arrays instead of 3.5 block×B).
    """
    return min(block_size, max(-(-n_cells // 2), 1))


def _dense_softplus_value_and_grad(z: jax.Array, block: int, dtype) -> tuple[jax.Array, jax.Array]:
    n, d = z.shape
    block = loss_block(n, block)
    n_blocks = -(-n // block)
    z_rows = jnp.pad(z, ((0, n_blocks * block - n), (0, 0)))
    row_ids = jnp.arange(block)

    def one_block(total, b):
        zb = jax.lax.dynamic_slice_in_dim(z_rows, b * block, block)
        x = _matmul(zb, z.T, dtype)
        softplus, sigmoid = _softplus_and_sigmoid(x)
        valid = (b * block + row_ids) < n
        # Rows summed first, then masked: a (block, B) select before the sum made the whole
        # loss value 2.3x slower on CPU (measured: 44 vs 19 ms per view at 4,000 cells).
        total = total + jnp.sum(jnp.where(valid, jnp.sum(softplus, axis=1), 0.0))
        return total, _matmul(sigmoid, z, dtype)

    total, grads = jax.lax.scan(one_block, jnp.zeros((), jnp.float32), jnp.arange(n_blocks))
    return total, 2.0 * grads.reshape(-1, d)[:n]


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def dense_softplus_sum(z: jax.Array, block: int = 1024, dtype=jnp.float32) -> jax.Array:
    """``Σ_ij softplus(z_i · z_j)`` over all B² pairs, in row blocks of ``block`` rows.

    Args:
      z: (B, d) float32.
      block: rows per block; working memory is O(block · B).
      dtype: matmul operand dtype (bf16 or fp32); accumulation is always fp32.

    Returns:
      fp32 scalar.
    """
    return _dense_softplus_value_and_grad(z, block, dtype)[0]


def _dense_fwd(z, block, dtype):
    return _dense_softplus_value_and_grad(z, block, dtype)


def _dense_bwd(block, dtype, grad, cotangent):
    return (cotangent * grad,)


dense_softplus_sum.defvjp(_dense_fwd, _dense_bwd)


def rowwise_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """``Σ_k a[:, k]·b[:, k]`` summed in index order, one product at a time (fp32).

    PyTorch's matmul forms the reference's logits in this order; XLA's reduction sums in a
    tree, which put 20-epoch trajectories on ill-conditioned cases 3e-3 · max |z| away from
    the reference's (measured against the live reference, N = 256, seed 0) instead of 5e-7.
    """
    total = a[:, 0] * b[:, 0]
    for k in range(1, a.shape[1]):
        total = total + a[:, k] * b[:, k]
    return total


# Edges per chunk of the edge term: its gathered (chunk, d) rows stay in cache.
EDGE_CHUNK = 1 << 15


def _edge_value_and_grad(z, senders, receivers, mask, pos_weight):
    # One row per edge: the terms need two gathers and their gradient one scatter-add by
    # sender, since A is symmetric. (Padded neighbour lists cost 2.5x more per step at 1,000
    # cells: their width is the largest degree of any batch, most of it padding.)
    n_edges = senders.shape[0]
    chunk = min(EDGE_CHUNK, n_edges)
    n_chunks = -(-n_edges // chunk)
    pad = n_chunks * chunk - n_edges
    senders, receivers = (jnp.pad(a, (0, pad)).reshape(n_chunks, chunk) for a in (senders, receivers))
    mask = jnp.pad(mask, (0, pad)).reshape(n_chunks, chunk)

    def one_chunk(carry, edges):
        value, grad = carry
        s, r, m = edges
        z_receivers = z[r]
        x = rowwise_dot(z[s], z_receivers)
        softplus_neg, sigmoid_neg = _softplus_and_sigmoid(-x)
        value = value + jnp.sum(m * ((pos_weight - 1.0) * softplus_neg - x))
        slope = m * (-(pos_weight - 1.0) * sigmoid_neg - 1.0)
        return (value, grad + jax.ops.segment_sum(slope[:, None] * z_receivers, s, num_segments=z.shape[0])), None

    init = (jnp.zeros((), jnp.float32), jnp.zeros_like(z))
    (value, grad), _ = jax.lax.scan(one_chunk, init, (senders, receivers, mask))
    return value, 2.0 * grad


@jax.custom_vjp
def edge_correction_sum(z: jax.Array, senders: jax.Array, receivers: jax.Array, mask: jax.Array,
                        pos_weight: jax.Array) -> jax.Array:
    """``Σ_{(i,j)∈A} (pos_weight − 1)·softplus(−z_i·z_j) − z_i·z_j`` for a symmetric ``A``.

    Args:
      z: (B, d) float32.
      senders, receivers: (E,) int32 edges of ``A``, padding included.
      mask: (E,) 1 for a real edge, 0 for padding.
      pos_weight: scalar.

    Returns:
      fp32 scalar. Its gradient assumes ``A`` symmetric (every kNN view graph is).
    """
    return _edge_value_and_grad(z, senders, receivers, mask, pos_weight)[0]


def _edge_fwd(z, senders, receivers, mask, pos_weight):
    return _edge_value_and_grad(z, senders, receivers, mask, pos_weight)


def _edge_bwd(grad, cotangent):
    return cotangent * grad, None, None, None, None


edge_correction_sum.defvjp(_edge_fwd, _edge_bwd)


def reconstruction_loss(decoder_inputs: Sequence[jax.Array],
                        edges: Sequence[tuple[jax.Array, jax.Array, jax.Array]], pos_weight: jax.Array, *,
                        shared_inputs: bool = False, block: int = 1024,
                        dtype=jnp.float32) -> jax.Array:
    """``mean_v BCEWithLogits(z_v z_vᵀ, A_v, pos_weight)``, each a mean over B².

    Args:
      decoder_inputs: V arrays (B, d), ``dropout_v(z)``.
      edges: per view, ``(senders, receivers, mask)`` of ``A_v``'s padded edge list (mask 1 on
        real edges, 0 on padding).
      pos_weight: scalar weight of the positive class.
      shared_inputs: all decoder inputs are the same array (dropout off): the dense part is
        computed once.
      block: rows per block of the dense part.
      dtype: operand dtype of the dense part's matmuls.

    Returns:
      fp32 scalar.
    """
    n = decoder_inputs[0].shape[0]
    n_views = len(decoder_inputs)
    if shared_inputs:
        dense = n_views * dense_softplus_sum(decoder_inputs[0], block, dtype)
    else:
        dense = sum(dense_softplus_sum(zv, block, dtype) for zv in decoder_inputs)
    positives = sum(edge_correction_sum(zv, senders, receivers, mask, pos_weight)
                    for zv, (senders, receivers, mask) in zip(decoder_inputs, edges))
    return (dense + positives) / (n_views * float(n) * float(n))


def one_minus(d: jax.Array) -> jax.Array:
    """``1 - d``, kept apart from a constant added to it afterwards.

    XLA rewrites ``(1 - d) + ε`` as ``(1 + ε) - d``, and ``1 + 1e-6`` rounds to
    ``1 + 9.5e-7`` in fp32: where D nears 1 that moves ``log(1 - D + ε)`` by up to 0.05 and
    its gradient by about 1 % against PyTorch, which adds in the written order (measured;
    enough to set some 20-epoch trajectories 1e-3 · max |z| apart). The barrier keeps the
    reference's arithmetic.
    """
    return jax.lax.optimization_barrier(1.0 - d)


def mutual_info_loss(discriminator: Callable[[jax.Array, jax.Array], jax.Array], z: jax.Array,
                     mik: jax.Array, negatives: jax.Array) -> jax.Array:
    """``Σ_c −mean_i[log(D(z_i, z_mik[i,c]) + ε) + log(1 − D(z_i, z_neg[c,i]) + ε)]``, ε = 1e-6.

    Args:
      discriminator: maps feature-major pairs ``(left, right)``, each (d, N), to N logits;
        ``D = sigmoid(logit)`` (:func:`scniche_jax.networks.discriminator_logits`).
      z: (B, d) embedding.
      mik: (B, C) partner index of each term.
      negatives: (C, B) one random permutation of the rows per term.

    Returns:
      fp32 scalar.
    """
    n_terms, n = mik.shape[1], z.shape[0]
    partners = jnp.concatenate([mik.T, negatives], axis=0)           # (2C, B): positives, then negatives
    z_t = z.T
    left = jnp.broadcast_to(z_t[:, None, :], (z_t.shape[0], 2 * n_terms, n)).reshape(z_t.shape[0], -1)
    right = z_t[:, partners].reshape(z_t.shape[0], -1)
    d = jax.nn.sigmoid(discriminator(left, right)).reshape(2 * n_terms, n)
    per_term = jnp.log(d[:n_terms] + MIM_EPS) + jnp.log(one_minus(d[n_terms:]) + MIM_EPS)
    return -jnp.sum(jnp.mean(per_term, axis=1))


def _inverse_mod_2_32(a: jax.Array) -> jax.Array:
    """The inverse of odd uint32 ``a`` modulo 2^32 (Newton's iteration doubles the correct bits)."""
    x = a  # a·a ≡ 1 (mod 8): three correct bits
    for _ in range(4):  # 3 → 6 → 12 → 24 → 48 bits
        x = x * (jnp.uint32(2) - a * x)
    return x


def sample_negatives(key: jax.Array, n_terms: int, n_nodes: int) -> jax.Array:
    """``n_terms`` independent random permutations of ``range(n_nodes)`` (int32).

    Each row sorts one uint32 per node: random high bits above the node's index, so the sort
    has one operand (an argsort's key-value sort was 4x slower on CPU: 2.5 vs 0.6 ms for
    15 x 1,000, the largest single op of a 1,000-cell step). The index is first mapped through
    a random bijection ``i → a·i + b (mod 2^bits)`` (a odd), which makes every tie in the high
    bits (0.1 per row at 1,000 nodes, 22 random bits) fall either way with probability exactly
    1/2, as in a uniform shuffle, instead of always in index order.
    """
    n_bits = max(1, (n_nodes - 1).bit_length())
    if n_bits > 24:
        raise ValueError(f"sample_negatives packs node indices into 24 bits; got {n_nodes} nodes per batch")
    # one draw for keys and bijections: on a CPU each draw is a rolled loop with its own overhead
    bits = jax.random.bits(key, (n_terms, n_nodes + 2), jnp.uint32)
    a = bits[:, n_nodes:n_nodes + 1] | jnp.uint32(1)
    return shuffle_by_keys(bits[:, :n_nodes], a, bits[:, n_nodes + 1:], n_bits)


def shuffle_by_keys(bits: jax.Array, a: jax.Array, b: jax.Array, n_bits: int) -> jax.Array:
    """Row permutations ordering nodes by the high bits of ``bits``, ties by ``a·i + b mod 2^n_bits``.

    Args:
      bits: (rows, n) uint32 random keys (their low ``n_bits`` are ignored).
      a, b: (rows, 1) uint32, ``a`` odd.
      n_bits: index bits, ``2^n_bits >= n``.

    Returns:
      (rows, n) int32, each row a permutation of ``range(n)``.
    """
    low = jnp.uint32((1 << n_bits) - 1)
    index = jax.lax.broadcasted_iota(jnp.uint32, bits.shape, 1)
    packed = (bits & ~low) | ((a * index + b) & low)
    mapped = jnp.sort(packed, axis=1) & low
    return ((_inverse_mod_2_32(a) * (mapped - b)) & low).astype(jnp.int32)
