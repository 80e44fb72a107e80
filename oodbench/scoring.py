"""Batched scoring: the one loop that applies a per-batch function (a detector's score, search score, layer
scores...) to a whole image set in batches and concatenates the results (DESIGN "Performance principles": the set
stays on its device, no per-sample Python loop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from oodbench.progress import progress


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (on the images' device)."""
    return images.float().div_(255.0)


def map_batches(
    fn: Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    batch_size: int,
    device: torch.device | str | None = None,
    desc: str = "",
    show_progress: bool = False,
) -> Any:
    """`fn` over `images` in batches of `batch_size`, results concatenated along the first dimension.

    uint8 images reach `fn` as float32 in [0, 1] (`to_unit`), float images as they are; each batch is moved to
    `device` first when one is given. `fn` may return a tensor or a tuple of tensors (concatenated element-wise).
    A progress bar (one tick per batch) is shown when `show_progress` and OODBENCH_PROGRESS allow it."""
    outputs = []
    starts = range(0, len(images), batch_size)
    for start in progress(starts, desc=desc, enabled=show_progress, unit="batch"):
        batch = images[start : start + batch_size]
        if device is not None:
            batch = batch.to(device)
        outputs.append(fn(to_unit(batch) if batch.dtype == torch.uint8 else batch))
    if outputs and isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)
