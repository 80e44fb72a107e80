"""PGD on the 8-bit grid (SPEC section 6): invariants, best point, determinism, eval mode."""

import torch
from torch import nn

from attacks.base import start_noise_for_set
from attacks.pgd import PGDConfig, pgd_linf, random_start_noise


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def _images(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float() / 255.0


def _objective(model):
    return lambda x: torch.logsumexp(model(x), dim=1) - model(x).mean(dim=1)


def test_invariants_grid_and_improvement():
    model, x = _tiny_model(), _images()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean = _objective(model.eval())(x)
    x_adv, obj = pgd_linf(_objective(model), x, PGDConfig(steps=10), model=model, generator=g)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.allclose(x_adv * 255, (x_adv * 255).round(), atol=1e-4)  # on the 8-bit grid
    assert (obj >= clean).all() and (obj > clean).float().mean() > 0.5
    with torch.no_grad():
        assert torch.allclose(_objective(model)(x_adv), obj, atol=1e-5)  # returned objective is the point's


def test_model_mode_is_restored_and_attack_runs_in_eval_mode():
    model = _tiny_model().train()
    seen = []

    def objective(x):
        seen.append(model.training)
        return _objective(model)(x)

    pgd_linf(objective, _images(), PGDConfig(steps=3), model=model, generator=torch.Generator().manual_seed(0))
    assert model.training and not any(seen)


def test_more_steps_never_lower_and_zero_eps_is_identity():
    model, x = _tiny_model(), _images()
    noise = start_noise_for_set(len(x), tuple(x.shape[1:]), PGDConfig(), seed=3, device="cpu")
    _, short = pgd_linf(_objective(model), x, PGDConfig(steps=5), model=model, start_noise=noise)
    x0, _ = pgd_linf(
        _objective(model), x, PGDConfig(eps=0.0, steps=5), model=model, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(x0, x)
    assert short.shape == (len(x),)


def test_more_steps_strictly_raise_the_objective_of_some_sample():
    """With the same random start, 20 steps keep every iterate of 3 steps (never lower, a regression guard) and
    strictly raise the objective of some samples (can fail: an attack that stalls after its start)."""
    model, x = _tiny_model(), _images()
    noise = start_noise_for_set(len(x), tuple(x.shape[1:]), PGDConfig(), seed=3, device="cpu")
    _, short = pgd_linf(_objective(model), x, PGDConfig(steps=3), model=model, start_noise=noise)
    _, long = pgd_linf(_objective(model), x, PGDConfig(steps=20), model=model, start_noise=noise)
    assert (long >= short - 1e-6).all()
    assert (long > short + 1e-4).sum() >= len(x) // 2  # the tiny model moves the objective by ~1e-3


def test_pgd_reaches_the_optimum_of_a_linear_objective():
    """objective = <w, x>: the maximiser over the eps-ball is x + eps * sign(w) (inside [0, 1] here), which
    40 sign steps of 1/255 reach from any start in the ball; one step from a random start cannot."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(20, 236, (6, 3, 8, 8), generator=g).float() / 255
    w = torch.randn(1, 3, 8, 8, generator=g)

    def objective(z):
        return (z * w).flatten(1).sum(dim=1)

    optimum = x + 8 / 255 * w.sign()
    x_adv, obj = pgd_linf(objective, x, PGDConfig(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x_adv, optimum, atol=1e-6)
    assert torch.allclose(obj, objective(optimum), atol=1e-4)
    _, one_step = pgd_linf(objective, x, PGDConfig(steps=1), generator=torch.Generator().manual_seed(0))
    assert (one_step < objective(optimum) - 0.1).all()


def test_random_start_is_rounded_uniform_and_batch_independent():
    g = torch.Generator().manual_seed(0)
    noise = random_start_noise((20000,), 8 / 255, g)
    assert noise.dtype == torch.int8 and noise.min() == -8 and noise.max() == 8
    # rounding uniform(-8, 8): the end points have half the mass of the inner integers
    counts = torch.bincount((noise.long() + 8), minlength=17).float() / len(noise)
    assert abs(counts[0] - 1 / 32) < 0.006 and abs(counts[8] - 1 / 16) < 0.008
    model, x = _tiny_model(), _images(12)
    noise = start_noise_for_set(len(x), tuple(x.shape[1:]), PGDConfig(), seed=5, device="cpu")
    whole, _ = pgd_linf(_objective(model), x, PGDConfig(steps=4), model=model, start_noise=noise)
    halves = [
        pgd_linf(
            _objective(model), x[s : s + 6], PGDConfig(steps=4), model=model, start_noise=[n[s : s + 6] for n in noise]
        )[0]
        for s in (0, 6)
    ]
    assert torch.allclose(whole, torch.cat(halves), atol=1e-6)


def test_restarts_keep_the_best_of_all_restarts():
    model, x = _tiny_model(), _images()
    config1 = PGDConfig(steps=3, restarts=1)
    config3 = PGDConfig(steps=3, restarts=3)
    noise3 = start_noise_for_set(len(x), tuple(x.shape[1:]), config3, seed=9, device="cpu")
    _, one = pgd_linf(_objective(model), x, config1, model=model, start_noise=noise3[:1])
    _, three = pgd_linf(_objective(model), x, config3, model=model, start_noise=noise3)
    assert (three >= one - 1e-6).all()
