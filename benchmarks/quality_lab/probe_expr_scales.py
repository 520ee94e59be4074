"""Exp 12: multi-scale neighbourhood expression in the readout (features only, no model).

Readout = [composition at (20,50,100), z over all cells, unit total variance, weight 1] ⊕
[neighbourhood-mean expression (X_data) at the expression scales, z per slice, unit total
variance, weight ``we``], smoothed ``steps`` × mean over ``k`` nearest spatial cells (slice),
``nq.kmeans`` seeds 0-2 (n_init 10). Usage: python probe_expr_scales.py OUT.jsonl SET
"""
import itertools, json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import niche_quality as nq  # noqa: E402
from scniche_jax import improved as imp  # noqa: E402


def unit(x, groups):
    x = imp.standardise_per_slice(np.asarray(x, np.float64), groups)
    return x / np.sqrt(x.shape[1])


def main(out_path, name):
    d = nq.load_set(nq.DATA_DIR / f"{name}.h5ad")
    a = d.adata
    groups = imp.slice_groups(a.n_obs, None if d.sample_key is None else a.obs[d.sample_key])
    one = imp.slice_groups(a.n_obs)
    xy = a.obsm["spatial"]
    comp = unit(imp.multiscale_composition(xy, a.obs[d.celltype_key], groups, (20, 50, 100), a.uns.get("CN_order")), one)
    x = np.asarray(a.obsm["X_data"], np.float64)
    print(name, "X_data", x.shape, flush=True)
    ops = {k: imp.spatial_mean_operator(xy, groups, k) for k in (10, 20, 30, 50, 100)}
    nbr = {k: ops[k] @ x for k in (10, 20, 50, 100)}
    out = open(out_path, "a")
    specs = []
    for escales in [(20,), (10, 20), (20, 50), (20, 50, 100), (10, 20, 50), (50,)]:
        for we in (0.75, 1.0, 1.5):
            for k, steps in ((30, 1), (20, 1), (20, 2)):
                specs.append((escales, we, k, steps))
    for escales, we, k, steps in specs:
        e = unit(np.hstack([nbr[s] for s in escales]), groups)
        f = np.hstack([comp, we * e])
        for _ in range(steps):
            f = ops[k] @ f
        aris = []
        for seed in (0, 1, 2):
            lab = nq.kmeans(f, d.n_labels, seed)
            sc = nq.score_run(d.truth, d.labelled, d.slices, lab.astype(str))
            aris.append((sc["all"]["ari"], sc["slice_mean"]["ari"]))
        rec = {"set": name, "escales": list(escales), "we": we, "k": k, "steps": steps,
               "ari": float(np.mean([r[0] for r in aris])), "ari_sd": float(np.std([r[0] for r in aris])),
               "ari_slice": float(np.mean([r[1] for r in aris]))}
        out.write(json.dumps(rec) + "\n"); out.flush()
        print(rec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
