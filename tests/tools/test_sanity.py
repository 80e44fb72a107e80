"""Attack sanity checks (`oodbench sanity`): the five checks pass on a tiny trained MSP model, they can fail on a
broken attack, and the command is registered with the right exit codes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import oodbench.tools.sanity as sanity
from attacks.base import AttackContext
from attacks.pgd import PGDConfig
from baselines.msp import MSP
from oodbench.checkpoint import save_checkpoint
from oodbench.cli import main
from oodbench.models import create_model

#: the paper's PGD (40 x 1/255); on this MLP the checks take seconds
PGD = PGDConfig()


@pytest.fixture(scope="module")
def subject():
    """(MSP, an MLP trained for ~1 s on scikit-learn's 8x8 digits, 32 crops of a photo downscaled to 8x8 as OOD,
    the clean in-distribution scores of 397 held-out digits)."""
    from sklearn.datasets import load_digits, load_sample_image

    torch.set_num_threads(2)
    digits = load_digits()
    images = torch.tensor(digits.images * 255 / 16).round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1)
    labels = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    train = images[:1400].float() / 255
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        index = torch.randint(0, 1400, (64,), generator=generator)
        loss = F.cross_entropy(model(train[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    detector = MSP(10)
    with torch.no_grad():
        id_scores = detector.score(model, images[1400:].float() / 255)
    photo = torch.tensor(load_sample_image("china.jpg")).permute(2, 0, 1).float()  # 3 x 427 x 640
    corners = torch.randint(0, 360, (32, 2), generator=generator)
    crops = torch.stack([photo[:, r : r + 64, c : c + 64] for r, c in corners.tolist()])
    ood = F.interpolate(crops, size=8, mode="area").round().to(torch.uint8)
    return detector, model, ood, id_scores.numpy()


def _ctx():
    return AttackContext(batch_size=64, seed=0, pgd=PGD, apgd_steps=8, apgd_restarts=1, progress=False)


def test_the_five_checks_pass_on_a_trained_msp_model(subject):
    detector, model, ood, id_scores = subject
    rows, checks = sanity.run_sanity(detector, model, ood, id_scores, _ctx())
    assert [c.name for c in checks] == ["a", "b", "c", "d", "e"]
    assert all(c.passed for c in checks), sanity.format_report(rows, checks)
    by_eps = {r.eps: r.fpr for r in rows if r.check == "a"}
    assert by_eps[0] < by_eps[16]  # (a) measures something: the clean FPR is below the attacked one
    assert next(r.fpr for r in rows if r.check == "b") == 1.0
    report = sanity.format_report(rows, checks)
    assert "PASS" in report and "FAIL" not in report


def test_a_broken_attack_fails_the_grid_check(subject, monkeypatch):
    """An attack that leaves the 8-bit grid and the eps-ball is caught by check (d)."""
    detector, model, ood, id_scores = subject

    def broken_pgd(objective, x, config, model=None, start_noise=None, **kwargs):
        x_adv = (x + 1.5 * config.eps + 0.3 / 255).clamp(0, 1)
        return x_adv, objective(x_adv).detach()

    monkeypatch.setattr(sanity, "pgd_linf", broken_pgd)
    _, checks = sanity.run_sanity(detector, model, ood, id_scores, _ctx(), eps_grid=(0, 8), steps_grid=(5, 10))
    verdicts = {c.name: c.passed for c in checks}
    assert not verdicts["d"]


def test_a_falling_fpr_is_a_warning_only_when_the_objective_rose():
    """The FPR can fall although the attack climbed its objective (eq. 68 is not monotone in MSP): WARN, exit 0;
    it is a FAIL when a sample crossed back with a lower objective, or, for more steps, any objective fell."""
    t = torch.tensor
    weak, strong_higher = (t([0.9, 0.2]), t([1.0, 1.0])), (t([0.4, 0.2]), t([2.0, 1.0]))
    strong_lower = (t([0.4, 0.2]), t([0.5, 1.0]))
    assert sanity._monotone_verdict([weak, weak], [0.5, 0.5], 0.5, exact_objective=True)[0] == "PASS"
    assert sanity._monotone_verdict([weak, strong_higher], [0.5, 0.0], 0.5, exact_objective=True)[0] == "WARN"
    assert sanity._monotone_verdict([weak, strong_lower], [0.5, 0.0], 0.5, exact_objective=False)[0] == "FAIL"
    lower_objective_same_fpr = (t([0.9, 0.2]), t([1.0, 0.5]))
    assert sanity._monotone_verdict([weak, lower_objective_same_fpr], [0.5, 0.5], 0.5, True)[0] == "FAIL"
    assert sanity._monotone_verdict([weak, lower_objective_same_fpr], [0.5, 0.5], 0.5, False)[0] == "PASS"
    assert sanity.CheckResult("a", "", "WARN", "").passed and not sanity.CheckResult("a", "", "FAIL", "").passed


def test_the_command_is_registered_and_returns_its_exit_code(subject, monkeypatch, capsys):
    detector, model, ood, id_scores = subject
    monkeypatch.setattr(sanity, "_subject", lambda args, log: (detector, model, ood, id_scores, torch.device("cpu")))
    real = sanity.run_sanity

    def small(detector, model, ood, id_scores, ctx, **kwargs):
        ctx = dataclasses.replace(ctx, pgd=PGD, apgd_steps=4)
        return real(detector, model, ood, id_scores, ctx, eps_grid=(0, 8, 16), steps_grid=(5, 10))

    monkeypatch.setattr(sanity, "run_sanity", small)
    assert main(["sanity", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "5/5 checks passed" in out and "FPR %" in out

    failed = sanity.CheckResult("a", "forced failure", "FAIL", "")
    monkeypatch.setattr(sanity, "run_sanity", lambda *a, **k: ([], [failed]))
    assert main(["sanity", "--no-progress"]) == 1
    assert "failed: a" in capsys.readouterr().out


def test_a_checkpoint_of_another_recipe_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "atom.pt"
    model = create_model("small_cnn", 11)
    save_checkpoint(path, model, {"recipe": "atom", "arch": "small_cnn", "num_classes": 10, "head_size": 11})
    assert main(["sanity", "--checkpoint", str(path), "--no-progress"]) == 2
    assert "recipe" in capsys.readouterr().err


def test_help_lists_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sanity", "--help"])
    assert exit_info.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
