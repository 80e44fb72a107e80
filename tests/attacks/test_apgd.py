"""APGD (Croce & Hein 2020) and the `strong` protocol's worst-case attack (SPEC section 6): invariants, strength,
restarts, determinism, batch-size independence, worst case >= the paper's PGD, the in-distribution attack."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from attacks.apgd import apgd_checkpoints, apgd_linf, apgd_start_noise_for_set, round_to_grid
from attacks.base import AttackContext
from attacks.corruption import CompositionalAttack
from attacks.linf import LinfPGD, pgd_scores
from attacks.pgd import PGDConfig, pgd_linf
from attacks.strong import attack_in_distribution, strong_scores
from baselines.msp import MSP
from baselines.odin import ODIN
from baselines.rowl import ROWL
from oodbench.detector import oe_loss


def _tiny_model(outputs=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, outputs),
    ).eval()


def _images(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)


def _objective(model):
    return lambda x: oe_loss(model(x))


def _ctx(**changes):
    return dataclasses.replace(
        AttackContext(
            batch_size=16,
            seed=3,
            pgd=PGDConfig(steps=5),
            apgd_steps=8,
            apgd_restarts=2,
            square_queries=40,
            progress=False,
        ),
        **changes,
    )


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = ceil(p_j N)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(25) == [6, 11, 15, 18, 20, 22, 24, 25]


def test_invariants_grid_and_objective_at_least_clean():
    model, x = _tiny_model(), _images().float() / 255
    with torch.no_grad():
        clean = _objective(model)(x)
    x_adv, obj = apgd_linf(_objective(model), x, 8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv * 255, (x_adv * 255).round())  # exactly k / 255
    assert (obj >= clean).all() and (obj > clean).float().mean() > 0.5
    with torch.no_grad():
        assert torch.allclose(_objective(model)(x_adv), obj, atol=1e-6)  # the returned point's objective
    # a source at the edge of [0, 1] stays in range; eps = 0 returns the source
    edge = torch.zeros_like(x)
    assert apgd_linf(_objective(model), edge, 8 / 255, 4, generator=torch.Generator().manual_seed(0))[0].min() >= 0
    x0, _ = apgd_linf(_objective(model), x, 0.0, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x0, x)


def test_apgd_reaches_the_optimum_of_a_linear_objective():
    """Can fail, unlike `obj >= clean`: on <w, x> the best point is x + eps * sign(w) on the grid."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(20, 236, (6, 3, 8, 8), generator=g).float() / 255
    w = torch.randn(1, 3, 8, 8, generator=g)

    def objective(z):
        return (z * w).flatten(1).sum(dim=1)

    optimum = x + 8 / 255 * w.sign()
    x_adv, obj = apgd_linf(objective, x, 8 / 255, steps=20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x_adv, optimum, atol=1e-6)
    assert torch.allclose(obj, objective(optimum), atol=1e-4)


def test_round_to_grid_stays_in_the_ball():
    x = _images(4).float() / 255
    x_adv = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 8.7 / 255).clamp(0, 1)
    rounded = round_to_grid(x_adv, x, 8 / 255)
    assert (rounded - x).abs().max() <= 8 / 255 + 1e-6
    assert torch.equal(rounded * 255, (rounded * 255).round())


def test_model_is_in_eval_mode_during_the_attack_and_restored():
    model = _tiny_model().train()
    seen = []

    def objective(x):
        seen.append(model.training)
        return _objective(model)(x)

    apgd_linf(objective, _images().float() / 255, 8 / 255, 3, model=model, generator=torch.Generator().manual_seed(0))
    assert model.training and not any(seen)


def test_apgd_beats_ten_step_pgd_on_average():
    """Same iteration budget (10): APGD's large initial steps, momentum and step halving find higher values."""
    model, x = _tiny_model(outputs=10, seed=2), _images(32, seed=4).float() / 255

    def margin(z):  # a targeted margin: non-trivial, piecewise linear in the logits
        logits = model(z)
        return logits[:, 0] - logits[:, 1:].max(dim=1).values

    _, pgd = pgd_linf(margin, x, PGDConfig(steps=10), model=model, generator=torch.Generator().manual_seed(0))
    _, apgd = apgd_linf(margin, x, 8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
    assert apgd.mean() > pgd.mean()
    assert (apgd > pgd).float().mean() > 0.5


def test_step_halving_converges_on_a_concave_objective():
    """max -||x - c||^2 with c inside the ball: fixed-size sign steps would oscillate +-2 eps around c; halving
    at the checkpoints brings the best point within one grid level of c."""
    x = _images(8).float() / 255
    g = torch.Generator().manual_seed(5)
    target = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * 6 / 255).clamp(0, 1)
    x_adv, _ = apgd_linf(lambda z: -((z - target) ** 2).flatten(1).sum(1), x, 8 / 255, 100, generator=g)
    assert (x_adv - target).abs().max() <= 1 / 255 + 1e-6


def test_restarts_keep_the_best_and_seed_determinism():
    model, x = _tiny_model(), _images().float() / 255
    noises = apgd_start_noise_for_set(len(x), tuple(x.shape[1:]), 3, seed=9, device="cpu")
    singles = [apgd_linf(_objective(model), x, 8 / 255, 6, start_noise=[n])[1] for n in noises]
    x3, three = apgd_linf(_objective(model), x, 8 / 255, 6, restarts=3, start_noise=noises)
    assert torch.equal(three, torch.stack(singles).max(dim=0).values)  # per sample, the best restart
    again = apgd_linf(_objective(model), x, 8 / 255, 6, restarts=3, start_noise=noises)
    assert torch.equal(x3, again[0]) and torch.equal(three, again[1])
    a = apgd_linf(_objective(model), x, 8 / 255, 6, restarts=2, generator=torch.Generator().manual_seed(1))
    b = apgd_linf(_objective(model), x, 8 / 255, 6, restarts=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_strong_scores_do_not_depend_on_the_batch_size():
    model, images, detector = _tiny_model(), _images(24), MSP(5)
    whole = strong_scores(detector, model, images, _ctx(batch_size=24), "t")
    split = strong_scores(detector, model, images, _ctx(batch_size=10), "t")  # 10 + 10 + 4
    assert whole.dtype == torch.float32 and whole.shape == (24,)
    assert torch.allclose(whole, split, atol=1e-6)


@pytest.mark.parametrize("detector", [MSP(5), ODIN(5, ODIN.Config(magnitude=0.002)), ROWL(4)])
def test_worst_case_is_never_below_the_paper_pgd(detector):
    """Per sample, on the deployed score; ODIN's adaptive objective differentiates through its preprocessing,
    ROWL's deployed score is binary and its adaptive objective is the decision margin."""
    model, images = _tiny_model(), _images(16)
    ctx = _ctx()
    paper = pgd_scores(detector, model, images, ctx, "t")
    strong = strong_scores(detector, model, images, ctx, "t")
    assert (strong >= paper).all()
    if isinstance(detector, MSP):
        assert (strong > paper).any()
        # `pgd_scores` is the strong attack when the protocol is adaptive (linf and comp both call it)
        assert torch.equal(pgd_scores(detector, model, images, _ctx(adaptive=True), "t"), strong)


def test_threat_configs_carry_the_apgd_settings_only_when_adaptive():
    for threat in (LinfPGD(), CompositionalAttack()):
        assert "apgd" not in threat.config(_ctx())
        assert threat.config(_ctx(adaptive=True))["apgd"]["steps"] == 8
        assert threat.config(_ctx(adaptive=True))["apgd"]["restarts"] == 2


def test_attack_in_distribution_lowers_scores():
    model, images, detector = _tiny_model(), _images(16), MSP(5)
    with torch.no_grad():
        clean = detector.score(model, images.float() / 255)
    paper = attack_in_distribution(detector, model, images, _ctx())
    strong = attack_in_distribution(detector, model, images, _ctx(adaptive=True))
    for attacked in (paper, strong):
        assert attacked.dtype == torch.float32 and attacked.shape == (16,)
        assert (attacked <= clean + 1e-6).all() and attacked.mean() < clean.mean()
    assert (strong <= paper).all()  # the worst case (lowest score) includes the paper's PGD
