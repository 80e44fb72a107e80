"""Square attack (Andriushchenko et al. 2020), L-inf, score-based: schedule, invariants, strength, a detector with
no gradient, determinism and batch-size independence."""

from __future__ import annotations

import torch
from torch import nn

from attacks.pgd import PGDConfig, pgd_linf
from attacks.square import SquareConfig, square_fraction, square_linf, square_side


def _linear_score(seed=0):
    torch.manual_seed(seed)
    weight = torch.randn(3, 8, 8)
    return lambda x: (x * weight).flatten(1).sum(dim=1)


def _images(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float() / 255.0


def _step_score(x):
    """A linear score quantised to steps of 0.05: a step function, its gradient is zero everywhere."""
    return torch.floor(_linear_score()(x) * 20.0) / 20.0


def test_schedule_follows_the_paper():
    assert square_fraction(0.8, 0, 10000) == 0.8
    assert square_fraction(0.8, 11, 10000) == 0.4  # 10 < it <= 50
    assert square_fraction(0.8, 300, 10000) == 0.1  # 200 < it <= 500
    assert square_fraction(0.8, 9000, 10000) == 0.8 / 512
    assert square_fraction(0.8, 500, 1000) == 0.8 / 128  # rescaled to 10,000: it = 5000
    assert square_side(0.8, 32, 32) == 29 and square_side(1e-6, 32, 32) == 1 and square_side(1.0, 32, 32) == 31


def test_raises_the_score_within_the_ball_the_range_and_the_grid():
    score, x = _linear_score(), _images()
    clean = score(x)
    x_adv, adv = square_linf(score, x, SquareConfig(queries=100), seed=0, batch_size=5)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.allclose(x_adv * 255, (x_adv * 255).round(), atol=1e-4)
    assert (adv > clean).all()
    assert torch.allclose(score(x_adv), adv, atol=1e-5)  # the returned score is that of the returned point
    # more queries find more: the optimum of a linear score is x + eps sign(w) (clipped); 400 get most of the way
    _, longer = square_linf(score, x, SquareConfig(queries=400), seed=0, batch_size=5)
    assert (longer >= adv - 1e-5).float().mean() > 0.9 and longer.mean() > adv.mean()


def test_finds_points_where_the_gradient_is_zero_and_pgd_does_not():
    x = _images(16)
    clean = _step_score(x)
    z = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_step_score(z).sum(), z, allow_unused=True, materialize_grads=True)
    assert grad.abs().max() == 0  # no gradient signal anywhere
    _, pgd = pgd_linf(_step_score, x, PGDConfig(steps=20, random_start=False))
    assert torch.equal(pgd, clean)  # sign(0) = 0: PGD never moves
    _, pgd_random = pgd_linf(_step_score, x, PGDConfig(steps=20), generator=torch.Generator().manual_seed(0))
    _, square = square_linf(_step_score, x, SquareConfig(queries=50), seed=0)
    assert (square > clean).float().mean() > 0.9
    assert (square - clean).mean() > 3 * (pgd_random - clean).mean()  # beyond what a random start finds


def test_deterministic_for_a_seed_and_independent_of_the_batch_size():
    score, x = _linear_score(), _images(10)
    a = square_linf(score, x, SquareConfig(queries=30), seed=7, batch_size=10)
    b = square_linf(score, x, SquareConfig(queries=30), seed=7, batch_size=3)
    c = square_linf(score, x, SquareConfig(queries=30), seed=8, batch_size=10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_queries_only_the_score_without_gradients():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    seen = []

    def score(x):
        seen.append(torch.is_grad_enabled())
        return model(x)[:, 0]

    square_linf(score, _images(4), SquareConfig(queries=5), seed=0)
    assert len(seen) == 1 + 5 and not any(seen)  # the clean point, then `queries` perturbed points, no_grad
    assert all(p.grad is None for p in model.parameters())
