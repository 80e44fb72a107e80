"""L-inf projected gradient ascent on the 8-bit pixel grid (SPEC section 6; Madry et al. 2018).

The released code's PGD, which the paper's numbers depend on:
- the perturbation lives on the 8-bit grid: the random start is uniform(-eps, eps) rounded to integers in
  0..255 units, and every iterate is rounded back onto the grid;
- sign steps, projection onto the eps-ball around the source and onto [0, 1];
- per sample, the highest-objective point seen (the clean input and every iterate) is returned;
- the model is in eval mode during the attack and its mode is restored afterwards.

The same function runs inside training (ACET, ROWL, ATOM: 5 steps of 2/255) and in evaluation
(40 steps of 1/255, or Table 10's 100 steps x 5 restarts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PGDConfig:
    """PGD strength. Defaults: the evaluation attack of the paper (eps 8/255, 40 x 1/255, one random start)."""

    eps: float = 8 / 255
    steps: int = 40
    step_size: float = 1 / 255
    restarts: int = 1
    random_start: bool = True


@contextlib.contextmanager
def eval_mode(model: nn.Module | None) -> Iterator[None]:
    """Put `model` in eval mode for the block and restore its previous mode afterwards."""
    if model is None:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def random_start_noise(shape: tuple[int, ...], eps: float, generator: torch.Generator, device=None) -> torch.Tensor:
    """Integer random start in 0..255 units: round(uniform(-eps, eps) * 255), as int8 (SPEC section 6)."""
    eps255 = eps * 255.0
    noise = torch.empty(shape, dtype=torch.float32, device=device).uniform_(-eps255, eps255, generator=generator)
    return noise.round().to(torch.int8)


def _on_grid(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255.0) / 255.0


def pgd_linf(
    objective: Objective,
    x: torch.Tensor,
    config: PGDConfig = PGDConfig(),
    model: nn.Module | None = None,
    start_noise: list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise `objective` ([B] per sample) over the L-inf ball of radius `config.eps` around `x`.

    `x`: float [B, C, H, W] in [0, 1] on the 8-bit grid. `start_noise`: one int8 tensor per restart
    (0..255 units), so the random starts of a whole data set can be drawn independently of the batch
    size; otherwise drawn from `generator`. Returns (x_best, objective(x_best)), both detached.
    """
    x = x.detach()
    eps, step = config.eps, config.step_size
    lower = torch.clamp(x - eps, 0.0, 1.0)
    upper = torch.clamp(x + eps, 0.0, 1.0)
    with eval_mode(model):
        with torch.no_grad():
            best_obj = objective(x).detach().float()
        best_x = x.clone()
        clean_obj = best_obj.clone()
        for restart in range(max(1, config.restarts)):
            if config.random_start:
                noise = (
                    start_noise[restart]
                    if start_noise is not None
                    else random_start_noise(tuple(x.shape), eps, generator, device=x.device)
                )
                x_adv = torch.clamp(x + noise.to(x.dtype) / 255.0, 0.0, 1.0)
            else:
                x_adv = x.clone()
            for i in range(config.steps + 1):
                x_adv.requires_grad_(True)
                obj = objective(x_adv)
                if i < config.steps:
                    (grad,) = torch.autograd.grad(obj.sum(), x_adv)
                obj = obj.detach().float()
                x_adv = x_adv.detach()
                improved = obj > best_obj
                best_obj = torch.where(improved, obj, best_obj)
                best_x = torch.where(improved.view(-1, *([1] * (x.ndim - 1))), x_adv, best_x)  # no host sync
                if i == config.steps:
                    break
                x_adv = x_adv + step * torch.sign(grad)
                x_adv = _on_grid(torch.minimum(torch.maximum(x_adv, lower), upper))
    if check:
        check_attack_invariants(x, best_x, best_obj, clean_obj, eps, "PGD")
    return best_x, best_obj


def check_attack_invariants(x, x_adv, adv_obj, clean_obj, eps: float, attack: str) -> None:
    """Cheap runtime invariants of every attack (DESIGN reliability principles): within eps of the source, in
    [0, 1], and an objective no lower than the clean input's."""
    if len(x) == 0:
        return
    if (x_adv - x).abs().max().item() > eps + 1e-6:
        raise AssertionError(f"{attack} left the eps-ball")
    if x_adv.min().item() < 0.0 or x_adv.max().item() > 1.0:
        raise AssertionError(f"{attack} left the [0, 1] pixel range")
    if bool((adv_obj < clean_obj).any()):
        raise AssertionError(f"{attack} returned a point with a lower objective than the clean input")
