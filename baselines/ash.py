"""ASH-S: activation shaping with scaling (Djurisic, Bozanic, Ashok, Liu, "Extremely Simple Activation Shaping
for Out-of-Distribution Detection", ICLR 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.energy import energy
from oodbench.errors import ConfigError
from oodbench.features import FeatureDetector
from oodbench.registry import register_detector


@dataclass
class ASHConfig:
    """Prune the `percentile` % smallest activations, keeping the top 10 % (ASH-S@90)."""

    percentile: float = 90.0


def ash_s(features: torch.Tensor, percentile: float) -> torch.Tensor:
    """ASH-S on [B, D] activations: zero all but the k = D - round(D p / 100) largest of each sample, then multiply
    the kept ones by exp(s1 / s2), s1 and s2 the sample's activation sums before and after pruning (Djurisic et al.
    2023, Algorithm 1 'ASH-S'; as the released code and OpenOOD, at the pooled penultimate layer)."""
    dim = features.shape[1]
    keep = dim - int(round(dim * percentile / 100.0))
    if keep < 1:
        raise ConfigError(f"ash.percentile = {percentile} prunes all {dim} activations; use a smaller percentile")
    values, index = features.topk(keep, dim=1)
    pruned = torch.zeros_like(features).scatter(1, index, values)
    before = features.sum(dim=1, keepdim=True)
    after = values.sum(dim=1, keepdim=True)
    # post-ReLU activations: after > 0 unless the whole vector is zero, where the ratio is taken as 1
    ratio = torch.where(after > 0, before / after.clamp(min=torch.finfo(after.dtype).tiny), torch.ones_like(after))
    return pruned * torch.exp(ratio)


@register_detector(
    "ash",
    summary="energy of the top 10 % of penultimate activations, rescaled (ASH-S, Djurisic et al. 2023)",
    group="posthoc",
)
class ASH(FeatureDetector):
    """Score: logsumexp_i (W a(h(x)) + b)_i with a = ASH-S at p = 90 (see `ash_s`): h the penultimate activations,
    (W, b) the network's head. Fits nothing. Attack: the score itself; pruned units pass no gradient (the
    selection is piecewise constant), where gradient-based attacks may be misled."""

    order = 260  # after the paper\'s detectors, in the post-hoc group\'s order
    Config = ASHConfig

    def score_features(self, logits, features, head):
        return energy(head(ash_s(features.float(), self.config.percentile)))
