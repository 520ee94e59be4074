"""The documented memory formula against XLA's compiled memory analysis, and the refusal."""
import jax
import numpy as np
import pytest
import scipy.sparse as sp

import scniche_jax as sj
from conftest import synthetic_views
from scniche_jax.consensus import Consensus
from scniche_jax.graphs import build_view_graph
from scniche_jax.memory import RUNTIME_BYTES, BatchShapes, batch_bytes, estimate, state_bytes, step_bytes
from scniche_jax.config import BatchConfig, ModelConfig, resolve_precision
from scniche_jax.pipeline import assemble_batches, batch_at, build_host_batches
from scniche_jax.step import StepSettings, init_state, train_epoch


def random_batch(rng, n, dims, k=20):
    graphs = [build_view_graph(rng.normal(size=(n, d)).astype(np.float32), k, 5) for d in dims]
    s, r = rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)
    fused = sp.csr_matrix((np.ones(s.size, np.float32), (s, r)), shape=(n, n))
    fused.data[:] = 1
    sym = (fused + fused.T).tocoo()
    loops = np.arange(n)
    senders = np.concatenate([sym.row, loops]).astype(np.int32)
    receivers = np.concatenate([sym.col, loops]).astype(np.int32)
    return graphs, Consensus(fused, senders, receivers, 0.5)


CASES = [  # cells, block_size, view widths, precision, hidden_size_v, hidden_size
    (300, 1024, (11, 20, 20), "bf16", (10,), (32, 10)),
    (1000, 256, (11, 20, 20), "fp32", (10,), (32, 10)),
    (2000, 512, (30, 50), "bf16", (16, 8), (24, 6)),
    (2000, 1024, (11, 20, 20), "bf16", (64,), (128, 32)),
]


@pytest.mark.parametrize("n,block,dims,precision,hidden_v,hidden", CASES)
def test_peak_memory_per_batch_matches_the_formula(n, block, dims, precision, hidden_v, hidden):
    rng = np.random.default_rng(n)
    host = assemble_batches([random_batch(rng, n, dims)])
    settings = StepSettings(hidden_size_v=hidden_v, hidden_size=hidden, n_views=len(dims), precision=precision,
                            block_size=block)
    batch = batch_at(host, 0)
    state = init_state(jax.random.key(0), batch, settings, 0.01)
    analysis = train_epoch.lower(state, jax.device_put(host), jax.random.key(1), settings).compile().memory_analysis()

    shapes = BatchShapes.of(batch)
    assert batch_bytes(shapes) == sum(x.nbytes for x in jax.tree_util.tree_leaves(batch))  # exact
    step = step_bytes(shapes, hidden, block, precision)
    assert abs(step - analysis.temp_size_in_bytes) <= 0.2 * analysis.temp_size_in_bytes
    measured = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
    formula = batch_bytes(shapes) + step + state_bytes(dims, hidden_v, hidden)
    assert abs(formula - measured) <= 0.2 * measured, (formula, measured)


def test_expected_shapes_bound_the_real_ones():
    adata = synthetic_views(600, n_niches=4, n_cell_types=6, n_genes=20, seed=0, n_neighbors=10, n_comps=8)
    from scniche_jax.model import read_views
    from scniche_jax.networks import GraphFusionNetwork
    views = ("X_cn_norm", "X_data", "X_data_nbr")
    features = read_views(adata, views)
    gfn = GraphFusionNetwork(600).init(jax.random.key(0), np.zeros((1, 600), np.float32))["params"]
    real = BatchShapes.of(batch_at(build_host_batches(features, [np.arange(600)], gfn, 10, 5, "gpu", 1024), 0))
    bound = BatchShapes.expected(600, tuple(f.shape[1] for f in features), 10, 5)
    assert all(r <= b for r, b in zip(real.edges, bound.edges)) and real.consensus_edges <= bound.consensus_edges
    assert batch_bytes(bound) >= batch_bytes(real)


@pytest.fixture(scope="module")
def cells():
    return synthetic_views(2000, n_niches=4, n_cell_types=6, n_genes=20, seed=1, n_neighbors=10, n_comps=8)


def test_a_run_that_does_not_fit_is_refused_with_a_batch_num_that_fits(cells):
    a = cells.copy()
    widths = tuple(a.obsm[v].shape[1] for v in ("X_cn_norm", "X_data", "X_data_nbr"))
    # what fit estimates on a CPU, where precision='auto' trains in fp32
    full = estimate(2000, None, widths, ModelConfig(n_neighbors=10), BatchConfig(precision=resolve_precision("auto", "cpu")))
    limit = full.device + full.host + RUNTIME_BYTES - 1  # one byte short of the full graph on a CPU
    with pytest.raises(ValueError) as err:
        sj.fit(a, n_neighbors=10, epochs=1, progress=False, memory_limit=limit)
    message = str(err.value)
    assert "training 2,000 cells as one graph" in message and "fusion network" in message
    suggested = int(message.split("pass batch_num=")[1].split(",")[0])
    assert suggested >= 2 and "X_scniche" not in a.obsm
    sj.fit(a, n_neighbors=10, epochs=1, progress=False, memory_limit=limit, batch_num=suggested)  # it does fit
    assert a.obsm["X_scniche"].shape == (2000, 10)
    with pytest.raises(ValueError, match=f"batch_num={suggested - 1} batches needs"):
        sj.fit(a, n_neighbors=10, epochs=1, progress=False, memory_limit=limit, batch_num=suggested - 1)


def test_nothing_fits_says_so(cells):
    with pytest.raises(ValueError, match="no batch_num fits"):
        sj.fit(cells.copy(), n_neighbors=10, epochs=1, progress=False, memory_limit=1e6)
    with pytest.raises(ValueError, match="memory_limit must be a number"):
        sj.fit(cells.copy(), n_neighbors=10, epochs=1, progress=False, memory_limit=-1)


def test_auto_batch_num_reports_its_choice(cells, capsys):
    a = cells.copy()
    model = sj.fit(a, n_neighbors=10, epochs=1, batch_num="auto", cells_per_batch=500, progress=True)
    assert model.data_shape.batch_num == 4 and model.data_shape.batch_size == 500
    assert "batch_num='auto' chose batch_num=4 (batches of 500 cells) for 2,000 cells" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cells_per_batch only applies"):
        sj.fit(a, n_neighbors=10, epochs=1, batch_num=4, cells_per_batch=500, progress=False)


def test_auto_precision_is_fp32_on_a_cpu_and_bf16_on_accelerators():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "gpu") == "bf16" and resolve_precision("auto", "tpu") == "bf16"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "gpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")
    model = sj.Model()
    a = synthetic_views(300, n_niches=3, n_cell_types=4, n_genes=10, seed=0, n_neighbors=5, n_comps=4)
    model.train(a, epochs=1, progress=False)
    assert model.batch_config.precision == "fp32"   # recorded as run (this suite runs on CPUs)
