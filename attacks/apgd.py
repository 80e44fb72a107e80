"""APGD: auto-PGD for L-inf (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Algorithm 1), on an arbitrary per-sample objective to maximise.

The `strong` protocol's attack (SPEC section 6). As in the paper:
- step size eta = 2 * eps at the start, one per sample; the first step is a plain projected sign step, later ones
  use momentum: z = P(x_k + eta sign(grad f(x_k))), x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))
  with alpha = 0.75;
- checkpoints w_j = ceil(p_j * N_iter), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06);
- at a checkpoint a sample's step size is halved, and its iterate restarts from its best point, when
  (1) fewer than rho = 0.75 of the steps since the previous checkpoint increased the objective, or
  (2) neither its step size nor its best objective changed since the previous checkpoint;
- random restarts, each from a uniform point of the eps-ball; projection onto the eps-ball and [0, 1].

Beyond the paper, to fit the suite's PGD (SPEC section 6): the clean input is a candidate of the per-sample best;
each restart's best point is rounded onto the 8-bit grid (the perturbation lives on the grid), its objective is
re-evaluated there, and it replaces the best grid point so far (initially the clean input) only if strictly
higher, so the returned objective is that of the returned point and never below the clean one. The model is in
eval mode during the attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from attacks.pgd import check_attack_invariants, eval_mode

Objective = Callable[[torch.Tensor], torch.Tensor]

#: random starts are stored as int8 levels -START_LEVELS..START_LEVELS in units of eps / START_LEVELS: 255 evenly
#: spaced values of [-eps, eps] (a whole set's starts then take one byte per pixel, like PGD's)
START_LEVELS = 127
RHO = 0.75
ALPHA = 0.75


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations w_j = ceil(p_j * steps), j >= 1, at which step sizes may be halved (Croce & Hein 2020, sec. 3.2)."""
    p_prev, p = 0.0, 0.22
    out: list[int] = []
    while p <= 1.0:
        w = math.ceil(round(p * steps, 9))  # round: 0.41 * 100 must give 41, not 42
        if 1 <= w <= steps and (not out or w > out[-1]):
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return out


def apgd_start_noise(shape: tuple[int, ...], generator: torch.Generator, device=None) -> torch.Tensor:
    """A uniform random start in the eps-ball as int8 levels in -127..127 (units of eps / 127)."""
    return torch.randint(-START_LEVELS, START_LEVELS + 1, shape, generator=generator, dtype=torch.int8).to(device)


def apgd_start_noise_for_set(n: int, shape: tuple[int, ...], restarts: int, seed: int, device) -> list[torch.Tensor]:
    """One int8 random start per restart for a whole set of `n` images (drawn on the CPU from `seed`), so the
    attack does not depend on the batch size (as `attacks.base.start_noise_for_set` for PGD)."""
    from oodbench.seeding import derive_seed

    noises = []
    for restart in range(max(1, restarts)):
        generator = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "apgd-start", restart))
        noises.append(apgd_start_noise((n, *shape), generator).to(device))
    return noises


def _value_and_grad(objective: Objective, x: torch.Tensor, grad: bool = True):
    """objective(x) as float32 [B] (non-finite values read as -inf) and, if asked, its input gradient (NaN -> 0).

    The input always requires grad, because some objectives differentiate inside (ODIN's straight-through
    preprocessing needs a differentiable input even when only the value is wanted)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = objective(x)
        g = torch.autograd.grad(value.sum(), x)[0] if grad else None
    value = value.detach().float()
    value = torch.where(torch.isfinite(value), value, torch.full_like(value, -math.inf))
    return value, (torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) if grad else None)


def round_to_grid(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Round the perturbation x_adv - x to whole 8-bit levels within the eps-ball, then clip to [0, 1].

    For a source on the 8-bit grid (every image of the benchmark) the result is on the grid, at most
    floor(255 eps) levels from the source."""
    levels = math.floor(eps * 255.0 + 1e-6)
    delta = torch.round((x_adv - x) * 255.0).clamp_(-levels, levels)
    on_grid = (x * 255.0 - torch.round(x * 255.0)).abs() < 1e-3
    # grid sources: compute in integer levels so the result is exactly k / 255
    rounded = torch.where(on_grid, (torch.round(x * 255.0) + delta).clamp(0.0, 255.0) / 255.0, x + delta / 255.0)
    return rounded.clamp_(0.0, 1.0)


def apgd_linf(
    objective: Objective,
    x: torch.Tensor,
    eps: float = 8 / 255,
    steps: int = 100,
    restarts: int = 1,
    model: nn.Module | None = None,
    start_noise: list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise `objective` ([B] per sample) over the L-inf ball of radius `eps` around `x` with APGD.

    `x`: float [B, C, H, W] in [0, 1] (on the 8-bit grid for grid outputs). `start_noise`: one int8 tensor per
    restart from `apgd_start_noise(_for_set)`; otherwise drawn from `generator` (deterministic given its seed).
    Returns (x_best, objective(x_best)), detached: per sample the best of the clean input and each restart's
    best point rounded to the 8-bit grid (module docstring).
    """
    x = x.detach()
    lower = torch.clamp(x - eps, 0.0, 1.0)
    upper = torch.clamp(x + eps, 0.0, 1.0)
    view = (-1,) + (1,) * (x.dim() - 1)
    checkpoints = set(apgd_checkpoints(steps))
    restarts = max(1, restarts)
    if start_noise is None:
        if generator is None:
            raise ValueError("apgd_linf needs start_noise or a seeded generator (deterministic attacks)")
        start_noise = [apgd_start_noise(tuple(x.shape), generator, device=x.device) for _ in range(restarts)]

    def project(z: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(z, lower), upper)

    with eval_mode(model):
        clean_obj, _ = _value_and_grad(objective, x, grad=False)
        best_x, best_obj = x.clone(), clean_obj.clone()
        for restart in range(restarts):
            if eps <= 0 or steps <= 0:
                break
            x_cur = project(x + start_noise[restart].to(x.dtype) * (eps / START_LEVELS))
            obj, grad = _value_and_grad(objective, x_cur)
            run_x, run_obj, run_grad = x_cur.clone(), obj.clone(), grad.clone()
            step = torch.full_like(obj, 2.0 * eps)
            x_prev = x_cur
            prev_obj = obj
            successes = torch.zeros_like(obj)
            check_step, check_best, last_check = step.clone(), run_obj.clone(), 0
            for k in range(steps):
                z = project(x_cur + step.view(view) * torch.sign(grad))
                if k == 0:
                    x_next = z
                else:
                    x_next = project(x_cur + ALPHA * (z - x_cur) + (1.0 - ALPHA) * (x_cur - x_prev))
                x_prev, x_cur = x_cur, x_next
                obj, new_grad = _value_and_grad(objective, x_cur, grad=k + 1 < steps)  # none after the last step
                grad = new_grad if new_grad is not None else grad
                successes += (obj > prev_obj).float()
                prev_obj = obj
                improved = obj > run_obj
                run_obj = torch.where(improved, obj, run_obj)
                mask = improved.view(view)
                run_x = torch.where(mask, x_cur, run_x)  # no host sync (GPU)
                if new_grad is not None:
                    run_grad = torch.where(mask, new_grad, run_grad)
                if k + 1 in checkpoints:
                    period = k + 1 - last_check
                    condition1 = successes < RHO * period
                    condition2 = (step == check_step) & (run_obj == check_best)
                    halve = condition1 | condition2
                    # condition 2 at the next checkpoint compares with the step size before this halving
                    check_step, check_best, last_check = step.clone(), run_obj.clone(), k + 1
                    step = torch.where(halve, step / 2.0, step)
                    # restart from the best point: x^{(k+1)} := x_max (its gradient is the stored one)
                    x_cur = torch.where(halve.view(view), run_x, x_cur)
                    grad = torch.where(halve.view(view), run_grad, grad)
                    prev_obj = torch.where(halve, run_obj, prev_obj)
                    successes.zero_()
            # the restart's best point on the 8-bit grid, kept only if strictly better than the best grid point
            grid_x = round_to_grid(run_x, x, eps)
            grid_obj, _ = _value_and_grad(objective, grid_x, grad=False)
            better = grid_obj > best_obj
            best_obj = torch.where(better, grid_obj, best_obj)
            best_x[better] = grid_x[better]
    if check:
        check_attack_invariants(x, best_x, best_obj, clean_obj, eps, "APGD")
    return best_x, best_obj
