"""Device-side training: batch assembly, the loss, one jitted step and one jitted epoch.

A ``GraphBatch`` holds everything one graph (full-graph mode) or one batch needs, with a
leading axis over batches; all batches share one shape (edges padded), so an epoch is one
``lax.scan`` and one compiled program. Everything the frozen GFN contributes (consensus
graph, ``loss_gre``) and ``pos_weight`` are inputs, computed once per batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from .consensus import Consensus
from .graphs import ViewGraph, graphs_tuple, neighbour_lists, pos_weight
from .losses import mutual_info_loss, reconstruction_loss, sample_negatives
from .model import MGAE, Discriminator
from .optimizer import torch_adam

PRECISIONS = ("bf16", "fp32")
# Small matmuls (encoders, fusion, discriminator) run in true fp32 on every backend (GPUs
# default to TF32); only the B² loss matmuls use the configured precision, set explicitly.
def fp32_matmuls():
    return jax.default_matmul_precision("highest")


@dataclass(frozen=True)
class StepSettings:
    """Static settings of the compiled step (hashable; a change recompiles).

    Attributes:
      hidden_size_v, hidden_size: encoder widths.
      n_views: number of views V.
      dropout: dropout rate of fusion and decoder while training (reference: 0.1, always on).
      lr: Adam learning rate (scaled at run time by ``TrainState.lr_scale``).
      precision: ``'bf16'`` (bf16 operands, fp32 accumulation in the B² loss matmuls) or
        ``'fp32'``.
      block: rows per block of the B² loss.
    """

    hidden_size_v: tuple[int, ...] = (10,)
    hidden_size: tuple[int, ...] = (32, 10)
    n_views: int = 3
    dropout: float = 0.1
    lr: float = 0.01
    precision: str = "bf16"
    block: int = 1024

    @property
    def mgae(self) -> MGAE:
        return MGAE(self.hidden_size_v, self.hidden_size, self.n_views, self.dropout)

    @property
    def discriminator(self) -> Discriminator:
        return Discriminator(self.hidden_size[-1])

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return torch_adam(self.lr)

    @property
    def matmul_dtype(self):
        return jnp.bfloat16 if self.precision == "bf16" else jnp.float32


class GraphBatch(NamedTuple):
    """Device inputs of one graph or batch (or a stack of them along a leading axis)."""

    views: tuple[jraph.GraphsTuple, ...]
    neighbours: tuple[jax.Array, ...]
    neighbour_counts: tuple[jax.Array, ...]
    mik: jax.Array
    consensus: jraph.GraphsTuple
    pos_weight: jax.Array
    loss_gre: jax.Array


class TrainState(NamedTuple):
    """Trainable MGAE parameters, Adam state, the frozen Discriminator and the LR multiplier."""

    params: optax.Params
    opt_state: optax.OptState
    discriminator: optax.Params
    lr_scale: jax.Array


class Losses(NamedTuple):
    total: jax.Array
    gre: jax.Array
    rec: jax.Array
    mim: jax.Array


def assemble_batches(batches: Sequence[tuple[Sequence[ViewGraph], Consensus]]) -> GraphBatch:
    """Stacks per-batch graphs into one padded ``GraphBatch`` of host arrays.

    Args:
      batches: per batch, its V view graphs and its consensus.

    Returns:
      A ``GraphBatch`` whose arrays have a leading axis of ``len(batches)``.
    """
    n_views = len(batches[0][0])
    sizes = {views[0].n_nodes for views, _ in batches}
    if len(sizes) != 1:
        raise ValueError(f"all batches must have the same number of cells, got {sorted(sizes)}")
    n = sizes.pop()
    edge_pad = [max(views[v].n_edges for views, _ in batches) for v in range(n_views)]
    nbr_width = [max(int(np.bincount(views[v].senders, minlength=n).max()) for views, _ in batches)
                 for v in range(n_views)]
    cons_pad = max(c.senders.size for _, c in batches)

    def one(views, cons) -> GraphBatch:
        graphs, nbrs, counts = [], [], []
        for v, view in enumerate(views):
            graphs.append(graphs_tuple(view.senders, view.receivers, n, nodes=view.features,
                                       n_edges_padded=edge_pad[v]))
            nb, c = neighbour_lists(view.senders, view.receivers, n, width=nbr_width[v])
            nbrs.append(nb)
            counts.append(c)
        total_edges = sum(view.n_edges for view in views)
        return GraphBatch(
            views=tuple(graphs), neighbours=tuple(nbrs), neighbour_counts=tuple(counts),
            mik=np.concatenate([view.mik for view in views], axis=1).astype(np.int32),
            consensus=graphs_tuple(cons.senders, cons.receivers, n, n_edges_padded=cons_pad),
            pos_weight=np.float32(pos_weight(n, total_edges)),
            loss_gre=np.float32(cons.loss_gre))

    # Filled in place, one batch at a time: peak memory is the stacked result plus one batch.
    first = one(*batches[0])
    stacked = jax.tree_util.tree_map(lambda x: np.empty((len(batches),) + np.shape(x), np.asarray(x).dtype), first)
    for i, (views, cons) in enumerate(batches):
        current = first if i == 0 else one(views, cons)
        for dst, src in zip(jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(current)):
            dst[i] = src
    return stacked


def batch_at(batches: GraphBatch, i: int) -> GraphBatch:
    """The ``i``-th batch of a stacked ``GraphBatch``."""
    return jax.tree_util.tree_map(lambda x: x[i], batches)


def init_state(key: jax.Array, example: GraphBatch, settings: StepSettings) -> TrainState:
    """Fresh MGAE and Discriminator parameters and Adam state (``example`` unstacked)."""
    k_mgae, k_disc = jax.random.split(key)
    params = settings.mgae.init(k_mgae, example.views, example.consensus, deterministic=True)["params"]
    latent = settings.hidden_size[-1]
    dummy = jnp.zeros((1, latent), jnp.float32)
    disc = settings.discriminator.init(k_disc, dummy, dummy)["params"]
    return make_state(params, disc, settings)


def make_state(params, discriminator, settings: StepSettings) -> TrainState:
    """A ``TrainState`` with fresh Adam moments around given parameters."""
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    discriminator = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), discriminator)
    return TrainState(params, settings.optimizer.init(params), discriminator, jnp.float32(1.0))


def loss_fn(params, discriminator, batch: GraphBatch, negatives: jax.Array,
            dropout_key: jax.Array | None, settings: StepSettings):
    """Total loss and ``(Losses, z)`` for one batch.

    ``dropout_key=None`` turns dropout off (deterministic forward).
    """
    deterministic = dropout_key is None or settings.dropout == 0.0
    rngs = None if deterministic else {"dropout": dropout_key}
    with fp32_matmuls():
        return _loss(params, discriminator, batch, negatives, deterministic, rngs, settings)


def _loss(params, discriminator, batch, negatives, deterministic, rngs, settings):
    z, decoder_inputs = settings.mgae.apply({"params": params}, batch.views, batch.consensus,
                                            deterministic=deterministic, rngs=rngs)
    rec = reconstruction_loss(decoder_inputs, batch.neighbours, batch.neighbour_counts, batch.pos_weight,
                              shared_inputs=deterministic, block=settings.block,
                              dtype=settings.matmul_dtype)
    disc = settings.discriminator
    mim = mutual_info_loss(lambda left, right: disc.apply({"params": discriminator}, left, right),
                           z, batch.mik, negatives)
    total = batch.loss_gre + rec + mim
    return total, (Losses(total, batch.loss_gre, rec, mim), z)


def apply_gradients(state: TrainState, grads, settings: StepSettings) -> TrainState:
    updates, opt_state = settings.optimizer.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: state.lr_scale * u, updates)
    return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)


@partial(jax.jit, static_argnames=("settings",))
def train_step_with_negatives(state: TrainState, batch: GraphBatch, negatives: jax.Array,
                              dropout_key: jax.Array | None, settings: StepSettings):
    """One Adam step with given MIM negatives; returns ``(state, losses, grads, z)``."""
    grads, (losses, z) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.discriminator, batch, negatives, dropout_key, settings)
    return apply_gradients(state, grads, settings), losses, grads, z


def batch_gradients(state: TrainState, batch: GraphBatch, key: jax.Array, settings: StepSettings):
    """Gradients and losses of one batch with fresh negatives and dropout drawn from ``key``."""
    k_neg, k_drop = jax.random.split(key)
    negatives = sample_negatives(k_neg, batch.mik.shape[1], batch.mik.shape[0])
    dropout_key = k_drop if settings.dropout > 0.0 else None
    grads, (losses, _) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.discriminator, batch, negatives, dropout_key, settings)
    return grads, losses


def _random_step(state: TrainState, batch: GraphBatch, key: jax.Array, settings: StepSettings):
    grads, losses = batch_gradients(state, batch, key, settings)
    return apply_gradients(state, grads, settings), losses


@partial(jax.jit, static_argnames=("settings",))
def train_step(state: TrainState, batch: GraphBatch, key: jax.Array, settings: StepSettings):
    """One Adam step on one batch with fresh negatives and dropout from ``key``."""
    return _random_step(state, batch, key, settings)


@partial(jax.jit, static_argnames=("settings",))
def train_epoch(state: TrainState, batches: GraphBatch, key: jax.Array, settings: StepSettings):
    """One epoch: a step per batch in a fixed order, as one compiled program.

    Returns:
      ``(state, losses)`` where ``losses`` fields have shape (n_batches,).
    """
    n_batches = batches.mik.shape[0]
    keys = jax.random.split(key, n_batches)

    def body(s, inputs):
        batch, k = inputs
        return _random_step(s, batch, k, settings)

    return jax.lax.scan(body, state, (batches, keys))


@partial(jax.jit, static_argnames=("settings",))
def embed_batches(params, batches: GraphBatch, dropout_key: jax.Array | None, settings: StepSettings):
    """Embeddings of every batch, (n_batches, B, d); dropout on only with a key."""
    deterministic = dropout_key is None or settings.dropout == 0.0
    keys = None if deterministic else jax.random.split(dropout_key, batches.mik.shape[0])
    return embed_each(params, batches, keys, settings)


def embed_each(params, batches: GraphBatch, keys: jax.Array | None, settings: StepSettings) -> jax.Array:
    """Embeddings of stacked batches, batch ``i`` with dropout key ``keys[i]`` (None: off)."""
    def one(i):
        batch = jax.tree_util.tree_map(lambda x: x[i], batches)
        rngs = None if keys is None else {"dropout": keys[i]}
        z, _ = settings.mgae.apply({"params": params}, batch.views, batch.consensus,
                                   deterministic=keys is None, rngs=rngs)
        return z

    with fp32_matmuls():
        return jax.lax.map(one, jnp.arange(batches.mik.shape[0]))
