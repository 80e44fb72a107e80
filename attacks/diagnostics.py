"""Per-cell attack diagnostics, AutoAttack-style (Croce & Hein, ICML 2020, and the checks of their released
`autoattack/checks.py`): is a low FPR under attack the detector's robustness or the attack's failure?

What a cell records (`diagnostics` in its JSON, `flags` the verdicts; shown by `oodbench table --flags`):

- `zero_grad`: share of the attacked images (a fixed subsample of `ctx.diagnostics_images`, at the points the
  L-inf attack starts from) whose input gradient is exactly zero for every white-box objective the protocol
  attacks (`attack`; under `strong` also `margin` and `adaptive`), with the per-objective shares beside it. Flag
  `zero-grad` when above 0: AutoAttack's `check_zero_gradients` warns at any such point, since a gradient attack
  cannot move it. Every protocol, white-box threats only: one forward/backward pass on the subsample.
- `saturated`: share of the cell's final OOD scores (all images) equal to the OOD-side float32 bound of the
  detector's score (`Detector.score_bounds`, e.g. P(OOD) = 1), `saturated_high` at the in-dist side. Reported,
  not flagged: a saturated score hides nothing when the attack objective does not saturate (ATOM's log-softmax).
  Every protocol and threat: no extra pass.
- `black_box_wins`: share of OOD images that the black-box Square attack made accepted while no white-box attack
  did (`black_box_better`: share where its score is strictly higher than every white-box one). Flag `bb>wb`
  ("gradient masking suspected") above 1 %: AutoAttack warns at any drop of robust accuracy by Square after APGD;
  one point of slack keeps a single image (0.33 % of a 300-image cell) near the threshold from flagging, while
  more than 1 % means several images that a random search found and no gradient reached. `strong` only.
- `eps_sweep`: FPR on the subsample at eps in EPS_SWEEP (0 ... 64/255) under PGD (the cell's steps, step size
  scaled with eps) and Square (the cell's queries, at most SWEEP_SQUARE_QUERIES) on the deployed score, worst
  case per image. Flag `eps-sweep`
  when the FPR drops by more than one image from one eps to the next (a stronger threat that finds less is a
  weak attack), and `large-eps` when the accepted region is not empty (some in-dist test image, or some of the
  cell's attacked OOD images, is accepted: `accepted_region_found`) but
  the FPR at 64/255 stays below 90 % (the attack, not the detector, failed). `strong` only, white-box threats.

Numbers of the cell itself (its scores, FPR, AUROC) are never changed here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from attacks.base import AttackContext, to_unit
from attacks.pgd import PGDConfig, pgd_linf
from attacks.square import SquareConfig, square_linf
from oodbench.accel import fp32_scoring
from oodbench.seeding import derive_seed

EPS_SWEEP = (0, 2, 4, 8, 16, 32, 64)  # in 1/255 units
LARGE_EPS = 64
LARGE_EPS_MIN_FPR = 90.0
BLACK_BOX_SLACK = 1.0  # percent of the cell's OOD images
TIE_SLACK = 1.0  # percent of the cell's OOD images at the threshold (flag `ties`)
SWEEP_SQUARE_QUERIES = 100  # at most, per eps of the sweep: the sweep's cost stays a fraction of the cell's
FLAGS = {
    "zero-grad": "some attacked images have an all-zero input gradient for every white-box objective",
    "bb>wb": "gradient masking suspected: the black-box Square attack beat every white-box attack on > 1 %",
    "eps-sweep": "FPR under attack decreased as eps grew (by more than one image of the subsample)",
    "large-eps": "the attack stays below 90 % FPR at eps 64/255 although the detector accepts some inputs",
    "ties": "> 1 % of OOD scores equal the threshold: the FPR counts them rejected (a constant score reads 0 %)",
}


def tie_share(ood_scores: np.ndarray, threshold: float) -> float:
    """Percent of OOD scores exactly at the acceptance threshold. FPR@95TPR (SPEC section 1) counts an OOD image
    accepted only when its score is strictly above the threshold, and in-dist images at it as accepted, so a
    detector whose scores tie (a constant or saturated score) gets 0 % FPR and AUROC 50: the FPR says nothing."""
    scores = np.asarray(ood_scores, dtype=np.float32)
    return 100.0 * float(np.mean(scores == np.float32(threshold))) if len(scores) else 0.0


def subsample_indices(n: int, count: int, seed: int) -> np.ndarray:
    """A fixed subsample of `count` of `n` images (sorted), the same for every detector of a cell."""
    if n <= count:
        return np.arange(n)
    rng = np.random.default_rng(derive_seed(seed, "diagnostics") % (2**32))
    return np.sort(rng.permutation(n)[:count])


def _unit(images: torch.Tensor) -> torch.Tensor:
    return to_unit(images) if images.dtype == torch.uint8 else images


def zero_gradient_shares(detector, model, x: torch.Tensor, objectives: list[str]) -> dict[str, float]:
    """Per objective, the share of images of `x` (float, [0, 1]) whose objective has an all-zero input gradient
    (also when the objective is not differentiable at all); `all` = zero for every objective."""
    methods = {
        "attack": detector.attack_objective,
        "margin": detector.margin_objective,
        "adaptive": detector.adaptive_objective,
    }
    model.eval()
    zero_all = torch.ones(len(x), dtype=torch.bool, device=x.device)
    out: dict[str, float] = {}
    for name in objectives:
        z = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = methods[name](model, z)
            if value.requires_grad:
                (grad,) = torch.autograd.grad(value.float().sum(), z, allow_unused=True)
            else:
                grad = None
        zero = torch.ones(len(x), dtype=torch.bool, device=x.device)
        if grad is not None:
            zero = ~(torch.nan_to_num(grad).flatten(1) != 0).any(dim=1)
        out[name] = 100.0 * float(zero.float().mean())
        zero_all &= zero
    out["all"] = 100.0 * float(zero_all.float().mean())
    return out


def saturation_shares(detector, ood_scores: np.ndarray) -> tuple[float | None, float | None]:
    """Shares (in %) of scores equal to the detector's float32 score bounds (OOD side, in-dist side)."""
    bounds = getattr(detector, "score_bounds", None)
    if bounds is None or len(ood_scores) == 0:
        return None, None
    low, high = (np.float32(b) for b in bounds)
    scores = np.asarray(ood_scores, dtype=np.float32)
    return 100.0 * float(np.mean(scores == low)), 100.0 * float(np.mean(scores == high))


def black_box_shares(per_attack: dict[str, torch.Tensor], threshold: float, black_box: str) -> tuple[float, float]:
    """(share accepted by the black-box attack only, share where it is strictly higher than every white-box)."""
    white = [scores for name, scores in per_attack.items() if name != black_box]
    square = per_attack[black_box]
    best_white = torch.stack(white).max(dim=0).values if white else torch.full_like(square, -torch.inf)
    wins = (square > threshold) & ~(best_white > threshold)
    return 100.0 * float(wins.float().mean()), 100.0 * float((square > best_white).float().mean())


def eps_sweep(detector, model, x: torch.Tensor, threshold: float, ctx: AttackContext) -> dict[int, float]:
    """FPR (%) of the images `x` (float, [0, 1]) at each eps of EPS_SWEEP: per image the higher deployed score of
    PGD on `attack_objective` (ctx.pgd's steps, step size scaled by eps / ctx.pgd.eps) and Square on `score`."""
    attack_model = ctx.attack_model or model
    out: dict[int, float] = {}
    for eps255 in EPS_SWEEP:
        eps = eps255 / 255.0
        with fp32_scoring(x.device):
            best = torch.cat(
                [detector.score(model, x[s : s + ctx.batch_size]).float() for s in range(0, len(x), ctx.batch_size)]
            )
        if eps255 > 0:
            config = dataclasses.replace(ctx.pgd, eps=eps, step_size=ctx.pgd.step_size * eps / ctx.pgd.eps, restarts=1)
            generator = torch.Generator(device="cpu").manual_seed(derive_seed(ctx.seed, "sweep-pgd", eps255))
            for s in range(0, len(x), ctx.batch_size):
                chunk = x[s : s + ctx.batch_size]
                x_adv, _ = pgd_linf(
                    lambda z: detector.attack_objective(attack_model, z),
                    chunk,
                    config,
                    model=model,
                    start_noise=[_start(chunk, config, generator)],
                )
                with fp32_scoring(x.device):
                    best[s : s + len(chunk)] = torch.maximum(
                        best[s : s + len(chunk)], detector.score(model, x_adv).float()
                    )
            if ctx.square_queries > 0:
                with fp32_scoring(x.device):
                    _, square = square_linf(
                        lambda z: detector.score(model, z).float(),
                        x,
                        SquareConfig(eps=eps, queries=min(ctx.square_queries, SWEEP_SQUARE_QUERIES)),
                        seed=derive_seed(ctx.seed, "sweep-square", eps255),
                        batch_size=ctx.batch_size,
                    )
                best = torch.maximum(best, square)
        out[eps255] = 100.0 * float((best > threshold).float().mean())
    return out


def _start(chunk: torch.Tensor, config: PGDConfig, generator: torch.Generator) -> torch.Tensor:
    from attacks.pgd import random_start_noise

    return random_start_noise(tuple(chunk.shape), config.eps, generator).to(chunk.device)


def accepted_region_found(id_scores, ood_scores, threshold: float) -> bool:
    """Whether the accepted region is known not to be empty: some in-dist test image or some of the cell's final
    (attacked) OOD images scores strictly above the threshold. The OOD side matters for a constant in-dist score
    (every image at the threshold, flag `ties`): the cell's own attack may have found accepted points that the
    sweep then must find at 64/255 too (the built-in CCU: APGD 21 %, the sweep's PGD + Square 0 %)."""
    return bool(np.any(np.asarray(id_scores) > threshold) or np.any(np.asarray(ood_scores) > threshold))


def sweep_flags(sweep: dict[int, float], n_images: int, accepts_something: bool) -> list[str]:
    """`eps-sweep` when the FPR drops by more than one image between consecutive eps; `large-eps` when the
    FPR at 64/255 is below 90 % although the detector accepts some inputs (`accepted_region_found`)."""
    flags = []
    values = [sweep[e] for e in EPS_SWEEP if e in sweep]
    one_image = 100.0 / max(n_images, 1)
    if any(later < earlier - one_image - 1e-9 for earlier, later in zip(values, values[1:], strict=False)):
        flags.append("eps-sweep")
    if accepts_something and LARGE_EPS in sweep and sweep[LARGE_EPS] < LARGE_EPS_MIN_FPR:
        flags.append("large-eps")
    return flags


def cell_diagnostics(
    threat,
    detector,
    model,
    images: torch.Tensor,
    ood_scores: np.ndarray,
    id_scores: np.ndarray,
    threshold: float,
    ctx: AttackContext,
    per_attack: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The diagnostics and flags of one cell (see the module docstring for what runs under which protocol).

    `images`: the cell's OOD images (uint8); `ood_scores`: its final deployed scores; `id_scores`, `threshold`:
    the in-dist scores and the acceptance threshold its metrics used; `per_attack`: the `strong` worst case's
    per-attack scores (None outside `strong`)."""
    from attacks.strong import BLACK_BOX_ATTACK, _apgd_objectives

    values: dict[str, Any] = {}
    flags: list[str] = []
    low, high = saturation_shares(detector, ood_scores)
    values["saturated"], values["saturated_high"] = low, high
    values["tied_at_threshold"] = tie_share(ood_scores, threshold)
    if values["tied_at_threshold"] > TIE_SLACK:
        flags.append("ties")
    if threat.white_box and len(images):
        index = subsample_indices(len(images), ctx.diagnostics_images, ctx.seed)
        values["images"] = int(len(index))
        sources = _unit(threat.attack_sources(detector, model, images, ctx)[torch.as_tensor(index)])
        objectives = _apgd_objectives(detector) if ctx.adaptive else ["attack"]
        shares = zero_gradient_shares(detector, model, sources, objectives)
        values["zero_grad"] = shares.pop("all")
        values["zero_grad_by_objective"] = shares
        if values["zero_grad"] > 0:
            flags.append("zero-grad")
        if ctx.adaptive:
            sweep = eps_sweep(detector, model, sources, threshold, ctx)
            values["eps_sweep"] = {str(k): v for k, v in sweep.items()}
            flags += sweep_flags(sweep, len(index), accepted_region_found(id_scores, ood_scores, threshold))
    if per_attack and BLACK_BOX_ATTACK in per_attack:
        wins, better = black_box_shares(per_attack, threshold, BLACK_BOX_ATTACK)
        values["black_box_wins"], values["black_box_better"] = wins, better
        values["by_attack_fpr"] = {
            name: 100.0 * float((scores > threshold).float().mean()) for name, scores in per_attack.items()
        }
        if wins > BLACK_BOX_SLACK:
            flags.append("bb>wb")
    return {"diagnostics": values, "flags": sorted(set(flags), key=list(FLAGS).index)}
