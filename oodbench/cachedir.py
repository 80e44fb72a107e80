"""The cache directory, shared by runs: `$OODBENCH_CACHE`, default `~/.cache/oodbench` (one rule for everything
cached by content key: decoded data sets under `decoded/`, corruption variants under `variants/`)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "OODBENCH_CACHE"


def cache_root() -> Path:
    """`$OODBENCH_CACHE` (user-expanded), else `~/.cache/oodbench`."""
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "oodbench"


def cache_dir(kind: str) -> Path:
    """The cache of one kind of object (`decoded`, `variants`) under `cache_root()`."""
    return cache_root() / kind


def cache_env() -> dict[str, str]:
    """The environment that gives a job started elsewhere (another directory, another node) this process's cache
    (absolute path), or nothing when the default applies."""
    env = os.environ.get(ENV)
    return {ENV: str(Path(env).expanduser().resolve())} if env else {}
