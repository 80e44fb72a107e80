"""ODIN: temperature scaling and input preprocessing (Liang et al., ICLR 2018; SPEC section 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.detector import Detector, oe_loss
from oodbench.errors import ConfigError
from oodbench.metrics import fpr_at_tpr
from oodbench.registry import register_detector
from oodbench.scoring import map_batches

#: The paper's magnitudes (Appendix B.3), used by the `atom-code` protocol: (arch, in-dist) -> eta
PUBLISHED_MAGNITUDES = {
    ("densenet100", "cifar10"): 0.0016,
    ("densenet100", "cifar100"): 0.0012,
    ("densenet100", "svhn"): 0.0006,
    ("wrn40_4", "cifar10"): 0.0006,
    ("wrn40_4", "cifar100"): 0.0012,
    ("wrn40_4", "svhn"): 0.0002,
}


def ge_sign(grad: torch.Tensor) -> torch.Tensor:
    """sign with a zero gradient counted as +1: the released code's `(torch.ge(grad, 0) - 0.5) * 2`."""
    return torch.ge(grad, 0).to(grad.dtype) * 2.0 - 1.0


@dataclass
class ODINConfig:
    """T = 1000; magnitude None = tuned on the grid 0..0.004 step 0.0002, or with `magnitude_source="published"`
    (the atom-code protocol) the paper's value where one is published for the architecture and in-dist set."""

    temperature: float = 1000.0
    magnitude: float | None = None
    magnitude_source: str = "tuned"  # "tuned" | "published"
    grid_max: float = 0.004
    grid_step: float = 0.0002


@register_detector("odin", summary="temperature scaling + input preprocessing (Liang et al. 2018)")
class ODIN(Detector):
    """Score: max softmax(f(x~)/T), x~ = x - eta * sign(grad_x CE(f(x)/T, argmax)); no clamp, [0, 1] pixels.

    Attack (paper): eq. 68 on the raw logits, which ignores T and the preprocessing (not adaptive).
    `adaptive_objective` attacks the deployed score through both (straight-through sign).
    """

    order = 20  # position in the paper's Table 1
    recipe = "vanilla"
    tunes_on_aux = True
    Config = ODINConfig

    @property
    def score_bounds(self) -> tuple[float, float]:
        """The max softmax lies in [1/K, 1] (1/K: uniform, where its gradient vanishes)."""
        return (1.0 / self.num_classes, 1.0)

    @classmethod
    def resolve_defaults(cls, config, ctx):
        if config.magnitude_source not in ("tuned", "published"):
            raise ConfigError(f"odin.magnitude_source must be 'tuned' or 'published', not {config.magnitude_source!r}")
        if config.magnitude is None and config.magnitude_source == "published":
            published = PUBLISHED_MAGNITUDES.get((ctx.arch, ctx.in_dist.name))
            if published is not None:
                config.magnitude = published
        return config

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        self.magnitude = self.config.magnitude
        self.tuning: dict[str, float] = {}

    def _preprocess(self, model, x, magnitude: float, straight_through: bool = False) -> torch.Tensor:
        temperature = self.config.temperature
        with torch.enable_grad():
            x_in = x if straight_through else x.detach().requires_grad_(True)
            logits = model(x_in)
            loss = F.cross_entropy(logits / temperature, logits.argmax(dim=1))
            (grad,) = torch.autograd.grad(loss, x_in, create_graph=False)
        # x - eta * sign(grad): with straight_through the sign is a constant, gradients flow through x
        return x - magnitude * ge_sign(grad.detach())

    def _score_at(self, model, x, magnitude: float) -> torch.Tensor:
        x_tilde = self._preprocess(model, x, magnitude) if magnitude > 0 else x
        with torch.no_grad():
            return F.softmax(model(x_tilde) / self.config.temperature, dim=1).max(dim=1).values.float()

    def fit(self, model, data):
        if self.magnitude is not None:
            return
        if data.tune_aux is None:
            from oodbench.errors import ConfigError

            raise ConfigError(
                "odin: tuning the preprocessing magnitude needs auxiliary images; pass --aux NAME, or fix the "
                "magnitude with --set odin.magnitude=0.0016 (or use --protocol atom-code for the published values)"
            )
        model.eval()
        grid = np.round(np.arange(0.0, self.config.grid_max + 1e-12, self.config.grid_step), 6)
        best = (np.inf, 0.0)
        for magnitude in grid:
            s_in = _batched(lambda x, m=magnitude: self._score_at(model, x, m), data.tune_in.images, data)
            s_out = _batched(lambda x, m=magnitude: self._score_at(model, x, m), data.tune_aux.images, data)
            fpr = fpr_at_tpr(s_in, s_out)
            self.tuning[f"{magnitude:.4f}"] = fpr
            if fpr < best[0]:  # strict: the first best magnitude of the grid is kept
                best = (fpr, float(magnitude))
        self.magnitude = best[1]

    def is_fitted(self):
        """A magnitude is known: tuned by `fit`, loaded, or fixed by the Config (`odin.magnitude`, or the published
        value under `magnitude_source="published"`)."""
        return self.magnitude is not None

    def fitted_state(self):
        return {"magnitude": float(self.magnitude if self.magnitude is not None else -1.0)}

    def load_fitted_state(self, state):
        self.magnitude = float(state["magnitude"])

    def fit_info(self):
        return {"magnitude": self.magnitude, "tuning_fpr": self.tuning}

    def score(self, model, x):
        return self._score_at(model, x, float(self.magnitude or 0.0))

    def score_and_predict(self, model, x):
        with torch.no_grad():
            predictions = model(x)[:, : self.num_classes].argmax(dim=1)
        return self.score(model, x), predictions

    def attack_objective(self, model, x):
        return oe_loss(model(x))

    def adaptive_objective(self, model, x):
        """log of the deployed score, through the preprocessing (straight-through) and T."""
        x_tilde = self._preprocess(model, x, float(self.magnitude or 0.0), straight_through=True)
        logits = model(x_tilde) / self.config.temperature
        return torch.log_softmax(logits, dim=1).max(dim=1).values


def _batched(fn, images: torch.Tensor, data) -> torch.Tensor:
    return map_batches(lambda x: fn(x).cpu(), images, data.batch_size, device=data.device)
