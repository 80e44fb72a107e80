"""Mahalanobis: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from baselines.mahalanobis import Mahalanobis, gaussian_scores
from baselines.odin import ge_sign
from oodbench.detector import FitData
import pytest
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
