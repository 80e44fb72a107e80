"""Square attack, L-inf, score-based (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search", Algorithm 1 and its L-inf sampling distribution).

The `strong` protocol's black-box attack (SPEC section 6). It only *queries* a score (the detector's deployed
`score`, under `torch.no_grad`), never a gradient, so a detector whose gradients are useless (saturated, quantised,
clipped) is still attacked. As in the paper:

- initialisation with vertical stripes: every column of every channel is moved by +eps or -eps (paper, sec. 3.1);
- each iteration proposes one square window of side s at a random position, with a random +-eps per channel inside
  it (the rest of the perturbation unchanged), and keeps it only if the score strictly improves (random search);
- s = round(sqrt(p * H * W)), clipped to 1..H-1, with p halved on the paper's piece-wise constant schedule of the
  query budget (p_init at iterations <= 10 of 10,000, p_init/2 up to 50, /4 up to 200, /8 up to 500, /16 up to
  1,000, /32 up to 2,000, /64 up to 4,000, /128 up to 6,000, /256 up to 8,000, /512 beyond, the budget rescaled to
  10,000); p_init = 0.8, AutoAttack's value for L-inf (the paper's ImageNet value is 0.05);
- a proposal identical to the current window is not spent: the reference code resamples until it differs; here the
  signs of a uniformly drawn non-empty subset of channels are flipped, which draws from the same distribution (the
  non-identical sign patterns) without a data-dependent loop.

Beyond the paper, to fit the suite's other attacks: the perturbation is +-floor(eps * 255) / 255, so every point is
on the 8-bit grid; the clean input is a candidate of the per-sample best; every image runs the whole budget (there
is no threshold to stop at: the attack maximises the score). Randomness is drawn for the whole set at each
iteration from one generator seeded by the caller, and the scoring is only split into batches, so the result does
not depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attacks.pgd import check_attack_invariants

#: score(x float [B, C, H, W] in [0, 1]) -> float [B], the quantity maximised
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SquareConfig:
    """Square attack settings. `queries`: scored perturbed points per image (the initialisation included)."""

    eps: float = 8 / 255
    queries: int = 5000
    p_init: float = 0.8


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """The fraction p of pixels a window covers at `iteration` (the paper's schedule, budget rescaled to 10,000)."""
    it = int(iteration / max(queries, 1) * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128)):
        if it <= bound:
            return p_init / divisor
    return p_init / (256 if it <= 8000 else 512)


def square_side(p: float, height: int, width: int) -> int:
    """Side of the square window covering a fraction p of an H x W image, at least 1 and below H."""
    return int(min(max(round(math.sqrt(p * height * width)), 1), height - 1))


def _scores(score_fn: ScoreFn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([score_fn(x[s : s + batch_size]).detach().float() for s in range(0, len(x), batch_size)])


def _propose(x, current, window, signs, eps: float) -> torch.Tensor:
    """`current` with the square `window` set to x + eps * sign (one sign per image and channel), clipped."""
    values = torch.clamp(x + eps * signs.to(x.dtype).view(*signs.shape, 1, 1), 0.0, 1.0)
    return torch.where(window, values, current)


def square_linf(
    score_fn: ScoreFn,
    x: torch.Tensor,
    config: SquareConfig = SquareConfig(),
    seed: int = 0,
    batch_size: int = 256,
    check: bool = True,
    progress: Callable | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise `score_fn` over the L-inf ball of radius `config.eps` around `x` (float [N, C, H, W] in [0, 1] on
    the 8-bit grid) with `config.queries` queries per image; returns (x_best, score_fn(x_best)), detached.

    `seed` fixes every random draw (stripes, window positions, signs); `progress(iterable)` may wrap the query
    loop with a progress bar."""
    x = x.detach()
    n, channels, height, width = x.shape
    eps = math.floor(config.eps * 255.0 + 1e-6) / 255.0  # on the grid, never beyond eps
    generator = torch.Generator(device="cpu").manual_seed(seed)
    device = x.device
    best_score = _scores(score_fn, x, batch_size)
    clean_score = best_score.clone()
    best_x = x.clone()
    if n == 0 or config.queries <= 0 or eps <= 0:
        return best_x, best_score

    # 1. vertical stripes: one +-eps per (image, channel, column)
    stripes = torch.randint(0, 2, (n, channels, 1, width), generator=generator).to(device, x.dtype) * 2 - 1
    delta = eps * stripes.expand(n, channels, height, width)
    current = torch.clamp(x + delta, 0.0, 1.0)
    current_score = _scores(score_fn, current, batch_size)
    improved = current_score > best_score
    best_score = torch.where(improved, current_score, best_score)
    best_x = torch.where(improved.view(-1, 1, 1, 1), current, best_x)

    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    bits = (2 ** torch.arange(channels)).view(1, channels)
    iterations = range(1, config.queries)
    for iteration in progress(iterations) if progress is not None else iterations:
        side = square_side(square_fraction(config.p_init, iteration, config.queries), height, width)
        top = torch.randint(0, height - side + 1, (n,), generator=generator)
        left = torch.randint(0, width - side + 1, (n,), generator=generator)
        signs = torch.randint(0, 2, (n, channels), generator=generator) * 2 - 1
        flips = torch.randint(1, 2**channels, (n, 1), generator=generator)  # used only where the proposal is a no-op
        top, left = top.to(device).view(-1, 1, 1, 1), left.to(device).view(-1, 1, 1, 1)
        window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # [n, 1, H, W]
        signs = signs.to(device)

        proposal = _propose(x, best_x, window, signs, eps)
        unchanged = ((proposal - best_x).abs() < 1e-7).flatten(1).all(dim=1)
        flipped = torch.where((flips & bits).to(device) > 0, -signs, signs)
        proposal = torch.where(unchanged.view(-1, 1, 1, 1), _propose(x, best_x, window, flipped, eps), proposal)
        score = _scores(score_fn, proposal, batch_size)
        improved = score > best_score
        best_score = torch.where(improved, score, best_score)
        best_x = torch.where(improved.view(-1, 1, 1, 1), proposal, best_x)
    if check:
        check_attack_invariants(x, best_x, best_score, clean_score, config.eps, "Square")
    return best_x, best_score
