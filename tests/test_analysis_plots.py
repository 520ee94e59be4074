"""sj.pl: every plot takes ax=, returns what it drew, never shows unless asked; the fixes of issue 14."""
from dataclasses import dataclass, field

import numpy as np
import pytest

import scniche_jax as sj

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


@pytest.fixture(autouse=True)
def _no_show(monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    yield shown
    plt.close("all")


@pytest.fixture(scope="module")
def osmfish():
    a = sj.datasets.osmfish()
    a.X = np.log1p(a.X / a.X.sum(1, keepdims=True) * 1e4)
    a.obs["Niche"] = a.obs["Niche"].astype("category")
    a.obs["half"] = np.where(a.obsm["spatial"][:, 1] > np.median(a.obsm["spatial"][:, 1]), "top", "bottom")
    return a


def _inside_figure(fig, artist):
    fig.canvas.draw()
    box = artist.get_window_extent(fig.canvas.get_renderer())
    frame = fig.bbox
    return box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1 and box.y0 >= frame.y0 - 1 and box.y1 <= frame.y1 + 1


def test_composition_legend_fits_and_31_types_get_31_colours(osmfish, _no_show):
    ax = sj.pl.composition(osmfish, groupby="Niche", key="Cell_type")
    assert isinstance(ax, Axes) and not _no_show
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 31
    assert _inside_figure(ax.figure, legend)
    colours = {tuple(np.round(h.get_facecolor(), 4)) for h in legend.legend_handles}
    assert len(colours) == 31


def test_composition_per_sample_and_into_a_given_axes(osmfish):
    fig, ax = plt.subplots()
    out = sj.pl.composition(osmfish, groupby="Niche", key="Cell_class", sample_key="half", ax=ax)
    assert out is ax
    n_bars = osmfish.obs.groupby(["Niche", "half"], observed=True).ngroups
    assert len(ax.get_xticks()) == n_bars
    heights = np.zeros(n_bars)
    for container in ax.containers:
        heights += np.array([bar.get_height() for bar in container])
    np.testing.assert_allclose(heights, 1.0)


def test_niches_has_a_title_and_its_legend_outside_the_cells(osmfish):
    fig = sj.pl.niches(osmfish, groupby="Niche")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "Niche"
    legend = fig.legends[0]
    assert _inside_figure(fig, legend)
    panel = fig.axes[0].get_window_extent(fig.canvas.get_renderer())
    assert legend.get_window_extent(fig.canvas.get_renderer()).x0 >= panel.x1 - 1  # right of the cells
    fig = sj.pl.niches(osmfish, groupby="Niche", sample_key="half", title="regions")
    assert fig._suptitle.get_text() == "regions" and {a.get_title() for a in fig.axes[:2]} == {"top", "bottom"}


def test_history_explains_an_empty_ari_panel_and_reads_both_history_kinds(_no_show):
    history = {"loss": {"total": [3.0, 2.0, 1.5], "rec": [1, 0.8, 0.7], "gre": [1, 0.7, 0.5], "mim": [1, 0.5, 0.3]},
               "lr": [0.01, 0.01, 0.005], "ari": [],
               "early_stop": {"best_epoch": 3, "stopped_by": "epochs", "stopped_epoch": 3}}
    fig = sj.pl.history(history)
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert any("no ARI probe ran" in t and "ari_every" in t for t in texts)
    assert not _no_show

    @dataclass
    class History:  # the shape another branch gives model.history: attributes instead of keys
        loss: dict = field(default_factory=lambda: {"total": [3.0, 2.0], "rec": [1, 1], "gre": [1, 1], "mim": [1, 1]})
        lr: list = field(default_factory=lambda: [0.01, 0.01])
        ari: list = field(default_factory=lambda: [(1, 0.5), (2, 0.97)])
        early_stop: dict = field(default_factory=lambda: {"stopped_by": "ari", "stopped_epoch": 2})

    class Model:
        history = History()

    fig = sj.pl.history(Model(), show=True)
    assert list(fig.axes[2].lines[0].get_ydata()) == [0.5, 0.97] and not fig.axes[2].texts
    assert _no_show == [1]
    _, axes = plt.subplots(1, 3)
    assert sj.pl.history(history, ax=axes) is axes[0].figure


def test_enrichment_and_adjacency_heatmaps(osmfish):
    table = sj.tl.enrichment(osmfish, groupby="Niche", key="Cell_class", key_added="enr")
    ax = sj.pl.enrichment(osmfish, uns_key="enr")
    assert isinstance(ax, Axes) and len(ax.get_xticklabels()) == 11 and len(ax.get_yticklabels()) == 7
    assert sum(bool(t.get_text()) for t in ax.texts) == int((table["p_adj"] < 0.05).sum())
    _, mine = plt.subplots()
    assert sj.pl.enrichment(table, ax=mine) is mine
    adjacency = sj.tl.niche_adjacency(osmfish, groupby="Niche", sample_key="half", n_perms=50)
    ax = sj.pl.niche_adjacency(osmfish)
    # niches that never share a half cannot meet under within-sample shuffling: no z-score, blank cell
    pooled = adjacency[adjacency["half"] == "(pooled)"]
    assert ax.get_title() == "niche adjacency (log2 ratio, pooled)" and len(ax.texts) == 121
    ax = sj.pl.niche_adjacency(osmfish, value="z_score")
    assert len(ax.texts) == int(pooled["z_score"].notna().sum()) > 90
    assert "top" in sj.pl.niche_adjacency(osmfish, sample="top").get_title()
    with pytest.raises(ValueError, match="no 'missing'.*run sj.tl.enrichment first"):
        sj.pl.enrichment(osmfish, uns_key="missing")


def test_abundance_draws_a_box_per_niche_and_condition():
    from test_analysis import _abundance_data

    a = _abundance_data({"ctrl": [0.5, 0.3, 0.2], "treated": [0.2, 0.3, 0.5]}, 4, seed=1)
    sj.tl.differential_abundance(a, condition_key="condition", sample_key="sample")
    ax = sj.pl.abundance(a, condition_key="condition", sample_key="sample")
    assert isinstance(ax, Axes) and len(ax.patches) == 3 * 2
    assert all("p_adj" in t.get_text() for t in ax.get_xticklabels())
    assert sum(len(c.get_offsets()) for c in ax.collections) == 3 * 8  # one point per sample and niche


def test_markers_dot_plot(osmfish):
    pytest.importorskip("scanpy")
    sj.tl.niche_markers(osmfish, groupby="Niche", n_genes=5)
    ax = sj.pl.markers(osmfish, groupby="Niche", n_genes=2)
    assert isinstance(ax, Axes)
    assert len(ax.get_xticklabels()) >= 11  # two genes per niche, shared genes shown once per niche group
