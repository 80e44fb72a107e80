"""ReAct: rectified activations (Sun, Guo, Li, "ReAct: Out-of-distribution Detection With Rectified
Activations", NeurIPS 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from baselines.energy import energy
from oodbench.features import FeatureDetector, training_features
from oodbench.registry import register_detector


@dataclass
class ReActConfig:
    """Clip at the 90th percentile of the training activations (the paper's p = 90, OpenOOD's default);
    `max_train` caps the training images the percentile is estimated on."""

    percentile: float = 90.0
    max_train: int | None = 50_000


@register_detector(
    "react",
    summary="energy after clipping penultimate activations at their 90th percentile (Sun et al. 2021)",
    group="posthoc",
)
class ReAct(FeatureDetector):
    """Score: logsumexp_i (W min(h(x), c) + b)_i, h the penultimate activations, (W, b) the network's head and c
    the p-th percentile (p = 90) of all penultimate activations of the training images, every unit pooled
    (Sun et al. 2021, eq. 1 then the energy score). Attack: the score itself: clipped units pass no gradient,
    which is where gradient-based attacks may be misled."""

    order = 250  # after the paper\'s detectors, in the post-hoc group\'s order
    Config = ReActConfig

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.threshold: float | None = None
        self.n_train = 0

    def fit(self, model, data):
        features, _, self.n_train = training_features(model, data, self.config.max_train)
        self.threshold = float(np.percentile(features.double().numpy().ravel(), self.config.percentile))

    def is_fitted(self):
        return self.threshold is not None

    def fitted_state(self):
        return {"threshold": self.threshold, "n_train": self.n_train}

    def load_fitted_state(self, state):
        self.threshold = float(state["threshold"])
        self.n_train = int(state["n_train"])

    def fit_info(self):
        return {"percentile": self.config.percentile, "threshold": self.threshold, "train_images": self.n_train}

    def score_features(self, logits, features, head):
        return energy(head(features.clamp(max=self.threshold)))
