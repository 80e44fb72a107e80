"""Natural OOD: clean inputs (the classic evaluation)."""

from __future__ import annotations

import torch
from torch import nn

from attacks.base import AttackContext, ThreatModel
from oodbench.registry import register_threat
from oodbench.scoring import map_batches


def batched_scores(detector, model: nn.Module, images: torch.Tensor, ctx: AttackContext, desc: str) -> torch.Tensor:
    """Deployed scores of clean uint8 `images`, in batches of ctx.batch_size."""
    model.eval()
    return map_batches(
        lambda x: detector.score(model, x).float(), images, ctx.batch_size, desc=desc, show_progress=ctx.progress
    )


@register_threat("natural", summary="clean OOD inputs")
class Natural(ThreatModel):
    """Natural OOD inputs (Table 1, 'Natural OOD')."""

    title = "Natural"
    order = 10
    cost = 1.0
    default = True

    def scores(self, detector, model, images, ctx):
        return batched_scores(detector, model, images, ctx, f"natural {ctx.label}")
