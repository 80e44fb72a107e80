"""CCU: certified certain uncertainty (Meinke & Hein, ICLR 2020; SPEC section 4 'CCU in detail').

The classifier is combined with two Gaussian mixtures on whitened pixels, p_in(x) and p_out(x), into the
doubly robust model (lambda = 1, p(in) = p(out) = 1/2):

    DR(y | x) = (softmax_y(f(x)) p_in(x) + p_out(x) / K) / (p_in(x) + p_out(x))

Far from the training data p_out dominates and the confidence provably tends to 1/K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import derive_seed
from oodbench.data import random_crop_flip
from oodbench.detector import Detector, Stage, msp, oe_loss
from oodbench.registry import register_detector


class PCAWhitening(nn.Module):
    """x -> (x - mean) V / s over flattened pixels, singular values floored at s_max / 1e6 (the released
    code's `PCAMetric`). Eigen-decomposition of the pixel covariance, so the shapes do not depend on N."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.eye(dim))
        self.register_buffer("scale", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, floor: float = 1e6) -> None:
        x = x.double()
        mean = x.mean(dim=0)
        centred = x - mean
        eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred)
        singular = eigenvalues.clamp_min(0).sqrt()
        singular = torch.clamp(singular, min=float(singular.max()) / floor)
        self.mean.copy_(mean.float())
        self.components.copy_(vectors.float())
        self.scale.copy_(singular.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1) - self.mean) @ self.components) / self.scale


class SphericalGMM(nn.Module):
    """A mixture of spherical Gaussians with uniform, frozen weights; means and log-variances are trained."""

    def __init__(self, components: int, dim: int):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(components, dim))
        self.log_var = nn.Parameter(torch.zeros(components))

    @torch.no_grad()
    def fit(self, z: torch.Tensor, seed: int, iterations: int = 20) -> None:
        """k-means (Lloyd) initialisation; every variance then set to the mean variance (SPEC)."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        k = self.means.shape[0]
        centres = z[torch.randperm(len(z), generator=generator)[:k].to(z.device)].clone()
        if len(centres) < k:  # fewer points than components: repeat points
            centres = centres[torch.arange(k, device=z.device) % len(centres)]
        for _ in range(iterations):
            assign = torch.cdist(z, centres).argmin(dim=1)
            counts = torch.bincount(assign, minlength=k).to(z.dtype)
            sums = torch.zeros_like(centres).index_add_(0, assign, z)
            filled = counts > 0  # an empty cluster keeps its centre
            centres[filled] = sums[filled] / counts[filled, None]
        assign = torch.cdist(z, centres).argmin(dim=1)
        sq = ((z - centres[assign]) ** 2).sum(dim=1) / z.shape[1]
        counts = torch.bincount(assign, minlength=k).to(z.dtype)
        per_component = torch.zeros(k, dtype=z.dtype, device=z.device).index_add_(0, assign, sq)
        filled = counts > 0
        variance = per_component[filled] / counts[filled]
        self.means.copy_(centres)
        self.log_var.fill_(float(torch.log(variance.mean().clamp_min(1e-8))))

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k [-log K - d/2 log(2 pi var_k) - |z - m_k|^2 / (2 var_k)]  ([B])."""
        d = z.shape[1]
        sq = (z * z).sum(1, keepdim=True) - 2 * z @ self.means.T + (self.means * self.means).sum(1)[None]
        log_comp = (
            -0.5 * d * (math.log(2 * math.pi) + self.log_var)[None] - 0.5 * sq.clamp_min(0) / self.log_var.exp()[None]
        )
        return torch.logsumexp(log_comp, dim=1) - math.log(self.means.shape[0])


class CCUNet(nn.Module):
    """The base classifier with its in/out mixtures. `forward` returns log DR(y | x), a valid logit vector
    (its softmax is DR itself), so MSP and eq. 68 apply to the scored model unchanged."""

    def __init__(self, base: nn.Module, components: int, dim: int = 3 * 32 * 32):
        super().__init__()
        self.base = base
        self.whiten = PCAWhitening(dim)
        self.gmm_in = SphericalGMM(components, dim)
        self.gmm_out = SphericalGMM(components, dim)
        self.num_outputs = getattr(base, "num_outputs", None)

    def densities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.whiten(x)
        return self.gmm_in.log_density(z), self.gmm_out.log_density(z)

    def log_dr(self, logits: torch.Tensor, log_p_in: torch.Tensor, log_p_out: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        numerator = torch.logaddexp(
            F.log_softmax(logits, dim=1) + log_p_in[:, None], (log_p_out - math.log(k))[:, None]
        )
        return numerator - torch.logaddexp(log_p_in, log_p_out)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_p_in, log_p_out = self.densities(x)
        return self.log_dr(self.base(x), log_p_in, log_p_out)

    def forward_features(self, x: torch.Tensor):
        return self.base.forward_features(x)


@dataclass
class CCUConfig:
    """Batch 64 in-dist / 50 outliers (code); mixtures of `components` (None: the profile's, 100 at paper scale)
    fitted on the augmented training set and `out_fit_images` auxiliary images; mixture lr 1e-5, no decay."""

    in_batch: int = 64
    out_batch: int = 50
    components: int | None = None
    out_fit_images: int = 20050
    mixture_lr: float = 1e-5
    base_msp: bool | None = None  # None: from the protocol (atom-code scores the base network's MSP)


@register_detector(
    "ccu",
    score_differs_by_protocol=True,
    summary="classifier + in/out Gaussian mixtures, doubly robust confidence (Meinke & Hein 2020)",
)
class CCU(Detector):
    """Loss (SPEC): 1/2 [NLL_DR(in) - mean log(p_in/2 + p_out/2)(x_in)]
    + 1/2 [-mean_{x,y} log DR(y | x_out) - mean log(p_in/2 + p_out/2)(x_out)]; after every step the
    out-log-variance is clamped to >= max(in-log-variance) + log 4. Score: max_y DR(y | x) (atom-code: the base
    network's MSP). Attack: eq. 68 on the scored model."""

    name = "ccu"
    uses_aux = True
    Config = CCUConfig

    @property
    def score_bounds(self) -> tuple[float, float]:
        """The max softmax lies in [1/K, 1] (1/K: uniform, where its gradient vanishes)."""
        return (1.0 / self.num_classes, 1.0)

    @classmethod
    def resolve_defaults(cls, config, ctx):
        if config.components is None:
            config.components = ctx.profile.gmm_components
        if config.base_msp is None:
            config.base_msp = ctx.protocol.ccu_score == "base_msp"
        return config

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.components = self.config.components or 100

    def build_model(self, ctx, base):
        return CCUNet(base, self.components)

    def initialise(self, model: CCUNet, ctx, train, aux, device) -> None:
        """Fit the whitening and both mixtures before the first epoch (not when resuming)."""
        seed = derive_seed("ccu-init", train.fingerprint())
        generator = torch.Generator(device="cpu").manual_seed(seed)
        in_images = train.images
        if ctx.in_dist.augment:
            in_images = random_crop_flip(in_images, size=32, padding=4, generator=generator)
        x_in = in_images.to(device).float().div(255).flatten(1)
        rng = np.random.default_rng(seed % (2**32))
        count = min(self.config.out_fit_images, len(aux))
        out_images = random_crop_flip(
            aux.get(np.sort(rng.choice(len(aux), count, replace=False))), size=32, padding=4, generator=generator
        )
        x_out = out_images.to(device).float().div(255).flatten(1)
        model.whiten.fit(x_in)
        with torch.no_grad():
            model.gmm_in.fit(model.whiten(x_in), seed)
            model.gmm_out.fit(model.whiten(x_out), seed + 1)
        self.after_step(model)

    def stages(self, ctx):
        epochs, milestones = ctx.profile.schedule(ctx.in_dist.schedule)
        c = self.config
        return [Stage("ccu", epochs, milestones, c.in_batch, self.loss, out_batch=c.out_batch, outliers="uniform")]

    def param_groups(self, model, lr, weight_decay):
        mixture = list(model.gmm_in.parameters()) + list(model.gmm_out.parameters())
        ids = {id(p) for p in mixture}
        base = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
        return [
            {"params": base, "lr": lr, "weight_decay": weight_decay},
            {"params": mixture, "lr": self.config.mixture_lr, "weight_decay": 0.0},
        ]

    def after_step(self, model):
        with torch.no_grad():
            floor = model.gmm_in.log_var.max() + math.log(4.0)
            model.gmm_out.log_var.clamp_(min=float(floor))

    def loss(self, model: CCUNet, x_in, y_in, x_out):
        x = torch.cat([x_in, x_out])
        logits = model.base(x)  # one pass over in + out
        log_p_in, log_p_out = model.densities(x)
        log_dr = model.log_dr(logits, log_p_in, log_p_out)
        log_mix = torch.logaddexp(log_p_in, log_p_out) - math.log(2.0)  # log(p_in/2 + p_out/2)
        n = len(x_in)
        loss_in = F.nll_loss(log_dr[:n], y_in) - log_mix[:n].mean()
        loss_out = -log_dr[n:].mean() - log_mix[n:].mean()  # mean over outliers and all K classes
        return 0.5 * (loss_in + loss_out)

    def _scored(self, model: CCUNet, x):
        return model.base(x) if self.config.base_msp else model(x)

    def score(self, model, x):
        with torch.no_grad():
            return msp(self._scored(model, x))

    def score_and_predict(self, model, x):
        with torch.no_grad():
            logits = self._scored(model, x)
            return msp(logits), logits.argmax(dim=1)

    def attack_objective(self, model, x):
        return oe_loss(self._scored(model, x))

    def adaptive_objective(self, model: CCUNet, x):
        """The deployed confidence through the mixtures (`strong` protocol): log p_in(x) - log p_out(x) plus the
        base network's log max softmax. Where p_out dominates, DR is uniform up to float32 rounding and eq. 68's
        gradient vanishes; raising the log-density ratio is then the only way to raise the confidence."""
        if self.config.base_msp:
            return torch.log_softmax(model.base(x), dim=1).max(dim=1).values
        log_p_in, log_p_out = model.densities(x)
        return log_p_in - log_p_out + torch.log_softmax(model.base(x), dim=1).max(dim=1).values
