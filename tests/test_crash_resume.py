"""Crash safety and determinism (DESIGN reliability principles): SIGKILL during training, mining, an attack and
result writing; rerunning the same command resumes and produces the same numbers as an uninterrupted run,
with no partial or corrupt files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ARGS = [
    "run",
    "--methods",
    "ntom",
    "--profile",
    "smoke",
    "--epochs",
    "3",
    "--max-ood",
    "24",
    "--pgd-steps",
    "2",
    "--ood",
    "tiles",
    "--threats",
    "natural,linf",
    "--no-progress",
]


def oodbench(out: Path, cache: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OODBENCH_CACHE": str(cache), "OODBENCH_PROGRESS": "0"}
    env.pop("OODBENCH_CRASH_AT", None)
    if crash_at:
        env["OODBENCH_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "oodbench.cli", *ARGS, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def metrics(run: Path) -> dict:
    rows = {}
    for path in sorted((run / "cells").glob("*.json")):
        row = json.loads(path.read_text())
        scores = np.load(path.with_suffix(".npz"))["ood_scores"]
        rows[(row["method"], row["ood_set"], row["threat"])] = (row["fpr"], row["auroc"], scores.tobytes())
    return rows


def weights(run: Path) -> dict:
    (final,) = run.glob("checkpoints/*/final.pt")
    return torch.load(final, weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    done = oodbench(root / "run", root / "cache")
    assert done.returncode == 0, done.stderr
    return root / "run", root / "cache"


def test_same_command_twice_gives_identical_numbers(reference, tmp_path):
    run, cache = reference
    again = oodbench(tmp_path / "run", cache)
    assert again.returncode == 0, again.stderr
    assert metrics(tmp_path / "run") == metrics(run)
    for key, value in weights(run).items():
        assert torch.equal(value, weights(tmp_path / "run")[key]), key


@pytest.mark.parametrize("point", ["train:ntom:1", "mining:ntom:2", "attack:linf", "write:linf"])
def test_sigkill_then_rerun_resumes_to_the_same_numbers(reference, tmp_path, point):
    run, cache = reference
    out = tmp_path / "run"
    killed = oodbench(out, cache, crash_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = oodbench(out, cache)
    assert resumed.returncode == 0, resumed.stderr
    if point.startswith(("train", "mining")):
        assert "resuming from" in resumed.stderr  # training continued from the last finished epoch
    assert metrics(out) == metrics(run)
    for key, value in weights(run).items():
        assert torch.equal(value, weights(out)[key]), key
    assert not list(out.rglob("*.tmp")), "partial files left behind"
    assert not list(out.glob("checkpoints/*/last.pt")), "the resume checkpoint outlived a finished training"
    for path in out.rglob("*.json"):
        json.loads(path.read_text())  # every JSON parses
