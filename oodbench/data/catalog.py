"""What the data registry knows without loading anything: the data root, the paper's OOD lists, and which
registered sets are present (`dataset_status`). Below the loaders and the downloader, which both use it."""

from __future__ import annotations

import os
from pathlib import Path

from oodbench.data.base import DatasetSpec
from oodbench.registry import DATASETS

CIFAR_OOD = ("svhn", "textures", "places365", "lsun_c", "lsun_r", "isun")
SVHN_OOD = ("cifar10", "textures", "places365", "lsun_c", "lsun_r", "isun")
PLACES365_LIST = "places365_test_list.txt"


def default_root() -> Path:
    """The data root when none is given: `$OODBENCH_DATA`, else `./data`."""
    return Path(os.environ.get("OODBENCH_DATA", "data")).expanduser()


def _root(root: Path | str | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()


def dataset_status(root: Path | str | None = None) -> list[dict]:
    """One row per registered set and role: name, role, present (its files exist; content is checked at load
    time), path, layout, obtain, builtin, size (images of the full set)."""
    base = _root(root)
    rows = []
    for entry in DATASETS.entries():
        spec: DatasetSpec = entry.obj
        for role in spec.roles:
            rel = spec.paths.get(role, ())
            rows.append(
                {
                    "name": spec.name,
                    "role": role,
                    "present": spec.builtin or (bool(rel) and all((base / r).exists() for r in rel)),
                    "path": "(built-in)" if spec.builtin else str(base / rel[0]) if rel else str(base),
                    "layout": spec.layout,
                    "obtain": spec.obtain,
                    "builtin": spec.builtin,
                    "size": spec.sizes.get(role),
                }
            )
    return rows
