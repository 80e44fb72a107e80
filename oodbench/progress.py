"""Progress bars on every long loop (tqdm), silenced with OODBENCH_PROGRESS=0 or when disabled."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", enabled: bool = True, **kwargs) -> Iterable[T]:
    """Wrap `iterable` in a tqdm bar on stderr unless disabled (argument or OODBENCH_PROGRESS=0)."""
    if not enabled or os.environ.get("OODBENCH_PROGRESS", "1") == "0":
        return iterable
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, dynamic_ncols=True, **kwargs)
