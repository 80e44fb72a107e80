"""Files that ship with oodbench: the paper's published numbers and the regression references.

In the repository they live in the top-level `results/` folder (`results/paper/*.csv`, `results/reference/*`); a
non-editable install carries the same files as the package data of `oodbench._results` (see setup.py). `bundled`
finds them in either place, the source checkout first, so an edited CSV is read at once.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

SOURCE_RESULTS = Path(__file__).resolve().parents[1] / "results"


def bundled(*parts: str) -> Path | None:
    """The path of `results/<parts...>` (a source checkout's or the installed copy), or None when neither has it."""
    candidate = SOURCE_RESULTS.joinpath(*parts)
    if candidate.exists():
        return candidate
    try:
        installed = importlib.resources.files("oodbench._results")  # a namespace package: no __init__.py
    except ModuleNotFoundError:
        return None
    for part in parts:  # Python 3.11's MultiplexedPath.joinpath takes one part at a time
        installed = installed.joinpath(part)
    # a wheel installs plain files, so the resource is a real path on disk
    path = Path(str(installed))
    return path if path.exists() else None
