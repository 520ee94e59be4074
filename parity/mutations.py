"""Mutation check: the test suite must fail for each deliberately wrong model.

For each mutation, a copy of the repository (package, tests, parity fixtures) is made in a
temporary folder, one source line is changed there, and the named subset of the tests runs
against the copy (``pytest -x``: it stops at the first failure). The subset first runs once
unmutated and must pass. One line per mutation: ``caught`` (with the first failing test) or
``SURVIVED``; the exit status is non-zero if any mutation survived or the clean run failed.

    python parity/mutations.py            # all mutations, about 3 minutes on 2 CPU cores
    python parity/mutations.py --list     # what each one changes
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in this order: the fast, broad checks first, so a caught mutation stops early.
SUBSET = [
    "parity/test_golden.py",
    "tests/test_optimizer.py",
    "tests/test_networks.py",
    "tests/test_graphs.py",
    "tests/test_losses.py",
    "tests/test_pipeline.py",
    "tests/test_model.py::test_lr_cuts_reach_the_optimizer",
]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str


MUTATIONS = [
    Mutation("plain optax.adam instead of the PyTorch-order Adam", "scniche_jax/optimizer.py",
             "optax.inject_hyperparams(torch_adam,", "optax.inject_hyperparams(optax.adam,"),
    Mutation("MI epsilon 1e-6 -> 1e-5", "scniche_jax/losses.py", "MIM_EPS = 1e-6", "MIM_EPS = 1e-5"),
    Mutation("dropout removed from the decoder", "scniche_jax/networks.py",
             'nn.Dropout(self.dropout, deterministic=deterministic, name=f"decoder_dropout{v}")(z)', "z"),
    Mutation("LR cut not written into the optimizer (LR scale ignored)", "scniche_jax/loop.py",
             "state = state._replace(opt_state=placement.put_state(with_learning_rate(state.opt_state, lr_now)))",
             "pass"),
    Mutation("edge padding mask ignored in batch mode (padded edges weigh 1)", "scniche_jax/graphs.py",
             "weights = np.concatenate([weights, np.zeros(pad, np.float32)])",
             "weights = np.concatenate([weights, np.ones(pad, np.float32)])"),
    Mutation("loss counts a batch's padded edges as real", "scniche_jax/step.py",
             "(jnp.arange(g.senders.shape[-1]) < g.n_edge[0])", "(jnp.arange(g.senders.shape[-1]) >= 0)"),
    Mutation("edge logits summed as a tree instead of in index order", "scniche_jax/losses.py",
             "x = rowwise_dot(z[s], z_receivers)", "x = jnp.sum(z[s] * z_receivers, axis=1)"),
    Mutation("index-order dot product replaced by XLA's reduction", "scniche_jax/losses.py",
             "total = a[:, 0] * b[:, 0]", "return jnp.sum(a * b, axis=1)"),
    Mutation("GraphConv normalised by in-degree instead of out-degree", "scniche_jax/graphs.py",
             "return (out_deg[senders] ** -0.5", "return (in_deg[senders] ** -0.5"),
    Mutation("dense loss counts the padding rows of its last block", "scniche_jax/losses.py",
             "jnp.sum(jnp.where(valid, jnp.sum(softplus, axis=1), 0.0))", "jnp.sum(softplus)"),
    Mutation("discriminator sees (partner, cell) instead of (cell, partner)", "scniche_jax/networks.py",
             "h = jnp.concatenate([left, right], axis=0)", "h = jnp.concatenate([right, left], axis=0)"),
    Mutation("pos_weight off by one", "scniche_jax/graphs.py",
             "return float(n_nodes**2 - total_edges / 2) / total_edges * 2",
             "return float(n_nodes**2 - total_edges / 2) / (total_edges + 1) * 2"),
]


def copy_repo(destination: Path) -> None:
    """The package, the tests and the parity folder (with its fixtures), nothing else."""
    for name in ("scniche_jax", "tests", "parity", "pyproject.toml"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, destination / name)


def run_subset(workdir: Path, timeout: int) -> tuple[bool, str, float]:
    """``(passed, first failing test, seconds)`` of the subset in ``workdir``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *SUBSET],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode == 0:
        return True, "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, flags=re.M)
    last_line = (done.stdout.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return False, failed[0] if failed else last_line, seconds


def apply(workdir: Path, mutation: Mutation) -> None:
    path = workdir / mutation.path
    text = path.read_text()
    if text.count(mutation.old) != 1:
        raise RuntimeError(f"mutation {mutation.name!r}: expected one {mutation.old!r} in {mutation.path}, "
                           f"found {text.count(mutation.old)} (the source moved: update parity/mutations.py)")
    path.write_text(text.replace(mutation.old, mutation.new))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    parser.add_argument("--skip-clean", action="store_true",
                        help="skip the unmutated run (when the full suite has just passed, as in CI)")
    parser.add_argument("--only", metavar="TEXT", help="run only the mutations whose name contains TEXT")
    args = parser.parse_args(argv)
    mutations = [m for m in MUTATIONS if args.only is None or args.only in m.name]
    if not mutations:
        parser.error(f"no mutation name contains {args.only!r}")
    if args.list:
        for m in mutations:
            print(f"{m.name}: {m.path}: {m.old!r} -> {m.new!r}")
        return 0
    with tempfile.TemporaryDirectory(prefix="scniche_mutations_") as tmp:
        clean = Path(tmp) / "clean"
        copy_repo(clean)
        for m in MUTATIONS:  # every mutation must still apply to today's source
            if (clean / m.path).read_text().count(m.old) != 1:
                print(f"mutation {m.name!r} no longer applies to {m.path}", file=sys.stderr)
                return 2
        if not args.skip_clean:
            passed, failure, seconds = run_subset(clean, args.timeout)
            print(f"{'clean':<62} {'passes' if passed else 'FAILS: ' + failure} ({seconds:.0f} s)", flush=True)
            if not passed:
                return 2
        survived = 0
        for m in mutations:
            workdir = Path(tmp) / f"mutant_{MUTATIONS.index(m)}"
            copy_repo(workdir)
            apply(workdir, m)
            passed, failure, seconds = run_subset(workdir, args.timeout)
            verdict = "SURVIVED" if passed else f"caught by {failure}"
            survived += passed
            print(f"{m.name:<62} {verdict} ({seconds:.0f} s)", flush=True)
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{len(mutations) - survived} of {len(mutations)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
