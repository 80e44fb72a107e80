"""Per-detector tests that can fail: loss values equal the formulas on a tiny fixed batch, head sizes, scores,
attack objectives (the paper's eqs. 68-71), SOFL's pseudo-labels, ROWL's targets, CCU's mixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.acet import ACET
from baselines.atom import AT, ATOM, NTOM, ood_class_objective
from baselines.ccu import CCU, CCUNet, PCAWhitening, SphericalGMM
from baselines.mahalanobis import Mahalanobis, gaussian_scores
from baselines.msp import MSP
from baselines.odin import ODIN, ge_sign
from baselines.oe import OE
from baselines.rowl import ROWL, RetargetingObjective
from baselines.sofl import SOFL
from oodbench.detector import FitData, oe_loss
from oodbench.models import create_model
from oodbench.registry import DETECTORS

K = 4


class Linear(nn.Module):
    """A fixed linear model on 3x4x4 images: logits are easy to compute by hand."""

    def __init__(self, outputs, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(48, outputs)
        self.num_outputs = outputs

    def forward(self, x):
        return self.fc(x.flatten(1))

    def forward_features(self, x):
        h = x.flatten(1)
        return self.fc(h), [x, x * 2, x.mean(dim=1, keepdim=True), h]


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, K, (n,), generator=g)


def test_registry_has_the_ten_detectors_and_at():
    for name in ("msp", "odin", "mahalanobis", "sofl", "oe", "acet", "ccu", "rowl", "ntom", "atom", "at"):
        assert name in DETECTORS
    assert DETECTORS.entry("at").meta.get("ablation")


@pytest.mark.parametrize(
    "cls, head",
    [
        (MSP, K),
        (ODIN, K),
        (Mahalanobis, K),
        (OE, K),
        (ACET, K),
        (CCU, K),
        (ROWL, K + 1),
        (NTOM, K + 1),
        (ATOM, K + 1),
        (AT, K + 1),
    ],
)
def test_head_sizes(cls, head):
    assert cls(K).head_size == head


def test_sofl_head_has_reject_classes():
    assert SOFL(10).head_size == 15
    assert SOFL(100).head_size == 110


def test_oe_loss_is_cross_entropy_to_uniform():
    logits = torch.randn(5, K)
    expected = -(F.log_softmax(logits, 1)).mean(dim=1)  # mean_i -log F_i (eq. 68)
    assert torch.allclose(oe_loss(logits), expected, atol=1e-6)


def test_oe_training_loss_equals_formula():
    model, (x, y) = Linear(K), batch()
    x_out = batch(8, seed=2)[0]
    det = OE(K)
    logits_in, logits_out = model(x), model(x_out)
    expected = F.cross_entropy(logits_in, y) + 0.5 * (-(F.log_softmax(logits_out, 1)).mean(1)).mean()
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)


def test_msp_score_and_attack_objective():
    model, (x, _) = Linear(K), batch()
    det = MSP(K)
    assert torch.allclose(det.score(model, x), F.softmax(model(x), 1).max(1).values)
    assert torch.allclose(det.attack_objective(model, x), oe_loss(model(x)))


def test_ntom_loss_and_k_plus_one_scores():
    model, (x, y) = Linear(K + 1), batch()
    x_out = batch(8, seed=3)[0]
    det = NTOM(K)
    logits_in, logits_out = model(x), model(x_out)
    expected = F.cross_entropy(logits_in, y) + F.cross_entropy(logits_out, torch.full((8,), K))
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)
    assert torch.allclose(det.score(model, x), -F.softmax(model(x), 1)[:, K])
    # eq. 71: -log F_{K+1}
    assert torch.allclose(det.attack_objective(model, x), -F.log_softmax(model(x), 1)[:, K], atol=1e-5)
    assert torch.equal(det.score_and_predict(model, x)[1], model(x)[:, :K].argmax(1))


def test_atom_training_attack_raises_the_objective_and_restores_train_mode():
    model = create_model("small_cnn", K + 1)
    det = ATOM(K)

    class Ctx:
        class profile:
            from attacks.pgd import PGDConfig

            train_pgd = PGDConfig(steps=5, step_size=2 / 255)

            @staticmethod
            def schedule(kind):
                return 1, ()

        class in_dist:
            schedule = "cifar"

    det.stages(Ctx)
    model.train()
    x_out = torch.rand(8, 3, 32, 32).mul(255).round().div(255)
    mixed = det.adversarial_outliers(model, x_out)
    assert model.training
    assert torch.equal(mixed[:4], x_out[:4])  # the first half stays clean
    model.eval()
    with torch.no_grad():
        before = ood_class_objective(model, x_out[4:], K)
        after = ood_class_objective(model, mixed[4:], K)
    assert (after >= before - 1e-6).all() and (after > before).any()
    assert (mixed - x_out).abs().max() <= 8 / 255 + 1e-6


def test_sofl_pseudo_label_rule():
    det = SOFL(K, SOFL.Config(reject_classes=3))
    logits = torch.full((6, K + 3), -5.0)
    logits[0, K + 1] = 5  # argmax is a reject class: kept
    logits[1, K + 2] = 5
    logits[2:, 0] = 5  # argmax is an in-dist class: a random reject class
    torch.manual_seed(0)
    labels = det.pseudo_labels(logits)
    assert labels[0] == K + 1 and labels[1] == K + 2
    assert ((labels[2:] >= K) & (labels[2:] < K + 3)).all()
    draws = torch.stack([det.pseudo_labels(logits)[2:] for _ in range(50)])
    assert len(draws.unique()) == 3  # every reject class is drawn


def test_sofl_score_and_objective():
    det = SOFL(K, SOFL.Config(reject_classes=2))
    model, (x, _) = Linear(K + 2), batch()
    p = F.softmax(model(x), 1)
    assert torch.allclose(det.score(model, x), -p[:, K:].sum(1), atol=1e-6)
    assert torch.allclose(det.attack_objective(model, x), -torch.log(p[:, K:].sum(1)), atol=1e-5)  # eq. 70


def test_rowl_targets_differ_from_the_true_class_and_score_is_binary():
    model = Linear(K + 1)
    labels = torch.tensor([0, 1, 2, 3, 4] * 40)
    seen = []
    objective = RetargetingObjective(model, labels, K + 1)
    original = F.cross_entropy

    def spy(logits, targets, reduction="mean"):
        seen.append(targets.clone())
        return original(logits, targets, reduction=reduction)

    F.cross_entropy = spy
    try:
        for _ in range(20):
            objective(torch.rand(len(labels), 3, 4, 4))
    finally:
        F.cross_entropy = original
    targets = torch.stack(seen)
    assert not (targets == labels).any()
    assert len(targets[:, 0].unique()) == K  # uniform over the K other classes
    det = ROWL(K)
    x = batch()[0]
    scores = det.score(model, x)
    assert set(scores.tolist()) <= {0.0, -1.0}
    assert torch.equal(scores == -1.0, model(x).argmax(1) == K)
    assert det.fixed_threshold == -0.5


def test_odin_preprocessing_sign_convention_and_score():
    assert torch.equal(ge_sign(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([-1.0, 1.0, 1.0]))
    model, (x, _) = Linear(K), batch()
    det = ODIN(K, ODIN.Config(magnitude=0.002))
    x_req = x.clone().requires_grad_(True)
    logits = model(x_req)
    loss = F.cross_entropy(logits / 1000.0, logits.argmax(1))
    (grad,) = torch.autograd.grad(loss, x_req)
    x_tilde = x - 0.002 * ge_sign(grad)
    expected = F.softmax(model(x_tilde) / 1000.0, 1).max(1).values
    assert torch.allclose(det.score(model, x), expected, atol=1e-7)


def test_odin_tunes_the_magnitude_on_the_grid():
    model = Linear(K)
    x, y = batch(40)
    det = ODIN(K, ODIN.Config(grid_max=0.001))
    data = FitData(train=None, tune_in=_set(x, y), tune_aux=_set(batch(40, 9)[0]), device=torch.device("cpu"))
    det.fit(model, data)
    assert det.magnitude in {0.0, 0.0002, 0.0004, 0.0006, 0.0008, 0.001}
    assert set(det.tuning) == {"0.0000", "0.0002", "0.0004", "0.0006", "0.0008", "0.0010"}
    assert det.tuning[f"{det.magnitude:.4f}"] == min(det.tuning.values())


def _set(x, y=None):
    from oodbench.data.base import ImageSet

    return ImageSet((x * 255).round().to(torch.uint8), y)


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


def _pooled(model, x):
    from baselines.mahalanobis import pooled_features

    return pooled_features(model, x)


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


def _grid(x):
    return (x * 255).round() / 255  # attacks keep inputs on the 8-bit grid


def _zero_eps(det):
    from attacks.pgd import PGDConfig

    det.train_pgd = PGDConfig(eps=0.0, steps=2, step_size=1 / 255)
    return det


def test_acet_loss_equals_formula_with_a_null_attack():
    model, (x, y) = Linear(K), batch()
    x_out = _grid(batch(8, seed=2)[0])
    det = _zero_eps(ACET(K))
    logits_in, logits_out = model(x), model(x_out)
    expected = F.cross_entropy(logits_in, y) + 1.0 * oe_loss(logits_out).mean()
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)


def test_atom_loss_equals_formula_with_a_null_attack():
    model, (x, y) = Linear(K + 1), batch()
    x_out = _grid(batch(8, seed=3)[0])
    det = _zero_eps(ATOM(K, ATOM.Config(lam=2.0)))
    expected = F.cross_entropy(model(x), y) + 2.0 * F.cross_entropy(model(x_out), torch.full((8,), K))
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)


def test_sofl_stage2_loss_equals_formula():
    model, (x, y) = Linear(K + 2), batch()
    x_out = batch(8, seed=4)[0]
    det = SOFL(K, SOFL.Config(reject_classes=2))
    torch.manual_seed(0)
    got = det.loss(model, x, y, x_out)
    torch.manual_seed(0)
    targets = det.pseudo_labels(model(x_out).detach())
    expected = F.cross_entropy(model(x), y) + 5.0 * F.cross_entropy(model(x_out), targets)
    assert torch.allclose(got, expected, atol=1e-5)


def _rowl_under(protocol_name: str) -> ROWL:
    from types import SimpleNamespace

    from attacks.pgd import PGDConfig
    from oodbench.config import get_protocol

    ctx = SimpleNamespace(in_dist=SimpleNamespace(rowl_outliers=10), protocol=get_protocol(protocol_name))
    det = ROWL(K, ROWL.make_config(ctx))
    det.train_pgd = PGDConfig(steps=5, step_size=2 / 255)  # the training attack of SPEC section 3
    return det


def test_rowl_training_attack_moves_points_under_paper_not_under_atom_code():
    """paper: targeted PGD moves most images; atom-code: the released best-point bug returns the clean
    images, so the loss is CE(nat) + CE(nat) even at eps 8/255 (issue 12, point 1)."""
    model, (x, y) = Linear(K + 1), batch(64)
    x = _grid(x)
    paper, code = _rowl_under("paper"), _rowl_under("atom-code")
    assert (paper.config.train_attack, code.config.train_attack) == ("pgd", "released")
    torch.manual_seed(0)
    moved = (paper.adversarial_batch(model, x, y) - x).flatten(1).abs().amax(dim=1)
    assert (moved > 0).float().mean() > 0.5 and moved.max() <= 8 / 255 + 1e-6  # 52 of 64 with this seed
    assert torch.equal(code.adversarial_batch(model, x, y), x)
    assert torch.allclose(code.loss(model, x, y, None), 2 * F.cross_entropy(model(x), y), atol=1e-6)
    torch.manual_seed(0)
    assert not torch.allclose(paper.loss(model, x, y, None), 2 * F.cross_entropy(model(x), y), atol=1e-4)
    with pytest.raises(Exception, match="rowl_train_attack"):
        ROWL(K, ROWL.Config(train_attack="clean"))


def test_atom_q_is_zero_with_imagenet_rc_unless_set():
    """Table 8 (SPEC section 5): ATOM mines with q = 0 when ImageNet-RC is the auxiliary set (issue 12, point 5)."""
    from types import SimpleNamespace

    def ctx(aux_name):
        return SimpleNamespace(in_dist=SimpleNamespace(default_q=0.125), aux=SimpleNamespace(name=aux_name))

    assert ATOM.make_config(ctx("imagenet_rc")).q == 0.0
    assert ATOM.make_config(ctx("tinyimages")).q == 0.125
    assert ATOM.make_config(ctx("imagenet_rc"), {"q": "0.25"}).q == 0.25  # --set atom.q=0.25 wins
    assert NTOM.make_config(ctx("imagenet_rc")).q == 0.125  # Table 8 retrains ATOM, not NTOM


def test_rowl_loss_equals_formula_with_a_null_attack():
    model, (x, y) = Linear(K + 1), batch()
    x = _grid(x)
    det = _zero_eps(ROWL(K))
    expected = 2 * F.cross_entropy(model(x), y)  # CE(nat) + 1.0 * CE(adv), adv = nat when eps = 0
    assert torch.allclose(det.loss(model, x, y, None), expected, atol=1e-5)
