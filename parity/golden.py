"""Loading a golden fixture made by the PyTorch reference (see ../shared/parity/README.md).

Everything the checks need is read from the fixture itself (views, hidden sizes, k, mik,
learning rate, steps), so another fixture of the same format with other settings works.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_GOLDEN = Path(__file__).resolve().parent.parent.parent / "shared" / "parity" / "reference_golden_n256.npz"


def golden_path() -> Path:
    """The fixture path: ``$SCNICHE_PARITY_GOLDEN`` or ``../shared/parity/reference_golden_n256.npz``."""
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
