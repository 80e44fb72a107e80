"""Checkpoints of the released ATOM code (github jfc43/informative-outlier-mining) in our architectures.

The released `checkpoint_N.pth.tar` files hold `{"epoch": N, "state_dict": ...}` of `DenseNet3` / `WideResNet`
(models/densenet.py, models/wideresnet.py), optionally wrapped by DataParallel (`module.` prefix), or of CCU's
`DoublyRobustModel` (models/gmm.py: `base_model.*`, in/out mixtures `mm.*` / `mm_out.*` with their `PCAMetric`).
Our DenseNet3 and WideResNet use the released parameter names and head layout (`fc` with K + extra rows, the
extra outputs last); what differs is the normalisation, which the released code keeps outside the state dict
(`normalizer`) and ours keeps as `normalize.*` buffers, and CCU's module names. `convert_released_state` maps a
released state dict onto any of our models, or raises CheckpointError naming what does not fit.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from oodbench.errors import CheckpointError

#: released CCU names -> ours (the mixtures' means are pixel-space in both)
_CCU_MIXTURES = {"mm": "gmm_in", "mm_out": "gmm_out"}
#: released tensors that carry no information for us (constants that cancel in the doubly robust output)
_CCU_CONSTANTS = ("norm_const", "metric.singular_values")


def is_released_payload(payload: Any) -> bool:
    """True for a released checkpoint: `{"state_dict": {...}}` or a bare state dict of released names."""
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return False
    keys = {_strip_module(k) for k in state}
    return "conv1.weight" in keys or "base_model.conv1.weight" in keys


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def convert_released_state(payload: dict, model: nn.Module, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A state dict for `model` (our DenseNet3 / WideResNet, or CCU's `CCUNet` around one) from a released
    checkpoint `payload`; `model.load_state_dict(result)` then gives the released network's outputs.

    CheckpointError for a missing or unexpected tensor, a shape that differs (another depth, width or head
    size), or CCU mixtures our model cannot express (non-uniform weights, lambda != 1, two different metrics)."""
    state = {_strip_module(k): v for k, v in payload.get("state_dict", payload).items()}
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    if any(k.startswith("base_model.") for k in state):
        state = _ccu_state(state, own, source)
    for key, target in own.items():
        if key.endswith(("normalize.mean", "normalize.std")):
            out[key] = target  # the released code normalises outside the network: keep this run's statistics
            continue
        if key not in state:
            if key.endswith("num_batches_tracked"):  # absent before PyTorch 0.4.1
                out[key] = target
                continue
            raise CheckpointError(f"{source}: the released checkpoint has no '{key}'; is it another architecture?")
        value = state.pop(key)
        if value.shape != target.shape:
            raise CheckpointError(
                f"{source}: '{key}' has shape {tuple(value.shape)} in the released checkpoint, this run's model "
                f"needs {tuple(target.shape)} (another depth, width or head size?)"
            )
        out[key] = value.to(target.dtype)
    if state:
        raise CheckpointError(f"{source}: tensors the model does not have: {sorted(state)[:5]}")
    return out


def _ccu_state(state: dict, own: dict, source: str) -> dict[str, torch.Tensor]:
    """Released DoublyRobustModel names -> CCUNet names (base, whiten, gmm_in, gmm_out)."""
    out = {"base." + k[len("base_model.") :]: v for k, v in state.items() if k.startswith("base_model.")}
    loglam = state.get("loglam")
    if loglam is not None and abs(float(loglam)) > 1e-6:
        raise CheckpointError(f"{source}: CCU with lambda = {math.exp(float(loglam)):g}; oodbench's CCU has 1")
    metrics = []
    for theirs, ours in _CCU_MIXTURES.items():
        for name in ("mu", "logvar", "alpha", "metric.comp_vecs", "metric.singular_values_sqrt"):
            if f"{theirs}.{name}" not in state:
                raise CheckpointError(f"{source}: CCU checkpoint without '{theirs}.{name}'")
        alpha = state[f"{theirs}.alpha"]
        if not torch.allclose(alpha, torch.full_like(alpha, -math.log(len(alpha))), atol=1e-5):
            raise CheckpointError(f"{source}: CCU mixture '{theirs}' has non-uniform weights; oodbench's are uniform")
        out[f"{ours}.means"] = state[f"{theirs}.mu"]
        out[f"{ours}.log_var"] = state[f"{theirs}.logvar"]
        metrics.append((state[f"{theirs}.metric.comp_vecs"], state[f"{theirs}.metric.singular_values_sqrt"]))
    (vectors, scale), (vectors_out, scale_out) = metrics
    if not (torch.equal(vectors, vectors_out) and torch.equal(scale, scale_out)):
        raise CheckpointError(f"{source}: CCU's two mixtures use different metrics; oodbench's share one")
    out["whiten.components"] = vectors.T  # released rows are the directions; ours are columns
    out["whiten.scale"] = scale
    if "whiten.mean" in own:
        out["whiten.mean"] = torch.zeros_like(own["whiten.mean"])  # the released metric does not centre
    return out
