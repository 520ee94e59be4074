"""Runs the PyTorch reference (ZJUFanLab/scNiche) on a dataset; executed by the reference's
own Python (``$SCNICHE_REFERENCE_PYTHON``), never imported by scniche-jax.

Only the reference's preprocessing and trainer subpackages are loaded (its top-level
package also pulls in squidpy and seaborn for plotting). Results go to a JSON file and an
``.npz`` of embeddings; nothing is pickled.

    $SCNICHE_REFERENCE_PYTHON parity/reference/run_reference.py osmfish --h5ad data.h5ad \\
        --seeds 0 1 2 --out results.json [--batch-num 4]
"""
import argparse
import importlib
import json
import os
import sys
import time
import types


def import_reference(src: str):
    """``scniche.preprocess`` and ``scniche.trainer`` from a checkout, without its __init__."""
    package = types.ModuleType("scniche")
    package.__path__ = [os.path.join(src, "scniche")]
    sys.modules["scniche"] = package
    return importlib.import_module("scniche.preprocess"), importlib.import_module("scniche.trainer")


def osmfish(args) -> None:
    import anndata as ad
    import numpy as np
    import torch
    from sklearn.metrics import adjusted_rand_score

    torch.set_num_threads(args.threads)
    pp, tr = import_reference(os.environ["SCNICHE_REFERENCE_SRC"])
    results = {"versions": {"torch": torch.__version__, "numpy": np.__version__}, "runs": []}
    embeddings = {}
    for seed in args.seeds:
        adata = ad.read_h5ad(args.h5ad)
        counts = np.asarray(adata.X, dtype=np.float64)
        adata.X = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
        np.random.seed(seed)
        torch.manual_seed(seed)
        adata = pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", k_cutoff=20, verbose=False)
        adata = pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, k_cutoff=20, verbose=False)
        start = time.perf_counter()
        if args.batch_num:
            adata = pp.prepare_data_batch(adata, batch_num=args.batch_num, verbose=False)
            torch.manual_seed(seed)
            runner = tr.Runner_batch(adata, device="cpu", verbose=False)
        else:
            adata = pp.prepare_data(adata, verbose=False)
            torch.manual_seed(seed)
            runner = tr.Runner(adata, device="cpu", verbose=False)
        adata = runner.fit(lr=0.01, epochs=args.epochs)
        seconds = time.perf_counter() - start
        adata = tr.clustering(adata, target_k=args.k)
        ari = float(adjusted_rand_score(adata.obs["Niche"], adata.obs["scNiche"]))
        results["runs"].append({"seed": seed, "ari": ari, "fit_seconds": seconds,
                                "labels": [str(x) for x in adata.obs["scNiche"]]})
        embeddings[f"seed{seed}"] = adata.obsm["X_scniche"]
        print(json.dumps({"seed": seed, "ari": ari, "fit_seconds": round(seconds, 1)}), flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle)
    np.savez(os.path.splitext(args.out)[0] + ".npz", **embeddings)


def _load_case(path):
    """Inputs written by parity/live.py: graphs, features, MIK, permutations, state dicts."""
    import numpy as np

    data = dict(np.load(path))
    meta = json.loads(str(data.pop("meta")))
    return data, meta


def _reference_runner(data, meta, tr, pp):
    """A reference ``Runner`` on our graphs (no kNN rebuilt), CPU, with our initial weights."""
    import anndata as ad
    import dgl
    import numpy as np
    import scipy.sparse as sp
    import torch

    n = meta["n_cells"]
    adata = ad.AnnData(X=np.zeros((n, 1), np.float32))
    for v, view in enumerate(meta["views"]):
        src, dst = data[f"view{v}/edge_src"], data[f"view{v}/edge_dst"]
        adj = sp.csr_matrix((np.ones(src.size, np.float32), (src, dst)), shape=(n, n))
        g = dgl.from_scipy(adj)
        g.ndata["feat"] = torch.from_numpy(data[f"view{v}/feat"])
        g.ndata["adj"] = pp.convert_adj(adj)
        g.ndata["mik"] = torch.from_numpy(data[f"view{v}/mik"]).long()
        adata.uns["g_" + view] = g
        adata.obsm[view] = data[f"view{v}/feat"]
    return adata, tr.Runner(adata, choose_views=meta["views"], hidden_size_v=meta["hidden_size_v"],
                            hidden_size=meta["hidden_size"], device="cpu", verbose=False)


def _prepared_runner(args):
    """The reference, a ``Runner`` on the case's graphs, patched to our weights; and the case."""
    import torch

    torch.set_num_threads(args.threads)
    pp, tr = import_reference(os.environ["SCNICHE_REFERENCE_SRC"])
    data, meta = _load_case(args.case)
    adata, runner = _reference_runner(data, meta, tr, pp)
    _patch_reference(data)
    return runner, data, meta


def _patch_reference(data):
    """Builds the reference's own modules with our weights, dropout 0, fixed MIM permutations."""
    import torch

    train_module = sys.modules["scniche.trainer._train"]
    real_mgae, real_disc = train_module.MGAE, train_module.Discriminator

    def mgae(*args, **kwargs):
        model = real_mgae(*args, **kwargs)
        model.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in data.items() if k.startswith("mgae/")},
                              strict=True)
        model.featfusion.dropout = 0.0
        model.decoder.dropout = 0.0
        return model

    def disc(*args, **kwargs):
        model = real_disc(*args, **kwargs)
        model.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in data.items() if k.startswith("disc/")},
                              strict=True)
        return model

    perms = iter(data["perm"].reshape(-1, data["perm"].shape[-1]))

    def shuffling(x, latent, device):
        return x[torch.from_numpy(next(perms)).long()]

    train_module.MGAE, train_module.Discriminator, train_module.shuffling = mgae, disc, shuffling
    return real_mgae, real_disc


def forward(args) -> None:
    """One reference forward (dropout off) at our initial weights: z, logits, loss components."""
    import numpy as np
    import torch

    runner, data, meta = _prepared_runner(args)
    train_module = sys.modules["scniche.trainer._train"]
    model = train_module.MGAE(runner.in_feats, runner.hidden_size_v, runner.hidden_size, runner.views,
                              runner.adj[0].shape[0])
    model_d = train_module.Discriminator(latent_dim=runner.hidden_size[-1])
    with torch.no_grad():
        adj_r, logits, z = model.forward(runner.graph, runner.feat, "cpu")
        n = runner.adj[0].shape[0]
        pos_weight = torch.Tensor([float(n ** 2 - runner.edges / 2) / runner.edges * 2])
        bce = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        mse = torch.nn.MSELoss()
        loss_gre = sum(mse(adj_r, adj) for adj in runner.adj) / runner.views
        loss_rec = sum(bce(logits[i], adj) for i, adj in enumerate(runner.adj)) / runner.views
        loss_mim = 0.0
        mik = np.hstack([g.ndata["mik"] for g in runner.graph])
        for i in range(mik.shape[1]):
            perm = torch.from_numpy(data["perm"][0, i]).long()
            pos = model_d(torch.cat((z, z[mik[:, i]]), 1))
            neg = model_d(torch.cat((z, z[perm]), 1))
            loss_mim += -torch.mean(torch.log(pos + 1e-6) + torch.log(1 - neg + 1e-6))
    np.savez(args.out, z=z.numpy(), logits0=logits[0].numpy(), adj_r=adj_r.numpy(),
             losses=np.array([float(loss_gre), float(loss_rec), float(loss_mim)], np.float64),
             pos_weight=pos_weight.numpy())


def train(args) -> None:
    """``Runner.fit`` unchanged for ``--epochs`` from our weights, dropout off, fixed permutations."""
    import numpy as np

    runner, data, meta = _prepared_runner(args)
    start = time.perf_counter()
    adata = runner.fit(lr=meta["lr"], epochs=args.epochs)
    seconds = time.perf_counter() - start
    final = {f"final/{k}": v.detach().numpy() for k, v in runner.model.state_dict().items()}
    np.savez(args.out, z=adata.obsm["X_scniche"], loss=np.array(adata.uns["loss"], np.float64),
             seconds=np.array(seconds), **final)


def bench(args) -> None:
    """Times the reference on one synthetic dataset: preprocessing, graphs, epochs, peak RSS."""
    import resource

    import anndata as ad
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    pp, tr = import_reference(os.environ["SCNICHE_REFERENCE_SRC"])
    train_module = sys.modules["scniche.trainer._train"]
    stamps = []

    class TimedTqdm(train_module.tqdm):
        def __iter__(self):
            for item in super().__iter__():
                stamps.append(time.perf_counter())
                yield item

    train_module.tqdm = TimedTqdm
    adata = ad.read_h5ad(args.h5ad)
    start = time.perf_counter()
    adata = pp.cal_spatial_neighbors(adata, celltype_key="Cell_type", k_cutoff=20, verbose=False)
    adata = pp.cal_spatial_exp(adata, is_pca=True, n_comps=20, k_cutoff=20, verbose=False)
    t_pp = time.perf_counter() - start
    start = time.perf_counter()
    if args.batch_num:
        adata = pp.prepare_data_batch(adata, batch_num=args.batch_num, verbose=False)
    else:
        adata = pp.prepare_data(adata, verbose=False)
    t_graphs = time.perf_counter() - start
    out = {"preprocess_s": t_pp, "graphs_s": t_graphs}
    if args.epochs > 0:
        torch.manual_seed(0)
        runner = (tr.Runner_batch if args.batch_num else tr.Runner)(adata, device="cpu", verbose=False)
        start = time.perf_counter()
        runner.fit(lr=0.01, epochs=args.epochs)
        out["fit_s"] = time.perf_counter() - start
        per_epoch = np.diff(stamps[: args.epochs])[args.warmup:]
        out["epoch_s_median"] = float(np.median(per_epoch))
    if args.fit_epochs:
        # What a user waits for per epoch: (fit with many epochs - fit with few) / the difference,
        # each a fresh Runner (its construction and final embedding cancel in the difference).
        fit_s = {}
        for n_epochs in args.fit_epochs:
            torch.manual_seed(0)
            runner = (tr.Runner_batch if args.batch_num else tr.Runner)(adata, device="cpu", verbose=False)
            start = time.perf_counter()
            runner.fit(lr=0.01, epochs=n_epochs)
            fit_s[str(n_epochs)] = time.perf_counter() - start
        few, many = min(args.fit_epochs), max(args.fit_epochs)
        out["fit_s_by_epochs"] = fit_s
        out["fit_epoch_s"] = (fit_s[str(many)] - fit_s[str(few)]) / (many - few)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out["torch"] = torch.__version__
    with open(args.out, "w") as handle:
        json.dump(out, handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("osmfish", help="pipeline of the osmFISH ARI comparison")
    p.add_argument("--h5ad", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--k", type=int, default=11)
    p.add_argument("--batch-num", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    for name, helptext in (("forward", "one forward at given weights"), ("train", "Runner.fit at given weights")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("--case", required=True, help=".npz written by parity/live.py")
        q.add_argument("--epochs", type=int, default=20)
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--out", required=True)
    b = sub.add_parser("bench", help="time the reference on a synthetic .h5ad")
    b.add_argument("--h5ad", required=True)
    b.add_argument("--batch-num", type=int, default=None)
    b.add_argument("--epochs", type=int, default=22, help="0: preprocessing and graphs only")
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--fit-epochs", type=int, nargs="*", default=None,
                   help="also time whole fits with these epoch counts (e.g. 5 15)")
    b.add_argument("--out", required=True)
    args = parser.parse_args()
    {"osmfish": osmfish, "forward": forward, "train": train, "bench": bench}[args.job](args)


if __name__ == "__main__":
    main()
