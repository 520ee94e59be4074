"""Conversion between our parameter trees and the reference's torch state-dict layout.

The reference's MGAE state dict holds the view encoders (``layers_per_view.{v}.{j}``), the
shared encoder (``layer_m.{j}``), the fusion weights (``featfusion.weights.{v}``) and the
GFN (``gfn.gfn.0`` / ``gfn.gfn.2``); the Discriminator's holds ``discriminator.{0,2,4,6}``.
GraphConv weights are (in, out) in both; ``nn.Linear`` weights are (out, in), Flax
kernels (in, out).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

Params = dict[str, Any]
_DISC_LAYERS = (0, 2, 4, 6)


def mgae_params_to_state_dict(params: Mapping, gfn_params: Mapping, n_views: int,
                              n_layers_v: int, n_layers: int) -> dict[str, np.ndarray]:
    """The reference MGAE state dict (float32 numpy arrays, torch key names and layouts)."""
    out: dict[str, np.ndarray] = {}
    for v in range(n_views):
        for j in range(n_layers_v):
            layer = params[f"view{v}_layer{j}"]
            out[f"layers_per_view.{v}.{j}.weight"] = np.asarray(layer["kernel"], np.float32)
            out[f"layers_per_view.{v}.{j}.bias"] = np.asarray(layer["bias"], np.float32)
    for j in range(n_layers):
        layer = params[f"shared_layer{j}"]
        out[f"layer_m.{j}.weight"] = np.asarray(layer["kernel"], np.float32)
        out[f"layer_m.{j}.bias"] = np.asarray(layer["bias"], np.float32)
    for v in range(n_views):
        out[f"featfusion.weights.{v}"] = np.asarray(params["feature_fusion"][f"weight_{v}"], np.float32)
    for torch_idx, name in ((0, "hidden"), (2, "output")):
        out[f"gfn.gfn.{torch_idx}.weight"] = np.ascontiguousarray(np.asarray(gfn_params[name]["kernel"], np.float32).T)
        out[f"gfn.gfn.{torch_idx}.bias"] = np.asarray(gfn_params[name]["bias"], np.float32)
    return out


def mgae_params_from_state_dict(state: Mapping[str, Any], n_views: int, n_layers_v: int,
                                n_layers: int) -> tuple[Params, Params]:
    """Inverse of :func:`mgae_params_to_state_dict`: ``(trainable params, gfn params)``."""
    def arr(key):
        if key not in state:
            raise KeyError(f"state dict has no entry {key!r}")
        return np.asarray(state[key], np.float32)

    params: Params = {}
    for v in range(n_views):
        for j in range(n_layers_v):
            params[f"view{v}_layer{j}"] = {"kernel": arr(f"layers_per_view.{v}.{j}.weight"),
                                           "bias": arr(f"layers_per_view.{v}.{j}.bias")}
    params["feature_fusion"] = {f"weight_{v}": arr(f"featfusion.weights.{v}") for v in range(n_views)}
    for j in range(n_layers):
        params[f"shared_layer{j}"] = {"kernel": arr(f"layer_m.{j}.weight"), "bias": arr(f"layer_m.{j}.bias")}
    gfn = {name: {"kernel": np.ascontiguousarray(arr(f"gfn.gfn.{i}.weight").T), "bias": arr(f"gfn.gfn.{i}.bias")}
           for i, name in ((0, "hidden"), (2, "output"))}
    return params, gfn


def discriminator_params_to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
    """The reference Discriminator state dict."""
    out = {}
    for j, torch_idx in enumerate(_DISC_LAYERS):
        out[f"discriminator.{torch_idx}.weight"] = np.ascontiguousarray(np.asarray(params[f"layer{j}"]["kernel"], np.float32).T)
        out[f"discriminator.{torch_idx}.bias"] = np.asarray(params[f"layer{j}"]["bias"], np.float32)
    return out


def discriminator_params_from_state_dict(state: Mapping[str, Any]) -> Params:
    """Inverse of :func:`discriminator_params_to_state_dict`."""
    return {f"layer{j}": {"kernel": np.ascontiguousarray(np.asarray(state[f"discriminator.{i}.weight"], np.float32).T),
                          "bias": np.asarray(state[f"discriminator.{i}.bias"], np.float32)}
            for j, i in enumerate(_DISC_LAYERS)}
