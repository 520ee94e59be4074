"""Child process of test_crash_safety.py: trains, saves, and is SIGKILLed in the middle of a save.

Usage: crash_child.py save OUT | crash_child.py checkpoint OUT
It writes what the parent needs to compare (embeddings, parameters) as .npy files under OUT
before it dies; it never exits normally.
"""
import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from conftest import synthetic_views  # noqa: E402

import scniche_jax as sj  # noqa: E402
from scniche_jax import model as model_module  # noqa: E402

TRAIN = dict(progress=False, precision="fp32", lr_patience=None, restore_best=False)


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(mode: str, out: Path) -> None:
    adata = synthetic_views(200, n_niches=3, n_cell_types=5, n_genes=15, seed=0, n_neighbors=10, n_comps=6)
    if mode == "save":
        model = sj.Model(n_neighbors=10, seed=1)
        model.train(adata, epochs=3, **TRAIN)
        model.save(out / "m")
        np.save(out / "first_embedding.npy", model.embed(adata))
        model.train(adata, epochs=2, **TRAIN)
        real = model_module.save_torch

        def half_then_killed(obj, path):
            real(obj, path)
            Path(path).write_bytes(Path(path).read_bytes()[:1000])  # a torn file inside the new folder
            die()

        model_module.save_torch = half_then_killed
        model.save(out / "m", overwrite=True)
    else:
        from orbax.checkpoint._src.path import atomicity

        real_finalize = atomicity.AtomicRenameTemporaryPath.finalize
        calls = {"n": 0}

        async def finalize_then_killed(self, *args, **kwargs):
            # Every file of the step is written to its temporary folder; the rename that
            # publishes it has not happened yet.
            if "steps" in str(getattr(self, "_final_path", "")) and str(self._final_path).rstrip("/").endswith("/6"):
                die()
            calls["n"] += 1
            return await real_finalize(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize_then_killed
        sj.fit(adata, n_neighbors=10, seed=1, epochs=10, checkpoint_dir=str(out / "ck"), checkpoint_every=2, **TRAIN)
    print("not killed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
