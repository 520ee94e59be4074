"""Real-world input (issue 28): every case is refused before any work with a message naming the fix,
or accepted with a clear warning where a user may mean it; the user's AnnData stays untouched."""
import json
import shutil
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scniche_jax as sj
from scniche_jax.validation import RawCountsWarning


def _data(n_cells=200, seed=0):
    return sj.datasets.synthetic(n_cells=n_cells, n_niches=3, n_cell_types=5, n_genes=12, seed=seed)


def _preprocessed(n_cells=200, seed=0):
    a = _data(n_cells, seed)
    sj.pp.cal_spatial_neighbors(a, n_neighbors=10, verbose=False)
    sj.pp.cal_spatial_exp(a, n_neighbors=10, verbose=False)
    return a


def _unchanged(a, before):
    """Nothing was written: same obs, obsm, uns keys and X."""
    pd.testing.assert_frame_equal(a.obs, before.obs)
    assert set(a.obsm) == set(before.obsm) and set(a.uns) == set(before.uns) and set(a.layers) == set(before.layers)
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(before.X))


@pytest.fixture(scope="module")
def trained():
    a = _preprocessed()
    model = sj.fit(a, epochs=2, progress=False)
    return model, a


# --- the expression ------------------------------------------------------------------------

def test_raw_counts_in_x_are_warned_naming_normalize_total_and_log1p():
    a = _data()
    a.X = np.round(np.expm1(a.X)).astype(np.float32)  # the counts synthetic() took log1p of
    with pytest.warns(RawCountsWarning, match=r"raw counts.*sc\.pp\.normalize_total.*sc\.pp\.log1p.*--normalize"):
        sj.pp.cal_spatial_exp(a, n_neighbors=10, verbose=False)
    assert a.uns["X_data_params"]["normalisation"] == "raw counts"


def test_raw_counts_in_sparse_x_are_warned_once_per_multi_slice_call():
    import scipy.sparse as sp

    a = _data()
    a.X = sp.csr_matrix(np.round(np.expm1(a.X)))
    a.obs["Sample"] = np.where(np.arange(a.n_obs) % 2, "s1", "s2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sj.pp.process_multi_slices(a, n_neighbors=10, verbose=False)
    raw = [w for w in caught if issubclass(w.category, RawCountsWarning)]
    assert len(raw) == 1 and "normalize_total" in str(raw[0].message)


def test_normalised_expression_is_not_warned():
    a = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RawCountsWarning)
        sj.pp.cal_spatial_exp(a, n_neighbors=10, verbose=False)
    assert a.uns["X_data_params"]["normalisation"] == "normalised"


# --- the cell types and the coordinates ------------------------------------------------------

def test_a_single_cell_type_is_warned():
    a = _data()
    a.obs["one"] = "T"
    with pytest.warns(UserWarning, match=r"one cell type \('T'\).*celltype_key="):
        sj.pp.cal_spatial_neighbors(a, celltype_key="one", n_neighbors=10, verbose=False)


def test_a_float_cell_type_column_is_refused():
    a = _data()
    a.obs["area"] = np.random.default_rng(0).uniform(10, 50, a.n_obs)
    before = a.copy()
    with pytest.raises(ValueError, match=r"holds float64 values, not labels.*astype\('category'\)"):
        sj.pp.cal_spatial_neighbors(a, celltype_key="area", n_neighbors=10, verbose=False)
    a.obs["Sample"] = "s1"
    before.obs["Sample"] = "s1"
    with pytest.raises(ValueError, match="not labels"):
        sj.pp.process_multi_slices(a, celltype_key="area", n_neighbors=10, verbose=False)
    _unchanged(a, before)


def test_all_cells_at_one_point_are_refused():
    a = _data()
    a.obsm["spatial"] = np.zeros((a.n_obs, 2))
    before = a.copy()
    for call in (sj.pp.cal_spatial_neighbors, sj.pp.cal_spatial_exp):
        with pytest.raises(ValueError, match=r"sit at one point.*x, y centroids"):
            call(a, n_neighbors=10, verbose=False)
    a.obs["Sample"] = np.where(np.arange(a.n_obs) % 2, "s1", "s2")
    before.obs["Sample"] = a.obs["Sample"]
    with pytest.raises(ValueError, match=r"slice 's1' sit at one point"):
        sj.pp.process_multi_slices(a, n_neighbors=10, verbose=False)
    _unchanged(a, before)


def test_a_dataframe_of_float64_coordinates_is_accepted():
    a = _data()
    a.obsm["spatial"] = pd.DataFrame(np.asarray(a.obsm["spatial"], np.float64), index=a.obs_names,
                                     columns=["x", "y"])
    sj.pp.cal_spatial_neighbors(a, n_neighbors=10, verbose=False)
    assert a.obsm["X_cn"].shape == (a.n_obs, 5)


def test_nan_in_the_sample_column_is_refused():
    a = _data()
    a.obs["Sample"] = np.where(np.arange(a.n_obs) % 2, "s1", "s2").astype(object)
    a.obs.loc[a.obs_names[:3], "Sample"] = np.nan
    before = a.copy()
    with pytest.raises(ValueError, match=r"'Sample'.*3 missing labels.*notna\(\)"):
        sj.pp.process_multi_slices(a, n_neighbors=10, verbose=False)
    _unchanged(a, before)


def test_integer_slice_ids_with_nan_are_named_missing_not_float():
    a = _data()
    a.obs["Sample"] = np.where(np.arange(a.n_obs) % 2, 1.0, 2.0)
    a.obs.loc[a.obs_names[:2], "Sample"] = np.nan
    with pytest.raises(ValueError, match="2 missing labels"):
        sj.pp.process_multi_slices(a, n_neighbors=10, verbose=False)


def test_a_one_cell_slice_and_an_empty_anndata_are_refused():
    a = _data()
    a.obs["Sample"] = np.where(np.arange(a.n_obs) == 0, "tiny", "big")
    before = a.copy()
    with pytest.raises(ValueError, match=r"slice 'tiny' has 1 cell;.*Drop it"):
        sj.pp.process_multi_slices(a, n_neighbors=10, verbose=False)
    _unchanged(a, before)
    empty = a[np.zeros(a.n_obs, bool)].copy()
    for call in (lambda: sj.pp.cal_spatial_neighbors(empty, verbose=False),
                 lambda: sj.pp.cal_spatial_exp(empty, verbose=False),
                 lambda: sj.pp.process_multi_slices(empty, verbose=False)):
        with pytest.raises(ValueError, match=r"has 0 cells; scniche_jax needs at least 2.*filter"):
            call()


def test_spatialdata_with_coordinates_only_in_shapes_names_the_table():
    sd = pytest.importorskip("spatialdata")
    pytest.importorskip("geopandas")
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata.models import ShapesModel, TableModel

    a = _data(60)
    table = ad.AnnData(X=np.asarray(a.X), obs=pd.DataFrame({"region": pd.Categorical(["cells"] * a.n_obs),
                                                           "cell_id": np.arange(a.n_obs),
                                                           "Cell_type": a.obs["Cell_type"].to_numpy()},
                                                          index=a.obs_names))
    table = TableModel.parse(table, region="cells", region_key="region", instance_key="cell_id")
    shapes = ShapesModel.parse(gpd.GeoDataFrame({"geometry": [Point(*p) for p in a.obsm["spatial"]],
                                                 "radius": np.ones(a.n_obs)}, index=pd.RangeIndex(a.n_obs)))
    sdata = sd.SpatialData(shapes={"cells": shapes}, tables={"cells_table": table})
    with pytest.raises(ValueError, match=r"sdata\.tables\['cells_table'\]\.obsm has no 'spatial'.*shapes \['cells'\]"
                                         r".*get_centroids"):
        sj.pp.cal_spatial_neighbors(sdata, n_neighbors=10, verbose=False, table_key="cells_table")
    assert "X_cn" not in sdata.tables["cells_table"].obsm


# --- training and clustering -----------------------------------------------------------------

@pytest.mark.parametrize("epochs", ["abc", 0, -1, 2.5])
def test_bad_epochs_are_refused_before_training(epochs):
    a = _preprocessed(60)
    before = a.copy()
    with pytest.raises(ValueError, match=rf"epochs must be an integer >= 1, got {epochs!r}"):
        sj.fit(a, epochs=epochs, progress=False)
    _unchanged(a, before)


def test_fit_and_clustering_refuse_an_empty_anndata():
    a = _preprocessed(60)
    empty = a[np.zeros(a.n_obs, bool)].copy()
    with pytest.raises(ValueError, match="has 0 cells"):
        sj.fit(empty, epochs=1, progress=False)
    empty.obsm["X_scniche"] = np.zeros((0, 4), np.float32)
    with pytest.raises(ValueError, match="has 0 cells"):
        sj.tl.clustering(empty, n_niches=2)


def test_more_niches_than_distinct_embeddings_is_refused_before_kmeans():
    a = _data(100)
    a.obsm["X_scniche"] = np.repeat(np.eye(2, dtype=np.float32), 50, axis=0)
    before = a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn ConvergenceWarning: refused before KMeans
        with pytest.raises(ValueError, match=r"only 2 distinct rows, fewer than n_niches=5; choose fewer niches"):
            sj.tl.clustering(a, n_niches=5)
        with pytest.raises(ValueError, match="only 2 distinct rows"):
            sj.tl.cluster_stability(a, n_niches=(2, 4))
    _unchanged(a, before)
    sj.tl.clustering(a, n_niches=2)
    assert a.obs["scNiche"].nunique() == 2


# --- the tools after clustering ------------------------------------------------------------

def _clustered():
    a = _data(150)
    a.obs["scNiche"] = np.where(a.obsm["spatial"][:, 0] < np.median(a.obsm["spatial"][:, 0]), "N0", "N1")
    return a


def test_a_string_niche_column_is_converted_as_scanpy_does():
    a = _clustered()
    b = a.copy()
    b.obs["scNiche"] = b.obs["scNiche"].astype("category")
    assert not isinstance(a.obs["scNiche"].dtype, pd.CategoricalDtype)
    table = sj.tl.enrichment(a, key="Cell_type")
    pd.testing.assert_frame_equal(table, sj.tl.enrichment(b, key="Cell_type"))
    assert isinstance(a.obs["scNiche"].dtype, pd.CategoricalDtype)
    a.obs["scNiche"] = a.obs["scNiche"].astype(str)
    sj.tl.composition(a, key="Cell_type")
    assert list(a.obs["scNiche"].cat.categories) == ["N0", "N1"]


def test_an_integer_niche_column_is_still_refused():
    a = _clustered()
    a.obs["codes"] = (a.obs["scNiche"] == "N1").astype(int)
    with pytest.raises(ValueError, match=r"not categorical.*astype\('category'\)"):
        sj.tl.enrichment(a, groupby="codes")


def test_a_missing_key_names_the_argument_key():
    a = _clustered()
    for call in (lambda: sj.tl.enrichment(a, key="celltype"), lambda: sj.tl.composition(a, key="celltype")):
        with pytest.raises(ValueError, match=r"no label column 'celltype'.*\(key=\.\.\.\)"):
            call()
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    with pytest.raises(ValueError, match=r"no cell-type column 'celltype'.*\(key=\.\.\.\)"):
        sj.pl.composition(a, key="celltype")
    with pytest.raises(ValueError, match=r"no niche column 'niches'.*\(groupby=\.\.\.\)"):
        sj.tl.enrichment(a, groupby="niches", key="Cell_type")


# --- the model folder and embedding new data ---------------------------------------------------

def test_a_model_folder_without_state_is_refused(trained, tmp_path):
    model, a = trained
    path = model.save(tmp_path / "m")
    shutil.rmtree(path / "state")
    with pytest.raises(ValueError, match=r"lacks state/.*incomplete: save the model there again.*model\.pt"):
        sj.load(path)
    (path / "model.pt").unlink()
    with pytest.raises(ValueError, match=r"lacks state/"):
        sj.load(path)


def test_a_model_folder_without_its_model_pt_is_refused(trained, tmp_path):
    model, a = trained
    path = model.save(tmp_path / "m")
    (path / "model.pt").unlink()
    with pytest.raises(ValueError, match=r"m' lacks model\.pt"):
        sj.load(path)


def test_a_model_pt_of_another_architecture_is_refused(trained, tmp_path):
    model, a = trained
    path = model.save(tmp_path / "m")
    other = _preprocessed(120, seed=1)
    other_model = sj.fit(other, epochs=1, hidden_size=(16, 6), progress=False)
    other_path = other_model.save(tmp_path / "other")
    shutil.copy(other_path / "model.pt", path / "model.pt")
    with pytest.raises(ValueError, match=r"model\.pt belongs to another model \(.*graph size 120 in model\.pt, 200 in "
                                         r"config\.json; hidden_size \[16, 6\].*save the model there again"):
        sj.load(path)


def test_the_model_records_its_preprocessing(trained, tmp_path):
    model, a = trained
    record = model.preprocessing
    assert record["celltype_key"] == "Cell_type" and record["celltype_order"] == list(a.uns["CN_order"])
    assert record["genes"] == list(a.var_names) and record["normalisation"] == "normalised"
    assert record["is_pca"] is False and record["source"] == "adata.X"
    path = model.save(tmp_path / "m")
    assert json.loads((path / "config.json").read_text())["preprocessing"] == record
    assert sj.load(path).preprocessing == record


def test_embed_refuses_other_genes_of_the_same_width(trained):
    model, _ = trained
    b = _data(120, seed=3)
    b.var_names = [f"other{i}" for i in range(b.n_vars)]
    sj.pp.cal_spatial_neighbors(b, n_neighbors=10, verbose=False)
    sj.pp.cal_spatial_exp(b, n_neighbors=10, verbose=False)
    before = b.copy()
    with pytest.raises(ValueError, match=r"other genes than the model was trained on: 12 of its genes are missing "
                                         r".*adata\[:, model\.preprocessing\['genes'\]\]"):
        model.embed(b)
    _unchanged(b, before)
    b = _data(120, seed=3)[:, ::-1].copy()  # the same genes, reordered
    sj.pp.cal_spatial_neighbors(b, n_neighbors=10, verbose=False)
    sj.pp.cal_spatial_exp(b, n_neighbors=10, verbose=False)
    with pytest.raises(ValueError, match="the same genes in another order"):
        model.embed(b)


def test_embed_warns_on_another_normalisation(trained):
    model, _ = trained
    b = _data(240, seed=3)
    b.X = np.round(np.expm1(b.X)).astype(np.float32)
    sj.pp.cal_spatial_neighbors(b, n_neighbors=10, verbose=False)
    with pytest.warns(RawCountsWarning):
        sj.pp.cal_spatial_exp(b, n_neighbors=10, verbose=False)
    with pytest.warns(UserWarning, match=r"normalisation='raw counts' but the model was trained on "
                                         r"normalisation='normalised'"):
        z = model.embed(b)
    assert z.shape == (240, model.config.latent_dim)


def test_save_without_the_torch_file_loads_the_same_model(trained, tmp_path):
    model, a = trained
    path = model.save(tmp_path / "native", torch_format=False)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "state"]
    loaded = sj.load(path)
    np.testing.assert_array_equal(loaded.embed(a), model.embed(a))
    assert loaded.history == model.history and loaded.preprocessing == model.preprocessing


# --- friction: plots, logging, progress, the example ------------------------------------------

@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_every_plot_takes_save_and_niches_into_one_axes_returns_it(trained, plt, tmp_path):
    model, _ = trained
    a = _clustered()
    a.obs["scNiche"] = a.obs["scNiche"].astype("category")
    a.obs["sample"] = np.tile(["s1", "s2", "s3", "s4"], a.n_obs // 4 + 1)[:a.n_obs]
    a.obs["condition"] = np.where(a.obs["sample"].isin(["s1", "s2"]), "x", "y")
    sj.tl.enrichment(a, key="Cell_type")
    sj.tl.niche_adjacency(a, n_perms=20)
    sj.tl.differential_abundance(a, condition_key="condition", sample_key="sample", n_perms=20)
    calls = {"niches": lambda save: sj.pl.niches(a, save=save),
             "history": lambda save: sj.pl.history(model, save=save),
             "composition": lambda save: sj.pl.composition(a, key="Cell_type", save=save),
             "enrichment": lambda save: sj.pl.enrichment(a, save=save),
             "adjacency": lambda save: sj.pl.niche_adjacency(a, save=save),
             "abundance": lambda save: sj.pl.abundance(a, condition_key="condition", sample_key="sample", save=save)}
    for name, call in calls.items():
        call(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    fig, ax = plt.subplots()
    assert sj.pl.niches(a, ax=ax) is ax
    adjacency = sj.pl.niche_adjacency(a)
    assert adjacency.get_title() == "niche adjacency (log2 ratio, pooled)"
    abundance = sj.pl.abundance(a, condition_key="condition", sample_key="sample")
    labels = abundance.get_xticklabels()
    assert "p_adj" in labels[0].get_text() and all(label.get_rotation() == 0 for label in labels)


def test_sample_panels_come_in_sorted_order(plt):
    a = _clustered()
    a.obs["slice"] = np.where(np.arange(a.n_obs) < 75, "s2", "s1")  # s2 first in obs
    fig = sj.pl.niches(a, sample_key="slice")
    assert [axis.get_title() for axis in fig.axes if axis.get_title()] == ["s1", "s2"]


def test_save_and_load_are_quiet_under_an_info_root_logger(trained, tmp_path, caplog):
    import logging

    model, _ = trained
    with caplog.at_level(logging.INFO):
        sj.load(model.save(tmp_path / "m"))
    assert not [r for r in caplog.records if r.name.startswith("absl")], [r.getMessage() for r in caplog.records][:3]
    logging.getLogger("absl").setLevel(logging.INFO)  # asked for: they come back
    try:
        with caplog.at_level(logging.INFO):
            model.save(tmp_path / "m2")
        assert [r for r in caplog.records if r.name.startswith("absl")]
    finally:
        logging.getLogger("absl").setLevel(logging.WARNING)


def test_building_one_large_graph_says_so(trained, capsys, monkeypatch):
    from scniche_jax import pipeline

    _, a = trained
    monkeypatch.setattr(pipeline, "LARGE_GRAPH", 100)
    sj.fit(a.copy(), epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "building the view graphs and their consensus on 200 cells" in err and "graphs built in" in err


def test_the_osmfish_example_refuses_to_overwrite_its_default_folder(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "osmfish_improved").mkdir()
    (tmp_path / "osmfish_improved" / "keep.txt").write_text("mine")
    example = Path(__file__).resolve().parents[1] / "examples" / "osmfish.py"
    result = subprocess.run([sys.executable, str(example), "--variant", "improved"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "'osmfish_improved' exists and is not empty; pass --overwrite" in result.stderr
    assert (tmp_path / "osmfish_improved" / "keep.txt").read_text() == "mine"


def test_neighbouring_niches_get_distinct_hues_and_the_history_legend_names_every_line(plt):
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from scniche_jax.plotting import distinct_colours

    colours = distinct_colours(12)
    assert colours[:10] == [to_hex(c) for c in colormaps["tab10"].colors]  # one shade per hue first
    assert len(set(distinct_colours(60))) == 60
    history = {"loss": {"total": [3.0, 2.0, 1.5], "rec": [2.0, 1.5, 1.0], "gre": [0.0, 0.0, 0.0],
                        "mim": [1.0, 0.5, 0.5]}, "lr": [0.01] * 3, "ari": [],
               "early_stop": {"best_epoch": 2, "stopped_by": "epochs", "stopped_epoch": 3}}
    fig = sj.pl.history(history)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["reconstruction", "mutual information", "best epoch (2)", "total"]
