"""ATOM: adversarial training with informative outlier mining (Chen et al., ECML PKDD 2021; paper eq. 1,
Algorithm 1), and the AT ablation of Table 2 (the same objective with randomly sampled outliers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from attacks.pgd import pgd_linf
from oodbench.detector import Detector, Mining, Stage
from oodbench.registry import register_detector


@dataclass
class ATOMConfig:
    """q per data set (None: 0.125 CIFAR-10, 0.5 CIFAR-100, 0 SVHN), lambda 1, batches 64 / 128,
    n = 2 |train| outliers per epoch (None), N = 4 n candidates (None), half of each outlier batch adversarial."""

    #: the paper's mining quantile per in-distribution set (SPEC section 5); any other set: CIFAR-10's
    Q_PER_DATASET: ClassVar[dict[str, float]] = {"cifar10": 0.125, "cifar100": 0.5, "svhn": 0.0}
    DEFAULT_Q: ClassVar[float] = 0.125

    q: float | None = None
    lam: float = 1.0
    in_batch: int = 64
    out_batch: int = 128
    n: int | None = None
    candidates: int | None = None
    adv_fraction: float = 0.5


def ood_class_objective(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """Paper eq. 71: -log F_{K+1}(x) = logsumexp(z) - z_{K+1}, maximised by the attacks."""
    logits = model(x)
    return torch.logsumexp(logits, dim=1) - logits[:, k]


class KPlusOne(Detector):
    """Shared parts of the (K+1)-way detectors: score -softmax_{K+1}, attack eq. 71."""

    score_bounds = (-1.0, 0.0)
    extra_outputs = 1
    uses_aux = True

    def score_logits(self, logits):
        return -F.softmax(logits.float(), dim=1)[:, self.num_classes]

    def attack_objective(self, model, x):
        return ood_class_objective(model, x, self.num_classes)

    def margin_objective(self, model, x):
        logits = model(x)
        return logits[:, : self.num_classes].max(dim=1).values - logits[:, self.num_classes]


@register_detector(
    "ntom", summary="natural training with informative outlier mining (ATOM without adversarial training)"
)
class NTOM(KPlusOne):
    """Loss (paper eq. 4): CE(in, y) + lambda * CE(out, K+1) on mined outliers."""

    order = 90  # position in the paper's Table 1
    Config = ATOMConfig
    outlier_stream = "mined"
    #: q by auxiliary pool where the paper departs from the in-dist set's q (`--set NAME.q=V` still wins)
    q_by_aux: ClassVar[dict[str, float]] = {}

    @classmethod
    def resolve_defaults(cls, config, ctx):
        if config.q is None:
            aux_name = getattr(getattr(ctx, "aux", None), "name", None)
            config.q = cls.q_by_aux.get(aux_name, config.Q_PER_DATASET.get(ctx.in_dist.name, config.DEFAULT_Q))
        return config

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.train_pgd = None
        if self.config.q is None:
            self.config.q = 0.0

    def stages(self, ctx):
        self.train_pgd = ctx.profile.train_pgd
        epochs, milestones = ctx.profile.schedule(ctx.in_dist.schedule)
        c = self.config
        return [
            Stage(
                self.name,
                epochs,
                milestones,
                c.in_batch,
                self.loss,
                out_batch=c.out_batch,
                outliers=self.outlier_stream,
                mining=Mining(q=c.q, n=c.n, candidates=c.candidates),
            )
        ]

    def adversarial_outliers(self, model, x_out: torch.Tensor) -> torch.Tensor:
        return x_out

    def loss(self, model, x_in, y_in, x_out):
        x_out = self.adversarial_outliers(model, x_out)
        logits = model(torch.cat([x_in, x_out]))  # one pass over in + clean + adversarial outliers
        n = len(x_in)
        ood_label = torch.full((len(x_out),), self.num_classes, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits[:n], y_in) + self.config.lam * F.cross_entropy(logits[n:], ood_label)


@register_detector("atom", summary="adversarial training with informative outlier mining (Chen et al. 2021)")
class ATOM(NTOM):
    """Loss (paper eq. 1): CE(in, y) + lambda * CE(out, K+1), where the second half of each mined outlier batch
    is replaced by PGD points maximising CE(., K+1) (eps 8/255, 5 x 2/255, random start, model in eval mode)."""

    order = 100  # position in the paper's Table 1
    q_by_aux = {"imagenet_rc": 0.0}  # Table 8: with ImageNet-RC as the auxiliary set ATOM uses q = 0 (SPEC 5)

    def adversarial_outliers(self, model, x_out):
        split = len(x_out) - int(len(x_out) * self.config.adv_fraction)
        x_adv, _ = pgd_linf(
            lambda z: ood_class_objective(model, z, self.num_classes),
            x_out[split:],
            self.train_pgd,
            model=model,
            check=False,
        )
        return torch.cat([x_out[:split], x_adv])


@register_detector("at", summary="ablation (Table 2): ATOM's objective with randomly sampled outliers", ablation=True)
class AT(ATOM):
    """ATOM's loss and batches with n uniformly random auxiliary images per epoch (no mining, q unused)."""

    order = 110  # after ATOM: the ablation of Table 2
    outlier_stream = "uniform"
