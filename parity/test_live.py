"""Live parity against the real reference (skipped unless its environment is configured).

Enable with SCNICHE_REFERENCE_PYTHON and SCNICHE_REFERENCE_SRC (see parity/README.md).
"""
import numpy as np
import pytest

from live import make_case, our_forward, our_train, reference_env, run_reference, write_case

pytestmark = pytest.mark.skipif(
    reference_env() is None,
    reason="live reference tests need SCNICHE_REFERENCE_PYTHON (torch 2.2.1 + dgl 2.1.0 env) and "
           "SCNICHE_REFERENCE_SRC (ZJUFanLab/scNiche checkout); see parity/README.md")

DEFAULT = dict(views=("X_cn_norm", "X_data", "X_data_nbr"), hidden_size_v=(10,), hidden_size=(32, 10))
TWO_VIEWS = dict(views=("X_cn_norm", "X_data"), hidden_size_v=(16, 8), hidden_size=(24, 6))


def _close(ours, ref, rel):
    return np.abs(ours - ref).max() <= rel * np.abs(ref).max()


@pytest.mark.parametrize("n_cells,config", [(256, DEFAULT), (1000, DEFAULT), (2500, DEFAULT),
                                            (256, TWO_VIEWS), (1000, TWO_VIEWS)])
def test_one_forward_matches_the_reference(tmp_path, n_cells, config):
    case = make_case(n_cells, **config)
    run_reference("forward", "--case", str(write_case(case, tmp_path / "case.npz")), "--out", str(tmp_path / "ref.npz"))
    ref = np.load(tmp_path / "ref.npz")
    ours = our_forward(case)
    assert _close(ours["z"], ref["z"], 1e-5), np.abs(ours["z"] - ref["z"]).max()
    assert _close(ours["logits0"], ref["logits0"], 1e-5)
    np.testing.assert_allclose(ours["losses"], ref["losses"], rtol=1e-5)
    np.testing.assert_allclose(ours["pos_weight"], ref["pos_weight"][0], rtol=1e-6)
    if n_cells >= 2500:  # the consensus graph is empty here: self-loops only
        assert case.consensus.fused.nnz == 0


@pytest.mark.parametrize("n_cells,config", [(256, DEFAULT), (1000, DEFAULT), (256, TWO_VIEWS)])
def test_twenty_epochs_match_the_reference(tmp_path, n_cells, config):
    case = make_case(n_cells, steps=20, **config)
    run_reference("train", "--case", str(write_case(case, tmp_path / "case.npz")), "--epochs", "20",
                  "--out", str(tmp_path / "ref.npz"))
    ref = np.load(tmp_path / "ref.npz")
    ours = our_train(case, 20)
    assert _close(ours["z"], ref["z"], 1e-3), np.abs(ours["z"] - ref["z"]).max() / np.abs(ref["z"]).max()
    np.testing.assert_allclose(ours["loss"], ref["loss"], rtol=1e-4)
