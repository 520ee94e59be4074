"""The analyses after the niches (sj.tl.enrichment, niche_adjacency, composition, average_expression,
niche_markers, differential_abundance): known answers on constructed data, and bad input."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import scniche_jax as sj
from scniche_jax.analysis import benjamini_hochberg


def _planted(n_samples=1, cells_per_niche=200, seed=0):
    """Three niches; type A only in niche N1 (30% of it); B and C fill the rest at random."""
    rng = np.random.default_rng(seed)
    obs = []
    for s in range(n_samples):
        for niche in ("N0", "N1", "N2"):
            for _ in range(cells_per_niche):
                if niche == "N1" and rng.random() < 0.3:
                    cell_type = "A"
                else:
                    cell_type = rng.choice(["B", "C"])
                obs.append((f"s{s}", niche, cell_type))
    frame = pd.DataFrame(obs, columns=["sample", "scNiche", "Cell_type"])
    frame.index = [f"c{i}" for i in range(len(frame))]
    frame["scNiche"] = frame["scNiche"].astype("category")
    a = ad.AnnData(X=rng.poisson(1.0, size=(len(frame), 5)).astype(np.float32), obs=frame)
    a.var_names = [f"g{i}" for i in range(5)]
    a.obsm["spatial"] = rng.uniform(0, 100, size=(len(frame), 2))
    return a


def _row(table, **where):
    mask = np.ones(len(table), bool)
    for column, value in where.items():
        mask &= (table[column].astype(object) == value).to_numpy()
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


# ----------------------------------------------------------------------------- enrichment

def test_enrichment_one_sample_finds_the_planted_type_only_in_its_niche():
    a = _planted()
    table = sj.tl.enrichment(a)
    assert a.uns["enrichment"] is table
    assert list(table.columns) == ["scNiche", "Cell_type", "proportion", "proportion_outside", "log2_fold_change",
                                   "p_value", "p_adj", "n_cells", "n_samples", "test"]
    hit = _row(table, scNiche="N1", Cell_type="A")
    assert hit["p_adj"] < 1e-20 and hit["log2_fold_change"] > 5 and hit["test"] == "hypergeometric"
    n_a = int((a.obs["Cell_type"] == "A").sum())
    assert hit["proportion"] == pytest.approx(n_a / 200) and hit["proportion_outside"] == 0.0 and hit["n_cells"] == n_a
    # the same p-value by hand: at least n_a of the 200 cells of N1 among 600 cells holding n_a of type A
    assert hit["p_value"] == pytest.approx(stats.hypergeom.sf(n_a - 1, 600, n_a, 200))
    for niche in ("N0", "N2"):
        row = _row(table, scNiche=niche, Cell_type="A")
        assert row["p_adj"] > 0.5 and row["proportion"] == 0.0 and row["log2_fold_change"] < -5


def test_enrichment_several_samples_uses_mann_whitney_across_samples():
    a = _planted(n_samples=6, cells_per_niche=60, seed=1)
    table = sj.tl.enrichment(a, sample_key="sample")
    hit = _row(table, scNiche="N1", Cell_type="A")
    # 6 samples, in-niche proportions all above the outside ones (0): exact one-sided p = 1 / C(12, 6)
    assert hit["test"] == "mannwhitneyu" and hit["n_samples"] == 6
    inside = [((a.obs["sample"] == s) & (a.obs["scNiche"] == "N1") & (a.obs["Cell_type"] == "A")).sum() / 60
              for s in sorted(a.obs["sample"].unique())]
    assert hit["p_value"] == pytest.approx(stats.mannwhitneyu(inside, np.zeros(6), alternative="greater").pvalue)
    assert hit["p_value"] < 0.002 and hit["p_adj"] < 0.05
    for niche in ("N0", "N2"):
        assert _row(table, scNiche=niche, Cell_type="A")["p_adj"] > 0.5
    # per-sample proportions by hand
    per_sample = [((a.obs["sample"] == s) & (a.obs["scNiche"] == "N1") & (a.obs["Cell_type"] == "A")).sum() / 60
                  for s in sorted(a.obs["sample"].unique())]
    assert hit["proportion"] == pytest.approx(np.mean(per_sample))


def test_enrichment_skips_niches_smaller_than_min_cells():
    a = _planted(cells_per_niche=30)
    assert set(sj.tl.enrichment(a, min_cells=20)["scNiche"].astype(str)) == {"N0", "N1", "N2"}
    assert sj.tl.enrichment(a, min_cells=31, key_added=None).empty


# ----------------------------------------------------------------------------- adjacency

def _checkerboard(side=20, seed=0, blocks=1):
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    labels = np.where(((i // blocks) + (j // blocks)) % 2 == 0, "A", "B")
    a = ad.AnnData(obs=pd.DataFrame({"scNiche": pd.Categorical(labels.ravel())},
                                    index=[f"c{k}" for k in range(side * side)]))
    a.obsm["spatial"] = np.stack([i.ravel(), j.ravel()], 1) + rng.normal(scale=0.01, size=(side * side, 2))
    return a


@pytest.mark.parametrize("graph", ["knn", "delaunay"])
def test_checkerboard_niches_touch_more_than_expected(graph):
    a = _checkerboard()
    table = sj.tl.niche_adjacency(a, graph=graph, n_neighbors=4, n_perms=200)
    assert set(table["sample"].astype(str)) == {"(pooled)"}
    ab, aa = _row(table, source="A", target="B"), _row(table, source="A", target="A")
    assert ab["z_score"] > 5 and ab["p_adj"] < 0.05 and ab["observed"] > ab["expected"]
    assert aa["z_score"] < -5 and ab["log2_ratio"] > 0.3 and aa["log2_ratio"] < -0.3
    assert _row(table, source="B", target="A")["n_links"] == ab["n_links"]  # links count both ways


def test_checkerboard_on_the_exact_grid_graph_counts_every_link():
    import scipy.sparse as sp

    a = _checkerboard()
    idx = np.arange(400).reshape(20, 20)
    rows = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    cols = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    grid = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(400, 400))
    a.obsp["grid"] = (grid + grid.T).tocsr()
    table = sj.tl.niche_adjacency(a, use_graph="grid", n_perms=100)
    ab, aa = _row(table, source="A", target="B"), _row(table, source="A", target="A")
    # every one of the 2 * 20 * 19 grid edges joins A and B; per A cell that is 3.8 links
    assert aa["n_links"] == 0 and ab["n_links"] == 760 and ab["observed"] == pytest.approx(3.8)
    assert ab["expected"] == pytest.approx(1.9, abs=0.1)  # shuffled: about half the links cross


def test_two_halves_touch_less_than_expected_and_squidpy_graph_gives_the_same_counts():
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    a = _checkerboard(blocks=10)  # four 10 x 10 blocks: A and B meet only along block borders
    table = sj.tl.niche_adjacency(a, graph="knn", n_neighbors=4, n_perms=200, key_added=None)
    assert "niche_adjacency" not in a.uns
    assert _row(table, source="A", target="B")["z_score"] < -5
    knn = NearestNeighbors(n_neighbors=5).fit(a.obsm["spatial"]).kneighbors_graph(a.obsm["spatial"])
    knn.setdiag(0)
    a.obsp["spatial_connectivities"] = sp.csr_matrix(((knn + knn.T) > 0).astype(np.float32))
    again = sj.tl.niche_adjacency(a, use_graph=True, n_perms=200)
    np.testing.assert_array_equal(again["n_links"].to_numpy(), table["n_links"].to_numpy())


def test_adjacency_per_sample_blocks_add_up_to_the_pooled_block():
    a = ad.concat([_checkerboard(side=10, seed=0), _checkerboard(side=12, seed=1)], label="slice",
                  keys=["left", "right"], index_unique="-")
    a.obs["scNiche"] = a.obs["scNiche"].astype("category")
    table = sj.tl.niche_adjacency(a, sample_key="slice", graph="knn", n_neighbors=4, n_perms=50)
    assert list(table["slice"].cat.categories) == ["left", "right", "(pooled)"]
    counts = table.pivot_table(index=["source", "target"], columns="slice", values="n_links", observed=True)
    np.testing.assert_array_equal(counts["left"] + counts["right"], counts["(pooled)"])


# ----------------------------------------------------------------------------- composition and expression

def test_composition_per_sample_matches_counts_by_hand():
    a = _planted(n_samples=2, cells_per_niche=50, seed=3)
    table = sj.tl.composition(a, sample_key="sample")
    assert list(table.columns) == ["sample", "scNiche", "Cell_type", "n_cells", "proportion", "niche_fraction"]
    assert len(table) == 2 * 3 * 3  # zero counts included
    row = _row(table, sample="s1", scNiche="N1", Cell_type="A")
    mask = (a.obs["sample"] == "s1") & (a.obs["scNiche"] == "N1")
    assert row["n_cells"] == (mask & (a.obs["Cell_type"] == "A")).sum()
    assert row["proportion"] == pytest.approx(row["n_cells"] / 50) and row["niche_fraction"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(table.groupby(["sample", "scNiche"], observed=True)["proportion"].sum(), 1.0)
    assert sj.tl.composition(a, min_fraction=0.5, key_added=None).empty


def test_average_expression_with_restriction_matches_numpy():
    a = _planted(n_samples=2, cells_per_niche=40, seed=4)
    a.layers["counts"] = a.X * 2
    table = sj.tl.average_expression(a, sample_key="sample", genes=["g1", "g3"], layer="counts", key="Cell_type",
                                     restrict_to="B")
    row = _row(table, sample="s0", scNiche="N2", gene="g3")
    mask = ((a.obs["sample"] == "s0") & (a.obs["scNiche"] == "N2") & (a.obs["Cell_type"] == "B")).to_numpy()
    assert row["mean_expression"] == pytest.approx(a.layers["counts"][mask, 3].mean())
    assert row["fraction_expressing"] == pytest.approx((a.X[mask, 3] > 0).mean()) and row["n_cells"] == mask.sum()
    assert set(table["gene"].astype(str)) == {"g1", "g3"} and len(table) == 2 * 3 * 2


# ----------------------------------------------------------------------------- markers

def test_niche_markers_find_the_planted_gene_and_the_restricted_question():
    pytest.importorskip("scanpy")
    rng = np.random.default_rng(5)
    a = _planted(cells_per_niche=150, seed=5)
    x = rng.poisson(2.0, size=(a.n_obs, 6)).astype(np.float32)
    in_n1 = (a.obs["scNiche"] == "N1").to_numpy()
    b_cells = (a.obs["Cell_type"] == "B").to_numpy()
    x[in_n1, 0] += 6                 # g0 marks niche N1
    x[in_n1 & b_cells, 4] += 6       # g4 marks the B cells of N1 only
    x[~in_n1 & b_cells, 4] += 6      # ... and B cells elsewhere too, at the same level: no niche difference
    x[in_n1 & b_cells, 5] += 6       # g5 marks B cells of N1 against B cells elsewhere
    a = ad.AnnData(X=np.log1p(x), obs=a.obs, var=pd.DataFrame(index=[f"g{i}" for i in range(6)]))
    obs_before = a.obs.copy()
    table = sj.tl.niche_markers(a)
    assert list(table.columns) == ["scNiche", "gene", "score", "log2_fold_change", "p_value", "p_adj",
                                   "pct_in_group", "pct_in_reference"]
    top = table[table["scNiche"] == "N1"].iloc[0]
    assert top["gene"] == "g0" and top["p_adj"] < 1e-10 and top["log2_fold_change"] > 1
    pd.testing.assert_frame_equal(a.obs, obs_before)
    restricted = sj.tl.niche_markers(a, key="Cell_type", restrict_to="B", key_added="markers_B")
    n1 = restricted[restricted["scNiche"] == "N1"].set_index("gene")
    assert n1.loc["g5", "p_adj"] < 1e-10 and n1.loc["g4", "p_adj"] > 0.01
    assert "markers_B" in a.uns and len(sj.tl.niche_markers(a, n_genes=2, key_added=None)) == 3 * 2


def test_niche_markers_leave_out_tiny_niches_with_a_warning():
    pytest.importorskip("scanpy")
    a = _planted(cells_per_niche=60, seed=6)
    a.X = np.log1p(a.X)
    with pytest.raises(ValueError, match="needs a niche with at least.*1 niche"):
        sj.tl.niche_markers(a, key="Cell_type", restrict_to="A")  # type A lives in N1 only
    a.obs.loc[a.obs_names[:2], "Cell_type"] = "A"  # two A cells in N0
    with pytest.warns(UserWarning, match=r"left out \['N0'\].*of 'A'"):
        table = sj.tl.niche_markers(a, key="Cell_type", restrict_to="A")
    assert set(table["scNiche"].astype(str)) == {"N1"}


# ----------------------------------------------------------------------------- conditions

def _abundance_data(props_by_condition, samples_per_condition, cells=400, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for condition, props in props_by_condition.items():
        for s in range(samples_per_condition):
            counts = rng.multinomial(cells, props)
            for niche, c in enumerate(counts):
                rows += [(f"{condition}{s}", condition, f"N{niche}")] * int(c)
    obs = pd.DataFrame(rows, columns=["sample", "condition", "scNiche"], index=[f"c{i}" for i in range(len(rows))])
    obs["scNiche"] = pd.Categorical(obs["scNiche"], categories=[f"N{i}" for i in range(len(props))])
    return ad.AnnData(obs=obs)


def test_differential_abundance_finds_the_planted_difference_and_not_the_null_one():
    a = _abundance_data({"ctrl": [0.4, 0.3, 0.2, 0.1], "treated": [0.2, 0.3, 0.2, 0.3]}, 6, seed=0)
    table = sj.tl.differential_abundance(a, condition_key="condition", sample_key="sample", reference="ctrl")
    assert a.uns["differential_abundance"] is table
    by = table.set_index("scNiche")
    assert by.loc["N0", "p_adj"] < 0.05 and by.loc["N0", "log2_fold_change"] < -0.5
    assert by.loc["N3", "p_adj"] < 0.05 and by.loc["N3", "log2_fold_change"] > 1
    assert by.loc["N0", "p_adj_permutation"] < 0.05 and by.loc["N3", "p_adj_permutation"] < 0.05
    assert by.loc["N1", "p_adj"] > 0.05 and by.loc["N2", "p_adj"] > 0.05
    assert by.loc["N0", "comparison"] == "treated vs ctrl" and by.loc["N0", "test"] == "mannwhitneyu"
    assert by.loc["N0", "mean_proportion_ctrl"] == pytest.approx(0.4, abs=0.03)
    # 6 + 6 samples: all C(12, 6) = 924 relabellings fit in n_perms=1000, so the test is exact
    assert by.loc["N0", "p_value_permutation"] == pytest.approx(2 / 924)


def test_differential_abundance_p_values_are_roughly_uniform_under_the_null():
    p_perm, p_mwu = [], []
    for draw in range(120):
        a = _abundance_data({"x": [0.4, 0.3, 0.3], "y": [0.4, 0.3, 0.3]}, 5, cells=300, seed=100 + draw)
        table = sj.tl.differential_abundance(a, condition_key="condition", sample_key="sample", key_added=None)
        p_perm.append(table["p_value_permutation"].iloc[0])
        p_mwu.append(table["p_value"].iloc[0])
    p_perm, p_mwu = np.array(p_perm), np.array(p_mwu)
    assert np.mean(p_perm < 0.05) <= 0.1 and np.mean(p_mwu < 0.05) <= 0.1
    assert 0.35 <= np.mean(p_perm < 0.5) <= 0.65
    assert stats.kstest(p_perm, "uniform").pvalue > 0.01


def test_differential_abundance_three_conditions_uses_kruskal():
    a = _abundance_data({"a": [0.6, 0.4], "b": [0.4, 0.6], "c": [0.2, 0.8]}, 4, seed=2)
    table = sj.tl.differential_abundance(a, condition_key="condition", sample_key="sample", n_perms=500)
    assert (table["test"] == "kruskal").all() and table["log2_fold_change"].isna().all()
    assert table["p_adj"].iloc[0] < 0.05 and table["p_adj_permutation"].iloc[0] < 0.05


# ----------------------------------------------------------------------------- bad input, storage

@pytest.mark.parametrize("call,match", [
    (lambda a: sj.tl.enrichment(a, key="celltype"), "no label column 'celltype'.*available obs columns"),
    (lambda a: sj.tl.enrichment(a, groupby="plain"), r"not categorical.*astype\('category'\)"),
    (lambda a: sj.tl.composition(a, groupby="plain"), "not categorical"),
    (lambda a: sj.tl.niche_adjacency(a, groupby="plain"), "not categorical"),
    (lambda a: sj.tl.enrichment(a, sample_key="batch"), "no sample column 'batch'"),
    (lambda a: sj.tl.enrichment(a, key="scNiche"), "both name the column 'scNiche'"),
    (lambda a: sj.tl.enrichment(a, key="score"), "holds float64 values, not labels"),
    (lambda a: sj.tl.average_expression(a, genes=["g1", "Gfap"]), r"1 of the genes are not in adata.var_names: \['Gfap'\]"),
    (lambda a: sj.tl.niche_markers(a, genes=["nope"]), "not in adata.var_names"),
    (lambda a: sj.tl.average_expression(a, layer="counts"), "no 'counts'"),
    (lambda a: sj.tl.average_expression(a, key="Cell_type", restrict_to="Z"), r"restrict_to names \['Z'\]"),
    (lambda a: sj.tl.niche_markers(a, restrict_to="A"), "restrict_to needs key="),
    (lambda a: sj.tl.niche_adjacency(a, graph="voronoi"), "graph must be"),
    (lambda a: sj.tl.niche_adjacency(a, use_graph=True), "no 'spatial_connectivities'.*squidpy"),
    (lambda a: sj.tl.differential_abundance(a, condition_key="condition", sample_key="sample"),
     r"at least 2 samples each, but 'x' has 1 \(\['s0'\]\)"),
    (lambda a: sj.tl.differential_abundance(a, condition_key="sample", sample_key="Cell_type"),
     "more than one condition"),
    (lambda a: sj.tl.enrichment(a, key_added=""), "key_added must be"),
])
def test_bad_input_is_refused_before_any_work(call, match):
    pytest.importorskip("scanpy")
    a = _planted(n_samples=3, cells_per_niche=30)
    a.obs["plain"] = a.obs["scNiche"].cat.codes.astype(int)  # integer ids: refused (strings are converted)
    a.obs["score"] = np.linspace(0, 1, a.n_obs)
    a.obs["condition"] = np.where(a.obs["sample"] == "s0", "x", "y")
    a.obs.loc[a.obs_names[:2], "Cell_type"] = "A"
    before = a.copy()
    with pytest.raises(ValueError, match=match):
        call(a)
    assert set(a.uns) == set(before.uns) and set(a.obsm) == set(before.obsm)
    pd.testing.assert_frame_equal(a.obs, before.obs)


def test_missing_labels_are_refused():
    a = _planted()
    a.obs["Cell_type"] = a.obs["Cell_type"].astype(object)
    a.obs.iloc[3, a.obs.columns.get_loc("Cell_type")] = np.nan
    with pytest.raises(ValueError, match="1 missing labels"):
        sj.tl.enrichment(a)


def test_tables_survive_an_h5ad_round_trip(tmp_path):
    a = _planted(n_samples=3, cells_per_niche=30)
    a.obs["condition"] = np.where(a.obs["sample"] == "s0", "x", "y")
    a.obs.loc[a.obs["sample"] == "s1", "condition"] = "x"
    a.obs["piece"] = a.obs["sample"] + np.where(np.arange(a.n_obs) % 2 == 0, "a", "b")
    sj.tl.enrichment(a, sample_key="sample")
    sj.tl.niche_adjacency(a, sample_key="sample", n_perms=20)
    sj.tl.composition(a, sample_key="sample")
    sj.tl.average_expression(a)
    sj.tl.differential_abundance(a, condition_key="condition", sample_key="piece", n_perms=50)
    a.write_h5ad(tmp_path / "a.h5ad")
    b = ad.read_h5ad(tmp_path / "a.h5ad")
    for name in ("enrichment", "niche_adjacency", "composition", "average_expression", "differential_abundance"):
        pd.testing.assert_frame_equal(b.uns[name].reset_index(drop=True), a.uns[name].reset_index(drop=True),
                                      check_categorical=False, check_dtype=False)


def test_benjamini_hochberg_matches_the_textbook_values():
    p = [0.01, 0.04, 0.03, np.nan, 0.2]
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, np.nan, 0.2], equal_nan=True)


# ----------------------------------------------------------------------------- real data: osmFISH regions

OSMFISH_LAYERS = {"pyramidal L4": "Layer 4", "Pyramidal L6": "Layer 6", "Pyramidal L2-3": "Layer 2-3 medial",
                  "Pyramidal L3-4": "Layer 3-4", "Pyramidal L5": "Layer 5", "Pyramidal Kcnip2": "Layer 4"}
NEIGHBOURING = [("Pia Layer 1", "Layer 2-3 medial"), ("Pia Layer 1", "Layer 2-3 lateral"),
                ("Layer 2-3 lateral", "Layer 3-4"), ("Layer 3-4", "Layer 4"), ("Layer 4", "Layer 5"),
                ("Layer 5", "Layer 6"), ("Layer 6", "White matter")]
DISTANT = [("Pia Layer 1", "Layer 6"), ("Pia Layer 1", "White matter"), ("Layer 2-3 medial", "Layer 6"),
           ("Layer 2-3 medial", "White matter"), ("Layer 4", "Layer 6"), ("Layer 4", "White matter"),
           ("Layer 2-3 lateral", "Layer 6"), ("Layer 3-4", "White matter"), ("Pia Layer 1", "Layer 5")]


def test_osmfish_regions_put_excitatory_types_in_their_layers_and_neighbouring_layers_together():
    a = sj.datasets.osmfish()
    a.obs["Niche"] = a.obs["Niche"].astype("category")
    table = sj.tl.enrichment(a, groupby="Niche", key="Cell_type")
    for cell_type, layer in OSMFISH_LAYERS.items():
        rows = table[table["Cell_type"] == cell_type].sort_values("log2_fold_change", ascending=False)
        assert rows.iloc[0]["Niche"] == layer, cell_type
        assert rows.iloc[0]["p_adj"] < 1e-9 and rows.iloc[0]["log2_fold_change"] > 1.5, cell_type
    adjacency = sj.tl.niche_adjacency(a, groupby="Niche", n_perms=200)
    ratio = adjacency.pivot(index="source", columns="target", values="log2_ratio")
    near = [ratio.loc[p] for p in NEIGHBOURING]
    far = [ratio.loc[p] for p in DISTANT]
    assert min(near) > max(far) + 1.0
