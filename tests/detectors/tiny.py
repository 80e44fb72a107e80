"""A tiny fixed model and batch for the per-detector formula tests."""

from __future__ import annotations

import torch
from torch import nn

K = 4


class Linear(nn.Module):
    """A fixed linear model on 3x4x4 images: logits are easy to compute by hand."""

    def __init__(self, outputs, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(48, outputs)
        self.num_outputs = outputs

    def forward(self, x):
        return self.fc(x.flatten(1))

    def forward_features(self, x):
        h = x.flatten(1)
        return self.fc(h), [x, x * 2, x.mean(dim=1, keepdim=True), h]


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, K, (n,), generator=g)


def _set(x, y=None):
    from oodbench.data.base import ImageSet

    return ImageSet((x * 255).round().to(torch.uint8), y)


def _pooled(model, x):
    from baselines.mahalanobis import pooled_features

    return pooled_features(model, x)


def _grid(x):
    return (x * 255).round() / 255  # attacks keep inputs on the 8-bit grid


def _zero_eps(det):
    from attacks.pgd import PGDConfig

    det.train_pgd = PGDConfig(eps=0.0, steps=2, step_size=1 / 255)
    return det
