"""The input pipeline: batch plans follow the reference's split, and padding changes nothing."""
import jax
import numpy as np
import pytest

from conftest import synthetic_views
from scniche_jax.batching import reference_batch_indices
from scniche_jax.model import read_views
from scniche_jax.networks import GraphFusionNetwork
from scniche_jax.pipeline import assemble_batches, batch_at, build_host_batches, plan_batches
from scniche_jax.consensus import build_consensus
from scniche_jax.graphs import build_view_graph
from scniche_jax.losses import sample_negatives
from scniche_jax.step import StepSettings, init_state, loss_fn


@pytest.fixture(scope="module")
def cells():
    return synthetic_views(300, n_niches=4, n_cell_types=6, n_genes=20, seed=3, n_neighbors=10, n_comps=8)


def test_plan_is_the_reference_split(cells):
    assert [b.tolist() for b in plan_batches(300, 4, 10)] == [b.tolist() for b in reference_batch_indices(300, 4)]
    assert [b.tolist() for b in plan_batches(300, None, 10)] == [list(range(300))]
    with pytest.raises(ValueError, match="batches of 30 cells is too small for n_neighbors=40.*batch_num <= 7"):
        plan_batches(300, 10, 40)


def test_padding_across_batches_changes_no_loss_and_no_embedding(cells):
    """Each batch, stacked with the others (edges padded to the largest), gives the losses and
    z it gives assembled alone (no padding)."""
    features = read_views(cells, ("X_cn_norm", "X_data", "X_data_nbr"))
    batches = plan_batches(300, 3, 10)
    size = batches[0].size
    gfn = GraphFusionNetwork(size).init(jax.random.key(0), np.zeros((1, size), np.float32))["params"]
    stacked = build_host_batches(features, batches, gfn, 10, 5, "gpu", 1024)
    edges = [[int(n) for n in np.asarray(g.n_edge)[:, 0]] for g in stacked.views]
    assert any(len(set(e)) > 1 for e in edges)  # the batches really differ in edge count
    settings = StepSettings(precision="fp32")
    state = init_state(jax.random.key(1), batch_at(stacked, 0), settings, 0.01)
    negatives = sample_negatives(jax.random.key(2), stacked.mik.shape[-1], size)
    for i, idx in enumerate(batches):
        graphs = [build_view_graph(f[idx], 10, 5) for f in features]
        alone = batch_at(assemble_batches([(graphs, build_consensus(gfn, graphs))]), 0)
        padded = batch_at(stacked, i)
        assert padded.views[0].senders.shape[0] >= alone.views[0].senders.shape[0]
        (l_pad, (losses_pad, z_pad)) = loss_fn(state.params, state.discriminator, padded, negatives, None, settings)
        (l_one, (losses_one, z_one)) = loss_fn(state.params, state.discriminator, alone, negatives, None, settings)
        np.testing.assert_allclose(np.asarray(z_pad), np.asarray(z_one), rtol=0, atol=1e-6)
        for a, b in zip(losses_pad, losses_one):
            assert abs(float(a) - float(b)) <= 1e-6 * abs(float(b))
