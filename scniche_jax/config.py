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
