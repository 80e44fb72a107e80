"""Checkpoints: written atomically, loaded with `torch.load(weights_only=True)`, carrying metadata that is
checked against what the run expects (method, architecture, classes, head size)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oodbench.errors import CheckpointError
from oodbench.io import atomic_path

FORMAT = "oodbench-checkpoint-v1"


def save_checkpoint(path: Path | str, model: nn.Module, meta: dict[str, Any], **extra: Any) -> None:
    """Save `model`'s state with `meta` (and resume state in `extra`), atomically."""
    payload = {"format": FORMAT, "meta": meta, "model": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path | str, map_location="cpu") -> dict[str, Any]:
    """Load an oodbench checkpoint safely; CheckpointError for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, pickle with disallowed globals, not a torch file ...
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        detail = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read ({detail}); "
            "it is truncated or not a checkpoint written by oodbench. Delete it to retrain, or pass another file"
        ) from None
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        from oodbench.models.released import is_released_payload

        if is_released_payload(payload):  # the released ATOM code's file: converted when loaded into a model
            return {"format": FORMAT, "meta": {}, "model": payload.get("state_dict", payload), "released": True}
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint '{path}' is not an oodbench checkpoint (no '{FORMAT}' header); "
            "to fine-tune from foreign weights use --init"
        )
    return payload


def check_meta(path: Path | str, meta: dict[str, Any], expected: dict[str, Any]) -> None:
    """CheckpointError listing every field of `expected` that the checkpoint's metadata contradicts."""
    wrong = [
        f"{k}: checkpoint has {meta.get(k)!r}, this run needs {v!r}" for k, v in expected.items() if meta.get(k) != v
    ]
    if wrong:
        raise CheckpointError(f"checkpoint '{path}' does not fit this run:\n  " + "\n  ".join(wrong))


def file_sha256(path: Path | str) -> str:
    """sha256 of a file (provenance of checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, list[str]]:
    """Copy `state` into `model` for fine-tuning (`--init`): tensors of equal shape are copied; a head with
    more outputs than the source keeps the source's rows and its own initialisation for the extra rows.
    Raises CheckpointError when most of the model would stay uninitialised (another architecture)."""
    own = model.state_dict()
    copied, partial, missing = [], [], []
    for key, target in own.items():
        src = state.get(key)
        if src is None:
            missing.append(key)
        elif src.shape == target.shape:
            own[key] = src.to(target.dtype)
            copied.append(key)
        elif src.ndim == target.ndim and src.shape[1:] == target.shape[1:] and src.shape[0] < target.shape[0]:
            merged = target.clone()
            merged[: src.shape[0]] = src.to(target.dtype)
            own[key] = merged
            partial.append(key)
        else:
            missing.append(key)
    learnable = [k for k in own if not k.endswith("num_batches_tracked")]
    if len(missing) > len(learnable) // 2:
        raise CheckpointError(
            f"--init '{source}': only {len(copied)} of {len(learnable)} tensors fit this architecture "
            f"(first missing: {missing[:3]}); is it a checkpoint of another architecture?"
        )
    model.load_state_dict(own)
    return {"copied": copied, "partial": partial, "missing": missing}
