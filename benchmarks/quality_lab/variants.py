"""variant="improved" and its ablations for ``niche_quality.py``, until ``fit`` has ``variant=``.

Uses the pure functions of ``scniche_jax.improved`` exactly where ``fit`` will call them:
views computed from what pp stored (+ obsm['spatial'], the cell-type and slice columns),
``sj.fit`` on those views with the consensus graph swapped (``scniche_jax.pipeline.build_consensus``
patched for the duration of the call: the hook point), the embedding smoothed over spatial
neighbours, then ``tl.clustering(n_niches=K)``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from scniche_jax import improved as imp


@contextmanager
def patched_consensus(opts: imp.ImprovedOptions):
    import scniche_jax.pipeline as inputs
    if opts.consensus == "gfn":
        yield
        return
    original = inputs.build_consensus
    inputs.build_consensus = lambda gfn_params, views, gre_semantics="gpu", block=1024: imp.majority_consensus(
        views, opts.consensus_votes)
    try:
        yield
    finally:
        inputs.build_consensus = original


def run_improved(adata, celltype_key, sample_key, n_niches, seed, epochs, opts: imp.ImprovedOptions,
                 batch_num=None, model=True, **fit_kwargs):
    """Labels and timing of one run; ``adata`` is not modified. ``model=False`` clusters the views."""
    import scniche_jax as sj
    a = adata.copy()
    t0 = time.perf_counter()
    views = imp.improved_views(a, celltype_key, sample_key, opts)
    for k, v in views.items():
        a.obsm[k] = v
    views_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    epochs_run = 0
    if model:
        members = []
        for i in range(opts.ensemble):
            with patched_consensus(opts):
                m = sj.fit(a, views=list(views), epochs=max(epochs // opts.ensemble, 1), seed=seed + 1000 * i,
                           progress=False, batch_num=batch_num, deterministic_embedding=opts.deterministic_embedding,
                           **fit_kwargs)
            epochs_run += len(m.history["loss"]["total"])
            members.append(np.array(a.obsm["X_scniche"]))
        groups = imp.slice_groups(a.n_obs, None if sample_key is None else a.obs[sample_key])
        z = imp.readout(members, views["X_ms_comp"], opts.concat_composition,
                        groups if opts.slice_readout and sample_key is not None else None)
    else:
        z = np.hstack([v / np.sqrt(v.shape[1]) for v in views.values()])
    fit_s = time.perf_counter() - t0
    groups = imp.slice_groups(a.n_obs, None if sample_key is None else a.obs[sample_key])
    a.obsm["X_scniche"] = imp.smooth_embedding(z, a.obsm["spatial"], groups, opts.smooth_k, opts.smooth_steps)
    sj.tl.clustering(a, n_niches=n_niches)
    return a.obs["scNiche"].astype(str).to_numpy(), {
        "fit_s": fit_s, "views_s": views_s, "epochs_run": epochs_run,
        "s_per_epoch": fit_s / epochs_run if epochs_run else None}


LAB = {  # exploratory rows (not part of the variant)
    "lab-features_only": (imp.ImprovedOptions(), {"model": False}),
    "lab-features_only_comp": (imp.ImprovedOptions(expression_views=False), {"model": False}),
    "lab-wide": (imp.ImprovedOptions(), {"hidden_size_v": (32,), "hidden_size": (64, 32)}),
}


def benchmark_methods(batch_mode):
    def make(opts, extra):
        def fn(ctx):
            d = ctx.data
            labels, info = run_improved(d.adata, d.celltype_key, d.sample_key, d.n_labels, ctx.seed, ctx.epochs,
                                        opts, batch_num=batch_mode(ctx), **extra)
            return {"labels": labels, **info}
        return fn
    out = {name: (make(o, {}), "improved" if name == "improved" else "ablation", repr(o))
           for name, o in imp.ABLATIONS.items()}
    out.update({name: (make(o, extra), "lab", f"{o!r} {extra}") for name, (o, extra) in LAB.items()})
    return out
