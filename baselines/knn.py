"""KNN: distance to the k-th nearest normalised training feature (Sun, Ming, Zhu, Li, "Out-of-Distribution
Detection with Deep Nearest Neighbors", ICML 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oodbench.errors import ConfigError
from oodbench.features import FeatureDetector, training_features
from oodbench.registry import register_detector


@dataclass
class KNNConfig:
    """k = 50 (the paper's CIFAR-10 setting, OpenOOD's default). `max_train` caps the stored training features
    (a fixed random subset) so memory stays bounded at max_train x D x 4 bytes; 50,000 keeps all of CIFAR-10/100,
    as the paper does."""

    k: int = 50
    max_train: int | None = 50_000


@register_detector(
    "knn",
    summary="minus the distance to the k-th nearest normalised training feature, k 50 (Sun et al. 2022)",
    group="posthoc",
)
class KNN(FeatureDetector):
    """Score: -|| z/||z|| - z_(k)/||z_(k)|| ||_2, z the penultimate feature of the input and z_(k) the k-th
    nearest of the L2-normalised training features (Sun et al. 2022, eq. 2; the released code and OpenOOD rank by
    the squared distance that faiss returns, a monotone function of it: same metrics). Attack: the score itself,
    differentiable through the normalisation and the k-th distance."""

    order = 230  # after the paper\'s detectors, in the post-hoc group\'s order
    Config = KNNConfig

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.bank: torch.Tensor | None = None  # [N, D] normalised training features
        self.n_train = 0

    def fit(self, model, data):
        features, _, self.n_train = training_features(model, data, self.config.max_train)
        if len(features) < self.config.k:
            raise ConfigError(f"knn: k = {self.config.k} exceeds the {len(features)} training features; lower knn.k")
        self.bank = F.normalize(features, dim=1)

    def is_fitted(self):
        return self.bank is not None

    def fitted_state(self):
        return {"bank": self.bank.cpu(), "n_train": self.n_train}

    def load_fitted_state(self, state):
        self.bank = state["bank"].float()
        self.n_train = int(state["n_train"])

    def fit_info(self):
        return {"k": self.config.k, "train_features": len(self.bank), "train_images": self.n_train}

    def score_features(self, logits, features, head):
        query = F.normalize(features.float(), dim=1)
        if self.bank.device != query.device:  # move once, not per batch: the bank is up to N x D x 4 bytes
            self.bank = self.bank.to(query.device)
        bank = self.bank
        # |q - b|^2 = 2 - 2 q.b for unit vectors; clamped so that sqrt's gradient stays finite
        squared = (2.0 - 2.0 * query @ bank.T).clamp(min=1e-12)
        kth = squared.topk(self.config.k, dim=1, largest=False).values[:, -1]
        return -kth.sqrt()
