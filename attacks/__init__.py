"""Threat models (SPEC section 6): natural, L-inf PGD, corruption, compositional.

The threat-model modules register themselves when the registry loads its plugins (`oodbench.registry`). This
package imports nothing at import time, so that corruption workers (`attacks.corruptions`, started with spawn)
do not pay for torch and the rest of the suite.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "AttackContext": "attacks.base",
    "ThreatModel": "attacks.base",
    "PGDConfig": "attacks.pgd",
    "pgd_linf": "attacks.pgd",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")
