"""Prints every error the golden checks bound, as one JSON object, for the tolerance table.

Run it on each CPU the tolerances must hold on (``parity/README.md`` lists the runs), e.g.::

    JAX_PLATFORMS=cpu python parity/measure_golden.py --label native
    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_cpu_max_isa=AVX2 python parity/measure_golden.py --label avx2-flag

Each entry is the largest error over everything its tolerance covers (``TOLERANCES`` and
``BF16_BOUNDS`` in ``golden.py``; ``train20_*`` for the stored 20-epoch reference run).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden import load_golden  # noqa: E402
from test_golden import TRAIN20, run_reference_procedure  # noqa: E402


def _rel(ours, ref) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def fixture_errors(g, ours: dict) -> dict:
    """The largest error of each quantity that a golden tolerance covers."""
    a = g.arrays
    loss = max(abs(ours["losses"][s][name] - float(a[key][s])) / abs(float(a[key][s]))
               for s in range(g.steps)
               for name, key in (("total", "steps/loss"), ("gre", "steps/loss_gre"), ("rec", "steps/loss_rec"),
                                 ("mim", "steps/loss_mim")))
    return {
        "gfn_out_abs": float(np.abs(ours["gfn_out"] - a["consensus/gfn_out"]).max()),
        "loss_rel": float(loss),
        "z_rel": max(_rel(ours["z"][s], a["steps/z"][s]) for s in range(g.steps)),
        "grad_rel": max(float(np.abs(ours["grad0"][k] - v).max() / np.abs(v).max())
                        for k, v in g.state_dict("grad0", "mgae").items() if np.abs(v).max() > 0),
        "params_abs": max(float(np.abs(ours["final"][k] - v).max()) for k, v in g.state_dict("final", "mgae").items()),
        "z_final_rel": _rel(ours["z_final"], a["z_eval_after_fit"]),
        "pos_weight_rel": abs(ours["pos_weight"] - float(a["steps/pos_weight"][0])) / float(a["steps/pos_weight"][0]),
    }


def train20_errors() -> dict:
    from live import our_train, read_case

    case = read_case(TRAIN20)
    with np.load(TRAIN20) as f:
        z_ref, loss_ref = f["reference/z"], f["reference/loss"]
    ours = our_train(case, 20)
    return {"train20_z_rel": _rel(ours["z"], z_ref),
            "train20_loss_rel": float(np.abs(ours["loss"] / loss_ref - 1).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="this CPU")
    args = parser.parse_args()
    g = load_golden()
    result = {"label": args.label, "fp32": fixture_errors(g, run_reference_procedure(g)),
              "bf16": fixture_errors(g, run_reference_procedure(g, "bf16"))}
    result["fp32"].update(train20_errors())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
