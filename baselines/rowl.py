"""ROWL: robust open-world learning with a background class (Sehwag et al., 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from attacks.pgd import pgd_linf
from oodbench.data.augment import center_crop
from oodbench.data.base import ImageSet
from oodbench.detector import Detector, Stage
from oodbench.errors import ConfigError
from oodbench.registry import register_detector
from oodbench.seeding import numpy_rng

TRAIN_ATTACKS = ("pgd", "released")


@dataclass
class ROWLConfig:
    """A fixed outlier class of `outliers` auxiliary images (None: 5,000 / 500 / 7,325 for CIFAR-10 / CIFAR-100 /
    SVHN), mixed into the training set; batch 128; loss CE(nat) + lambda * CE(adv) (SPEC section 4).

    `train_attack`: "pgd" attacks every image with targeted PGD (the paper); "released" reproduces the released
    `LinfPGDAttack(targeted=True, elementwise_best=True)`, whose best-point record starts from the untargeted
    CE of the clean input (>= 0) and is compared with the targeted -CE (<= 0): no iterate ever replaces it, so the
    clean image is returned and the loss is CE(nat) + lambda * CE(nat) (SPEC section 4, measured on the code)."""

    outliers: int | None = None
    batch: int = 128
    lam: float = 1.0
    train_attack: str = "pgd"  # "pgd" | "released" (the atom-code preset; --switch rowl_train_attack)

    #: the outlier class's size per in-distribution set (SPEC section 4; the built-in digits: ~1/10 of its
    #: training set, as CIFAR-10's 5,000 for 50,000); any other set: a tenth of its training set
    OUTLIERS_PER_DATASET: ClassVar[dict[str, int]] = {"cifar10": 5000, "cifar100": 500, "svhn": 7325, "digits": 130}


class RetargetingObjective:
    """Targeted PGD objective whose target is redrawn uniformly among the K classes of K+1 other than the true
    label at every call (every PGD step): maximise log softmax_target."""

    def __init__(self, model, labels: torch.Tensor, num_outputs: int):
        self.model, self.labels, self.num_outputs = model, labels, num_outputs

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        offset = torch.randint(1, self.num_outputs, self.labels.shape, device=self.labels.device)
        targets = (self.labels + offset) % self.num_outputs  # uniform over the other classes
        return -F.cross_entropy(self.model(x), targets, reduction="none")


@register_detector(
    "rowl", summary="background class + targeted adversarial training, binary decision (Sehwag et al. 2019)"
)
class ROWL(Detector):
    """Deployed score: 0 if argmax over K+1 is an in-dist class, else -1, with the fixed threshold -0.5 (SPEC
    section 1); search score -softmax_{K+1}; attack (eq. 71) -log F_{K+1}; accuracy over all K+1 outputs."""

    order = 80  # position in the paper's Table 1
    score_bounds = (-1.0, 0.0)
    extra_outputs = 1
    uses_aux = True
    fixed_threshold = -0.5
    Config = ROWLConfig

    @classmethod
    def resolve_defaults(cls, config, ctx):
        if config.outliers is None:
            default = max(1, len(ctx.in_dist.train) // 10)
            config.outliers = config.OUTLIERS_PER_DATASET.get(ctx.in_dist.name, default)
        return config

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        if self.config.train_attack not in TRAIN_ATTACKS:
            raise ConfigError(
                f"unknown ROWL training attack '{self.config.train_attack}' "
                f"(rowl.train_attack / --switch rowl_train_attack: {', '.join(TRAIN_ATTACKS)})"
            )
        self.train_pgd = None

    def training_set(self, ctx, train):
        """The in-dist training set plus a fixed outlier class (label K) drawn once from the pool."""
        count = self.config.outliers or max(1, len(train) // 10)
        rng = numpy_rng("rowl-outliers", train.fingerprint())
        positions = np.sort(rng.choice(len(ctx.aux), size=min(count, len(ctx.aux)), replace=False))
        outliers = center_crop(ctx.aux.get(positions), train.images.shape[-1])  # ImageNet-RC: 64 -> 32
        labels = torch.full((len(outliers),), self.num_classes, dtype=torch.long)
        return ImageSet(
            torch.cat([train.images, outliers.contiguous()]),
            torch.cat([train.labels, labels]),
            name=f"{train.name}+rowl",
            source=train.source,
        )

    def stages(self, ctx):
        self.train_pgd = ctx.profile.train_pgd
        epochs, milestones = ctx.profile.schedule(ctx.in_dist.schedule)
        return [Stage("rowl", epochs, milestones, self.config.batch, self.loss)]

    def adversarial_batch(self, model, x, y):
        """The training attack's output (see `ROWLConfig.train_attack`)."""
        if self.config.train_attack == "released":
            return x  # the released attack's best point is always the clean start
        objective = RetargetingObjective(model, y, self.head_size)
        x_adv, _ = pgd_linf(objective, x, self.train_pgd, model=model, check=False)
        return x_adv

    def loss(self, model, x, y, x_out):
        x_adv = self.adversarial_batch(model, x, y)
        logits = model(torch.cat([x, x_adv]))
        n = len(x)
        return F.cross_entropy(logits[:n], y) + self.config.lam * F.cross_entropy(logits[n:], y)

    def score_logits(self, logits):
        return -(logits.argmax(dim=1) == self.num_classes).float()

    def predict_logits(self, logits):
        return logits.argmax(dim=1)  # a rejected in-dist image counts as misclassified

    def search_score(self, model, x):
        with torch.no_grad():
            return -F.softmax(model(x).float(), dim=1)[:, self.num_classes]

    def attack_objective(self, model, x):
        logits = model(x)
        return torch.logsumexp(logits, dim=1) - logits[:, self.num_classes]

    def adaptive_objective(self, model, x):
        """Margin of the decision: max in-dist logit minus the background logit (> 0 means accepted)."""
        logits = model(x)
        return logits[:, : self.num_classes].max(dim=1).values - logits[:, self.num_classes]
