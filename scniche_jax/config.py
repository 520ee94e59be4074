"""Frozen configuration of a scNiche model and its training run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

DEFAULT_VIEWS = ("X_cn_norm", "X_data", "X_data_nbr")


@dataclass(frozen=True)
class ScnicheConfig:
    """Everything needed to rebuild the model and repeat the run.

    Attributes:
      views: ``obsm`` keys, one per view, in order.
      input_sizes: feature width of each view.
      hidden_size_v: view-encoder widths (reference default ``[10]``).
      hidden_size: shared-encoder widths; the last is the embedding width.
      k_graph: kNN neighbours per cell in the view graphs (reference ``k_cutoff_graph``).
      mik: neighbours per view used as positives of the mutual-information loss.
      batch_num: number of batches, or None for full-graph training.
      batch_size: cells per graph (N in full-graph mode); sizes the fusion network.
      epochs, lr, seed: training length, Adam step size, seed of all randomness.
      dropout: dropout rate in fusion and decoder while training (the reference's 0.1).
      deterministic_embedding: final embedding with dropout off (True) or on like the
        reference's (False).
      precision: ``'bf16'`` (bf16 operands for the B² loss matmuls) or ``'fp32'``.
      gre_semantics: report ``loss_gre`` with R (``'gpu'``) or R + Rᵀ (``'cpu'``, the
        reference on CPU); training is identical.
      block_size: rows per block of the B² loss and of the fusion network.
      patience, min_delta, restore_best: loss early stopping (off with ``patience=None``);
        with ``restore_best`` the embedding comes from the best-loss parameters.
      lr_patience, lr_factor, min_lr: the LR plateau rule (PyTorch ``ReduceLROnPlateau``
        semantics on the epoch loss); ``lr_patience=None`` keeps the LR fixed, like the
        original ``Runner``.
      ari_every, ari_k, ari_stop_threshold, ari_stop_patience: the ARI probe: every
        ``ari_every`` epochs, KMeans with ``ari_k`` clusters on the embedding and its ARI
        against the previous probe; stop after ``ari_stop_patience`` probes in a row at or
        above ``ari_stop_threshold``.
      n_devices: devices of data-parallel training; each optimizer step averages the
        gradients of ``n_devices`` consecutive batches (1: one step per batch).
    """

    views: tuple[str, ...] = DEFAULT_VIEWS
    input_sizes: tuple[int, ...] = ()
    hidden_size_v: tuple[int, ...] = (10,)
    hidden_size: tuple[int, ...] = (32, 10)
    k_graph: int = 20
    mik: int = 5
    batch_num: Optional[int] = None
    batch_size: int = 0
    epochs: int = 100
    lr: float = 0.01
    seed: int = 0
    dropout: float = 0.1
    deterministic_embedding: bool = True
    precision: str = "bf16"
    gre_semantics: str = "gpu"
    block_size: int = 1024
    patience: Optional[int] = None
    min_delta: float = 0.0
    restore_best: bool = True
    lr_patience: Optional[int] = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    ari_every: Optional[int] = None
    ari_k: int = 10
    ari_stop_threshold: Optional[float] = None
    ari_stop_patience: int = 2
    n_devices: int = 1

    @property
    def latent_dim(self) -> int:
        return self.hidden_size[-1]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScnicheConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config entries {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
