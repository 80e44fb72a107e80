"""Mahalanobis: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.mahalanobis import Mahalanobis, gaussian_scores, pooled_features
from baselines.odin import ge_sign
from oodbench.detector import FitData
from oodbench.errors import ConfigError, FeatureError
from oodbench.models import create_model
from tests.detectors.tiny import K, Linear, _pooled, _set, batch


def test_mahalanobis_gaussian_scores_match_numpy_and_fit_runs():
    f = torch.randn(5, 3)
    means = torch.randn(2, 3)
    a = torch.randn(3, 3)
    precision = a @ a.T + torch.eye(3)
    got = gaussian_scores(f, means, precision)
    fn, mn, pn = f.double().numpy(), means.double().numpy(), precision.double().numpy()
    expected = np.array([[-0.5 * (fi - mc) @ pn @ (fi - mc) for mc in mn] for fi in fn])
    assert np.allclose(got.numpy(), expected, atol=1e-4)

    model = Linear(K)
    x, y = batch(80, seed=4)
    det = Mahalanobis(K, Mahalanobis.Config(magnitudes=(0.0, 0.01)))
    det.fit(
        model,
        FitData(
            train=_set(x, y), tune_in=_set(*batch(40, seed=5)), tune_aux=None, device=torch.device("cpu"), batch_size=16
        ),
    )
    assert len(det.means) == 4 and det.weight.shape == (4,)
    assert det.magnitude in (0.0, 0.01)
    s = det.score(model, x[:8])
    assert s.shape == (8,) and ((s <= 0) & (s >= -1)).all()  # -P(OOD)
    # the batched per-layer preprocessing equals the released per-layer loop
    layer = det._layer_scores(model, x[:8], 0.01)
    for i in range(4):
        x_req = x[:8].clone().requires_grad_(True)
        g = gaussian_scores(_pooled(model, x_req)[i], det.means[i], det.precisions[i])
        (grad,) = torch.autograd.grad((-g.max(1).values).mean(), x_req)
        with torch.no_grad():
            g2 = gaussian_scores(_pooled(model, x[:8] - 0.01 * ge_sign(grad))[i], det.means[i], det.precisions[i])
        assert torch.allclose(layer[:, i], g2.max(1).values, rtol=1e-4, atol=1e-3)
    # eq. 69 objective: -log sigmoid(w.M + b)
    m0 = det._layer_scores(model, x[:8], 0.0)
    expected = -F.logsigmoid(m0 @ det.weight + det.bias)
    assert torch.allclose(det.attack_objective(model, x[:8]).detach(), expected, atol=1e-4)
    # the strong protocol's objective follows the deployed score (higher objective, higher score) and keeps its
    # gradient where P(OOD) rounds to 1 in float32, where eq. 69's gradient is exactly zero
    det.magnitude, det.bias = 0.0, det.bias + 1000.0
    x_req = x[:8].clone().requires_grad_(True)
    (paper_grad,) = torch.autograd.grad(det.attack_objective(model, x_req).sum(), x_req)
    (strong_grad,) = torch.autograd.grad(det.adaptive_objective(model, x_req).sum(), x_req)
    assert paper_grad.abs().max() == 0 and strong_grad.abs().max() > 0
    det.bias -= 1000.0
    adaptive, deployed = det.adaptive_objective(model, x).detach(), det.score(model, x)
    ordered = deployed[torch.argsort(adaptive)]
    assert (ordered[1:] >= ordered[:-1] - 1e-6).all()  # monotone: maximising it maximises the deployed score


def test_mahalanobis_regression_settings_by_protocol():
    """atom-code fits the released LogisticRegressionCV() (100 lbfgs iterations on float32 scores), paper lets it
    converge (issue 12, point 4): on unscaled, ill-conditioned scores the two differ."""
    from types import SimpleNamespace

    from sklearn.linear_model import LogisticRegressionCV

    from baselines.mahalanobis import fit_regression
    from oodbench.config import get_protocol

    for name, expected in (("paper", "converged"), ("atom-code", "released"), ("strong", "converged")):
        assert Mahalanobis.make_config(SimpleNamespace(protocol=get_protocol(name))).regression == expected
    rng = np.random.default_rng(0)
    targets = np.repeat([0.0, 1.0], 100)
    # unscaled, large negative scores as Mahalanobis' (a 100-iteration lbfgs stops early on some C of the grid)
    features = rng.normal(size=(200, 4)) * [300.0, 1.0, 30.0, 3.0] + targets[:, None] * [600.0, 1.5, 40.0, 2.0] - 2e3
    released = fit_regression(features, targets, "released")
    reference = LogisticRegressionCV().fit(features.astype(np.float32), targets)
    np.testing.assert_allclose(released.coef_, reference.coef_, rtol=1e-6)
    converged = fit_regression(features, targets, "converged")
    assert not np.allclose(converged.coef_, released.coef_, rtol=1e-2)
    with pytest.raises(Exception, match="mahalanobis_regression"):
        Mahalanobis(K, Mahalanobis.Config(regression="exact"))


# ----- layers by name (DESIGN "Bring your own model"): hooks, no forward_features required -------------------
def _fit_data(n=80, seed=4):
    """Training images (on the 8-bit grid the detector sees), labels and the fit data holding them."""
    x, y = batch(n, seed=seed)
    x = _set(x).images.float() / 255.0
    tune = _set(*batch(40, seed=5))
    return x, y, FitData(train=_set(x, y), tune_in=tune, tune_aux=None, device=torch.device("cpu"), batch_size=16)


def _class_statistics(f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and the pseudo-inverse of the tied covariance, in float64 from the formulas."""
    f = f.double()
    means = torch.stack([f[y == c].mean(0) for c in range(K)])
    centred = f - means[y]
    return means, torch.linalg.pinv(centred.T @ centred / len(f))


def test_named_layers_of_a_plain_module_are_hooked_and_scored():
    """A plain nn.Sequential (no forward_features): layer "0" is the conv's own output, mean-pooled (before the
    in-place ReLU that follows rewrites that tensor), layer "2" the flattened map; statistics, scores and the
    preprocessing gradient all go through the hooked features."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(64, K)).eval()
    assert not hasattr(model, "forward_features")
    x, y, data = _fit_data()
    det = Mahalanobis(K, Mahalanobis.make_config(None, {"layers": "0, 2", "magnitude": "0.0"}))
    assert det.config.layers == ("0", "2")
    det.fit(model, data)
    with torch.no_grad():
        conv = model[0](x)
        hand = [conv.mean(dim=(2, 3)), torch.relu(conv).flatten(1)]
    for i, f in enumerate(hand):
        means, precision = _class_statistics(f, y)
        assert torch.allclose(det.means[i].double(), means, atol=1e-5)
        scale = float(precision.abs().max())
        assert torch.allclose(det.precisions[i].double(), precision, rtol=1e-4, atol=1e-4 * scale)
    s = det.score(model, x[:8])
    assert s.shape == (8,) and s.dtype == torch.float32 and torch.isfinite(s).all()
    layer_scores = torch.stack(
        [gaussian_scores(f[:8], det.means[i], det.precisions[i]).max(1).values for i, f in enumerate(hand)], dim=1
    )
    assert torch.allclose(s, -torch.sigmoid(layer_scores @ det.weight + det.bias), atol=1e-6)
    # the input preprocessing differentiates through the hooks (layer 0, as the released per-layer loop)
    x_req = x[:8].clone().requires_grad_(True)
    g = gaussian_scores(model[0](x_req).mean(dim=(2, 3)), det.means[0], det.precisions[0])
    (grad,) = torch.autograd.grad((-g.max(1).values).mean(), x_req)
    with torch.no_grad():
        moved = model[0](x[:8] - 0.01 * ge_sign(grad)).mean(dim=(2, 3))
    expected = gaussian_scores(moved, det.means[0], det.precisions[0]).max(1).values
    assert torch.allclose(det._layer_scores(model, x[:8], 0.01)[:, 0], expected, rtol=1e-4, atol=1e-3)
    # so does the attack objective, and the fitted state loads with weights_only
    (attack_grad,) = torch.autograd.grad(det.attack_objective(model, x_req).sum(), x_req)
    assert torch.isfinite(attack_grad).all() and attack_grad.abs().sum() > 0
    buffer = io.BytesIO()
    torch.save(det.fitted_state(), buffer)
    buffer.seek(0)
    restored = Mahalanobis(K, det.config)
    restored.load_fitted_state(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.score(model, x[:8]), s)


def test_named_layers_equal_forward_features_on_a_built_in_architecture():
    """small_cnn's forward_features maps are its four stage outputs: naming them gives the same features, and the
    same input gradient, as the forward_features path (which stays the default for our architectures)."""
    torch.manual_seed(0)
    model = create_model("small_cnn", K).eval()
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    names = ("stages.0", "stages.1", "stages.2", "stages.3")
    hooked, default = pooled_features(model, x, names), pooled_features(model, x)
    assert [f.shape for f in hooked] == [(3, 32), (3, 64), (3, 128), (3, 128)]
    assert all(torch.equal(a, b) for a, b in zip(hooked, default))
    (g_hooked,) = torch.autograd.grad(sum(f.sum() for f in hooked), x)
    (g_default,) = torch.autograd.grad(sum(f.sum() for f in default), x)
    assert torch.allclose(g_hooked, g_default, atol=1e-6) and g_hooked.abs().sum() > 0
    assert not model.stages[0]._forward_hooks  # the hooks are gone


def test_unknown_layer_names_fail_before_any_forward_pass():
    model = create_model("small_cnn", K)
    det = Mahalanobis(K, Mahalanobis.make_config(None, {"layers": "stages.0,stage.3"}))
    no_data = FitData(train=None, tune_in=None, tune_aux=None, device=torch.device("cpu"))  # never read
    with pytest.raises(FeatureError, match=r"no submodule 'stage.3'; did you mean 'stages.3'.*its modules: normalize"):
        det.fit(model, no_data)
    assert Mahalanobis.make_config(None, {"layers": "none"}).layers is None
    with pytest.raises(ConfigError, match="names no layer"):
        Mahalanobis(K, Mahalanobis.make_config(None, {"layers": ","}))


def test_default_layer_of_a_model_without_forward_features_is_the_penultimate_feature():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, K)).eval()
    x, y, data = _fit_data()
    (features,) = pooled_features(model, x)
    with torch.no_grad():
        assert torch.equal(features, model[2](model[1](model[0](x))))  # the input of the final nn.Linear
    det = Mahalanobis(K, Mahalanobis.Config(magnitude=0.0))
    det.fit(model, data)
    assert len(det.means) == 1 and torch.allclose(det.means[0].double(), _class_statistics(features, y)[0], atol=1e-6)
    assert torch.isfinite(det.score(model, x[:8])).all()

    class OwnForwardFeatures(nn.Sequential):  # a timm-style forward_features: one tensor, not (logits, maps)
        def forward_features(self, x):
            return self[0](x)

    with pytest.raises(FeatureError, match="mahalanobis.layers"):
        pooled_features(OwnForwardFeatures(nn.Flatten(), nn.Linear(48, K)), x)
