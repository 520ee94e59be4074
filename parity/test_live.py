"""Live parity against the real reference (skipped unless its environment is configured).

Enable with SCNICHE_REFERENCE_PYTHON and SCNICHE_REFERENCE_SRC (see parity/README.md).
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from live import make_case, one_ulp_apart, our_forward, our_train, reference_env, run_reference, write_case

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


def _reference_z(case, path, epochs=20):
    run_reference("train", "--case", str(write_case(case, path.with_suffix(".npz"))), "--epochs", str(epochs),
                  "--out", str(path.with_name(path.name + "_ref.npz")))
    return np.load(path.with_name(path.name + "_ref.npz"))["z"]


@pytest.mark.parametrize("seed", range(6))
def test_twenty_epochs_agree_within_the_references_own_rounding_sensitivity(tmp_path, seed):
    """Per seed, N = 256: |Δz| ≤ 1e-3 · max |z_ref|, or on a trajectory so ill-conditioned that the
    reference itself moves further when its initial weights move by one ulp, at most twice that move.

    Measured (2-core CPU): the reference's own move is 1e-7 – 8e-5 at seeds 0–2, 4, 5 and
    4.6e-3 at seed 3; ours is within 5e-7 at the first five and 4.6e-3 at seed 3.
    """
    case = make_case(256, steps=20, seed=seed)
    ref = _reference_z(case, tmp_path / "case")
    ref_nudged = _reference_z(one_ulp_apart(case, seed), tmp_path / "nudged")
    scale = np.abs(ref).max()
    own = np.abs(ref_nudged - ref).max() / scale
    ours = np.abs(our_train(case, 20)["z"] - ref).max() / scale
    print(f"seed {seed}: ours {ours:.2e}, reference against itself one ulp apart {own:.2e}")
    assert ours <= max(1e-3, 2 * own)


OSMFISH = Path(__file__).resolve().parents[2] / "shared" / "data" / "osmfish_cortex.h5ad"


@pytest.mark.skipif(os.environ.get("SCNICHE_LIVE_SLOW") != "1",
                    reason="statistical parity runs the reference for ~1 h: set SCNICHE_LIVE_SLOW=1")
def test_osmfish_ari_statistical_parity(tmp_path):
    """Both tools, each with its own randomness, 5 seeds: our mean ARI is not lower by > 0.02."""
    from sklearn.metrics import adjusted_rand_score

    import scniche_jax as sj

    seeds = [0, 1, 2, 3, 4]
    run_reference("osmfish", "--h5ad", str(OSMFISH), "--seeds", *map(str, seeds), "--out", str(tmp_path / "ref.json"),
                  timeout=4 * 3600)
    ref = json.loads((tmp_path / "ref.json").read_text())["runs"]
    ours, cross = [], []
    for seed, ref_run in zip(seeds, ref):
        adata = sj.datasets.osmfish()
        adata.X = np.log1p(adata.X / adata.X.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
        sj.pp.cal_spatial_neighbors(adata, "Cell_type", n_neighbors=20, verbose=False)
        sj.pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, n_neighbors=20, verbose=False)
        sj.fit(adata, epochs=100, seed=seed, lr_patience=None, progress=False)
        sj.tl.clustering(adata, 11)
        ours.append(adjusted_rand_score(adata.obs["Niche"], adata.obs["scNiche"]))
        cross.append(adjusted_rand_score(ref_run["labels"], adata.obs["scNiche"].astype(str)))
    ref_mean = float(np.mean([r["ari"] for r in ref]))
    print(f"ARI ours {np.mean(ours):.3f} {np.round(ours, 3)}; reference {ref_mean:.3f}; "
          f"between the tools {np.mean(cross):.3f}")
    assert np.mean(ours) >= ref_mean - 0.02
