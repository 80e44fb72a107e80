"""L-inf attacked OOD (white-box): PGD on the detector's attack objective (SPEC section 6)."""

from __future__ import annotations

import dataclasses

import torch

from attacks.base import AttackContext, ThreatModel, start_noise_for_set, to_unit
from attacks.pgd import pgd_linf
from attacks.strong import apgd_config, strong_scores
from oodbench.accel import attack_autocast, fp32_scoring
from oodbench.progress import progress
from oodbench.registry import register_threat


def pgd_scores(detector, model, images: torch.Tensor, ctx: AttackContext, desc: str) -> torch.Tensor:
    """Deployed scores after PGD on `images` (uint8 [N, 3, H, W], float sources), batched.

    The random starts of the whole set are drawn once from the cell's seed, so the numbers do not depend
    on the batch size. Under the `strong` protocol (`ctx.adaptive`) this is `attacks.strong.strong_scores`: the
    per-sample worst case over this PGD and APGD on several objectives (SPEC section 6).
    """
    if ctx.adaptive:
        return strong_scores(detector, model, images, ctx, desc, per_attack=ctx.per_attack)
    model.eval()
    attack_model = ctx.attack_model or model
    noises = start_noise_for_set(len(images), tuple(images.shape[1:]), ctx.pgd, ctx.seed, images.device)
    out = []
    for start in progress(range(0, len(images), ctx.batch_size), desc=desc, enabled=ctx.progress, unit="batch"):
        stop = start + ctx.batch_size
        x = to_unit(images[start:stop]) if images.dtype == torch.uint8 else images[start:stop]
        with attack_autocast(ctx.precision, x.device):
            x_adv, _ = pgd_linf(
                lambda z: detector.attack_objective(attack_model, z),
                x,
                ctx.pgd,
                model=model,
                start_noise=[n[start:stop] for n in noises],
            )
        with fp32_scoring(x.device):
            out.append(detector.score(model, x_adv).float())
    return torch.cat(out)


@register_threat("linf", summary="L-inf PGD on the method's objective (eps 8/255, 40 x 1/255)")
class LinfPGD(ThreatModel):
    """L-inf attacked OOD (Table 1, 'L_inf OOD'): white-box PGD on the detector's attack objective."""

    title = "L-inf"
    order = 30
    cost = 8.0
    default = True
    white_box = True

    def config(self, ctx):
        return {"pgd": dataclasses.asdict(ctx.pgd), **apgd_config(ctx)}

    def scores(self, detector, model, images, ctx):
        return pgd_scores(detector, model, images, ctx, f"linf {ctx.label}")
