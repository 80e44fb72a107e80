"""The `strong` protocol's adaptive white-box attacks (SPEC section 6, "`strong` adds ...").

Per sample, the worst case (for OOD inputs: the highest deployed score) over several attacks, each scored with
the detector's deployed `score`:

1. the paper's PGD on `attack_objective` (exactly `attacks.linf.pgd_scores`: same seed, same random starts);
2. APGD (Croce & Hein 2020; `attacks.apgd`) on `attack_objective` (the paper's eqs. 68-71);
3. APGD on `margin_objective` (a margin-style objective);
4. APGD on `adaptive_objective`: the deployed score made differentiable end to end (ODIN through T and its
   preprocessing, Mahalanobis through its preprocessing and regression, ROWL's decision margin). It is skipped
   for a detector that does not override it, since the default is `attack_objective`, already attacked in 2.

Only a running maximum of the deployed score is kept, so memory does not grow with the number of attacks or
restarts. All random starts are drawn for the whole set from seeds derived from `ctx.seed`, so the numbers do not
depend on the batch size. `attack_in_distribution` is the mirror image for in-distribution inputs (FNR under
attack): it pushes them towards OOD and keeps the lowest deployed score.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attacks.apgd import apgd_linf, apgd_start_noise_for_set
from attacks.base import AttackContext, start_noise_for_set, to_unit
from attacks.pgd import pgd_linf
from oodbench.accel import attack_autocast, fp32_scoring
from oodbench.detector import Detector
from oodbench.progress import progress
from oodbench.seeding import derive_seed

#: inspect(attack name, index of the batch's first image, source batch, adversarial batch): sees every attacked point
Inspect = Callable[[str, int, torch.Tensor, torch.Tensor], None]

#: the objectives the `strong` protocol attacks with APGD (part of the cell key through the threats' config)
APGD_OBJECTIVES = ("attack", "margin", "adaptive")


def apgd_config(ctx: AttackContext) -> dict:
    """The APGD settings that change a `strong` cell's numbers (empty when the protocol is not adaptive)."""
    if not ctx.adaptive:
        return {}
    return {"apgd": {"steps": ctx.apgd_steps, "restarts": ctx.apgd_restarts, "objectives": list(APGD_OBJECTIVES)}}


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
) -> torch.Tensor:
    """Per sample max of sign * deployed score over PGD on sign * attack_objective and (if `apgd`) APGD on
    sign * each objective; returns the deployed scores of the worst points (float32 [N])."""
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
    return sign * best


def strong_scores(
    detector: Detector,
    model: nn.Module,
    images: torch.Tensor,
    ctx: AttackContext,
    desc: str,
    inspect: Inspect | None = None,
) -> torch.Tensor:
    """Deployed scores float32 [N] of OOD `images` (uint8 [N, 3, H, W] or float in [0, 1]) under the `strong`
    protocol: per sample the highest deployed score over the paper's PGD and APGD (`ctx.apgd_steps` iterations x
    `ctx.apgd_restarts` restarts) on the attack, margin and adaptive objectives (SPEC section 6).

    Never below the paper's PGD (`attacks.linf.pgd_scores` with the same `ctx`), sample by sample. `inspect`, if
    given, is called on every attacked batch (the sanity checks verify the eps-ball, [0, 1] and the grid)."""
    return _worst_case(detector, model, images, ctx, desc, sign=1.0, pgd_seed=ctx.seed, apgd=True, inspect=inspect)


def attack_in_distribution(
    detector: Detector, model: nn.Module, images: torch.Tensor, ctx: AttackContext, desc: str = "attack-id"
) -> torch.Tensor:
    """Deployed scores float32 [N] of in-distribution `images` after an attack that pushes them towards OOD
    (SPEC section 6, `strong`: "attacks on in-dist inputs too (FNR under attack)").

    PGD (`ctx.pgd`) maximising -attack_objective; with `ctx.adaptive`, also APGD on -attack_objective,
    -margin_objective and -adaptive_objective, keeping per sample the LOWEST deployed score. Random starts come
    from seeds derived from `ctx.seed` (distinct from the OOD attacks' starts), drawn for the whole set."""
    return _worst_case(
        detector,
        model,
        images,
        ctx,
        desc,
        sign=-1.0,
        pgd_seed=derive_seed(ctx.seed, "attack-id"),
        apgd=ctx.adaptive,
    )
