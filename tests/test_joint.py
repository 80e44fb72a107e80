"""The `linf-joint` threat model (SPEC section 6 "Joint", ATD's protocol) and the `strong` protocol end to end:
Square in run.json, diagnostics in the cells, flags in the tables."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from attacks.base import AttackContext
from attacks.pgd import PGDConfig
from baselines.msp import MSP
from oodbench.cli import main
from oodbench.metrics import ood_metrics
from oodbench.registry import THREATS

TINY = ["--profile", "smoke", "--epochs", "1", "--max-ood", "24", "--max-train", "300", "--pgd-steps", "2"]


def test_joint_attacks_both_sides_and_is_registered():
    joint = THREATS.get("linf-joint")()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    images = torch.randint(0, 256, (12, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    ctx = AttackContext(batch_size=8, pgd=PGDConfig(steps=5), progress=False)
    detector = MSP(5)
    with torch.no_grad():
        clean = detector.score(model, images.float() / 255)
    towards_ood = joint.in_distribution_scores(detector, model, images, ctx)
    towards_in = joint.scores(detector, model, images, ctx)
    assert (towards_ood <= clean + 1e-6).all() and towards_ood.mean() < clean.mean()
    assert (towards_in >= clean - 1e-6).all() and towards_in.mean() > clean.mean()
    assert THREATS.get("linf")().in_distribution_scores(detector, model, images, ctx) is None


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))


def test_strong_run_with_square_joint_diagnostics_and_flags(tmp_path, capsys, cache):
    out = tmp_path / "run"
    args = ["run", "--methods", "msp", "--ood", "tiles", "--threats", "linf,linf-joint", "--protocol", "strong"]
    assert main([*args, "--square-queries", "10", "--out", str(out), "--no-progress", *TINY]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["attacks"]["square"]["queries"] == 10 and record["attacks"]["apgd"]["steps"] == 25
    rows = {}
    for path in (out / "cells").glob("*.json"):
        row = json.loads(path.read_text())
        rows[row["threat"]] = (row, np.load(path.with_suffix(".npz")))
    joint, joint_npz = rows["linf-joint"]
    linf, _ = rows["linf"]
    assert joint["id_attacked"] and not linf["id_attacked"]
    assert joint["threshold"] < linf["threshold"]  # the threshold comes from the attacked in-dist scores
    expected = ood_metrics(joint_npz["id_scores"], joint_npz["ood_scores"])
    assert joint["fpr"] == pytest.approx(expected["fpr"]) and joint["auroc"] == pytest.approx(expected["auroc"])
    for row in (joint, linf):
        assert {"zero_grad", "saturated", "black_box_wins", "eps_sweep", "by_attack_fpr"} <= set(row["diagnostics"])
        assert "square" in row["diagnostics"]["by_attack_fpr"]
    capsys.readouterr()
    assert main(["table", str(out), "--flags"]) == 0
    text = capsys.readouterr().out
    assert "linf-joint" in text and "zero-grad %" in text
    assert main(["table", str(out)]) == 0
    assert "Joint FPR" in capsys.readouterr().out
    assert main(["table", str(out), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert "flags" in frame.columns and set(frame["threat"]) == {"linf", "linf-joint"}


def test_a_negative_square_budget_is_refused_before_any_compute(tmp_path, capsys, cache):
    code = main(["run", "--methods", "msp", "--square-queries", "-1", "--out", str(tmp_path / "r"), *TINY])
    assert code != 0 and "--square-queries" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
