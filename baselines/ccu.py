"""CCU: certified certain uncertainty (Meinke & Hein, ICLR 2020; SPEC section 4 'CCU in detail').

The classifier is combined with two Gaussian mixtures in the PCA metric of the pixels, p_in(x) and p_out(x)
(means in pixel space, distances after `PCAWhitening`), into the doubly robust model (lambda = 1, p(in) = p(out) = 1/2):

    DR(y | x) = (softmax_y(f(x)) p_in(x) + p_out(x) / K) / (p_in(x) + p_out(x))

Far from the training data p_out dominates and the confidence provably tends to 1/K.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from oodbench.data import random_crop_flip
from oodbench.detector import Detector, Stage, msp, oe_loss
from oodbench.errors import ConfigError
from oodbench.registry import register_detector
from oodbench.seeding import derive_seed


class PCAWhitening(nn.Module):
    """x -> (x - mean) V / sqrt(s) over flattened pixels: the released `PCAMetric(X, min_sv_factor=1e6)`.

    V holds the principal directions and s the singular values of the centred data matrix (scikit-learn's
    `pca.singular_values_`), floored at s_max / 1e6 *before* the square root; the coordinates are divided by
    sqrt(s), not by s (so this is not a full whitening, whose divisor would be s / sqrt(N - 1)). Computed by an
    eigen-decomposition of X^T X (s = sqrt of its eigenvalues), so every direction is kept even when N < D (the
    floor then applies); for N >= D this is scikit-learn's PCA up to the signs of the directions, which no
    distance sees. The released code does not centre (x V / sqrt(s)); the mean cancels in every distance."""

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
        self.scale.copy_(singular.sqrt().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1) - self.mean) @ self.components) / self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel-space points of whitened coordinates (V is orthogonal): (z * sqrt(s)) V^T + mean."""
        return (z * self.scale) @ self.components.T + self.mean


class _UniformWeightEM(GaussianMixture):
    """scikit-learn's EM with the weights held uniform, as the released code's `mixture.GMM(params='mc')`
    (means and covariances updated, weights not)."""

    def _m_step(self, X, log_resp, *args, **kwargs):
        super()._m_step(X, log_resp, *args, **kwargs)
        self.weights_ = np.full(self.n_components, 1.0 / self.n_components)


class SphericalGMM(nn.Module):
    """A mixture of spherical Gaussians in the whitened metric with uniform, frozen weights. The means live in
    pixel space and are trained there (released `train_ccu.py`), so one SGD step moves a whitened mean
    coordinate i by lr / s_i; the log-variances are trained too."""

    def __init__(self, components: int, dim: int):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(components, dim))
        self.log_var = nn.Parameter(torch.zeros(components))

    @torch.no_grad()
    def fit(self, z: torch.Tensor, seed: int, to_pixels=None) -> None:
        """EM on whitened points `z` (scikit-learn, spherical, k-means start, covariance floor 1e-3 and 100
        iterations as the released `mixture.GMM`, weights uniform); every variance then set to the mean
        variance (SPEC), and the means mapped to pixel space by `to_pixels` (the whitening's inverse)."""
        k = self.means.shape[0]
        points = z.detach().double().cpu().numpy()
        if len(points) < k:  # fewer points than components: repeat points
            points = points[np.arange(k) % len(points)]
        em = _UniformWeightEM(
            n_components=k,
            covariance_type="spherical",
            reg_covar=1e-3,
            max_iter=100,
            tol=1e-3,
            weights_init=np.full(k, 1.0 / k),
            random_state=seed % (2**32),
        )
        with warnings.catch_warnings():  # non-convergence within 100 iterations is the released behaviour
            warnings.simplefilter("ignore", ConvergenceWarning)
            em.fit(points)
        centres = torch.as_tensor(em.means_, dtype=z.dtype, device=z.device)
        self.means.copy_(to_pixels(centres) if to_pixels is not None else centres)
        self.log_var.fill_(float(np.log(np.mean(em.covariances_))))

    def log_density(self, z: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k [-log K - d/2 log(2 pi var_k) - |z - c_k|^2 / (2 var_k)]  ([B]), with `centres`
        the whitened means (the released `GMM.forward` up to the constant 1/2 sum log s, which cancels in DR)."""
        d = z.shape[1]
        sq = (z * z).sum(1, keepdim=True) - 2 * z @ centres.T + (centres * centres).sum(1)[None]
        log_comp = (
            -0.5 * d * (math.log(2 * math.pi) + self.log_var)[None] - 0.5 * sq.clamp_min(0) / self.log_var.exp()[None]
        )
        return torch.logsumexp(log_comp, dim=1) - math.log(self.means.shape[0])


def leading_aux_images(aux, count: int) -> torch.Tensor:
    """The first `count` images of the auxiliary file in file order (uint8 [n, 3, S, S]): the reserved validation
    images (TinyImages indices 0..9,999 without CIFAR duplicates) followed by the pool's first positions, as the
    released code's unshuffled TinyImages loader reads them for the out-mixture (indices 0..20,049)."""
    validation = aux.validation()
    head = validation.images[:count] if validation is not None else torch.zeros(0, dtype=torch.uint8)
    rest = min(count - len(head), len(aux))
    tail = aux.get(np.arange(rest, dtype=np.int64))
    return torch.cat([head, tail]) if len(head) else tail


OUT_FITS = ("uniform", "first")


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

    @torch.no_grad()
    def fit_mixtures(self, x_in: torch.Tensor, x_out: torch.Tensor, seed: int) -> None:
        """The whitening on the in-dist images, then both mixtures by EM (released `gen_gmm`): [N, D] pixels."""
        self.whiten.fit(x_in)
        self.gmm_in.fit(self.whiten(x_in), seed, self.whiten.inverse)
        self.gmm_out.fit(self.whiten(x_out), seed + 1, self.whiten.inverse)

    def densities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.whiten(x)
        log_p_in = self.gmm_in.log_density(z, self.whiten(self.gmm_in.means))
        return log_p_in, self.gmm_out.log_density(z, self.whiten(self.gmm_out.means))

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
    fitted by EM on the augmented training set and on `out_fit_images` augmented auxiliary images; mixture lr
    1e-5, no decay.

    `out_fit`: which auxiliary images the out-mixture is fitted on. "first" (atom-code): the first 20,050 of the
    file (TinyImages indices 0..20,049, CIFAR duplicates skipped; the released `out_loader` without shuffling);
    "uniform" (paper): a uniform draw from the training pool, since the paper's protocol draws auxiliary images
    uniformly and reserves TinyImages indices 0..9,999 for validation. The EM fit and the pixel-space means are
    the released code's in every protocol (Meinke & Hein's model; the paper states no other)."""

    in_batch: int = 64
    out_batch: int = 50
    components: int | None = None
    out_fit_images: int = 20050
    out_fit: str = "uniform"  # "uniform" | "first" (the atom-code preset; --switch ccu_out_fit)
    mixture_lr: float = 1e-5
    base_msp: bool = False  # score the base network's MSP, as the released code does (the atom-code protocol)


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

    order = 70  # position in the paper's Table 1
    uses_aux = True
    training_version = 2  # 2: sqrt(s) whitening, EM mixtures, pixel-space means (issue 12)
    Config = CCUConfig

    @property
    def score_bounds(self) -> tuple[float, float]:
        """The max softmax lies in [1/K, 1] (1/K: uniform, where its gradient vanishes)."""
        return (1.0 / self.num_classes, 1.0)

    @classmethod
    def resolve_defaults(cls, config, ctx):
        if config.components is None:
            config.components = ctx.profile.gmm_components
        return config

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        if self.config.out_fit not in OUT_FITS:
            raise ConfigError(
                f"unknown CCU out-mixture data '{self.config.out_fit}' "
                f"(ccu.out_fit / --switch ccu_out_fit: {', '.join(OUT_FITS)})"
            )
        self.components = self.config.components or 100

    def build_model(self, ctx, base):
        return CCUNet(base, self.components)

    def training_warnings(self, ctx, train) -> list[str]:
        """The whitening needs more training images than pixels: with N <= D, D - N + 1 directions have zero
        variance and are floored at s_max / 1e6, so an unseen image's log p_in falls by ~1e6 against p_out,
        DR = 1/K everywhere and eq. 68 gives the base network no gradient (the built-in `shapes`: N = 1,300,
        D = 3,072: every score 0.1, in-dist accuracy 10 %, flag `ties`)."""
        n, dim = len(train.images), int(np.prod(train.images.shape[1:]))
        if n > dim:
            return []
        return [
            f"CCU's Gaussian mixtures live in pixel space ({dim} dimensions) and {n} training images do not span "
            f"it: every unseen image gets p_in << p_out, so DR(y|x) = 1/K and the score is constant (expect a "
            f"cell flagged 'ties'); CCU needs more training images than pixels (CIFAR: 50,000 > 3,072)"
        ]

    def initialise(self, model: CCUNet, ctx, train, aux, device) -> None:
        """Fit the whitening and both mixtures before the first epoch (not when resuming)."""
        seed = derive_seed("ccu-init", train.fingerprint())
        generator = torch.Generator(device="cpu").manual_seed(seed)
        in_images = train.images
        if ctx.in_dist.augment:
            in_images = random_crop_flip(in_images, size=32, padding=4, generator=generator)
        x_in = in_images.to(device).float().div(255).flatten(1)
        if self.config.out_fit == "first":
            raw_out = leading_aux_images(aux, self.config.out_fit_images)
        else:
            rng = np.random.default_rng(seed % (2**32))
            count = min(self.config.out_fit_images, len(aux))
            raw_out = aux.get(np.sort(rng.choice(len(aux), count, replace=False)))
        out_images = random_crop_flip(raw_out, size=32, padding=4, generator=generator)
        x_out = out_images.to(device).float().div(255).flatten(1)
        model.fit_mixtures(x_in, x_out, seed)
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
