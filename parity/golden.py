"""Loading a golden fixture made by the PyTorch reference (see fixtures/README.md).

Everything the checks need is read from the fixture itself (views, hidden sizes, k, mik,
learning rate, steps), so another fixture of the same format with other settings works.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# The parity contract: about 10x the largest error measured on three CPUs (fp32, jax 0.10.2):
# an AVX-512 x86-64, the same under XLA_FLAGS=--xla_cpu_max_isa=AVX2, and an emulated AVX2-only
# EPYC (parity/emulated_cpu.sh); parity/README.md lists the measurements per CPU
# (parity/measure_golden.py prints them). Relative entries are relative to the largest
# magnitude of the reference's array (z, gradients) or to the reference's value (losses).
TOLERANCES = {
    "gfn_out_abs": 2e-6,        # measured 2.1e-7 on all three
    "loss_rel": 2e-6,           # measured 1.7e-7 (total) on all three; loss_gre exact
    "z_rel": 3e-6,              # measured 2.8e-7 (largest of the 5 steps) on all three
    "grad_rel": 5e-6,           # measured 5.4e-7 (AVX-512), 4.5e-7 (AVX2): first step, every parameter
    "params_abs": 1e-5,         # measured 6.4e-7 (AVX-512), 9.2e-7 (AVX2) after 5 steps
    "z_final_rel": 3e-6,        # measured 3.1e-7 on all three
    "pos_weight_rel": 1e-6,     # measured exact
}
# The default bf16 path (bf16 operands in the B² loss) against the reference, same fixture,
# same on the three CPUs: z after 5 steps 6.1e-4 relative, parameters 2.0e-3, losses 6.8e-6
# relative, final embedding 1.1e-3. The bounds state the bf16 path's contract (4.5-7x those).
BF16_BOUNDS = {"z_rel": 3e-3, "params_abs": 1e-2, "loss_rel": 5e-5, "z_final_rel": 5e-3}
DEFAULT_GOLDEN = FIXTURES / "reference_golden_n256.npz"


def golden_path() -> Path:
    """The fixture path: ``$SCNICHE_PARITY_GOLDEN`` or ``parity/fixtures/reference_golden_n256.npz``."""
    return Path(os.environ.get("SCNICHE_PARITY_GOLDEN", DEFAULT_GOLDEN))


@dataclass(frozen=True)
class Golden:
    arrays: dict
    meta: dict

    @property
    def n_cells(self) -> int:
        return int(self.meta["n_cells"])

    @property
    def views(self) -> list[str]:
        return list(self.meta["views"])

    @property
    def n_views(self) -> int:
        return len(self.views)

    @property
    def hidden_size_v(self) -> tuple[int, ...]:
        return tuple(self.meta["hidden_size_v"])

    @property
    def hidden_size(self) -> tuple[int, ...]:
        return tuple(self.meta["hidden_size"])

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    @property
    def lr(self) -> float:
        return float(self.meta["lr"])

    @property
    def mik(self) -> int:
        return int(self.arrays["input/view0/mik"].shape[1])

    @property
    def k_graph(self) -> int:
        text = " ".join(self.meta.get("procedure", []))
        found = re.search(r"k_cutoff_graph=(\d+)", text)
        if found is None:
            raise ValueError("the fixture's procedure does not state k_cutoff_graph")
        return int(found.group(1))

    def state_dict(self, stage: str, model: str) -> dict[str, np.ndarray]:
        prefix = f"{stage}/{model}/"
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}


def load_golden(path: Path | None = None) -> Golden:
    path = golden_path() if path is None else Path(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(path.with_suffix(".json").read_text())
    return Golden(arrays, meta)


def train_step_with_negatives(state, batch, negatives, dropout_key, settings):
    """One Adam step with given MIM negatives (the fixture's); returns ``(state, losses, grads, z)``.

    Parity-only: the package draws its negatives inside the step.
    """
    return _step_with_negatives(state, batch, negatives, dropout_key, settings)


def _step_with_negatives_impl(state, batch, negatives, dropout_key, settings):
    from scniche_jax.step import apply_gradients, loss_fn

    grads, (losses, z) = jax.grad(loss_fn, has_aux=True)(
        state.params, state.discriminator, batch, negatives, dropout_key, settings)
    return apply_gradients(state, grads), losses, grads, z


_step_with_negatives = jax.jit(_step_with_negatives_impl, static_argnames=("settings",))
