"""The ATOM paper's conceptual example (section 3, Figure 2): class-conditional Gaussians in 2-D.

In-distribution data are K class-conditional isotropic Gaussians; the auxiliary outliers are drawn uniformly
from a box around them, outside the support of the in-distribution ("outlier training data is sampled from a
uniform distribution from outside the support of in-distribution"). A (K+1)-way MLP (`mlp2d`) is trained as an
OOD detector with

- NTOM's objective (paper eq. 4): CE(in, y) + lambda * CE(out, K+1), or
- ATOM's objective (paper eq. 1): the same, with the second half of every outlier batch replaced by L-inf PGD
  points that maximise CE(., K+1) (continuous PGD, `pgd_points`: the image PGD of `attacks.pgd` lives on the
  8-bit grid of [0, 1] pixels, which 2-D coordinates are not),

either **with** informative outlier mining (Algorithm 1: every epoch, score N random candidates with the current
model, keep `sorted[qN : qN + n]` by OOD score softmax_{K+1}) or **without** (n uniformly random candidates).

The detector G (eq. 2) rejects x when softmax_{K+1}(x) >= gamma. Two thresholds are measured:

- `learned`: gamma = 1/2, the boundary the (K+1)-way classifier learned (the OOD class is at least as likely as
  all K classes together). This is the boundary Figure 2 is about: mining trains on the outliers next to the
  in-distribution, so it closes in on the data (ATOM's objective, seeds 0-7: 15.5-16.9 units^2 instead of
  19.3-21.2, FPR 0-0.1 % instead of 0.04-0.6 %, about half as many outliers accepted after PGD).
- `tpr95`: gamma chosen so that 95 % of held-out in-distribution points are accepted (the benchmark's FPR at
  95 % TPR). In 2-D, with thousands of uniform outliers per epoch, both detectors learn a score that increases
  with the distance from the class means, so this region is close to the smallest region holding 95 % of the
  data (~14.1 units^2) with or without mining; the figure draws it dashed for reference.

    random, mined, data = compare(seed=0)       # both detectors of Figure 2 (ATOM's objective by default)
    mined.learned.area, mined.learned.fpr      # accepted area (units^2), FPR on held-out uniform outliers

The data set is `gauss2d` (`oodbench.data.gauss2d`, registered with role `toy`); `oodbench plot boundary`
(oodbench.tools.plots) draws Figure 2 from this experiment.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.data.gauss2d import (  # noqa: F401  (re-exported: the toy's data live in the data package)
    TOY_ROLE,
    Gauss2d,
    Gauss2dConfig,
    class_means,
    load_gauss2d,
    make_gauss2d,
)
from oodbench.metrics import threshold_at_tpr
from oodbench.mining import mine_outliers, sample_positions

TPR = 0.95
LEARNED_GAMMA = 0.5


# --------------------------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class ToyTrainConfig:
    """Training of the (K+1)-way toy detector. The in-dist batch of 64, n = 2|train|, N = 4n, lambda = 1 and
    ATOM's 5 PGD steps of eps / 4 from a random start mirror the image protocol (SPEC sections 4 and 5);
    eps = 0.3 is 0.6 std of a class, as 8/255 is a small fraction of the pixel range."""

    mining: bool = True  # informative outlier mining (Algorithm 1) or n uniformly random candidates
    adversarial: bool = True  # ATOM (eq. 1) or NTOM (eq. 4)
    epochs: int = 30
    q: float = 0.0  # mining quantile: the toy pool has no near-duplicates of in-distribution data to skip
    n: int | None = None  # outliers per epoch (default 2 |train|)
    candidates: int | None = None  # N (default 4n)
    in_batch: int = 64  # the n outliers are spread over the same number of batches (120 each by default)
    lr: float = 0.01  # Adam, cosine-annealed to 0
    lam: float = 1.0
    eps: float = 0.3  # L-inf radius of training and of the evaluation attack
    pgd_steps: int = 5
    pgd_step: float = 0.075
    adv_fraction: float = 0.5  # the second half of every outlier batch is adversarial (paper section 3.1)


@dataclass
class BoundaryStats:
    """One threshold gamma of G (eq. 2) and what it accepts."""

    gamma: float  # on softmax_{K+1}: x is accepted as in-distribution iff softmax_{K+1}(x) < gamma
    area: float  # accepted area within [-box, box]^2, units^2
    fpr: float  # fraction of held-out uniform outliers accepted
    robust_fpr: float  # the same after L-inf PGD (eps = the training eps) on every held-out outlier


@dataclass
class ToyDetector:
    """A trained toy detector, its two boundaries and what the figure shows."""

    model: torch.nn.Module
    config: ToyTrainConfig
    num_classes: int
    last_outliers: torch.Tensor  # the outliers of the last epoch (mined or random), before PGD
    gamma95: float = float("nan")  # threshold accepting 95 % of held-out in-dist points
    learned: BoundaryStats | None = None  # gamma = 1/2
    tpr95: BoundaryStats | None = None  # gamma = gamma95
    accuracy: float = float("nan")  # held-out in-dist classification accuracy (eq. 3)
    history: list[dict] = field(default_factory=list)

    def ood_score(self, points: torch.Tensor) -> torch.Tensor:
        """softmax_{K+1}(x), the paper's OOD score, float32 [N]."""
        return ood_scores(self.model, points, self.num_classes)

    def accepts(self, points: torch.Tensor, gamma: float = LEARNED_GAMMA) -> torch.Tensor:
        """G(x) = 1 of eq. 2: boolean [N], classified as in-distribution (softmax_{K+1} < gamma)."""
        return self.ood_score(points) < gamma

    def attack(self, points: torch.Tensor, steps: int = 20, seed: int = 0) -> torch.Tensor:
        """The evaluation attack: L-inf PGD (eps of training, `steps` x eps / 8, random start) towards the
        in-distribution, i.e. maximising CE(x', K+1)."""
        gen = torch.Generator().manual_seed(seed)
        eps = self.config.eps
        return pgd_points(self.model, points, self.num_classes, eps, steps, eps / 8, gen)


@torch.no_grad()
def ood_scores(model: torch.nn.Module, points: torch.Tensor, k: int, batch: int = 65_536) -> torch.Tensor:
    """softmax_{K+1} of `points` in eval mode (K = `k` classes; the OOD class is index k)."""
    was_training = model.training
    model.eval()
    out = torch.cat([F.softmax(model(chunk), dim=1)[:, k] for chunk in points.split(batch)])
    model.train(was_training)
    return out


def ood_class_loss(model: torch.nn.Module, points: torch.Tensor, k: int) -> torch.Tensor:
    """CE(x, K+1) = -log softmax_{K+1}(x) per point (the inner objective of eq. 1)."""
    logits = model(points)
    return torch.logsumexp(logits, dim=1) - logits[:, k]


def pgd_points(
    model: torch.nn.Module,
    points: torch.Tensor,
    k: int,
    eps: float,
    steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continuous L-inf PGD on 2-D points maximising CE(x', K+1) (eq. 1's inner max; Madry et al.).

    A uniform random start in the eps-box when `generator` is given, sign steps, projection onto the eps-box
    around the source; per point the highest-loss point seen (the clean one included) is returned, as
    `attacks.pgd` does. Model in eval mode; no [0, 1] clipping (coordinates are not pixels).
    """
    was_training = model.training
    model.eval()
    try:
        best = points.clone()
        with torch.no_grad():
            best_loss = ood_class_loss(model, points, k)
        x = points
        if generator is not None:
            x = points + torch.empty_like(points).uniform_(-eps, eps, generator=generator)
        for step in range(steps + 1):
            x = x.detach().requires_grad_(True)
            loss = ood_class_loss(model, x, k)
            better = loss.detach() > best_loss
            best = torch.where(better[:, None], x.detach(), best)
            best_loss = torch.where(better, loss.detach(), best_loss)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), x)
            x = points + (x.detach() + step_size * grad.sign() - points).clamp(-eps, eps)
    finally:
        model.train(was_training)
    return best.detach()


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the block, then restore the setting. The toy's tensors are tiny
    (batches of ~200 points through a 2-64-64-4 MLP): extra threads only add synchronisation, and on a loaded
    machine OpenMP's spinning made training ~40x slower with 2 threads than with 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cosine_lr(progress: float, base: float) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def select_outliers(
    model: torch.nn.Module, data: Gauss2d, config: ToyTrainConfig, rng: np.random.Generator
) -> torch.Tensor:
    """The epoch's n training outliers. With mining, Algorithm 1 lines 2-4: N uniformly random pool points
    scored by the current model (eval mode), sorted by OOD score, `sorted[qN : qN + n]` kept; without, n
    uniformly random pool points."""
    n = config.n or 2 * len(data.x_train)
    big_n = config.candidates or 4 * n
    if not n <= big_n <= len(data.pool):
        raise ValueError(f"need n <= N <= pool size, got n={n}, N={big_n}, pool={len(data.pool)}")
    if not config.mining:
        return data.pool[torch.from_numpy(sample_positions(len(data.pool), n, "uniform", rng)[0])]
    candidates = data.pool[torch.from_numpy(sample_positions(len(data.pool), big_n, "uniform", rng)[0])]
    return candidates[mine_outliers(ood_scores(model, candidates, data.num_classes), config.q, n)]


@single_thread()
def train_toy_detector(data: Gauss2d, config: ToyTrainConfig | None = None, seed: int = 0) -> ToyDetector:
    """Train the (K+1)-way `mlp2d` on `data` (Algorithm 1 with eq. 1, or eq. 4 when not adversarial; random
    outliers when not mining), then measure it (`measure`). Deterministic given (data, config, seed); the
    global torch RNG is left untouched. A few seconds on one CPU core."""
    from oodbench.models import create_model

    config = config or ToyTrainConfig()
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    k = data.num_classes
    rng = np.random.default_rng([seed, 7])
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same initialisation for the mined and the random detector
        model = create_model("mlp2d", num_outputs=k + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batches = math.ceil(len(data.x_train) / config.in_batch)
    history: list[dict] = []
    outliers = data.pool[:0]
    for epoch in range(config.epochs):
        outliers = select_outliers(model, data, config, rng)  # mining runs before every epoch, epoch 0 included
        in_order = torch.randperm(len(data.x_train), generator=gen).split(config.in_batch)
        out_order = torch.randperm(len(outliers), generator=gen).tensor_split(len(in_order))
        model.train()
        total = 0.0
        for b, (ii, oi) in enumerate(zip(in_order, out_order)):
            x_in, y_in, x_out = data.x_train[ii], data.y_train[ii], outliers[oi]
            if config.adversarial:
                split = len(x_out) - int(len(x_out) * config.adv_fraction)
                x_adv = pgd_points(model, x_out[split:], k, config.eps, config.pgd_steps, config.pgd_step, gen)
                x_out = torch.cat([x_out[:split], x_adv])
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr((epoch + b / batches) / config.epochs, config.lr)
            logits = model(torch.cat([x_in, x_out]))  # one pass over in + clean + adversarial outliers
            ood_label = torch.full((len(x_out),), k, dtype=torch.long)
            n_in = len(x_in)
            loss = F.cross_entropy(logits[:n_in], y_in) + config.lam * F.cross_entropy(logits[n_in:], ood_label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        history.append({"epoch": epoch, "loss": total / batches, "outliers": len(outliers)})
    model.eval()
    return measure(ToyDetector(model, config, k, outliers, history=history), data)


# --------------------------------------------------------------------------------------------------------------
# measurements


def grid(box: float, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(axis [resolution], points [resolution^2, 2]): cell centres of a resolution^2 grid over [-box, box]^2,
    row-major in y (points.view(resolution, resolution, 2)[i, j] = (axis[j], axis[i]))."""
    step = 2 * box / resolution
    axis = torch.linspace(-box + step / 2, box - step / 2, resolution)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    return axis, torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


@single_thread()
def measure(detector: ToyDetector, data: Gauss2d, resolution: int = 400) -> ToyDetector:
    """Fill in the 95 % TPR threshold, both boundaries' area / FPR / FPR under PGD, and the accuracy."""
    k = detector.num_classes
    # oodbench.metrics' threshold on the in-dist score -softmax_{K+1}; accepted iff -score > thr, i.e. score < -thr
    detector.gamma95 = -threshold_at_tpr(-detector.ood_score(data.x_test), TPR)
    box = data.config.box
    _, points = grid(box, resolution)
    grid_scores = detector.ood_score(points)
    test_scores = detector.ood_score(data.ood_test)
    adv_scores = detector.ood_score(detector.attack(data.ood_test))

    def stats(gamma: float) -> BoundaryStats:
        area = float((grid_scores < gamma).float().mean()) * (2 * box) ** 2
        fpr = float((test_scores < gamma).float().mean())
        return BoundaryStats(gamma, area, fpr, float((adv_scores < gamma).float().mean()))

    detector.learned = stats(LEARNED_GAMMA)
    detector.tpr95 = stats(detector.gamma95)
    with torch.no_grad():
        predicted = detector.model(data.x_test)[:, :k].argmax(dim=1)
    detector.accuracy = float((predicted == data.y_test).float().mean())
    return detector


def compare(
    seed: int = 0, config: ToyTrainConfig | None = None, data_config: Gauss2dConfig | None = None
) -> tuple[ToyDetector, ToyDetector, Gauss2d]:
    """(random, mined, data): both detectors of Figure 2 on the same data, from the same initialisation."""
    config = config or ToyTrainConfig()
    data = make_gauss2d(data_config, seed)
    random = train_toy_detector(data, replace(config, mining=False), seed)
    mined = train_toy_detector(data, replace(config, mining=True), seed)
    return random, mined, data
