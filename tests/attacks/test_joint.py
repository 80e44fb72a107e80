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


def test_joint_run_diagnostics_and_flags_end_to_end(tmp_path, capsys, cache):
    out = tmp_path / "run"
    args = ["run", "--methods", "msp", "--ood", "tiles", "--threats", "linf,linf-joint", "--out", str(out)]
    assert main([*args, "--no-progress", *TINY]) == 0
    rows = {}
    for path in (out / "cells").glob("*.json"):
        row = json.loads(path.read_text())
        rows[row["threat"]] = (row, np.load(path.with_suffix(".npz")))
    joint, joint_npz = rows["linf-joint"]
    linf, _ = rows["linf"]
    assert joint["id_attacked"] and not linf["id_attacked"]
    (clean_npz,) = (out / "id").glob("msp-*[0-9a-f].npz")
    clean = np.load(clean_npz)["scores"]
    assert joint_npz["id_scores"].mean() < clean.mean()  # in-dist images were pushed towards OOD
    assert joint["threshold"] == pytest.approx(float(np.sort(joint_npz["id_scores"])[25]))  # from the attacked ones
    expected = ood_metrics(joint_npz["id_scores"], joint_npz["ood_scores"])
    assert joint["fpr"] == pytest.approx(expected["fpr"]) and joint["auroc"] == pytest.approx(expected["auroc"])
    for row in (joint, linf):  # the cheap diagnostics run under every protocol, the sweep only under strong
        assert {"zero_grad", "saturated"} <= set(row["diagnostics"]) and "eps_sweep" not in row["diagnostics"]
    capsys.readouterr()
    assert main(["table", str(out), "--flags"]) == 0
    text = capsys.readouterr().out
    assert "linf-joint" in text and "zero-grad %" in text
    assert main(["table", str(out)]) == 0
    assert "Joint FPR" in capsys.readouterr().out
    assert main(["table", str(out), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert "flags" in frame.columns and set(frame["threat"]) == {"linf", "linf-joint"}


def test_strong_plan_records_square_and_keys_only_strong_cells_by_it(tmp_path, cache):
    from oodbench.runner import RunOptions, plan_run

    def plan(protocol, queries):
        options = RunOptions(
            methods=["msp"],
            ood=["tiles"],
            threats=["linf", "corruption"],
            protocol=protocol,
            profile="smoke",
            square_queries=queries,
            out=str(tmp_path / f"{protocol}-{queries}"),
            progress=False,
        )
        return plan_run(options, log=lambda line: None)

    strong = plan("strong", 10)
    assert strong.record["attacks"]["square"] == {"eps": 8 / 255, "queries": 10, "p_init": 0.8, "objective": "score"}
    assert strong.record["attacks"]["apgd"]["steps"] == 25
    other = {c.threat: c.key for c in plan("strong", 20).cells}
    keys = {c.threat: c.key for c in strong.cells}
    assert keys["linf"] != other["linf"] and keys["corruption"] == other["corruption"]  # Square is L-inf only
    paper = plan("paper", 10)
    assert "square" not in paper.record["attacks"]
    assert {c.key for c in paper.cells} == {c.key for c in plan("paper", 20).cells}


def test_a_negative_square_budget_is_refused_before_any_compute(tmp_path, capsys, cache):
    code = main(["run", "--methods", "msp", "--square-queries", "-1", "--out", str(tmp_path / "r"), *TINY])
    assert code != 0 and "--square-queries" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
