"""Natural OOD: clean inputs (the classic evaluation)."""

from __future__ import annotations

import torch
from torch import nn

from attacks.base import AttackContext, ThreatModel, to_unit
from oodbench.progress import progress
from oodbench.registry import register_threat


def batched_scores(detector, model: nn.Module, images: torch.Tensor, ctx: AttackContext, desc: str) -> torch.Tensor:
    """Deployed scores of clean uint8 `images`, in batches of ctx.batch_size."""
    model.eval()
    out = []
    for start in progress(range(0, len(images), ctx.batch_size), desc=desc, enabled=ctx.progress, unit="batch"):
        out.append(detector.score(model, to_unit(images[start : start + ctx.batch_size])).float())
    return torch.cat(out)


@register_threat("natural", summary="clean OOD inputs")
class Natural(ThreatModel):
    """Natural OOD inputs (Table 1, 'Natural OOD')."""

    name = "natural"

    def scores(self, detector, model, images, ctx):
        return batched_scores(detector, model, images, ctx, f"natural {ctx.label}")
