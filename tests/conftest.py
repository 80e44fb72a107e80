"""Shared fixtures. Tests never need files outside the repository: those that use the real images in
`../shared/data` (or $OODBENCH_SHARED) skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OODBENCH_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Two threads, like CI: keeps timings honest and results reproducible."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture
def shared_dir() -> Path:
    """The `shared/` folder next to the repository; skips the test when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real-image data not present at {SHARED / 'data'}")
    return SHARED
