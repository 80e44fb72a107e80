"""Mahalanobis: class-conditional Gaussians on features + logistic regression (Lee et al., NeurIPS 2018;
SPEC section 4 'Mahalanobis in detail').

Its layers (DESIGN "Bring your own model"): `--set mahalanobis.layers=layer1,layer2` names submodules (as in
`model.named_modules()`) whose outputs are taken by forward hooks; unset, the maps of `model.forward_features`
(our architectures: the paper's four layers), or for a model without that method its penultimate features (the
input of its final nn.Linear, one layer)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV

from baselines.odin import ge_sign
from oodbench.detector import Detector
from oodbench.errors import ConfigError, FeatureError
from oodbench.features import find_modules, named_outputs, penultimate
from oodbench.metrics import fpr_at_tpr
from oodbench.registry import register_detector
from oodbench.scoring import map_batches


@dataclass
class MahalanobisConfig:
    """Magnitude grid in the released order (first best kept); FGSM step of the regression's negatives."""

    magnitudes: tuple[float, ...] = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)
    fgsm_eps: float = 0.05
    magnitude: float | None = None  # fix instead of tuning
    regression: str = "converged"  # "converged" | "released" (the atom-code preset; --switch mahalanobis_regression)
    layers: tuple[str, ...] | None = None  # submodule names; None: forward_features, else the penultimate features


#: LogisticRegressionCV settings per `regression`: "released" is `tune_mahalanobis_hyperparams.py`'s
#: `LogisticRegressionCV(n_jobs=-1)` (scikit-learn defaults: lbfgs, 100 iterations, which may stop before
#: convergence) on float32 layer scores; "converged" lets lbfgs run to 1,000 iterations on float64 scores.
REGRESSIONS = {"converged": ({"max_iter": 1000}, np.float64), "released": ({}, np.float32)}


def fit_regression(features: np.ndarray, targets: np.ndarray, regression: str) -> LogisticRegressionCV:
    """The logistic regression over per-layer scores (Lee et al. 2018), with the settings of `REGRESSIONS`;
    `feature_dtype` on the result says how scores are cast before `predict_proba`."""
    settings, dtype = REGRESSIONS[regression]
    with warnings.catch_warnings():  # scikit-learn's API-transition FutureWarnings; the fit is unchanged
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)  # "released": lbfgs may stop at 100 iterations
        fitted = LogisticRegressionCV(**settings).fit(features.astype(dtype), targets)
    fitted.feature_dtype = dtype
    return fitted


def pooled_features(model, x: torch.Tensor, layers: tuple[str, ...] | None = None) -> list[torch.Tensor]:
    """The Mahalanobis layers, mean-pooled over space: list of [B, C_l], differentiable in `x` under autograd.

    `layers`: the outputs of those submodules (`oodbench.features.named_outputs`). None: the maps of
    `model.forward_features` (our architectures' `(logits, [maps])`), or, for a model without that method, its
    penultimate features (`oodbench.features.penultimate`: the input of its final nn.Linear)."""
    if layers is not None:
        maps = named_outputs(model, x, layers)
    elif hasattr(model, "forward_features"):
        out = model.forward_features(x)
        if not (isinstance(out, tuple | list) and len(out) == 2 and isinstance(out[1], tuple | list)):
            # e.g. a timm model's own forward_features (one un-pooled tensor): unpacking it would split the batch
            raise FeatureError(
                f"{type(model).__name__}.forward_features returns {type(out).__name__}, not (logits, [feature maps]) "
                "as oodbench's architectures do; name the Mahalanobis layers with --set mahalanobis.layers=NAME,..."
            )
        maps = out[1]
    else:
        maps = [penultimate(model, x)[1]]
    for name, m in zip(layers or range(len(maps)), maps):
        if m.ndim not in (2, 4):
            raise FeatureError(
                f"Mahalanobis layer {name!r} gives a {m.ndim}-d output {tuple(m.shape)}; it scores [B, C] features "
                "or [B, C, H, W] maps (mean-pooled): name another layer with --set mahalanobis.layers=NAME,..."
            )
    return [m.mean(dim=(2, 3)) if m.ndim == 4 else m for m in maps]


def gaussian_scores(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """-1/2 (f - mu_c)^T Sigma^-1 (f - mu_c) for every class c: [B, K]."""
    diff = features[:, None, :] - means[None, :, :]
    return -0.5 * torch.einsum("bkc,cd,bkd->bk", diff, precision, diff)


@register_detector("mahalanobis", summary="Mahalanobis distance on 4 layers + logistic regression (Lee et al. 2018)")
class Mahalanobis(Detector):
    """Per layer l (`pooled_features`: the paper's four layers of our architectures, or the Config's `layers`):
    M_l(x) = max_c -1/2 d_c^2 after preprocessing x towards its nearest class (x~ = x - eta * sign(grad), no clamp);
    score = -P(OOD) = -sigmoid(w . M(x~) + b).

    Statistics: class means and one tied covariance per layer from the full training set (no augmentation).
    Regression: 500 in-dist images vs their FGSM(0.05) copies; magnitude chosen on another 500 + 500 by
    lowest FPR@95 (SPEC section 4). Attack (paper eq. 69): -log sigmoid(w . M(x') + b) without preprocessing.
    """

    order = 30  # position in the paper's Table 1
    score_bounds = (-1.0, 0.0)
    recipe = "vanilla"
    Config = MahalanobisConfig

    def __init__(self, num_classes, config=None):
        super().__init__(num_classes, config)
        if self.config.regression not in REGRESSIONS:
            raise ConfigError(
                f"unknown Mahalanobis regression '{self.config.regression}' "
                f"(mahalanobis.regression / --switch mahalanobis_regression: {', '.join(REGRESSIONS)})"
            )
        if self.config.layers is not None and not self.config.layers:
            raise ConfigError("mahalanobis.layers names no layer: give module names (e.g. layer1,layer2) or none")
        self.means: list[torch.Tensor] = []
        self.precisions: list[torch.Tensor] = []
        self.weight = torch.zeros(0)
        self.bias = 0.0
        self.magnitude = 0.0
        self.tuning: dict[str, float] = {}

    # ----- statistics -------------------------------------------------------------------------------
    def _layer_scores(self, model, x: torch.Tensor, magnitude: float, differentiable: bool = False) -> torch.Tensor:
        """[B, L] per-layer confidence scores, each after its own input preprocessing.

        Equivalent to the released per-layer loop (forward, backward, perturbed forward for each layer) with
        less work: one forward with the graph, one backward per layer, then the L perturbed inputs in one
        batched forward (eval mode, so batching does not change any output)."""
        means = [m.to(x.device) for m in self.means]
        precisions = [p.to(x.device) for p in self.precisions]
        layers = range(len(means))
        if magnitude <= 0:
            with torch.enable_grad() if differentiable else torch.no_grad():
                feats = pooled_features(model, x, self.config.layers)
                return torch.stack(
                    [gaussian_scores(feats[i], means[i], precisions[i]).max(dim=1).values for i in layers], dim=1
                )
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            feats = pooled_features(model, x_req, self.config.layers)
            grads = []
            for i in layers:
                loss = (-gaussian_scores(feats[i], means[i], precisions[i]).max(dim=1).values).mean()
                grads.append(torch.autograd.grad(loss, x_req, retain_graph=i < len(means) - 1)[0])
        perturbed = torch.cat([x - magnitude * ge_sign(g) for g in grads])  # [L * B, ...]
        with torch.enable_grad() if differentiable else torch.no_grad():
            feats = pooled_features(model, perturbed, self.config.layers)
            b = len(x)
            return torch.stack(
                [
                    gaussian_scores(feats[i][i * b : (i + 1) * b], means[i], precisions[i]).max(dim=1).values
                    for i in layers
                ],
                dim=1,
            )

    def _fit_statistics(self, model, data) -> None:
        feats: list[list[torch.Tensor]] = []
        labels = []
        with torch.no_grad():
            for start in range(0, len(data.train), data.batch_size):
                x = data.train.images[start : start + data.batch_size].to(data.device).float() / 255.0
                for i, f in enumerate(pooled_features(model, x, self.config.layers)):
                    if len(feats) <= i:
                        feats.append([])
                    feats[i].append(f.double().cpu())
                labels.append(data.train.labels[start : start + data.batch_size])
        y = torch.cat(labels)
        self.means, self.precisions = [], []
        for layer_feats in feats:
            f = torch.cat(layer_feats)
            means = torch.stack([f[y == c].mean(dim=0) for c in range(self.num_classes)])
            centred = f - means[y]
            covariance = centred.T @ centred / len(f)  # tied, maximum likelihood (sklearn EmpiricalCovariance)
            self.means.append(means.float())
            self.precisions.append(torch.linalg.pinv(covariance, hermitian=True).float())

    def _fgsm(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_req), y), x_req)
        return torch.clamp(x + self.config.fgsm_eps * ge_sign(grad), 0.0, 1.0)

    def fit(self, model, data):
        if self.config.layers is not None:
            find_modules(model, self.config.layers)  # an unknown layer name fails before any forward pass
        model.eval()
        self._fit_statistics(model, data)
        tune = data.tune_in
        half = len(tune) // 2
        clean, adv = [], []
        for start in range(0, len(tune), data.batch_size):
            x = tune.images[start : start + data.batch_size].to(data.device).float() / 255.0
            y = tune.labels[start : start + data.batch_size].to(data.device)
            clean.append(x)
            adv.append(self._fgsm(model, x, y).detach())
        clean_x, adv_x = torch.cat(clean), torch.cat(adv)
        grid = (self.config.magnitude,) if self.config.magnitude is not None else self.config.magnitudes
        best = None
        for magnitude in grid:
            m_in = self._batched_layer_scores(model, clean_x, magnitude, data.batch_size)
            m_out = self._batched_layer_scores(model, adv_x, magnitude, data.batch_size)
            features = np.concatenate([m_in[:half], m_out[:half]])
            targets = np.concatenate([np.zeros(half), np.ones(half)])  # 1 = OOD
            regression = fit_regression(features, targets, self.config.regression)
            m_in, m_out = m_in.astype(regression.feature_dtype), m_out.astype(regression.feature_dtype)
            # deployed score = -P(OOD); FPR@95 on the other 500 + 500
            s_in = -regression.predict_proba(m_in[half:])[:, 1]
            s_out = -regression.predict_proba(m_out[half:])[:, 1]
            fpr = fpr_at_tpr(s_in, s_out)
            self.tuning[f"{magnitude:g}"] = fpr
            if best is None or fpr < best[0]:
                best = (fpr, magnitude, regression)
        _, self.magnitude, regression = best
        self.weight = torch.tensor(regression.coef_[0], dtype=torch.float32)
        self.bias = float(regression.intercept_[0])

    def _batched_layer_scores(self, model, x, magnitude, batch_size) -> np.ndarray:
        return map_batches(lambda z: self._layer_scores(model, z, magnitude).cpu(), x, batch_size).double().numpy()

    # ----- persistence --------------------------------------------------------------------------------
    def is_fitted(self):
        """The class statistics are known (fitted or loaded)."""
        return bool(self.means)

    def fitted_state(self):
        return {
            "means": list(self.means),
            "precisions": list(self.precisions),
            "weight": self.weight,
            "bias": self.bias,
            "magnitude": float(self.magnitude),
        }

    def load_fitted_state(self, state):
        self.means = list(state["means"])
        self.precisions = list(state["precisions"])
        self.weight = state["weight"]
        self.bias = float(state["bias"])
        self.magnitude = float(state["magnitude"])

    def fit_info(self):
        return {
            "magnitude": self.magnitude,
            "regression": self.config.regression or "converged",
            "tuning_fpr": self.tuning,
            "weights": self.weight.tolist(),
            "bias": self.bias,
        }

    # ----- scoring --------------------------------------------------------------------------------------
    def _logit_ood(self, layer_scores: torch.Tensor) -> torch.Tensor:
        return layer_scores @ self.weight.to(layer_scores.device) + self.bias

    def score(self, model, x):
        m = self._layer_scores(model, x, self.magnitude)
        return (-torch.sigmoid(self._logit_ood(m))).float().detach()

    def score_and_predict(self, model, x):
        with torch.no_grad():
            predictions = model(x)[:, : self.num_classes].argmax(dim=1)
        return self.score(model, x), predictions

    def attack_objective(self, model, x):
        """Eq. 69: -log sigmoid(w . M(x) + b) on features without preprocessing (lowers P(OOD))."""
        return -F.logsigmoid(self._logit_ood(self._layer_scores(model, x, 0.0, differentiable=True)))

    def adaptive_objective(self, model, x):
        """The deployed score end to end (`strong` protocol): -(w . M(x~) + b), the regression's logit of OOD,
        through the input preprocessing (its sign held constant: straight-through). Monotone in the deployed
        -sigmoid(.), but unlike eq. 69's -log sigmoid it does not saturate: far from the data P(OOD) rounds to 1
        in float32 and eq. 69's gradient underflows to exactly zero, so PGD on it never moves."""
        return -self._logit_ood(self._layer_scores(model, x, self.magnitude, differentiable=True))
