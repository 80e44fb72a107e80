"""CCU: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.ccu import CCU, CCUNet, PCAWhitening, SphericalGMM
from tests.detectors.tiny import K, Linear, batch


def test_ccu_mixtures_are_finite_and_dr_reduces_to_softmax_without_p_out():
    torch.manual_seed(0)
    base = Linear(K)
    net = CCUNet(base, components=3, dim=48)
    x = torch.rand(30, 3, 4, 4)
    net.fit_mixtures(x.flatten(1), torch.rand(30, 48), seed=0)
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
    net.fit_mixtures(x.flatten(1), x_out.flatten(1), 0)
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
    assert torch.allclose(w.inverse(z), x, atol=1e-4)
    gmm = SphericalGMM(4, 6)
    gmm.fit(z, seed=0)
    assert gmm.log_var.unique().numel() == 1  # every variance set to their mean
    assert torch.isfinite(gmm.log_density(z, gmm.means)).all()


def test_pca_whitening_is_the_released_pca_metric():
    """Distances equal the released PCAMetric's |(x - y) C^T / sqrt(s)| with scikit-learn's PCA, s floored at
    s_max / 1e6 before the root (issue 12, point 2: not divided by s)."""
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0, 0.5, 1e-12])
    x = x @ torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))[0]  # rotate off the axes
    pca = PCA().fit(x.numpy())
    s = torch.tensor(pca.singular_values_)
    s = torch.clamp(s, min=float(s[0]) / 1e6)  # the floor is active for the fifth direction
    assert s[-1] == s[0] / 1e6
    released = x @ torch.tensor(pca.components_).T / s.sqrt()
    w = PCAWhitening(5)
    w.fit(x.float())
    ours = w(x.float()).double()
    assert torch.allclose(torch.cdist(ours, ours), torch.cdist(released, released), rtol=1e-4, atol=1e-3)
    assert torch.allclose(w.scale.double().sort().values, s.sqrt().sort().values, rtol=1e-4)


def test_ccu_em_means_live_in_pixel_space_and_train_at_lr_over_s():
    """The released code maps the EM means back to pixel space and trains them there, so an SGD step of lr moves
    a whitened mean coordinate i by lr / s_i times its whitened gradient (issue 12, point 3)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.2] * 6, [0.8] * 6, [0.2, 0.8] * 3])
    x = centres.repeat_interleave(40, dim=0) + 0.01 * torch.randn(120, 6, generator=g)
    net = CCUNet(nn.Identity(), components=3, dim=6)
    net.fit_mixtures(x, x.flip(1), seed=0)
    found = net.gmm_in.means.detach()
    distance = torch.cdist(found, centres).min(dim=0).values
    assert distance.max() < 0.02  # the pixel-space cluster centres themselves
    lr = 1e-3
    z_before = net.whiten(net.gmm_in.means).detach()
    log_p_in, _ = net.densities(x)
    z_means = net.whiten(net.gmm_in.means)
    (grad_z,) = torch.autograd.grad(net.gmm_in.log_density(net.whiten(x), z_means).sum(), z_means)
    log_p_in.sum().backward()
    with torch.no_grad():
        net.gmm_in.means -= lr * net.gmm_in.means.grad
    moved = net.whiten(net.gmm_in.means).detach() - z_before
    s = net.whiten.scale**2
    assert torch.allclose(moved, -lr * grad_z / s, rtol=1e-3, atol=1e-7)


def test_ccu_out_mixture_data_by_protocol():
    """atom-code fits the out-mixture on the file's first images (validation block first), paper on a uniform
    draw from the pool."""
    from types import SimpleNamespace

    from baselines.ccu import leading_aux_images
    from oodbench.config import get_protocol
    from oodbench.data.base import ArrayPool, ImageSet

    for name, expected in (("paper", "uniform"), ("atom-code", "first"), ("strong", "uniform")):
        ctx = SimpleNamespace(profile=SimpleNamespace(gmm_components=3), protocol=get_protocol(name))
        assert CCU.make_config(ctx).out_fit == expected
    pool_images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)

    class Pool(ArrayPool):
        def validation(self):
            return ImageSet(torch.full((3, 3, 32, 32), 200, dtype=torch.uint8), None, "validation")

    got = leading_aux_images(Pool(pool_images, "p"), 5)
    assert got[:, 0, 0, 0].tolist() == [200, 200, 200, 0, 1]
    assert leading_aux_images(ArrayPool(pool_images, "p"), 4)[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(Exception, match="ccu_out_fit"):
        CCU(K, CCU.Config(out_fit="random"))


def _mixture_gap(n_train: int, dim_side: int, seed: int = 0) -> float:
    """Median log p_in - log p_out of unseen in-dist images after the released EM fit on `n_train` images of
    3 x side x side pixels (in-dist: a low-variance cloud around one image; out: uniform noise)."""
    generator = torch.Generator().manual_seed(seed)
    dim = 3 * dim_side * dim_side
    centre = torch.rand(dim, generator=generator)

    def in_dist(count):
        return (centre + 0.05 * torch.randn(count, dim, generator=generator)).clamp(0, 1)

    net = CCUNet(nn.Identity(), components=2, dim=dim)
    net.fit_mixtures(in_dist(n_train), torch.rand(400, dim, generator=generator), seed)
    CCU(K).after_step(net)  # the out-variance floor of training
    with torch.no_grad():
        log_p_in, log_p_out = net.densities(in_dist(200))
    return float((log_p_in - log_p_out).median())


def test_ccu_mixtures_separate_unseen_images_only_with_more_images_than_pixels():
    """Why CCU collapses on the built-in `shapes` (1,300 images, 3,072 pixels): with N <= D the floored
    whitening makes every unseen in-dist image vanishingly unlikely under p_in, so DR = 1/K; with N > D the same
    fit ranks them in-dist. Both sides can fail: the gap's sign flips between the two."""
    assert _mixture_gap(n_train=1000, dim_side=4) > 0  # N = 1,000 > D = 48
    assert _mixture_gap(n_train=100, dim_side=8) < -1000  # N = 100 < D = 192


def test_ccu_warns_before_training_on_fewer_images_than_pixels():
    from oodbench.data.base import ImageSet

    def images(n):
        return ImageSet(torch.zeros(n, 3, 8, 8, dtype=torch.uint8), torch.zeros(n, dtype=torch.long))

    (warning,) = CCU(K).training_warnings(None, images(100))  # D = 192
    assert "192 dimensions" in warning and "100 training images" in warning
    assert CCU(K).training_warnings(None, images(193)) == []
