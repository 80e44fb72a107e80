"""ViM: virtual-logit matching (Wang, Li, Feng, Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching",
CVPR 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines.energy import energy
from oodbench.errors import ConfigError
from oodbench.features import FeatureDetector, find_head, training_features
from oodbench.registry import register_detector


@dataclass
class ViMConfig:
    """`dim` = the principal subspace's dimension; None = the paper's rule (D >= 2048: 1000, D >= 768: 512, else
    D / 2, for D-dimensional features). `max_train` caps the training features the subspace is fitted on."""

    dim: int | None = None
    max_train: int | None = 50_000


def principal_dim(feature_dim: int) -> int:
    """The ViM paper's (and its released code's) principal dimension for D-dimensional features."""
    if feature_dim >= 2048:
        return 1000
    if feature_dim >= 768:
        return 512
    return feature_dim // 2


@register_detector(
    "vim",
    summary="energy minus alpha x residual norm off the principal feature subspace (Wang et al. 2022)",
    group="posthoc",
)
class ViM(FeatureDetector):
    """Score: logsumexp_i z_i(x) - alpha ||(h(x) - o) R||, with h the penultimate feature, o = -W^+ b the origin
    where the head outputs zero logits, R the eigenvectors of the uncentred covariance of the training features
    h - o beyond the first `dim` (the residual space), and alpha = mean_train max_i z_i / mean_train ||(h - o) R||
    (Wang et al. 2022, eqs. 3-6: ViM's OOD probability is softmax of the virtual logit alpha ||.|| against z, a
    monotone function of minus this score; OpenOOD scores this difference). Attack: the score itself."""

    order = 240  # after the paper\'s detectors, in the post-hoc group\'s order
    Config = ViMConfig

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.origin: torch.Tensor | None = None  # [D]
        self.residual: torch.Tensor | None = None  # [D, D - dim]
        self.alpha = 0.0
        self.n_train = 0
        self.n_features = 0

    def fit(self, model, data):
        features, logits, self.n_train = training_features(model, data, self.config.max_train)
        self.n_features = len(features)
        dim_features = features.shape[1]
        dim = self.config.dim if self.config.dim is not None else principal_dim(dim_features)
        if not 0 < dim < dim_features:
            raise ConfigError(f"vim.dim = {dim} must lie in 1..{dim_features - 1} for {dim_features}-d features")
        _, head = find_head(model)
        weight = head.weight.detach().double().cpu().numpy()
        bias = head.bias.detach().double().cpu().numpy() if head.bias is not None else np.zeros(len(weight))
        origin = -np.linalg.pinv(weight) @ bias
        centred = features.double().numpy() - origin
        covariance = centred.T @ centred / len(centred)  # sklearn EmpiricalCovariance(assume_centered=True)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(-eigenvalues, kind="stable")
        residual = eigenvectors[:, order[dim:]]
        residual_norm = np.linalg.norm(centred @ residual, axis=1)
        self.alpha = float(logits.double().numpy().max(axis=1).mean() / residual_norm.mean())
        self.origin = torch.tensor(origin, dtype=torch.float32)
        self.residual = torch.tensor(np.ascontiguousarray(residual), dtype=torch.float32)

    def is_fitted(self):
        return self.residual is not None

    def fitted_state(self):
        return {
            "origin": self.origin,
            "residual": self.residual,
            "alpha": self.alpha,
            "n_train": self.n_train,
            "n_features": self.n_features,
        }

    def load_fitted_state(self, state):
        self.origin = state["origin"].float()
        self.residual = state["residual"].float()
        self.alpha = float(state["alpha"])
        self.n_train = int(state["n_train"])
        self.n_features = int(state["n_features"])

    def fit_info(self):
        dim_features = int(self.residual.shape[0])
        return {
            "principal_dim": dim_features - int(self.residual.shape[1]),
            "feature_dim": dim_features,
            "alpha": self.alpha,
            "train_features": self.n_features,
            "train_images": self.n_train,
        }

    def score_features(self, logits, features, head):
        residual = (features.float() - self.origin.to(features.device)) @ self.residual.to(features.device)
        return energy(logits) - self.alpha * residual.norm(dim=1)
