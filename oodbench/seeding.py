"""Seeding: every random choice of the suite draws from a seed derived from named parts, so that numbers do not
depend on the order in which cells, methods or batches run (DESIGN "Reliability principles": same seed, same
machine, same numbers)."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def numpy_rng(*parts: object) -> np.random.Generator:
    """A NumPy generator seeded from `derive_seed(*parts)` (reduced to the 32 bits NumPy's legacy seeding took)."""
    return np.random.default_rng(derive_seed(*parts) % (2**32))
