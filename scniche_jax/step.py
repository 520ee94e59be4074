"""The pure, jitted training step and epoch, and the embedding of device batches.

A :class:`pipeline.GraphBatch` holds everything one graph (full-graph mode) or one batch
needs, with a leading axis over batches; all batches share one shape (edges padded), so an
epoch is one ``lax.scan`` and one compiled program. Everything the frozen GFN contributes
(consensus graph, ``loss_gre``) and ``pos_weight`` are inputs, computed once per batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from .config import BatchConfig, ModelConfig, resolve_precision
from .losses import mutual_info_loss, reconstruction_loss, sample_negatives
from .networks import MGAE, Discriminator, discriminator_logits
from .optimizer import make_optimizer
from .pipeline import GraphBatch

# The learning rate is read from the optimizer state (inject_hyperparams), so one
# transformation serves every run and the compiled step does not depend on it.
OPTIMIZER = make_optimizer(0.0)


def fp32_matmuls():
    """Small matmuls (encoders, fusion, discriminator) in true fp32 on every backend.

    GPUs default to TF32; only the B² loss matmuls use the configured precision, set
    explicitly.
    """
    return jax.default_matmul_precision("highest")


# On a CPU the B² loss runs fastest when one block (rows × B) stays cache-sized (at 4,000 cells
# 256-row blocks beat 1024-row ones by about a quarter; benchmarks/REPORT.md); on 1,000-cell
# graphs the cap changes nothing. Accelerators keep ``block_size``.
CPU_LOSS_BLOCK_ENTRIES = 2 ** 20
CPU_LOSS_BLOCK_MIN_ROWS = 256


def loss_block_size(block_size: int, batch_size: int, platform: str) -> int:
    """Rows per block of the B² loss: ``block_size``, capped on a CPU near 2^20 entries per block.

    Args:
      block_size: the configured rows per block (``BatchConfig.block_size``).
      batch_size: cells per graph or batch (B).
      platform: the training devices' platform (``'cpu'``, ``'gpu'``, ``'tpu'``).

    Returns:
      Rows per block (the loss still takes at least two blocks: :func:`losses.loss_block`).
    """
    if platform != "cpu":
        return block_size
    return min(block_size, max(CPU_LOSS_BLOCK_MIN_ROWS, CPU_LOSS_BLOCK_ENTRIES // max(batch_size, 1)))


@dataclass(frozen=True)
class StepSettings:
    """Static settings of the compiled step (hashable; a change recompiles).

    Attributes:
      hidden_size_v, hidden_size: encoder widths.
      n_views: number of views V.
      dropout: dropout rate of fusion and decoder while training (reference: 0.1, always on).
      precision: ``'bf16'`` (bf16 operands, fp32 accumulation in the B² loss matmuls) or
        ``'fp32'`` (:meth:`of` resolves ``'auto'``).
      block_size: rows per block of the B² loss.
    """

    hidden_size_v: tuple[int, ...] = (10,)
    hidden_size: tuple[int, ...] = (32, 10)
    n_views: int = 3
    dropout: float = 0.1
    precision: str = "bf16"
    block_size: int = 1024

    @classmethod
    def of(cls, model: ModelConfig, batching: BatchConfig, batch_size: Optional[int] = None,
           platform: str = "gpu") -> "StepSettings":
        """The step settings of a model and its batch layout on ``platform``.

        ``batch_size`` (cells per graph) and ``platform`` set the B² loss's block
        (:func:`loss_block_size`); ``platform`` resolves ``precision='auto'``
        (:func:`~scniche_jax.config.resolve_precision`).
        """
        block = batching.block_size if batch_size is None else loss_block_size(batching.block_size, batch_size,
                                                                                platform)
        return cls(hidden_size_v=model.hidden_size_v, hidden_size=model.hidden_size, n_views=len(model.views),
                   dropout=model.dropout, precision=resolve_precision(batching.precision, platform),
                   block_size=block)

    @property
    def mgae(self) -> MGAE:
        return MGAE(self.hidden_size_v, self.hidden_size, self.n_views, self.dropout)

    @property
    def discriminator(self) -> Discriminator:
        return Discriminator(self.hidden_size[-1])

    @property
    def matmul_dtype(self):
        return jnp.bfloat16 if self.precision == "bf16" else jnp.float32


class TrainState(NamedTuple):
    """Trainable MGAE parameters, Adam state (holding the learning rate), frozen Discriminator."""

    params: optax.Params
    opt_state: optax.OptState
    discriminator: optax.Params


class Losses(NamedTuple):
    total: jax.Array
    gre: jax.Array
    rec: jax.Array
    mim: jax.Array


@partial(jax.jit, static_argnames=("settings", "lr"))
def init_state(key: jax.Array, example: GraphBatch, settings: StepSettings, lr: float) -> TrainState:
    """Fresh MGAE and Discriminator parameters and Adam state (``example`` unstacked).

    Compiled: run op by op, initialising the graph convolutions took seconds.
    """
    k_mgae, k_disc = jax.random.split(key)
    params = settings.mgae.init(k_mgae, example.views, example.consensus, deterministic=True)["params"]
    latent = settings.hidden_size[-1]
    dummy = jnp.zeros((1, latent), jnp.float32)
    disc = settings.discriminator.init(k_disc, dummy, dummy)["params"]
    return make_state(params, disc, lr)


def make_state(params, discriminator, lr: float) -> TrainState:
    """A ``TrainState`` with fresh Adam moments around given parameters."""
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    discriminator = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), discriminator)
    return TrainState(params, make_optimizer(lr).init(params), discriminator)


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
    rec = reconstruction_loss(decoder_inputs, view_edges(batch), batch.pos_weight,
                              shared_inputs=deterministic, block=settings.block_size,
                              dtype=settings.matmul_dtype)
    mim = mutual_info_loss(partial(discriminator_logits, discriminator), z, batch.mik, negatives)
    total = batch.loss_gre + rec + mim
    return total, (Losses(total, batch.loss_gre, rec, mim), z)


def view_edges(batch: GraphBatch) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
    """Per view graph of one batch: its padded ``(senders, receivers, mask)`` (mask 1 on real edges)."""
    return [(g.senders, g.receivers, (jnp.arange(g.senders.shape[-1]) < g.n_edge[0]).astype(jnp.float32))
            for g in batch.views]


def apply_gradients(state: TrainState, grads) -> TrainState:
    """One Adam update at the learning rate held in ``state.opt_state``."""
    updates, opt_state = OPTIMIZER.update(grads, state.opt_state, state.params)
    return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)


def batch_gradients(state: TrainState, batch: GraphBatch, key: jax.Array, settings: StepSettings):
    """Gradients and losses of one batch with fresh negatives and dropout drawn from ``key``."""
    k_neg, k_drop = jax.random.split(key)
    negatives = sample_negatives(k_neg, batch.mik.shape[1], batch.mik.shape[0])
    dropout_key = k_drop if settings.dropout > 0.0 else None
    grads, (losses, _) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.discriminator, batch, negatives, dropout_key, settings)
    return grads, losses


def train_step(state: TrainState, batch: GraphBatch, key: jax.Array, settings: StepSettings):
    """One Adam step on one batch with fresh negatives and dropout from ``key`` (pure).

    Returns:
      ``(state, losses)``.
    """
    grads, losses = batch_gradients(state, batch, key, settings)
    return apply_gradients(state, grads), losses


@partial(jax.jit, static_argnames=("settings",))
def train_epoch(state: TrainState, batches: GraphBatch, key: jax.Array, settings: StepSettings):
    """One epoch: a step per batch in a fixed order, as one compiled program.

    Batch ``i`` draws its negatives and dropout from ``split(key, n_batches)[i]``.

    Returns:
      ``(state, losses)`` where ``losses`` fields have shape (n_batches,).
    """
    n_batches = batches.mik.shape[0]
    keys = jax.random.split(key, n_batches)

    def body(s, inputs):
        batch, k = inputs
        return train_step(s, batch, k, settings)

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
