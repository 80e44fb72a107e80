"""Architectures (registered in ARCHS and with timm): DenseNet-BC-100, WRN-40-4, CIFAR ResNets, small CNN, MLP."""

from __future__ import annotations

from oodbench.models import densenet, resnet_cifar, small, wrn  # noqa: F401  (imported so they register)
from oodbench.models.base import Normalize, OODNet
from oodbench.models.densenet import DenseNet3
from oodbench.models.resnet_cifar import IMAGENET_NORMALIZATION, CifarResNet, load_pretrained_resnet
from oodbench.models.small import MLP2d, SmallCNN
from oodbench.models.timm_compat import TimmOODNet, register_timm_models
from oodbench.models.wrn import WideResNet
from oodbench.registry import ARCHS

TIMM_PREFIX = "timm/"


def create_model(arch: str, num_outputs: int, normalization=None, **kwargs) -> OODNet:
    """Build a registered architecture with `num_outputs` logits and normalisation inside.

    `arch` is an ARCHS name (`oodbench list`), or `timm/<name>` for any timm model, wrapped as a `TimmOODNet`
    (its `forward_features` gives a single feature map, so Mahalanobis scores one layer).
    """
    if arch.startswith(TIMM_PREFIX):
        from oodbench.models.timm_compat import create_timm_model

        return create_timm_model(arch[len(TIMM_PREFIX) :], num_outputs, normalization, **kwargs)
    return ARCHS.get(arch)(num_outputs=num_outputs, normalization=normalization, **kwargs)


register_timm_models()

__all__ = [
    "OODNet",
    "Normalize",
    "create_model",
    "DenseNet3",
    "WideResNet",
    "CifarResNet",
    "SmallCNN",
    "MLP2d",
    "TimmOODNet",
    "load_pretrained_resnet",
    "register_timm_models",
    "IMAGENET_NORMALIZATION",
]
