"""Outlier Exposure (Hendrycks, Mazeika, Dietterich, ICLR 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oodbench.detector import Detector, Stage, msp, oe_loss
from oodbench.registry import register_detector


@dataclass
class OEConfig:
    """Batch 64 in-dist / 128 outliers, lambda 0.5 (SPEC section 4)."""

    lam: float = 0.5
    in_batch: int = 64
    out_batch: int = 128


@register_detector(
    "oe", summary="Outlier Exposure: cross-entropy to uniform on auxiliary outliers (Hendrycks et al. 2019)"
)
class OE(Detector):
    """Loss: CE(in) + lambda * mean OE(out), OE(x) = logsumexp(z) - mean(z). Score: MSP. Attack: eq. 68."""

    order = 50  # position in the paper's Table 1

    @property
    def score_bounds(self) -> tuple[float, float]:
        """The max softmax lies in [1/K, 1] (1/K: uniform, where its gradient vanishes)."""
        return (1.0 / self.num_classes, 1.0)

    uses_aux = True
    Config = OEConfig

    def stages(self, ctx):
        epochs, milestones = ctx.profile.schedule(ctx.in_dist.schedule)
        c = self.config
        return [Stage(self.name, epochs, milestones, c.in_batch, self.loss, out_batch=c.out_batch, outliers="uniform")]

    def loss(self, model, x_in, y_in, x_out):
        logits = model(torch.cat([x_in, x_out]))  # one pass: BatchNorm statistics mix both (SPEC section 3)
        n = len(x_in)
        return F.cross_entropy(logits[:n], y_in) + self.config.lam * oe_loss(logits[n:]).mean()

    def score_logits(self, logits):
        return msp(logits)

    def attack_objective(self, model, x):
        return oe_loss(model(x))
