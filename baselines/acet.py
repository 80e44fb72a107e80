"""ACET: adversarial confidence enhancing training (Hein, Andriushchenko, Bitterwolf, CVPR 2019), with the
auxiliary pool as outliers (the paper's Appendix B.3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks.pgd import pgd_linf
from baselines.oe import OE
from oodbench.detector import oe_loss
from oodbench.registry import register_detector


@dataclass
class ACETConfig:
    """Batch 128 / 128, lambda 1.0, the second half of each outlier batch PGD-perturbed (SPEC section 4)."""

    lam: float = 1.0
    in_batch: int = 128
    out_batch: int = 128
    adv_fraction: float = 0.5


@register_detector("acet", summary="adversarial training on outliers with the OE loss (Hein et al. 2019)")
class ACET(OE):
    """Loss: CE(in) + lambda * mean OE(outliers), where half of the outliers are PGD points maximising the OE
    loss (eps 8/255, 5 x 2/255, random start, model in eval mode). Score: MSP. Attack: eq. 68."""

    order = 60  # position in the paper's Table 1
    Config = ACETConfig

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.train_pgd = None

    def stages(self, ctx):
        self.train_pgd = ctx.profile.train_pgd
        return super().stages(ctx)

    def loss(self, model, x_in, y_in, x_out):
        split = len(x_out) - int(len(x_out) * self.config.adv_fraction)
        x_adv, _ = pgd_linf(lambda z: oe_loss(model(z)), x_out[split:], self.train_pgd, model=model, check=False)
        return super().loss(model, x_in, y_in, torch.cat([x_out[:split], x_adv]))  # one pass over in + out
