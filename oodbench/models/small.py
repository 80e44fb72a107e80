"""Small networks for CPU smoke runs and the toy example: `small_cnn` (32x32 RGB) and `mlp2d` (2-D points).

Neither is in the ATOM paper's tables: `small_cnn` lets the whole pipeline (training, mining, attacks, every
detector) run in minutes on a laptop; `mlp2d` is for the paper's Figure 2 toy example (class-conditional
Gaussians in 2-D, uniform outliers around them; the paper does not specify the network, this MLP is our choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from oodbench.models.base import OODNet
from oodbench.registry import register_arch


def _conv_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(inplace=True),
    )


class SmallCNN(OODNet):
    """Four conv3x3-BN-ReLU stages (32, 64, 128, 128 channels at 32, 16, 8, 4 pixels) with 2x2 average pooling
    between them, global average pooling and a linear head: ~0.24 M parameters, ~3,000 images/s forward at batch
    256 on 2 CPU cores (average rather than max pooling: CPU max pooling computes indices and cost 37 % of the time).

    Weights use PyTorch's default initialisation except linear bias 0.

    Args:
        num_outputs: head size (K classes plus the method's extra outputs).
        normalization: per-channel (mean, std) applied inside the model, or None (identity).
        widths: channels of the four stages.
    """

    def __init__(self, num_outputs: int, normalization=None, widths: Sequence[int] = (32, 64, 128, 128)):
        super().__init__(num_outputs, normalization)
        if len(widths) != 4:
            raise ValueError(f"small_cnn needs 4 stage widths, got {tuple(widths)}")
        chans = [3, *widths]
        self.stages = nn.ModuleList(_conv_bn_relu(chans[i], chans[i + 1]) for i in range(4))
        self.fc = nn.Linear(chans[-1], num_outputs)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, the four stage outputs after BN-ReLU and before pooling); 32x32 -> 32, 16, 8, 4 pixels."""
        out = self.normalize(x)
        features = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                out = F.avg_pool2d(out, 2)  # a new tensor, so the stored feature is never modified
            out = stage(out)
            features.append(out)
        pooled = out.mean(dim=(2, 3))
        return self.fc(pooled), features


class PointNormalize(nn.Module):
    """(x - mean) / std per coordinate of [B, D] points; identity when built with `normalization=None`.

    Replaces the image `Normalize` of `OODNet`, whose [1, C, 1, 1] buffers would broadcast [B, 2] inputs wrongly.
    """

    def __init__(self, normalization: tuple[Sequence[float], Sequence[float]] | None, dim: int = 2):
        super().__init__()
        mean, std = normalization if normalization is not None else ((0.0,) * dim, (1.0,) * dim)
        if len(mean) != dim or len(std) != dim:
            raise ValueError(f"point normalisation needs {dim} means and stds, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, dim))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP2d(OODNet):
    """MLP for 2-D points (the toy example of the ATOM paper's Figure 2): 2 -> 64 -> ReLU -> 64 -> ReLU -> logits.

    Inputs are [B, in_features] coordinates (not images, not restricted to [0, 1]); `normalization`, if given,
    is a (mean, std) pair of `in_features` values each.

    Args:
        num_outputs: head size (K classes plus the method's extra outputs).
        normalization: per-coordinate (mean, std), or None (identity).
        hidden: width of the two hidden layers.
        in_features: input dimension.
    """

    def __init__(self, num_outputs: int, normalization=None, hidden: int = 64, in_features: int = 2):
        super().__init__(num_outputs, None)
        self.normalize = PointNormalize(normalization, in_features)
        self.in_features = in_features
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_outputs)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, [hidden layer 1, hidden layer 2]) after ReLU, each [B, hidden]."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"mlp2d expects [B, {self.in_features}] points, got shape {tuple(x.shape)}")
        h1 = F.relu(self.fc1(self.normalize(x)))
        h2 = F.relu(self.fc2(h1))
        return self.fc3(h2), [h1, h2]


@register_arch("small_cnn", summary="small 4-stage CNN (~0.24 M params) for CPU smoke runs")
def small_cnn(num_outputs: int, normalization=None, **kwargs) -> OODNet:
    """`SmallCNN`: a fast 32x32 classifier for smoke tests and CPU experiments (not a paper network)."""
    return SmallCNN(num_outputs=num_outputs, normalization=normalization, **kwargs)


@register_arch("mlp2d", summary="2-64-64 MLP for the 2-D toy example (ATOM paper, Figure 2)")
def mlp2d(num_outputs: int, normalization=None, **kwargs) -> OODNet:
    """`MLP2d`: two hidden layers of 64 ReLU units on [B, 2] points (ATOM paper, Figure 2)."""
    return MLP2d(num_outputs=num_outputs, normalization=normalization, **kwargs)
