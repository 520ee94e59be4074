"""Figures (matplotlib is optional: imported only here, with a clear error when missing)."""
from __future__ import annotations

from typing import Any


def _pyplot():
    try:
        import matplotlib.pyplot as plt  # falls back to Agg without a display
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'scniche-jax[plot]' "
                          "(or pip install matplotlib)") from err
    return plt


def history_figure(history: dict[str, Any]):
    """Loss components per epoch, the learning rate, and the probe ARIs.

    Args:
      history: a ``Model.history``.

    Returns:
      A ``matplotlib.figure.Figure`` with three panels.
    """
    plt = _pyplot()
    loss = history["loss"]
    epochs = range(1, len(loss["total"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    for name, label in (("rec", "reconstruction"), ("gre", "graph fusion"), ("mim", "mutual information")):
        ax.plot(epochs, loss[name], label=label)
    ax.plot(epochs, loss["total"], color="black", lw=1.5, label="total")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    stop = history.get("early_stop") or {}
    if stop.get("best_epoch"):
        ax.axvline(stop["best_epoch"], color="grey", ls="--", lw=0.8)
    axes[1].plot(epochs, history["lr"])
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("learning rate")
    if history["ari"]:
        e, v = zip(*history["ari"])
        axes[2].plot(e, v, marker="o")
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_xlabel("epoch")
    axes[2].set_title("ARI vs previous probe")
    fig.suptitle(f"stopped by {stop.get('stopped_by', '?')} after {stop.get('stopped_epoch', len(epochs))} epochs")
    fig.tight_layout()
    return fig
