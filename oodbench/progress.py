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


class _NoBar:
    """Stands in for a tqdm bar when bars are off: accepts the same calls and prints nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def byte_progress(total: int | None, desc: str = "", enabled: bool = True, initial: int = 0):
    """A bar counting bytes (downloads, hashing): `bar.update(n)` per chunk; a silent stand-in when disabled
    (argument or OODBENCH_PROGRESS=0). Use as a context manager."""
    if not enabled or os.environ.get("OODBENCH_PROGRESS", "1") == "0":
        return _NoBar()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        dynamic_ncols=True,
        leave=False,
    )
