"""`oodbench check`: regression of reported numbers against a run, a tidy CSV, or the paper."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from oodbench.cli import main


def fake_run(path, values, in_dist="digits", arch="small_cnn", protocol="paper"):
    """A run directory with one cell per (method, ood_set, threat) -> (fpr, auroc)."""
    (path / "cells").mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"protocol": {"name": protocol}}))
    for i, ((method, ood, threat), (fpr, auroc)) in enumerate(values.items()):
        row = {
            "key": f"k{i}",
            "in_dist": in_dist,
            "method": method,
            "ood_set": ood,
            "threat": threat,
            "protocol": protocol,
            "arch": arch,
            "aux": None,
            "seed": 0,
            "fpr": fpr,
            "auroc": auroc,
            "aupr_in": 50.0,
            "aupr_out": 50.0,
            "detection_error": 10.0,
        }
        (path / "cells" / f"k{i}.json").write_text(json.dumps(row))
    return path


VALUES = {
    ("msp", "tiles", "natural"): (40.0, 80.0),
    ("msp", "tiles", "linf"): (100.0, 5.0),
    ("msp", "scenes_crop", "natural"): (20.0, 90.0),
    ("msp", "scenes_crop", "linf"): (99.0, 9.0),
}


def test_identical_runs_pass_and_a_moved_number_fails(tmp_path, capsys):
    a = fake_run(tmp_path / "a", VALUES)
    b = fake_run(tmp_path / "b", VALUES)
    assert main(["check", str(a), "--against", str(b)]) == 0
    changed = dict(VALUES)
    changed[("msp", "tiles", "natural")] = (41.5, 80.0)
    c = fake_run(tmp_path / "c", changed)
    capsys.readouterr()
    assert main(["check", str(c), "--against", str(a), "--tol", "1.0"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "tiles" in out and "1.50" in out
    assert main(["check", str(c), "--against", str(a), "--tol", "2.0"]) == 0


def test_csv_baseline_update_and_deliberate_change(tmp_path, capsys):
    run = fake_run(tmp_path / "run", VALUES)
    csv = tmp_path / "reference.csv"
    assert main(["table", str(run), "--format", "csv", "--output", str(csv)]) == 0
    assert main(["check", str(run), "--against", str(csv), "--tol", "0"]) == 0
    # a deliberately changed reference number fails the check, and names the cell
    frame = pd.read_csv(csv)
    row = (frame["ood_set"] == "average") & (frame["threat"] == "linf") & (frame["metric"] == "fpr")
    frame.loc[row, "value"] += 3.0
    frame.to_csv(csv, index=False)
    capsys.readouterr()
    assert main(["check", str(run), "--against", str(csv), "--tol", "1.0"]) == 1
    assert "average" in capsys.readouterr().out
    # --update rewrites the baseline deliberately; then it passes again
    assert main(["check", str(run), "--against", str(csv), "--update"]) == 0
    assert main(["check", str(run), "--against", str(csv), "--tol", "0"]) == 0


def test_missing_cells_on_either_side_fail(tmp_path, capsys):
    a = fake_run(tmp_path / "a", VALUES)
    fewer = {k: v for k, v in VALUES.items() if k[2] == "natural"}
    b = fake_run(tmp_path / "b", fewer)
    assert main(["check", str(b), "--against", str(a)]) == 1
    assert "but not in the run" in capsys.readouterr().out
    assert main(["check", str(a), "--against", str(b)]) == 1


def test_against_paper_counts_cells_within_tolerance(tmp_path, capsys):
    values = {
        ("msp", ood, "natural"): (50.54, 91.79) for ood in ("svhn", "textures", "places365", "lsun_c", "lsun_r", "isun")
    }
    run = fake_run(tmp_path / "run", values, in_dist="cifar10", arch="densenet100", protocol="atom-code")
    assert main(["check", str(run), "--against", "paper", "--tol", "0.01"]) == 0
    assert "2 of 2 cells within" in capsys.readouterr().out


def test_bad_baseline_is_a_clear_error(tmp_path, capsys):
    run = fake_run(tmp_path / "run", VALUES)
    assert main(["check", str(run), "--against", str(tmp_path / "nope.csv")]) == 2
    assert "neither a run directory nor a CSV" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["check", str(run), "--against", str(bad)]) == 2


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_vs_paper_table_flags_protocol_differences(tmp_path, capsys, fmt):
    values = {("msp", "svhn", t): (100.0, 10.0) for t in ("natural", "corruption")}
    run = fake_run(tmp_path / "run", values, in_dist="cifar10", arch="densenet100", protocol="paper")
    assert main(["table", str(run), "--vs-paper", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "protocol differs" in out and "50.54" in out


def test_a_run_equals_its_own_csv_at_tol_0_and_a_move_of_2e_4_fails():
    """CSV baselines hold 4 decimals: a value on a ...5 rounding boundary still equals its written form, while a
    real change in the 4th decimal is a move."""
    import io

    import pandas as pd

    from oodbench.check import compare

    key = {"in_dist": "shapes", "method": "msp", "ood_set": "tiles", "threat": "natural", "metric": "fpr"}
    run = pd.DataFrame([{**key, "value": 41.51515}, {**key, "ood_set": "scenes", "value": 12.34565}])
    written = pd.read_csv(io.StringIO(run.to_csv(index=False, float_format="%.4f")))
    assert compare(run, written, tol=0).moved.empty
    moved = run.assign(value=run["value"] + [0.0, 2e-4])
    assert list(compare(moved, written, tol=0).moved["ood_set"]) == ["scenes"]
