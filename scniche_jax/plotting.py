"""Figures (matplotlib is optional: imported only here, with a clear error when missing)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Sequence

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt  # falls back to Agg without a display
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'scniche-jax[plot]' "
                          "(or pip install matplotlib)") from err
    return plt


def finish(obj, show: bool, save=None):
    """Writes ``obj``'s figure to ``save`` (a path) when given, shows it when asked (never otherwise), returns ``obj``."""
    if save is not None and save is not False:
        import os

        if not isinstance(save, (str, os.PathLike)):
            raise ValueError(f"save must be a file path such as 'niches.png', got {save!r}.")
        figure = getattr(obj, "figure", obj) if not hasattr(obj, "savefig") else obj
        figure.savefig(save, dpi=150, bbox_inches="tight")
    if show:
        _pyplot().show()
    return obj


def distinct_colours(n: int, adata=None, key: Optional[str] = None, palette: Optional[Sequence] = None) -> list:
    """``n`` colours that stay distinct: ``palette`` if given, scanpy's ``uns[key + '_colors']`` if it
    fits, else tab10 (n <= 10), tab20 (n <= 20), tab20 + tab20b + tab20c (n <= 60), or evenly spaced
    hues at three lightness levels beyond that. Never repeats a colour for n <= 60. The tab20
    palettes are taken shade by shade (every hue's dark colour first, then the lighter ones), so
    neighbouring categories (Niche0, Niche1) never get two shades of one hue.
    """
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb, to_hex

    if palette is not None:
        palette = list(palette)
        if len(palette) < n:
            raise ValueError(f"palette has {len(palette)} colours for {n} categories; pass at least {n}.")
        return palette[:n]
    if adata is not None and key is not None:
        stored = adata.uns.get(f"{key}_colors")
        if stored is not None and len(stored) >= n:
            return list(stored)[:n]
    if n <= 10:
        return [to_hex(c) for c in colormaps["tab10"].colors[:n]]
    if n <= 60:
        groups = [("tab20", 2)] if n <= 20 else [("tab20", 2), ("tab20b", 4), ("tab20c", 4)]
        pool = [to_hex(colormaps[name].colors[hue * shades + level]) for level in range(4)
                for name, shades in groups if level < shades for hue in range(20 // shades)]
        return pool[:n]
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    values = np.array([0.95, 0.75, 0.55])[np.arange(n) % 3]
    return [to_hex(hsv_to_rgb((h, 0.75, v))) for h, v in zip(hues, values)]


def history_field(history: Any, name: str, default: Any = None) -> Any:
    """``history[name]`` for a dict history, ``history.name`` for a dataclass one (None/absent → default)."""
    if isinstance(history, Mapping):
        value = history.get(name, default)
    else:
        value = getattr(history, name, default)
    return default if value is None else value


def history_figure(history: Any, axes: Optional[Sequence] = None):
    """Loss components per epoch, the learning rate, and the probe ARIs.

    Args:
      history: a ``Model.history`` (a dict with ``loss``, ``lr``, ``ari``, ``early_stop``, or an
        object with those attributes).
      axes: three matplotlib Axes to draw into; a new figure when None.

    Returns:
      The ``matplotlib.figure.Figure`` holding the three panels. The ARI panel says so when no
      ARI probe ran (``sj.fit(..., ari_every=k)`` records one every k epochs).
    """
    plt = _pyplot()
    loss = history_field(history, "loss", {})
    total = list(history_field(loss, "total", []))
    epochs = range(1, len(total) + 1)
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    else:
        axes = list(np.ravel(axes))
        if len(axes) != 3:
            raise ValueError(f"ax must hold 3 Axes (loss, learning rate, ARI), got {len(axes)}.")
        fig = axes[0].figure
    ax = axes[0]
    for name, label in (("rec", "reconstruction"), ("gre", "graph fusion"), ("mim", "mutual information")):
        values = list(history_field(loss, name, []))
        if values and max(values) > 0:  # a term that is 0 throughout (e.g. no fusion loss) has no line on a log axis
            ax.plot(range(1, len(values) + 1), values, label=label)
    stop = history_field(history, "early_stop", {})
    best = history_field(stop, "best_epoch")
    if best:
        ax.axvline(best, color="grey", ls="--", lw=0.8, label=f"best epoch ({best})")
    if total:
        ax.plot(epochs, total, color="black", lw=1.5, label="total")
        ax.set_yscale("log")
        ax.legend(fontsize=8, loc="best", framealpha=0.7)  # where it covers the fewest points
    ax.set_xlabel("epoch")
    ax.set_title("loss")
    lr = list(history_field(history, "lr", []))
    if lr:
        axes[1].plot(range(1, len(lr) + 1), lr)
        axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("learning rate")
    ari = list(history_field(history, "ari", []))
    if ari:
        e, v = zip(*ari)
        axes[2].plot(e, v, marker="o")
        axes[2].set_ylim(-0.05, 1.05)
        axes[2].set_xlabel("epoch")
    else:
        axes[2].text(0.5, 0.5, "no ARI probe ran:\npass ari_every=k to sj.fit\nto record one every k epochs",
                     ha="center", va="center", transform=axes[2].transAxes, color="dimgrey", fontsize=9)
        axes[2].set_xticks([])
        axes[2].set_yticks([])
    axes[2].set_title("ARI vs previous probe")
    stopped_by = history_field(stop, "stopped_by", "?")
    stopped_epoch = history_field(stop, "stopped_epoch", len(total))
    fig.suptitle(f"stopped by {stopped_by} after {stopped_epoch} epochs")
    return fig
