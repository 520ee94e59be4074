"""The trained scNiche :class:`Model`: embedding, saving, loading, torch interop."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import anndata as ad
import jax
import numpy as np

from . import checkpoint as ckpt
from .batching import fixed_size_batches, reference_batch_indices
from .config import ScnicheConfig
from .inputs import build_batches, check_settings, embedding, view_features
from .loop import empty_history
from .torch_format import (discriminator_params_from_state_dict, discriminator_params_to_state_dict, load_torch,
                           mgae_params_from_state_dict, mgae_params_to_state_dict, save_torch)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class Model:
    """A trained scNiche model: parameters, configuration and training history.

    Attributes:
      config: the :class:`ScnicheConfig` of the run.
      params: trainable MGAE parameters (Flax tree).
      gfn_params: the frozen graph fusion network's parameters.
      discriminator_params: the frozen Discriminator's parameters.
      history: ``{'loss': {'total', 'gre', 'rec', 'mim'}: per-epoch lists, 'lr': [...],
        'ari': [(epoch, value)], 'early_stop': {...} | None}``.
      opt_state: Adam's state after the last epoch (None for a model read from torch).
    """

    def __init__(self, config: ScnicheConfig, params, gfn_params, discriminator_params,
                 history: Optional[dict[str, Any]] = None, opt_state=None):
        self.config = config
        self.params = params
        self.gfn_params = gfn_params
        self.discriminator_params = discriminator_params
        self.history = history if history is not None else empty_history()
        self.opt_state = opt_state

    def __repr__(self) -> str:
        c = self.config
        mode = "full graph" if c.batch_num is None else f"{c.batch_num} batches"
        return (f"scniche_jax.Model(views={list(c.views)}, hidden_size={list(c.hidden_size)}, "
                f"{mode} of {c.batch_size} cells, epochs run={len(self.history['loss']['total'])})")

    def plot_history(self):
        """A matplotlib figure of the loss components, the learning rate and the probe ARIs.

        Returns:
          ``matplotlib.figure.Figure`` (needs the ``plot`` extra: ``pip install 'scniche-jax[plot]'``).
        """
        from .plotting import history_figure

        return history_figure(self.history)

    # --- embedding ------------------------------------------------------------------------

    def _batches_for(self, n_cells: int) -> list[np.ndarray]:
        c = self.config
        if n_cells == c.batch_size:
            return [np.arange(n_cells)]
        if c.batch_num is not None and n_cells // c.batch_num + (n_cells % c.batch_num > 0) == c.batch_size:
            return reference_batch_indices(n_cells, c.batch_num)
        return fixed_size_batches(n_cells, c.batch_size, c.seed)

    def embed(self, adata: ad.AnnData, *, seed: Optional[int] = None) -> np.ndarray:
        """The embedding of ``adata``'s cells (n_obs × latent_dim), computed anew.

        The view graphs are built from ``adata``'s views. An AnnData of the training size is
        embedded exactly as in training (the same batches); other data is cut into batches of
        the model's graph size (the fusion network's width), each cell embedded once.

        Args:
          adata: cells with the same views (same ``obsm`` keys and widths) as the model's.
          seed: with ``config.deterministic_embedding=False``, the dropout seed.

        Returns:
          float32 array in ``adata.obs_names`` order; ``adata`` is not modified.
        """
        c = self.config
        features = view_features(adata, c.views)
        for key, f, width in zip(c.views, features, c.input_sizes):
            if f.shape[1] != width:
                raise ValueError(f"adata.obsm[{key!r}] has {f.shape[1]} columns but the model was trained "
                                 f"on {width}; use data with the same features (same genes, PCA, cell types).")
        check_settings(c.batch_size, c.views, c.hidden_size_v, c.hidden_size, c.k_graph, c.mik, None, c.epochs,
                       c.lr, c.precision, c.dropout, c.gre_semantics, c.block_size)
        batches = self._batches_for(adata.n_obs)
        graph_batches = build_batches(features, batches, self.gfn_params, c)
        key = None if seed is None else jax.random.key(seed)
        return embedding(self.params, graph_batches, batches, adata.n_obs, c, key)

    # --- torch interop --------------------------------------------------------------------

    def to_torch_dict(self) -> dict[str, Any]:
        """The reference trainer rewrite's ``model.pt`` content (tensors as numpy arrays)."""
        c = self.config
        mgae = mgae_params_to_state_dict(self.params, self.gfn_params, len(c.views), len(c.hidden_size_v),
                                         len(c.hidden_size))
        return {
            "model_state": OrderedDict(mgae),
            "discriminator_state": OrderedDict(discriminator_params_to_state_dict(self.discriminator_params)),
            "config": {"input_size": list(c.input_sizes), "hidden_size_v": list(c.hidden_size_v),
                       "hidden_size": list(c.hidden_size), "views": len(c.views), "batch_size": c.batch_size,
                       "latent_dim": c.latent_dim, "choose_views": list(c.views)},
            "training": {"loss": list(self.history["loss"]["total"]), "lr": list(self.history["lr"]),
                         "ari": [tuple(p) for p in self.history["ari"]], "early_stop": self.history["early_stop"]},
        }

    @classmethod
    def from_torch(cls, source: Union[PathLike, Mapping[str, Any]]) -> "Model":
        """A model from a reference-trained ``model.pt`` (path or loaded dict), without torch.

        Args:
          source: the file (read with a restricted unpickler that never runs code) or the
            dictionary ``torch.load`` returned (tensors or numpy arrays).

        Returns:
          The :class:`Model`; its config carries the reference's sizes and default settings.
        """
        data = load_torch(source) if isinstance(source, (str, os.PathLike)) else source
        name = str(source) if isinstance(source, (str, os.PathLike)) else "the model.pt dictionary"
        try:
            cfg = data["config"]
            views = tuple(cfg.get("choose_views") or [f"view{v}" for v in range(int(cfg["views"]))])
            config = ScnicheConfig(views=views, input_sizes=tuple(int(x) for x in cfg["input_size"]),
                                   hidden_size_v=tuple(int(x) for x in cfg["hidden_size_v"]),
                                   hidden_size=tuple(int(x) for x in cfg["hidden_size"]),
                                   batch_size=int(cfg["batch_size"]))
            state = {k: _as_numpy(v) for k, v in data["model_state"].items()}
            params, gfn = mgae_params_from_state_dict(state, len(views), len(config.hidden_size_v),
                                                      len(config.hidden_size))
            disc = discriminator_params_from_state_dict(
                {k: _as_numpy(v) for k, v in data["discriminator_state"].items()})
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{name} is not an scNiche model.pt ({err})") from err
        history = empty_history()
        training = data.get("training") or {}
        history["loss"]["total"] = [float(x) for x in training.get("loss", [])]
        history["lr"] = [float(x) for x in training.get("lr", [])]
        history["ari"] = [tuple(p) for p in training.get("ari", [])]
        history["early_stop"] = training.get("early_stop")
        return cls(config, params, gfn, disc, history)

    # --- save and load --------------------------------------------------------------------

    def save(self, path: PathLike, *, adata: Optional[ad.AnnData] = None, overwrite: bool = False,
             key: str = "X_scniche") -> Path:
        """Writes the model folder: ``checkpoint/``, ``model.pt``, ``config.json`` [, ``adata.h5ad``].

        The folder is built beside ``path`` and swapped in at the end, so an interrupted save
        leaves the previous one intact and no half-written file.

        Args:
          path: the folder.
          adata: also write ``adata.h5ad`` with the results only (``obs``, ``obsm[key]`` and
            ``obsm['spatial']`` when present; nothing of the model).
          overwrite: replace an existing non-empty folder.
          key: ``obsm`` key of the embedding in ``adata``.

        Returns:
          The absolute folder path.
        """
        path = ckpt.check_writable_dir(path, "save path")
        results = None
        if adata is not None:
            if key not in adata.obsm:
                raise ValueError(f"adata.obsm has no {key!r} to save; run fit or pass key=...")
            results = ad.AnnData(obs=adata.obs.copy())
            results.obsm[key] = np.asarray(adata.obsm[key])
            if "spatial" in adata.obsm:
                results.obsm["spatial"] = np.asarray(adata.obsm["spatial"])

        def build(tmp: Path) -> None:
            state = {"params": self.params, "gfn": self.gfn_params, "discriminator": self.discriminator_params}
            if self.opt_state is not None:
                state["opt_state"] = self.opt_state._asdict()
            meta = {"config": self.config.to_dict(), "history": self.history,
                    "epochs_run": len(self.history["loss"]["total"])}
            ckpt.save_checkpoint(tmp / "checkpoint", meta["epochs_run"], ckpt.to_numpy_tree(state), meta,
                                 max_to_keep=1)
            save_torch(self.to_torch_dict(), tmp / "model.pt")
            ckpt.write_json(tmp / "config.json", {"format": ckpt.FORMAT_VERSION, **self.config.to_dict()})
            if results is not None:
                results.write_h5ad(tmp / "adata.h5ad")

        ckpt.replace_dir_atomically(build, path, overwrite)
        return path

    @classmethod
    def load(cls, path: PathLike) -> "Model":
        """Reads a folder written by :meth:`save` (or one holding only a ``model.pt``).

        The Orbax checkpoint restores every array bit for bit; without it, ``model.pt`` is
        read as with :meth:`from_torch`.
        """
        path = Path(path).expanduser().resolve()
        if path.is_file():
            return cls.from_torch(path)
        if not path.is_dir():
            raise ValueError(f"{str(path)!r} does not exist; pass a folder written by Model.save or a model.pt.")
        if (path / "checkpoint").is_dir():
            _, state, meta = ckpt.restore_checkpoint(path / "checkpoint")
            config = ScnicheConfig.from_dict(meta["config"])
            opt_state = None
            if "opt_state" in state:
                from .optimizer import TorchAdamState

                opt_state = TorchAdamState(**state["opt_state"])
            return cls(config, state["params"], state["gfn"], state["discriminator"],
                       history_from_json(meta["history"]), opt_state)
        if (path / "model.pt").is_file():
            return cls.from_torch(path / "model.pt")
        raise ValueError(f"{str(path)!r} holds neither checkpoint/ nor model.pt; pass a folder written by Model.save.")


def history_from_json(history: dict[str, Any]) -> dict[str, Any]:
    """A history read back from JSON, with ARI pairs as tuples again."""
    history = dict(history)
    history["ari"] = [tuple(p) for p in history.get("ari", [])]
    return history


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor from torch.load
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float32)


def load(path: PathLike) -> Model:
    """Loads a model saved with :meth:`Model.save` (or a reference ``model.pt``)."""
    return Model.load(path)
