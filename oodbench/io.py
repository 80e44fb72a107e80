"""Atomic file writes (temp file in the same folder + fsync + rename): a crash never leaves a partial file
under the final name (DESIGN reliability principles)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_OWNER}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _host() -> str:
    return socket.gethostname().replace(".", "_")


_OWNER = f"{_host()}-{os.getpid()}"


def remove_stale_temporaries(folder: Path | str) -> int:
    """Delete temp files left below `folder` by killed processes of this host (their pid is gone); returns how
    many. Temp files of live processes (another worker writing into the same run) are left alone."""
    host = _host()
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        owner = tmp.name.rsplit(".", 3)[-3] if tmp.name.count(".") >= 3 else ""
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: Path | str, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npz(path: Path | str, **arrays: np.ndarray) -> None:
    """Write arrays to an .npz file, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
