"""Architectures (registered in ARCHS and with timm): DenseNet-BC-100, WRN-40-4, CIFAR ResNets, small CNN, MLP."""

from __future__ import annotations

from oodbench.models.base import Normalize, OODNet
from oodbench.registry import ARCHS


def create_model(arch: str, num_outputs: int, normalization=None, **kwargs) -> OODNet:
    """Build a registered architecture with `num_outputs` logits and normalisation inside."""
    return ARCHS.get(arch)(num_outputs=num_outputs, normalization=normalization, **kwargs)


__all__ = ["OODNet", "Normalize", "create_model"]
