"""Makes the stored 20-epoch reference run that ``test_golden.py`` replays without the reference.

For each candidate seed it builds the live 20-epoch case (N = 256, default views, dropout off,
fp32; :func:`live.make_case`), runs the real reference on it, and measures the case's
conditioning: how far the reference's own trajectory moves when every initial MGAE weight moves
by one fp32 ulp (``--nudges`` random sign patterns). A case is stored only if that move is at
most ``--max-sensitivity`` of max |z|: on a well-conditioned case a different fp32 summation
order (another CPU's vector width, another XLA version) cannot carry our run far from the
reference, so the replay tests the model and not the machine.

Needs the reference environment (``SCNICHE_REFERENCE_PYTHON``, ``SCNICHE_REFERENCE_SRC``; see
README.md)::

    python parity/make_train20_fixture.py --seeds 1 2 4 5 --out parity/fixtures/reference_train20_n256.npz
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live import make_case, one_ulp_apart, reference_env, run_reference, write_case  # noqa: E402

EPOCHS = 20


def reference_run(case, folder: Path, name: str) -> dict:
    """The reference's 20-epoch results (``z``, ``loss``) on ``case``."""
    case_path = write_case(case, folder / f"{name}.npz")
    out = folder / f"{name}_ref.npz"
    run_reference("train", "--case", str(case_path), "--epochs", str(EPOCHS), "--out", str(out))
    with np.load(out) as f:
        return {"z": f["z"], "loss": f["loss"]}


def conditioning(seed: int, nudges: int, folder: Path) -> tuple:
    """The case, the reference's run on it, and its moves one ulp apart (relative to max |z|)."""
    case = make_case(256, steps=EPOCHS, seed=seed)
    ref = reference_run(case, folder, f"seed{seed}")
    scale = float(np.abs(ref["z"]).max())
    moves = []
    for nudge in range(nudges):
        nudged = reference_run(one_ulp_apart(case, 1000 * seed + nudge), folder, f"seed{seed}_nudge{nudge}")
        moves.append(float(np.abs(nudged["z"] - ref["z"]).max() / scale))
    return case, ref, moves


def compact(path: Path) -> None:
    """Stores indices as int32 / int16, as :func:`live.read_case` accepts, to keep the file small."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for key, value in arrays.items():
        if key == "perm":
            arrays[key] = value.astype(np.int16)
        elif value.dtype == np.int64:
            arrays[key] = value.astype(np.int32)
    np.savez_compressed(path, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 5])
    parser.add_argument("--nudges", type=int, default=4, help="one-ulp sign patterns per seed")
    parser.add_argument("--max-sensitivity", type=float, default=1e-6,
                        help="largest allowed reference move one ulp apart, relative to max |z|")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if reference_env() is None:
        sys.exit("set SCNICHE_REFERENCE_PYTHON and SCNICHE_REFERENCE_SRC (see parity/README.md)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        survey = []
        best = None
        for seed in args.seeds:
            case, ref, moves = conditioning(seed, args.nudges, folder)
            survey.append({"seed": seed, "one_ulp_moves": moves, "max_move": max(moves)})
            print(f"seed {seed}: reference moves one ulp apart {', '.join(f'{m:.2e}' for m in moves)}")
            if max(moves) <= args.max_sensitivity and (best is None or max(moves) < best[2]):
                best = (seed, case, max(moves), ref)
        if best is None:
            sys.exit(f"no seed is conditioned within {args.max_sensitivity:g}: try other seeds")
        seed, case, move, ref = best
        write_case(case, args.out)
        with np.load(args.out) as f:
            arrays = {k: f[k] for k in f.files}
        python, _ = reference_env()
        provenance = {
            "what": "the live 20-epoch case (parity/live.py make_case(256, steps=20, seed=...)) and the real "
                    "reference's run on it",
            "seed": seed, "epochs": EPOCHS,
            "conditioning": {"definition": "max |z(initial MGAE weights one fp32 ulp apart, random signs) - z| / "
                                           "max |z|, reference against itself", "selected_max_move": move,
                             "survey": survey},
            "made_on": platform.processor() or platform.machine(),
        }
        arrays.update({"reference/z": ref["z"], "reference/loss": ref["loss"],
                       "provenance": np.array(json.dumps(provenance))})
        np.savez(args.out, **arrays)
        compact(args.out)
        print(f"stored seed {seed} (max one-ulp move {move:.2e}) in {args.out}")


if __name__ == "__main__":
    main()
