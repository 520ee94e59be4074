"""The Examples sections of the public API (pp, tl, pl, fit, load, Model, the configs, datasets) run and print what they show."""
from __future__ import annotations

import doctest

import pytest

import scniche_jax as sj

PUBLIC = {
    "pp": ["cal_spatial_neighbors", "cal_spatial_exp", "process_multi_slices"],
    "tl": ["clustering", "cluster_stability", "enrichment", "niche_adjacency", "composition",
           "average_expression", "niche_markers", "differential_abundance"],
    "pl": ["niches", "history", "composition", "enrichment", "niche_adjacency", "abundance", "markers"],
}
CASES = [(module, name) for module, names in PUBLIC.items() for name in names]
CASES += [("", name) for name in ("fit", "load", "Model", "ModelConfig", "OptimizerConfig", "StoppingConfig",
                                  "BatchConfig")]
CASES += [("Model", name) for name in ("train", "embed", "save", "plot_history")]
CASES += [("datasets", name) for name in ("osmfish", "synthetic")]


def _public(module: str, name: str):
    owner = getattr(sj, module) if module else sj
    return getattr(owner, name)


@pytest.mark.parametrize("module,name", CASES, ids=[f"{m}.{n}".lstrip(".") for m, n in CASES])
def test_examples_section_runs(module, name, tmp_path, monkeypatch):
    import matplotlib  # the test extra installs matplotlib and scanpy
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    doc = _public(module, name).__doc__
    assert "\nExamples\n" in doc.replace("    ", ""), f"sj.{module}.{name} has no Examples section"
    test = doctest.DocTestParser().get_doctest(doc, {}, f"sj.{module}.{name}", None, 0)
    assert len(test.examples) >= 2
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=lambda text: print(text, end=""))
    plt.close("all")
    assert result.failed == 0, f"{result.failed} example(s) of sj.{module}.{name} failed (output above)"
