"""Joint L-inf attack of in-distribution and OOD inputs (SPEC section 6 "Joint"; ATD's protocol: Azizmalayeri et
al., "Your Out-of-Distribution Detection Method is Not Robust!", NeurIPS 2022).

OOD images are pushed towards in-dist exactly as by the `linf` threat model (the paper's PGD, or the `strong`
worst case), and the in-dist test images are pushed towards OOD under the same eps (`attacks.strong.
attack_in_distribution`: PGD on -attack_objective, under `strong` also APGD and Square, per image the lowest
deployed score). FPR@95TPR takes its threshold from the attacked in-dist scores and AUROC compares both attacked
sets. `--attack-id` (the FNR under attack at the clean threshold) is unrelated and keeps its meaning.
"""

from __future__ import annotations

import dataclasses

from attacks.base import ThreatModel
from attacks.linf import pgd_scores
from attacks.strong import apgd_config, attack_in_distribution
from oodbench.registry import register_threat


@register_threat("linf-joint", summary="L-inf on both sides: OOD towards in-dist and in-dist towards OOD (ATD)")
class LinfJoint(ThreatModel):
    """Jointly attacked in-dist and OOD (ATD's protocol): both attacked sets enter FPR@95TPR and AUROC."""

    title = "Joint"
    order = 50  # after the paper's four
    cost = 8.0  # one PGD per OOD image, as linf (the in-dist attack runs once per run, not per cell)
    white_box = True

    def config(self, ctx):
        return {"pgd": dataclasses.asdict(ctx.pgd), "in_dist_attacked": True, **apgd_config(ctx)}

    def scores(self, detector, model, images, ctx):
        return pgd_scores(detector, model, images, ctx, f"linf-joint {ctx.label}")

    def in_distribution_scores(self, detector, model, images, ctx):
        return attack_in_distribution(detector, model, images, ctx, f"linf-joint {ctx.label} in-dist")
