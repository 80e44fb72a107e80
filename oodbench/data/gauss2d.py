"""The 2-D toy data set `gauss2d` of the ATOM paper's Figure 2 (section 3): K class-conditional isotropic
Gaussians and uniform outliers from a box around them, outside the in-distribution's support ("outlier training
data is sampled from a uniform distribution from outside the support of in-distribution").

Registered with role `toy`: `oodbench list` / `oodbench data` show it; `oodbench run` (images only) never loads
it; the experiment that trains on it and draws Figure 2 is `oodbench.tools.toy` (`oodbench plot boundary`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from oodbench.data.base import DatasetSpec
from oodbench.registry import register_dataset

TOY_ROLE = "toy"


@dataclass(frozen=True)
class Gauss2dConfig:
    """Shape of the toy problem (the paper gives no numbers for Figure 2; these are ours).

    Class means lie evenly on a circle of `radius` (3 units: neighbouring means are 5.2 units = 10.4 std apart);
    every class is isotropic with `std`. Outliers are uniform on [-box, box]^2 minus the discs of Mahalanobis
    radius `support` around every mean: 3 std holds 98.9 % of a class (chi-square(2) tail exp(-4.5)), so the
    hardest outliers sit right at the edge of the data, as in the figure.
    """

    num_classes: int = 3
    radius: float = 3.0
    std: float = 0.5
    train_per_class: int = 300
    test_per_class: int = 300  # held out: the 95 % TPR threshold and the accuracy
    pool_size: int = 20_000  # auxiliary outlier pool (the candidates of mining)
    test_outliers: int = 5_000  # held-out outliers from the same distribution (FPR)
    box: float = 8.0
    support: float = 3.0  # Mahalanobis radius excluded from the outlier distribution


@dataclass
class Gauss2d:
    """The toy data: float32 points [N, 2], int64 labels 0..K-1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    pool: torch.Tensor  # auxiliary outliers (training candidates)
    ood_test: torch.Tensor  # held-out outliers, a disjoint draw from the same distribution
    means: torch.Tensor  # [K, 2]
    config: Gauss2dConfig
    seed: int

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def mahalanobis(self, points: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance [N] of every point to its nearest class mean (isotropic classes: distance / std)."""
        return torch.cdist(points.double(), self.means.double()).min(dim=1).values.float() / self.config.std

    def in_support(self, points: torch.Tensor) -> torch.Tensor:
        """Boolean [N]: the point lies within the in-distribution's support (Mahalanobis radius `support`)."""
        return self.mahalanobis(points) < self.config.support


def class_means(num_classes: int, radius: float) -> torch.Tensor:
    """K means evenly spaced on a circle of `radius`, the first at 90 degrees (float32 [K, 2])."""
    angles = math.pi / 2 + 2 * math.pi * np.arange(num_classes) / num_classes
    return torch.tensor(np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius, dtype=torch.float32)


def _uniform_outside(count: int, means: np.ndarray, config: Gauss2dConfig, rng: np.random.Generator) -> np.ndarray:
    """`count` points uniform on the box minus the support discs (rejection sampling; ~92 % accepted)."""
    out: list[np.ndarray] = []
    have = 0
    while have < count:
        points = rng.uniform(-config.box, config.box, size=(2 * (count - have) + 64, 2))
        distance = np.sqrt(((points[:, None, :] - means[None]) ** 2).sum(-1)).min(axis=1) / config.std
        points = points[distance >= config.support]
        out.append(points)
        have += len(points)
    return np.concatenate(out)[:count]


def make_gauss2d(config: Gauss2dConfig | None = None, seed: int = 0) -> Gauss2d:
    """The toy data set, a deterministic function of (config, seed)."""
    config = config or Gauss2dConfig()
    if config.radius + config.support * config.std >= config.box:
        raise ValueError("the support discs do not fit in the outlier box")
    rng = np.random.default_rng([seed, 2021])
    means = class_means(config.num_classes, config.radius).numpy()

    def gaussians(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(np.arange(config.num_classes), per_class)
        points = means[labels] + config.std * rng.standard_normal((len(labels), 2))
        return torch.tensor(points, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)

    x_train, y_train = gaussians(config.train_per_class)
    x_test, y_test = gaussians(config.test_per_class)
    pool = torch.tensor(_uniform_outside(config.pool_size, means, config, rng), dtype=torch.float32)
    ood_test = torch.tensor(_uniform_outside(config.test_outliers, means, config, rng), dtype=torch.float32)
    return Gauss2d(x_train, y_train, x_test, y_test, pool, ood_test, torch.tensor(means), config, seed)


def load_gauss2d(root: Path | str | None = None, download: bool = False) -> Gauss2d:
    """Registry loader of `gauss2d` (role `toy`): the default toy data, seed 0. `root` and `download` are unused."""
    return make_gauss2d()


class ToyDatasetSpec(DatasetSpec):
    """A DatasetSpec for a built-in 2-D toy set. Its one role, `toy`, is never asked for by the image pipeline
    (`oodbench run`, `load_in_distribution`, `load_ood`, `load_aux`); `DatasetSpec` checks roles against the
    image roles in / ood / aux, so this subclass replaces that check."""

    def __post_init__(self) -> None:
        if self.role != TOY_ROLE:
            raise ValueError(f"toy data set '{self.name}' must have role '{TOY_ROLE}', not '{self.role}'")
        self.loaders = {TOY_ROLE: self.loader}


GAUSS2D_SPEC = ToyDatasetSpec(
    "gauss2d",
    TOY_ROLE,
    load_gauss2d,
    "built-in (no files): 3 class-conditional 2-D Gaussians (means on a circle of radius 3, std 0.5; 300 train + "
    "300 test points per class) and uniform outliers on [-8, 8]^2 outside Mahalanobis radius 3 (20,000 + 5,000)",
    obtain="generated in memory from a seed by oodbench.data.gauss2d.make_gauss2d: nothing to obtain",
    builtin=True,
    sizes={TOY_ROLE: 1800},
)
register_dataset(
    "gauss2d",
    summary="2-D toy of the paper's Figure 2: 3 Gaussians + uniform outliers (for `oodbench plot boundary`)",
)(GAUSS2D_SPEC)
