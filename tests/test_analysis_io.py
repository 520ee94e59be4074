"""SpatialData in (the [spatialdata] extra): pp and tl work on its table and write into it."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scniche_jax as sj


def _sdata(n=240, seed=0):
    sd = pytest.importorskip("spatialdata")
    from spatialdata.models import ShapesModel, TableModel

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(n, 2))
    niche = np.where(xy[:, 0] < 50, "left", "right")
    cell_type = np.where(rng.random(n) < 0.7, np.where(niche == "left", "T", "B"), "M")
    obs = pd.DataFrame({"region": pd.Categorical(["cells"] * n), "cell_id": np.arange(n), "Cell_type": cell_type,
                        "slice": np.where(xy[:, 1] < 50, "s0", "s1")}, index=[f"c{i}" for i in range(n)])
    table = ad.AnnData(X=rng.poisson(2.0, size=(n, 6)).astype(np.float32), obs=obs)
    table.obsm["spatial"] = xy
    table = TableModel.parse(table, region="cells", region_key="region", instance_key="cell_id")
    import geopandas as gpd
    from shapely.geometry import Point

    circles = gpd.GeoDataFrame({"geometry": [Point(*p) for p in xy], "radius": np.ones(n)},
                               index=pd.RangeIndex(n))
    shapes = ShapesModel.parse(circles)
    return sd.SpatialData(shapes={"cells": shapes}, tables={"cells_table": table})


def test_pp_and_tl_write_into_the_spatialdata_table():
    sdata = _sdata()
    table = sdata.tables["cells_table"]
    assert sj.pp.cal_spatial_neighbors(sdata, "Cell_type", n_neighbors=8, verbose=False, table_key="cells_table") is None
    sj.pp.cal_spatial_exp(sdata, n_neighbors=8, verbose=False, table_key="cells_table")
    assert {"X_cn", "X_cn_norm", "X_data", "X_data_nbr"} <= set(sdata.tables["cells_table"].obsm)
    table.obsm["X_scniche"] = table.obsm["X_cn_norm"].astype(np.float32)
    sj.tl.clustering(sdata, n_niches=2, table_key="cells_table")
    assert sdata.tables["cells_table"].obs["scNiche"].nunique() == 2
    result = sj.tl.enrichment(sdata, key="Cell_type", table_key="cells_table")
    assert sdata.tables["cells_table"].uns["enrichment"] is result
    sj.tl.niche_adjacency(sdata, n_perms=20, table_key="cells_table")
    assert "niche_adjacency" in sdata.tables["cells_table"].uns
    copy = sj.tl.clustering(sdata, n_niches=3, key_added="k3", table_key="cells_table", copy=True)
    assert isinstance(copy, ad.AnnData) and "k3" in copy.obs and "k3" not in sdata.tables["cells_table"].obs
    ax = pytest.importorskip("matplotlib") and sj.pl.enrichment(sdata, table_key="cells_table")
    assert ax is not None


def test_fit_and_embed_take_a_spatialdata():
    sdata = _sdata(seed=2)
    sj.pp.cal_spatial_neighbors(sdata, "Cell_type", n_neighbors=8, verbose=False, table_key="cells_table")
    sj.pp.cal_spatial_exp(sdata, n_neighbors=8, verbose=False, table_key="cells_table")
    model = sj.fit(sdata, n_neighbors=8, epochs=2, progress=False, table_key="cells_table")
    table = sdata.tables["cells_table"]
    assert table.obsm["X_scniche"].shape == (240, 10)
    np.testing.assert_allclose(model.embed(sdata, table_key="cells_table"), table.obsm["X_scniche"], atol=1e-6)
    model.train(sdata, epochs=1, progress=False, table_key="cells_table")
    assert model.history.epochs_run == 3
    with pytest.raises(ValueError, match="no table 'table'"):
        sj.fit(sdata, epochs=1, progress=False)


def test_multi_slice_preprocessing_replaces_the_table():
    sdata = _sdata(seed=1)
    out = sj.pp.process_multi_slices(sdata, "Cell_type", "slice", n_neighbors=5, verbose=False,
                                     table_key="cells_table")
    assert sdata.tables["cells_table"] is out or sdata.tables["cells_table"].n_obs == out.n_obs
    assert "X_cn" in sdata.tables["cells_table"].obsm
    # the table still annotates the shapes: its region and instance columns survive
    assert {"region", "cell_id"} <= set(sdata.tables["cells_table"].obs.columns)


def test_spatialdata_errors_name_the_table():
    sdata = _sdata()
    with pytest.raises(ValueError, match="no table 'table'.*'cells_table'.*table_key="):
        sj.tl.enrichment(sdata)
    with pytest.raises(ValueError, match="table_key='x' applies to a spatialdata.SpatialData only"):
        sj.tl.enrichment(ad.AnnData(np.ones((3, 2))), table_key="x")
    with pytest.raises(TypeError, match="expected an anndata.AnnData or a spatialdata.SpatialData"):
        sj.tl.enrichment(np.ones((3, 3)))
