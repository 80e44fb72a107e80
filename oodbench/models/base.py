"""The architecture interface: models take [0, 1] pixels and normalise inside (SPEC section 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, inside the model (SPEC section 1: models take [0, 1] pixels).

    `Normalize(normalization)`: the layer, `normalization` = (mean, std) or None (identity, SVHN).
    `Normalize(model, mean, std)`: a user's model trained on normalised inputs, wrapped so that it takes
    [0, 1] pixels as every oodbench model does (`oodbench.evaluate`, `--model`)."""

    def __init__(self, normalization, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.model = None
        if isinstance(normalization, nn.Module):
            if mean is None or std is None:
                raise ValueError("Normalize(model, mean, std): give the per-channel mean and std")
            self.model, normalization = normalization, (mean, std)
        mean, std = normalization if normalization is not None else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x if self.model is None else self.model(x)


class OODNet(nn.Module):
    """Base class of every architecture.

    `forward(x)` maps pixels in [0, 1] to `num_outputs` logits (K classes plus the method's extra
    outputs). `forward_features(x)` also returns the intermediate feature maps that Mahalanobis
    scores (SPEC section 4: DenseNet conv1, trans1, trans2, final BN-ReLU; WRN conv1, block1-3).
    """

    num_outputs: int

    def __init__(self, num_outputs: int, normalization=None):
        super().__init__()
        self.num_outputs = num_outputs
        self.normalize = Normalize(normalization)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError


def he_normal_init(model: nn.Module, conv_fan: int | None = None) -> None:
    """He-normal conv weights with std sqrt(2 / fan), fan = k*k*out_channels (fan-out) unless `conv_fan` is given;
    BN (1, 0); linear bias 0. The init of the DenseNet and WRN code the paper builds on."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan = conv_fan if conv_fan is not None else m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
