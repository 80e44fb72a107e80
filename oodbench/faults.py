"""Fault injection for the crash-safety tests: `OODBENCH_CRASH_AT=<point>` makes the process SIGKILL itself when
it reaches that point, exactly as an out-of-memory kill or a pre-empted cluster job would. Points:

- `train:<stage>:<epoch>` after the optimiser steps of that epoch, before its checkpoint is written
- `mining:<stage>:<epoch>` after the candidates were scored, before training on them
- `attack:<threat>` inside a cell, after the attack, before any result is written
- `write:<threat>` between a cell's score file and its metrics row

Unset (always, outside tests) this costs one dictionary lookup per call.
"""

from __future__ import annotations

import os
import signal


def crash_point(point: str) -> None:
    """SIGKILL this process if OODBENCH_CRASH_AT names `point`."""
    if os.environ.get("OODBENCH_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
