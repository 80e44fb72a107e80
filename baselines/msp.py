"""MSP: maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)."""

from __future__ import annotations

from oodbench.detector import Detector, msp, oe_loss
from oodbench.registry import register_detector


@register_detector("msp", summary="max softmax probability of a vanilla network (Hendrycks & Gimpel 2017)")
class MSP(Detector):
    """Score: max_i softmax_i(f(x)). Attack: eq. 68, mean_i -log F_i(x) (cross-entropy to uniform)."""

    order = 10  # position in the paper's Table 1

    @property
    def score_bounds(self) -> tuple[float, float]:
        """The max softmax lies in [1/K, 1] (1/K: uniform, where its gradient vanishes)."""
        return (1.0 / self.num_classes, 1.0)

    recipe = "vanilla"

    def score_logits(self, logits):
        return msp(logits)

    def attack_objective(self, model, x):
        return oe_loss(model(x))
