"""MaxLogit (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song, "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022)."""

from __future__ import annotations

from oodbench.detector import Detector
from oodbench.registry import register_detector


@register_detector(
    "maxlogit", summary="maximum unnormalised logit of the vanilla network (Hendrycks et al. 2022)", group="posthoc"
)
class MaxLogit(Detector):
    """Score: max_i z_i(x), the largest logit (no softmax normalisation). Attack: the score itself (its
    gradient is that of the current top logit), so the paper's L-inf attack on it is adaptive."""

    order = 210  # after the paper\'s detectors, in the post-hoc group\'s order
    recipe = "vanilla"

    def score_logits(self, logits):
        return logits.float().max(dim=1).values

    def attack_objective(self, model, x):
        return self.score_logits(model(x))
