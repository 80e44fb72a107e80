"""End-to-end CLI tests on the built-in benchmark at a tiny scale (seconds on 2 CPU cores)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from oodbench.cli import main

TINY = ["--profile", "smoke", "--epochs", "1", "--max-ood", "24", "--pgd-steps", "2", "--no-progress", "--ood", "tiles"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_detector_threat_and_ablation(capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    for name in (
        "msp",
        "odin",
        "mahalanobis",
        "sofl",
        "oe",
        "acet",
        "ccu",
        "rowl",
        "ntom",
        "atom",
        "at",
        "natural",
        "linf",
        "corruption",
        "comp",
        "linf-joint",
        "digits",
        "cifar10",
        "densenet100",
        "small_cnn",
    ):
        assert f"  {name} " in out or f"  {name}\n" in out, name


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--methods", "mps"], "did you mean 'msp'"),
        (["run", "--methods", "msp", "--threats", "lnf"], "did you mean 'linf'"),
        (["run", "--methods", "msp", "--in", "cifar11"], "did you mean 'cifar10'"),
        (["run", "--methods", "msp", "--protocol", "paperr"], "did you mean 'paper'"),
        (["run", "--methods", "msp", "--arch", "densnet100"], "did you mean 'densenet100'"),
        (["run", "--methods", "msp", "--set", "atom.q=0.1"], "not in --methods"),
        (["run", "--methods", "atom", "--set", "atom.qq=0.1", "--profile", "smoke"], "has no setting 'qq'"),
    ],
)
def test_unknown_names_and_options_get_a_clear_error(capsys, tmp_path, args, message):
    code, out, err = _run(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 2
    assert message in err
    assert not (tmp_path / "run" / "cells").exists()


def test_missing_data_names_the_path_and_layout_before_any_compute(capsys, tmp_path):
    code, _, err = _run(
        capsys,
        "run",
        "--methods",
        "msp",
        "--in",
        "cifar10",
        "--data-root",
        str(tmp_path / "nodata"),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2
    assert "cifar-10-batches-py" in err and str(tmp_path / "nodata") in err
    assert not (tmp_path / "run").exists()


def test_run_table_and_resume(capsys, tmp_path, cache):
    out_dir = tmp_path / "run"
    code, out, err = _run(
        capsys, "run", "--methods", "msp,odin", "--threats", "natural,linf", "--out", str(out_dir), *TINY
    )
    assert code == 0, err
    cells = sorted((out_dir / "cells").glob("*.json"))
    assert len(cells) == 4  # 2 methods x 1 OOD set x 2 threats
    row = json.loads(cells[0].read_text())
    for key in ("fpr", "auroc", "aupr_in", "aupr_out", "detection_error", "id_accuracy", "fnr", "e2e_accuracy"):
        assert 0.0 <= row[key] <= 100.0
    assert (out_dir / "run.json").exists()
    # after the table, the run names the figure it drew (grouped FPR bars per threat model)
    assert f"figure (FPR per detector, natural vs attacked): {out_dir / 'fpr_by_threat.png'}" in out
    assert (out_dir / "fpr_by_threat.png").read_bytes()[:4] == b"\x89PNG"
    mtimes = {p: p.stat().st_mtime_ns for p in cells}
    # a rerun of the same command finds every cell finished and computes nothing
    code, out, err = _run(
        capsys, "run", "--methods", "msp,odin", "--threats", "natural,linf", "--out", str(out_dir), *TINY
    )
    assert code == 0 and "nothing to do" in err
    assert {p: p.stat().st_mtime_ns for p in cells} == mtimes

    code, out, _ = _run(capsys, "table", str(out_dir))
    assert code == 0 and "Natural FPR" in out and "L-inf AUROC" in out and "msp" in out
    code, out, _ = _run(capsys, "table", str(out_dir), "--format", "latex")
    assert code == 0 and "\\begin{tabular}" in out and "\\textbf{" in out
    code, out, _ = _run(capsys, "table", str(out_dir), "--per-ood")
    assert code == 0 and "tiles" in out
    code, out, _ = _run(capsys, "table", str(out_dir), "--format", "csv")
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == ["in_dist", "method", "ood_set", "threat", "metric", "value", "flags"]
    assert set(frame["ood_set"]) == {"tiles", "average"}
    assert set(frame["metric"]) == {"fpr", "auroc", "aupr_in", "aupr_out", "detection_error"}
    code, out, _ = _run(capsys, "table", str(out_dir), "--show", "protocol.name,pgd.steps")
    assert "protocol.name = paper" in out and "pgd.steps = 2" in out
    code, out, _ = _run(capsys, "table", str(out_dir), "--show", "protocol")
    assert "protocol.densenet_init = standard  # DenseNet conv init" in out and "rowl_train_attack = pgd" in out


def test_protocol_switches_are_named_with_the_paper_value_where_they_differ(capsys):
    """The DenseNet init quirk and the other atom-code switches are listed one by one (issue 12, point 7)."""
    import dataclasses

    from oodbench.config import get_protocol, protocol_lines

    lines = protocol_lines(dataclasses.asdict(get_protocol("atom-code")))
    assert any(line.startswith("protocol.densenet_init = atom-code  [paper: standard]") for line in lines)
    assert any(line.startswith("protocol.rowl_train_attack = released  [paper: pgd]") for line in lines)
    assert not any("[paper:" in line for line in protocol_lines(dataclasses.asdict(get_protocol("paper"))))
    code, out, _ = _run(capsys, "list")
    atom_code = next(line for line in out.splitlines() if line.strip().startswith("atom-code"))
    assert code == 0 and "densenet_init=atom-code" in atom_code and "rowl_train_attack=released" in atom_code


def test_a_results_directory_of_another_protocol_is_refused(capsys, tmp_path, cache):
    out_dir = tmp_path / "run"
    assert _run(capsys, "run", "--methods", "msp", "--threats", "natural", "--out", str(out_dir), *TINY)[0] == 0
    code, _, err = _run(
        capsys,
        "run",
        "--methods",
        "msp",
        "--threats",
        "natural",
        "--out",
        str(out_dir),
        "--protocol",
        "atom-code",
        *TINY,
    )
    assert code == 2 and "belongs to another run" in err and "atom-code" in err


def test_data_command_lists_sets_and_how_to_obtain_them(capsys, tmp_path):
    code, out, _ = _run(capsys, "data", "--data-root", str(tmp_path))
    assert code == 0
    assert "digits" in out and "MISSING" in out and "cifar-10-batches-py" in out


def test_table_without_runs_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "table")
    assert code == 2 and "oodbench run" in err


def test_readme_commands_match_the_cli():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "oodbench run" in readme and "python -m pytest" in readme


def test_a_run_with_progress_bars_on(tmp_path, capsys, cache, monkeypatch):
    """The other tests silence the bars; this one runs training, mining, the variant cache and all four threat
    models with every bar on, as the README's first command does."""
    monkeypatch.setenv("OODBENCH_PROGRESS", "1")
    args = [a for a in TINY if a != "--no-progress"]
    code, _, err = _run(capsys, "run", "--methods", "msp,atom", *args, "--out", str(tmp_path / "run"))
    assert code == 0, err
    for bar in ("epoch 1", "linf", "comp"):
        assert bar in err, bar
