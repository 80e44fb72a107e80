"""Both directions between oodbench architectures and timm (Wightman, pytorch-image-models).

1. `register_timm_models()` registers every oodbench architecture as a timm entrypoint, so that
   `timm.create_model("densenet_bc_100", num_classes=11)` returns the oodbench `DenseNet3` (names in
   `TIMM_NAMES`). timm's `num_classes` is the head size (`num_outputs`); `normalization=(mean, std)` may be passed
   through timm's keyword arguments (default None: identity, so feed inputs normalised the timm way, or pass it).
   No pretrained weights are published under these names: `pretrained=True` raises.
2. `create_timm_model("resnet18", ...)`, reached through `oodbench.models.create_model("timm/resnet18", ...)`,
   builds any timm model and wraps it as an `OODNet` with normalisation inside (`TimmOODNet`).

Registration touches only timm's public `register_model` decorator and is wrapped so that an incompatible timm
version degrades to a warning instead of breaking `import oodbench.models`.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from oodbench.errors import ConfigError, UnknownNameError
from oodbench.models.base import OODNet

# timm's register_model appends each entrypoint name to this list.
__all__ = ["TIMM_NAMES", "TimmOODNet", "create_timm_model", "register_timm_models"]

#: timm name -> (oodbench ARCHS name, fixed keyword arguments).
TIMM_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "densenet_bc_100": ("densenet100", {}),
    "wrn_40_4": ("wrn40_4", {}),
    "cifar_resnet20": ("resnet20", {}),
    "cifar_resnet32": ("resnet32", {}),
    "cifar_resnet44": ("resnet44", {}),
    "cifar_resnet56": ("resnet56", {}),
    "oodbench_small_cnn": ("small_cnn", {}),
    "oodbench_mlp2d": ("mlp2d", {}),
}

# Keywords timm's create_model always passes (as None unless set); other unknown options reach the architecture,
# which rejects them rather than ignoring them silently.
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")

_HAS_DROPOUT = ("densenet100", "wrn40_4")

_registered: list[str] | None = None


def _make_entrypoint(timm_name: str, arch: str, fixed: dict[str, Any]) -> Callable[..., OODNet]:
    def entrypoint(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> OODNet:
        from oodbench.registry import ARCHS

        if pretrained:
            raise ConfigError(
                f"timm model '{timm_name}' (oodbench '{arch}') has no published pretrained weights; build it with "
                "pretrained=False and load a checkpoint (for akamaster's CIFAR ResNets: "
                "oodbench.models.load_pretrained_resnet)"
            )
        expected_chans = None if arch == "mlp2d" else 3
        if expected_chans is not None and in_chans != expected_chans:
            raise ConfigError(
                f"timm model '{timm_name}' takes {expected_chans}-channel images, got in_chans={in_chans}"
            )
        for key in _TIMM_ONLY_KWARGS:
            kwargs.pop(key, None)
        if arch not in _HAS_DROPOUT and kwargs.pop("drop_rate", 0.0):
            raise ConfigError(f"timm model '{timm_name}' has no dropout (drop_rate must be 0)")
        return ARCHS.get(arch)(num_outputs=num_classes, **{**fixed, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = timm_name  # timm registers an entrypoint under its __name__
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"timm entrypoint for oodbench's '{arch}' (num_classes -> num_outputs; no pretrained)."
    return entrypoint


def register_timm_models() -> list[str]:
    """Register the `TIMM_NAMES` entrypoints with timm (idempotent); returns the names registered.

    A name that timm already knows from another library is left alone (with a warning) rather than overwritten.
    Any failure of timm's API is turned into a warning: oodbench works without the timm names.
    """
    global _registered
    if _registered is not None:
        return list(_registered)
    try:
        import timm
        from timm.models import register_model
    except Exception as exc:  # timm missing or broken: the oodbench registry still works
        warnings.warn(f"timm unavailable, oodbench architectures not registered with it: {exc}", stacklevel=2)
        return []
    done = []
    for timm_name, (arch, fixed) in TIMM_NAMES.items():
        try:
            if timm.is_model(timm_name):
                module = getattr(timm.models.get_model_entrypoint(timm_name), "__module__", "")
                if module != __name__:
                    warnings.warn(f"timm already defines '{timm_name}' ({module}); not overriding it", stacklevel=2)
                    continue
            entrypoint = _make_entrypoint(timm_name, arch, fixed)
            globals()[timm_name] = entrypoint  # timm looks the entrypoint up in its module
            register_model(entrypoint)
            done.append(timm_name)
        except Exception as exc:  # an incompatible timm API: skip, never break the import
            warnings.warn(f"could not register '{timm_name}' with timm: {exc}", stacklevel=2)
    _registered = done
    return list(done)


class TimmOODNet(OODNet):
    """Any timm model as an `OODNet`: normalisation inside, `num_outputs` logits from timm's classifier.

    `forward_features(x)` returns (logits, [timm `forward_features` output]) - the un-pooled final feature map
    (or token sequence for transformers). Mahalanobis therefore scores a single layer for these models, not the
    four of the paper's DenseNet / WRN.
    """

    def __init__(self, model: nn.Module, num_outputs: int, normalization=None):
        super().__init__(num_outputs, normalization)
        self.model = model

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [timm forward_features output]); one backbone pass when the model has `forward_head`."""
        x = self.normalize(x)
        features = self.model.forward_features(x)
        if hasattr(self.model, "forward_head"):
            logits = self.model.forward_head(features)
        else:  # older / custom models: a second pass is correct, only slower
            logits = self.model(x)
        return logits, [features]


def create_timm_model(name: str, num_outputs: int, normalization=None, **kwargs: Any) -> OODNet:
    """Build timm model `name` with `num_outputs` classes as an `OODNet` (normalisation inside).

    oodbench's own timm names (`TIMM_NAMES`) return the oodbench architecture directly (no double wrapping).
    Other keyword arguments (e.g. `pretrained`, `drop_rate`, `img_size`) go to `timm.create_model`.

    Raises:
        UnknownNameError: timm does not know `name` (with close matches).
    """
    if name in TIMM_NAMES:
        from oodbench.registry import ARCHS

        arch, fixed = TIMM_NAMES[name]
        if kwargs.pop("pretrained", False):
            raise ConfigError(f"timm model '{name}' has no published pretrained weights")
        return ARCHS.get(arch)(num_outputs=num_outputs, normalization=normalization, **{**fixed, **kwargs})
    import timm

    if ":" not in name and not timm.is_model(name):  # 'hf-hub:...' / 'local-dir:...' sources: timm resolves them
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr('timm/' + c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown timm architecture '{name}'{hint}")
    model = timm.create_model(name, num_classes=num_outputs, **kwargs)
    return TimmOODNet(model, num_outputs=num_outputs, normalization=normalization)
