"""Exp 14: the improved variant with the discriminator trained (the paper's MI objective).

Prototype by patching ``scniche_jax.step`` (not a package option): the train state's
``discriminator`` slot holds (discriminator params, its own Adam state); each step takes the
gradient of the same total loss w.r.t. the MGAE and the discriminator and applies the same
PyTorch-order Adam (lr 0.01) to both. Then ``tl.clustering`` as the harness does.
Usage: python probe_train_discriminator.py OUT.jsonl SET MODE SEED [SEED...]   (MODE: frozen|trained)
"""
import json, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import niche_quality as nq  # noqa: E402


def patch():
    import jax
    import optax
    from scniche_jax import step
    from scniche_jax.losses import sample_negatives
    from scniche_jax.optimizer import make_optimizer

    disc_opt = make_optimizer(0.01)
    orig_make_state = step.make_state

    def make_state(params, discriminator, lr):
        s = orig_make_state(params, discriminator, lr)
        return s._replace(discriminator=(s.discriminator, disc_opt.init(s.discriminator)))

    def train_step(state, batch, key, settings):
        disc, disc_state = state.discriminator
        k_neg, k_drop = jax.random.split(key)
        negatives = sample_negatives(k_neg, batch.mik.shape[1], batch.mik.shape[0])
        dropout_key = k_drop if settings.dropout > 0.0 else None
        (g_p, g_d), (losses, _) = jax.grad(step.loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, disc, batch, negatives, dropout_key, settings)
        new = step.apply_gradients(state._replace(discriminator=disc), g_p)
        upd, disc_state = disc_opt.update(g_d, disc_state, disc)
        return new._replace(discriminator=(optax.apply_updates(disc, upd), disc_state)), losses

    step.make_state = make_state
    step.train_step = train_step
    import scniche_jax.model as m
    m.make_state = make_state


def main(out_path, name, mode, seeds):
    if mode == "trained":
        patch()
    import scniche_jax as sj
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    out = open(out_path, "a")
    for seed in seeds:
        a = d.adata.copy()
        t0 = time.time()
        model = sj.fit(a, variant="improved", epochs=100, seed=seed, progress=False,
                       batch_num="auto" if a.n_obs > 20000 else None)
        fit_s = time.time() - t0
        sj.tl.clustering(a, n_niches=d.n_labels)
        sc = nq.score_run(d.truth, d.labelled, d.slices, a.obs["scNiche"].astype(str).to_numpy())
        h = model.history["loss"]
        rec = {"set": name, "mode": mode, "seed": seed, "ari": sc["all"]["ari"], "ari_slice": sc["slice_mean"]["ari"],
               "fit_s": fit_s, "epochs": len(h["total"]), "mim_first": float(h["mim"][0]), "mim_last": float(h["mim"][-1])}
        out.write(json.dumps(rec) + "\n"); out.flush(); print(rec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4:]])
