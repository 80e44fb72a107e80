"""The `strong` protocol's adaptive white-box attacks (SPEC section 6, "`strong` adds ...").

Per sample, the worst case (for OOD inputs: the highest deployed score) over several attacks, each scored with
the detector's deployed `score`:

1. the paper's PGD on `attack_objective` (exactly `attacks.linf.pgd_scores`: same seed, same random starts);
2. APGD (Croce & Hein 2020; `attacks.apgd`) on `attack_objective` (the paper's eqs. 68-71);
3. APGD on `margin_objective` (a margin-style objective);
4. APGD on `adaptive_objective`: the deployed score made differentiable end to end (ODIN through T and its
   preprocessing, Mahalanobis through its preprocessing and regression, ROWL's decision margin). It is skipped
   for a detector that does not override it, since the default is `attack_objective`, already attacked in 2.
5. the Square attack (`attacks.square`; Andriushchenko et al. 2020) on the deployed `score` itself: black-box,
   gradient-free, `ctx.square_queries` queries per image, so that useless gradients cannot hide a nearby point.

Only a running maximum of the deployed score is kept, so memory does not grow with the number of attacks or
restarts. All random starts are drawn for the whole set from seeds derived from `ctx.seed`, so the numbers do not
depend on the batch size. `attack_in_distribution` is the mirror image for in-distribution inputs (FNR under
attack): it pushes them towards OOD and keeps the lowest deployed score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from attacks.apgd import apgd_linf, apgd_start_noise_for_set
from attacks.base import AttackContext, start_noise_for_set, to_unit
from attacks.pgd import pgd_linf
from attacks.square import SquareConfig, square_linf
from oodbench.accel import attack_autocast, fp32_scoring
from oodbench.detector import Detector
from oodbench.progress import progress
from oodbench.seeding import derive_seed

#: inspect(attack name, index of the batch's first image, source batch, adversarial batch): sees every attacked point
Inspect = Callable[[str, int, torch.Tensor, torch.Tensor], None]

#: the objectives the `strong` protocol attacks with APGD (part of the cell key through the threats' config)
APGD_OBJECTIVES = ("attack", "margin", "adaptive")
#: the black-box attack's name in per-attack records (diagnostics: "black-box beat every white-box attack")
BLACK_BOX_ATTACK = "square"


def square_config(ctx: AttackContext) -> SquareConfig:
    """The `strong` protocol's Square attack: the PGD radius, `ctx.square_queries` queries (SPEC: 5,000)."""
    return SquareConfig(eps=ctx.pgd.eps, queries=ctx.square_queries)


def apgd_config(ctx: AttackContext) -> dict:
    """The APGD and Square settings that change a `strong` cell's numbers (empty when the protocol is not
    adaptive, so the keys of `paper` / `atom-code` cells do not depend on them)."""
    if not ctx.adaptive:
        return {}
    out = {"apgd": {"steps": ctx.apgd_steps, "restarts": ctx.apgd_restarts, "objectives": list(APGD_OBJECTIVES)}}
    if ctx.square_queries > 0:
        out["square"] = dataclasses.asdict(square_config(ctx))
    return out


def _objective(detector: Detector, model: nn.Module, name: str, sign: float) -> Callable[[torch.Tensor], torch.Tensor]:
    method = {
        "attack": detector.attack_objective,
        "margin": detector.margin_objective,
        "adaptive": detector.adaptive_objective,
    }[name]
    if sign > 0:
        return lambda z: method(model, z)
    return lambda z: -method(model, z)


def _apgd_objectives(detector: Detector) -> list[str]:
    """APGD_OBJECTIVES without `adaptive` when the detector keeps the default (= attack_objective)."""
    overrides_adaptive = type(detector).adaptive_objective is not Detector.adaptive_objective
    return [name for name in APGD_OBJECTIVES if name != "adaptive" or overrides_adaptive]


def _worst_case(
    detector: Detector,
    model: nn.Module,
    images: torch.Tensor,
    ctx: AttackContext,
    desc: str,
    sign: float,
    pgd_seed: int,
    apgd: bool,
    inspect: Inspect | None = None,
    per_attack: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per sample max of sign * deployed score over PGD on sign * attack_objective and (if `apgd`) APGD on
    sign * each objective and Square on sign * score; returns the deployed scores of the worst points (float32
    [N]). `per_attack`, if given, receives each attack's deployed scores of its own best points."""
    model.eval()
    n, shape, device = len(images), tuple(images.shape[1:]), images.device
    batches = range(0, n, ctx.batch_size)

    def unit(start: int) -> torch.Tensor:
        chunk = images[start : start + ctx.batch_size]
        return to_unit(chunk) if chunk.dtype == torch.uint8 else chunk

    best = torch.full((n,), -torch.inf, dtype=torch.float32, device=device)

    def keep(start: int, x_adv: torch.Tensor, attack: str) -> None:
        if inspect is not None:
            inspect(attack, start, unit(start), x_adv)
        with fp32_scoring(x_adv.device):
            score = sign * detector.score(model, x_adv).detach().float()
        stop = start + len(x_adv)
        best[start:stop] = torch.maximum(best[start:stop], score.to(device))
        if per_attack is not None:
            mine = per_attack.setdefault(attack, torch.full((n,), -torch.inf, dtype=torch.float32, device=device))
            mine[start:stop] = torch.maximum(mine[start:stop], score.to(device))

    # 1. the paper's PGD, with the random starts of `attacks.linf.pgd_scores`
    noises = start_noise_for_set(n, shape, ctx.pgd, pgd_seed, device)
    attack_model = ctx.attack_model or model
    objective = _objective(detector, attack_model, "attack", sign)
    for start in progress(batches, desc=f"{desc} pgd", enabled=ctx.progress, unit="batch"):
        stop = start + ctx.batch_size
        with attack_autocast(ctx.precision, device):
            x_adv, _ = pgd_linf(
                objective, unit(start), ctx.pgd, model=model, start_noise=[z[start:stop] for z in noises]
            )
        keep(start, x_adv, "pgd")
    del noises

    # 2.-4. APGD on each objective; one objective's random starts in memory at a time
    if apgd and ctx.apgd_steps > 0:
        for name in _apgd_objectives(detector):
            noises = apgd_start_noise_for_set(
                n, shape, ctx.apgd_restarts, derive_seed(ctx.seed, "apgd", name, sign), device
            )
            objective = _objective(detector, attack_model, name, sign)
            for start in progress(batches, desc=f"{desc} apgd-{name}", enabled=ctx.progress, unit="batch"):
                stop = start + ctx.batch_size
                with attack_autocast(ctx.precision, device):
                    x_adv, _ = apgd_linf(
                        objective,
                        unit(start),
                        eps=ctx.pgd.eps,
                        steps=ctx.apgd_steps,
                        restarts=ctx.apgd_restarts,
                        model=model,
                        start_noise=[z[start:stop] for z in noises],
                    )
                keep(start, x_adv, f"apgd-{name}")
            del noises

    # 5. Square on the deployed score: queries only, one pass over the whole set per query
    if apgd and ctx.square_queries > 0:
        x_all = to_unit(images) if images.dtype == torch.uint8 else images
        with fp32_scoring(device):
            x_adv, _ = square_linf(
                lambda z: sign * detector.score(model, z).float(),
                x_all,
                square_config(ctx),
                seed=derive_seed(ctx.seed, BLACK_BOX_ATTACK, sign),
                batch_size=ctx.batch_size,
                progress=lambda it: progress(it, desc=f"{desc} square", enabled=ctx.progress, unit="query"),
            )
        for start in batches:
            keep(start, x_adv[start : start + ctx.batch_size], BLACK_BOX_ATTACK)
        del x_all, x_adv
    if per_attack is not None:
        for name in per_attack:
            per_attack[name] = sign * per_attack[name]
    return sign * best


def strong_scores(
    detector: Detector,
    model: nn.Module,
    images: torch.Tensor,
    ctx: AttackContext,
    desc: str,
    inspect: Inspect | None = None,
    per_attack: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Deployed scores float32 [N] of OOD `images` (uint8 [N, 3, H, W] or float in [0, 1]) under the `strong`
    protocol: per sample the highest deployed score over the paper's PGD, APGD (`ctx.apgd_steps` iterations x
    `ctx.apgd_restarts` restarts) on the attack, margin and adaptive objectives, and Square (`ctx.square_queries`
    queries) on the deployed score (SPEC section 6).

    Never below the paper's PGD (`attacks.linf.pgd_scores` with the same `ctx`), sample by sample. `inspect`, if
    given, is called on every attacked batch (the sanity checks verify the eps-ball, [0, 1] and the grid);
    `per_attack`, if given, receives each attack's scores (the diagnostics compare black-box and white-box)."""
    return _worst_case(
        detector,
        model,
        images,
        ctx,
        desc,
        sign=1.0,
        pgd_seed=ctx.seed,
        apgd=True,
        inspect=inspect,
        per_attack=per_attack,
    )


def attack_in_distribution(
    detector: Detector,
    model: nn.Module,
    images: torch.Tensor,
    ctx: AttackContext,
    desc: str = "attack-id",
    per_attack: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Deployed scores float32 [N] of in-distribution `images` after an attack that pushes them towards OOD
    (SPEC section 6, `strong`: "attacks on in-dist inputs too (FNR under attack)").

    PGD (`ctx.pgd`) maximising -attack_objective; with `ctx.adaptive`, also APGD on -attack_objective,
    -margin_objective and -adaptive_objective and Square on -score, keeping per sample the LOWEST deployed
    score. Random starts come from seeds derived from `ctx.seed` (distinct from the OOD attacks' starts), drawn for
    the whole set."""
    return _worst_case(
        detector,
        model,
        images,
        ctx,
        desc,
        sign=-1.0,
        pgd_seed=derive_seed(ctx.seed, "attack-id"),
        apgd=ctx.adaptive,
        per_attack=per_attack,
    )
