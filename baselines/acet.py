"""ACET: adversarial confidence enhancing training (Hein, Andriushchenko, Bitterwolf, CVPR 2019), with the
auxiliary pool as outliers (the paper's Appendix B.3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attacks.pgd import pgd_linf
from oodbench.detector import Detector, Stage, msp, oe_loss
from oodbench.registry import register_detector


@dataclass
class ACETConfig:
    """Batch 128 / 128, lambda 1.0, the second half of each outlier batch PGD-perturbed (SPEC section 4)."""

    lam: float = 1.0
    in_batch: int = 128
    out_batch: int = 128
    adv_fraction: float = 0.5


@register_detector("acet", summary="adversarial training on outliers with the OE loss (Hein et al. 2019)")
class ACET(Detector):
    """Loss: CE(in) + lambda * mean OE(outliers), where half of the outliers are PGD points maximising the OE
    loss (eps 8/255, 5 x 2/255, random start, model in eval mode). Score: MSP. Attack: eq. 68."""

    name = "acet"
    uses_aux = True
    Config = ACETConfig

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.train_pgd = None

    def stages(self, ctx):
        self.train_pgd = ctx.profile.train_pgd
        epochs, milestones = ctx.profile.schedule(ctx.in_dist.schedule)
        c = self.config
        return [Stage("acet", epochs, milestones, c.in_batch, self.loss, out_batch=c.out_batch, outliers="uniform")]

    def loss(self, model, x_in, y_in, x_out):
        split = len(x_out) - int(len(x_out) * self.config.adv_fraction)
        x_adv, _ = pgd_linf(lambda z: oe_loss(model(z)), x_out[split:], self.train_pgd, model=model, check=False)
        logits = model(torch.cat([x_in, x_out[:split], x_adv]))
        n = len(x_in)
        return F.cross_entropy(logits[:n], y_in) + self.config.lam * oe_loss(logits[n:]).mean()

    def score_logits(self, logits):
        return msp(logits)

    def attack_objective(self, model, x):
        return oe_loss(model(x))
