"""The wheel carries everything the commands need (issue 10, point 6): built here, installed into a fresh
virtual environment outside the repository, and used on a finished run, with no source checkout in reach."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from oodbench.check import resolve_baseline
from oodbench.errors import ConfigError
from oodbench.resources import bundled

REPO = Path(__file__).resolve().parents[1]


def test_bundled_finds_the_source_checkout_files():
    assert bundled("paper", "all.csv") == REPO / "results" / "paper" / "all.csv"
    assert bundled("reference", "smoke.csv") == REPO / "results" / "reference" / "smoke.csv"
    assert bundled("paper", "no-such.csv") is None


def test_reference_baseline_names():
    assert resolve_baseline("reference:smoke") == REPO / "results" / "reference" / "smoke.csv"
    assert resolve_baseline("some/file.csv") == Path("some/file.csv")
    with pytest.raises(ConfigError, match="known: smoke"):
        resolve_baseline("reference:nope")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("oodbench-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "oodbench/_results/paper/all.csv",
        "oodbench/_results/paper/table01.csv",
        "oodbench/_results/reference/smoke.csv",
        "oodbench/cli.py",
        "baselines/atom.py",
        "attacks/corruptions/cifar.py",
    ):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_runs_table_vs_paper_and_check(wheel, tmp_path):
    """A fresh venv (its dependencies borrowed from this one through a .pth file, so no 5 GB torch install; the
    editable install's finder is not activated that way) gets the wheel; from a folder outside the repository it
    runs a tiny run, `table --vs-paper` and `check --against reference:smoke`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(target, "borrowed-deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", target, str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OODBENCH_PAPER_DIR")}
    env.update(OODBENCH_PROGRESS="0", MPLBACKEND="Agg", OODBENCH_CACHE=str(tmp_path / "cache"))
    work = tmp_path / "elsewhere"
    work.mkdir()

    def oodbench(*args: str) -> str:
        done = subprocess.run(
            [str(python), "-m", "oodbench", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode in (0, 1), done.stderr[-3000:]
        return done.stdout + done.stderr

    where = subprocess.run(
        [str(python), "-c", "import oodbench, baselines; print(oodbench.__file__, baselines.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in where and target in where, where
    oodbench(
        "run", "--profile", "smoke", "--methods", "msp", "--ood", "tiles", "--threats", "natural",
        "--epochs", "1", "--max-ood", "20", "--no-progress", "--out", "run",
    )  # fmt: skip
    table = oodbench("table", "run", "--vs-paper")
    assert "Traceback" not in table and "msp" in table.lower()
    checked = oodbench("check", "run", "--against", "reference:smoke", "--tol", "100")
    assert "Traceback" not in checked and "cells within" in checked
