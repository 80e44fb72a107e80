"""CCU: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from baselines.ccu import CCU, CCUNet, PCAWhitening, SphericalGMM
from tests.detectors.tiny import K, Linear, batch


def test_ccu_mixtures_are_finite_and_dr_reduces_to_softmax_without_p_out():
    torch.manual_seed(0)
    base = Linear(K)
    net = CCUNet(base, components=3, dim=48)
    x = torch.rand(30, 3, 4, 4)
    net.whiten.fit(x.flatten(1))
    net.gmm_in.fit(net.whiten(x.flatten(1)), seed=0)
    net.gmm_out.fit(net.whiten(torch.rand(30, 48)), seed=1)
    log_in, log_out = net.densities(x)
    assert torch.isfinite(log_in).all() and torch.isfinite(log_out).all()
    logits = base(x)
    # p_out = 0 (log p_out = -inf): DR(y|x) = softmax_y
    dr = net.log_dr(logits, log_in, torch.full_like(log_out, -math.inf)).exp()
    assert torch.allclose(dr, F.softmax(logits, 1), atol=1e-6)
    # p_in = 0: DR is uniform
    dr = net.log_dr(logits, torch.full_like(log_in, -math.inf), log_out).exp()
    assert torch.allclose(dr, torch.full_like(dr, 1 / K), atol=1e-6)
    assert torch.allclose(net(x).exp().sum(1), torch.ones(30), atol=1e-5)
    # the out-variance clamp
    det = CCU(K, CCU.Config(components=3))
    with torch.no_grad():
        net.gmm_out.log_var.fill_(-50.0)
    det.after_step(net)
    assert (net.gmm_out.log_var >= net.gmm_in.log_var.max() + math.log(4) - 1e-6).all()
    # where p_out dominates, DR is uniform in float32 and eq. 68 has no gradient; the strong protocol's objective
    # (log-density ratio + base log max softmax) still has one
    with torch.no_grad():
        net.gmm_in.means.add_(1000.0)
    x_req = x[:8].clone().requires_grad_(True)
    (paper_grad,) = torch.autograd.grad(det.attack_objective(net, x_req).sum(), x_req)
    (strong_grad,) = torch.autograd.grad(det.adaptive_objective(net, x_req).sum(), x_req)
    assert paper_grad.abs().max() == 0 and strong_grad.abs().max() > 0


def test_ccu_loss_equals_formula():
    torch.manual_seed(0)
    net = CCUNet(Linear(K), components=2, dim=48)
    x, y = batch(6)
    x_out = batch(4, seed=7)[0]
    net.whiten.fit(torch.cat([x, x_out]).flatten(1))
    net.gmm_in.fit(net.whiten(x.flatten(1)), 0)
    net.gmm_out.fit(net.whiten(x_out.flatten(1)), 1)
    det = CCU(K, CCU.Config(components=2))
    li, lo = net.densities(torch.cat([x, x_out]))
    log_dr = net.log_dr(net.base(torch.cat([x, x_out])), li, lo)
    mix = torch.logaddexp(li, lo) - math.log(2)  # log(p_in/2 + p_out/2)
    expected = 0.5 * (-log_dr[:6].gather(1, y[:, None]).mean() - mix[:6].mean()) + 0.5 * (
        -log_dr[6:].mean() - mix[6:].mean()
    )
    assert torch.allclose(det.loss(net, x, y, x_out), expected, atol=1e-4)


def test_pca_whitening_and_spherical_gmm_shapes():
    w = PCAWhitening(6)
    x = torch.randn(50, 6) * torch.tensor([1, 2, 3, 4, 5, 1e-9])
    w.fit(x)
    z = w(x)
    assert torch.isfinite(z).all() and z.shape == (50, 6)
    gmm = SphericalGMM(4, 6)
    gmm.fit(z, seed=0)
    assert gmm.log_var.unique().numel() == 1  # every variance set to their mean
    assert torch.isfinite(gmm.log_density(z)).all()
