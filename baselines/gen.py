"""GEN: generalised entropy of the top-M softmax probabilities (Liu, Lochman, Zach, "GEN: Pushing the Limits of
Softmax-Based Out-of-Distribution Detection", CVPR 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oodbench.detector import Detector
from oodbench.registry import register_detector


@dataclass
class GENConfig:
    """gamma = 0.1 and M = 100 (the paper's and OpenOOD's defaults); M is capped at the number of classes."""

    gamma: float = 0.1
    top_m: int = 100


def generalized_entropy(logits: torch.Tensor, gamma: float, top_m: int) -> torch.Tensor:
    """-G_gamma(p) = -sum_{j <= M} p_(j)^gamma (1 - p_(j))^gamma over the M largest softmax probabilities
    (Liu et al. 2023, eq. 5, negated so that higher = more in-distribution), in float32 as OpenOOD computes it."""
    probs = F.softmax(logits.float(), dim=1)
    top = probs.topk(min(top_m, probs.shape[1]), dim=1).values
    return -(top**gamma * (1.0 - top) ** gamma).sum(dim=1)


def generalized_entropy_log_space(logits: torch.Tensor, gamma: float, top_m: int) -> torch.Tensor:
    """The same -G_gamma in log space, exp(gamma (log p + log(1 - p))), for gradients: the float32 form's
    d p^gamma / dp = gamma p^(gamma - 1) is infinite where a probability underflows to 0 (and (1 - p)^gamma's where
    p rounds to 1), so its input gradient is NaN there. log(1 - p) of the top class is logsumexp of the other
    logits minus logsumexp of all (exact even where p rounds to 1); log1p(-p) for the others (p < 1/2)."""
    z = logits.float()
    log_p = F.log_softmax(z, dim=1)
    log_not_p = torch.log1p(-log_p.exp().clamp(max=0.5))  # exact for every class but possibly the top one
    top_class = z.argmax(dim=1, keepdim=True)
    others = z.scatter(1, top_class, float("-inf"))
    log_not_top = torch.logsumexp(others, dim=1, keepdim=True) - torch.logsumexp(z, dim=1, keepdim=True)
    log_not_p = log_not_p.scatter(1, top_class, log_not_top)
    m = min(top_m, z.shape[1])
    index = z.topk(m, dim=1).indices
    terms = torch.exp(gamma * (log_p.gather(1, index) + log_not_p.gather(1, index)))
    return -terms.sum(dim=1)


@register_detector(
    "gen",
    summary="generalised entropy of the top-M softmax probabilities, gamma 0.1 (Liu et al. 2023)",
    group="posthoc",
)
class GEN(Detector):
    """Score: -sum_{j=1}^{M} p_(j)^gamma (1 - p_(j))^gamma, p_(1) >= p_(2) >= ... the softmax probabilities of the
    vanilla network, gamma = 0.1, M = min(100, K). Attack: the same score computed in log space (equal up to
    float32 rounding, finite gradients where the float32 form has none), so the L-inf attack is adaptive."""

    order = 220  # after the paper\'s detectors, in the post-hoc group\'s order
    recipe = "vanilla"
    Config = GENConfig

    def score_logits(self, logits):
        return generalized_entropy(logits, self.config.gamma, self.config.top_m)

    def attack_objective(self, model, x):
        return generalized_entropy_log_space(model(x), self.config.gamma, self.config.top_m)
