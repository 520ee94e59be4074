"""The training history of a model: per-epoch losses, learning rates, probe ARIs, stopping."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

LOSS_NAMES = ("total", "gre", "rec", "mim")
STOP_REASONS = ("epochs", "loss", "ari", "interrupted", "nonfinite")


@dataclass
class EarlyStop:
    """Why and where the last ``train`` call stopped.

    Attributes
    ----------
    best_epoch
        The epoch (1-based, over all calls) with the lowest loss (None before any epoch).
    best_loss
        That lowest loss (None before any epoch).
    stopped_epoch
        Epochs run in all when training stopped.
    stopped_by
        One of ``'epochs'``, ``'loss'``, ``'ari'``, ``'interrupted'``, ``'nonfinite'``.
    restored_best
        The embedding parameters are the best-loss ones, not the last ones.
    """

    best_epoch: Optional[int]
    best_loss: Optional[float]
    stopped_epoch: int
    stopped_by: str
    restored_best: bool

    def __getitem__(self, name: str):
        return getattr(self, name)

    def get(self, name: str, default=None):
        """``dict.get`` for code written against the earlier dictionary form."""
        return getattr(self, name, default)


@dataclass
class History:
    """Per-epoch records of every ``train`` call, in order.

    Attributes
    ----------
    loss
        ``{'total', 'gre', 'rec', 'mim'}`` → one float per epoch (the sum over batches).
    lr
        The learning rate of each epoch.
    ari
        ``(epoch, ARI against the previous probe)`` pairs.
    early_stop
        How the last ``train`` call ended (None before training).
    """

    loss: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in LOSS_NAMES})
    lr: list[float] = field(default_factory=list)
    ari: list[tuple[int, float]] = field(default_factory=list)
    early_stop: Optional[EarlyStop] = None

    @property
    def epochs_run(self) -> int:
        return len(self.loss["total"])

    def __getitem__(self, name: str):
        """``history['loss']['total']`` and friends, as in earlier releases."""
        if name not in ("loss", "lr", "ari", "early_stop"):
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default=None):
        """``dict.get`` for code written against the earlier dictionary history."""
        try:
            return self[name]
        except KeyError:
            return default

    def append_epoch(self, losses: dict[str, float], lr: float) -> None:
        """Records one epoch's losses and learning rate."""
        for name in LOSS_NAMES:
            self.loss[name].append(float(losses[name]))
        self.lr.append(float(lr))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {"loss": {k: list(v) for k, v in self.loss.items()}, "lr": list(self.lr),
                "ari": [[int(e), float(a)] for e, a in self.ari],
                "early_stop": None if self.early_stop is None else asdict(self.early_stop)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        """The history from :meth:`to_dict`'s output (or a reference ``model.pt``'s)."""
        loss = {name: [float(x) for x in data.get("loss", {}).get(name, [])] for name in LOSS_NAMES}
        stop = data.get("early_stop")
        return cls(loss=loss, lr=[float(x) for x in data.get("lr", [])],
                   ari=[(int(e), float(a)) for e, a in data.get("ari", [])],
                   early_stop=None if stop is None else EarlyStop(**stop))
