"""SOFL: self-supervised OOD feature learning with reject classes (Mohseni et al., AAAI 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from oodbench.detector import Detector, Stage
from oodbench.registry import register_detector


@dataclass
class SOFLConfig:
    """R reject classes (None: 5, or 10 for CIFAR-100), lambda 5, stage-2 batches 64 / 320 (SPEC section 4)."""

    reject_classes: int | None = None
    lam: float = 5.0
    in_batch: int = 64
    out_batch: int = 320

    #: R per in-distribution set (SPEC section 4); any other set: 5
    REJECT_CLASSES_PER_DATASET: ClassVar[dict[str, int]] = {"cifar100": 10}
    DEFAULT_REJECT_CLASSES: ClassVar[int] = 5


@register_detector(
    "sofl", summary="reject classes learnt from auxiliary outliers in a second stage (Mohseni et al. 2020)"
)
class SOFL(Detector):
    """Stage 1: CE over all K+R outputs on in-dist. Stage 2 (fresh optimiser, lr back to 0.1): CE(in) +
    lambda * CE(out, pseudo-label), the pseudo-label being the outlier's argmax when that is a reject class,
    else a reject class drawn uniformly at random (per outlier, redrawn every batch).
    Score: -sum of reject-class softmax. Attack (eq. 70): -log sum_reject softmax."""

    order = 40  # position in the paper's Table 1
    score_bounds = (-1.0, 0.0)
    uses_aux = True
    Config = SOFLConfig

    @classmethod
    def resolve_defaults(cls, config, ctx):
        if config.reject_classes is None:
            config.reject_classes = config.REJECT_CLASSES_PER_DATASET.get(
                ctx.in_dist.name, config.DEFAULT_REJECT_CLASSES
            )
        return config

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        if self.config.reject_classes is None:
            self.config.reject_classes = 10 if num_classes >= 100 else 5
        self.extra_outputs = self.config.reject_classes

    def stages(self, ctx):
        epochs, milestones = ctx.profile.schedule(ctx.in_dist.schedule)
        c = self.config
        return [
            Stage("sofl-stage1", epochs, milestones, c.in_batch, self.stage1_loss),
            Stage("sofl-stage2", epochs, milestones, c.in_batch, self.loss, out_batch=c.out_batch, outliers="uniform"),
        ]

    def stage1_loss(self, model, x_in, y_in, x_out):
        return F.cross_entropy(model(x_in), y_in)

    def pseudo_labels(self, logits_out: torch.Tensor) -> torch.Tensor:
        """argmax if it is a reject class (>= K), else a uniformly random reject class."""
        k, r = self.num_classes, self.config.reject_classes
        predicted = logits_out.argmax(dim=1)
        random_reject = torch.randint(k, k + r, predicted.shape, device=predicted.device)
        return torch.where(predicted >= k, predicted, random_reject)

    def loss(self, model, x_in, y_in, x_out):
        logits = model(torch.cat([x_in, x_out]))
        n = len(x_in)
        targets = self.pseudo_labels(logits[n:].detach())
        return F.cross_entropy(logits[:n], y_in) + self.config.lam * F.cross_entropy(logits[n:], targets)

    def score_logits(self, logits):
        return -F.softmax(logits.float(), dim=1)[:, self.num_classes :].sum(dim=1)

    def attack_objective(self, model, x):
        logits = model(x)
        return -(torch.logsumexp(logits[:, self.num_classes :], dim=1) - torch.logsumexp(logits, dim=1))
