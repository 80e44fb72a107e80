"""Attack diagnostics (AutoAttack-style checks, attacks/diagnostics.py): a detector whose gradient is masked (its
score quantised to a step function) is flagged, and Square raises its FPR where PGD does not; the flag rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from attacks.base import AttackContext
from attacks.diagnostics import (
    accepted_region_found,
    cell_diagnostics,
    saturation_shares,
    sweep_flags,
    tie_share,
    zero_gradient_shares,
)
from attacks.linf import LinfPGD, pgd_scores
from attacks.pgd import PGDConfig
from baselines.msp import MSP
from baselines.rowl import ROWL
from oodbench.detector import msp
from oodbench.metrics import threshold_at_tpr


class SteppedMSP(MSP):
    """MSP quantised to steps of 0.01, for the deployed score and every attack objective: gradient zero everywhere."""

    name = "stepped-msp"

    def score_logits(self, logits):
        return torch.floor(msp(logits) * 100.0) / 100.0

    def attack_objective(self, model, x):
        return self.score_logits(model(x))

    def margin_objective(self, model, x):
        return self.score_logits(model(x))


def _model():
    """Class 0's logit grows with the mean brightness: brighter images are more in-distribution."""
    linear = nn.Linear(3 * 8 * 8, 5)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0] = 8.0 / (3 * 8 * 8)
        linear.bias.zero_()
        linear.bias[0] = -4.0
    return nn.Sequential(nn.Flatten(), linear).eval()


def _images(n, seed, low=150, high=230):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, (n, 3, 8, 8), generator=g, dtype=torch.uint8)


def _ood():
    """Just darker than the in-dist images: rejected when clean, within 8/255 of being accepted."""
    return _images(48, seed=2, low=184, high=192)


def _ctx(**changes):
    base = AttackContext(
        batch_size=32,
        seed=5,
        pgd=PGDConfig(steps=10),
        apgd_steps=5,
        apgd_restarts=1,
        square_queries=100,
        diagnostics_images=16,
        progress=False,
    )
    return dataclasses.replace(base, **changes)


def _cell(detector, ctx):
    model, ood = _model(), _ood()
    with torch.no_grad():
        id_scores = detector.score(model, _images(100, seed=1).float() / 255).numpy()
    threshold = threshold_at_tpr(id_scores)
    ctx.per_attack = {} if ctx.adaptive else None
    scores = pgd_scores(detector, model, ood, ctx, "t").numpy()
    checks = cell_diagnostics(LinfPGD(), detector, model, ood, scores, id_scores, threshold, ctx, ctx.per_attack)
    return scores, threshold, checks


def test_a_masked_gradient_is_flagged_and_square_raises_the_fpr_where_pgd_does_not():
    detector = SteppedMSP(5)
    paper, threshold, paper_checks = _cell(detector, _ctx())
    strong, _, checks = _cell(detector, _ctx(adaptive=True))
    assert paper_checks["diagnostics"]["zero_grad"] == 100.0 and "zero-grad" in paper_checks["flags"]
    assert "eps_sweep" not in paper_checks["diagnostics"]  # the sweep runs under `strong` only
    by_attack = checks["diagnostics"]["by_attack_fpr"]
    clean_fpr = 100.0 * float(np.mean(_clean(detector) > threshold))
    assert by_attack["pgd"] <= clean_fpr + 100 / 48 * 8  # PGD moves only by its random start
    assert by_attack["square"] > by_attack["pgd"] + 20  # Square finds what gradients cannot
    assert np.mean(strong > threshold) > np.mean(paper > threshold)
    assert {"zero-grad", "bb>wb"} <= set(checks["flags"])
    assert checks["diagnostics"]["black_box_wins"] > 1.0


def _clean(detector):
    with torch.no_grad():
        return detector.score(_model(), _ood().float() / 255).numpy()


def test_an_unmasked_detector_has_gradients_everywhere():
    shares = zero_gradient_shares(MSP(5), _model(), _images(16, seed=3).float() / 255, ["attack", "margin"])
    assert shares == {"attack": 0.0, "margin": 0.0, "all": 0.0}


def test_saturation_counts_scores_at_the_float32_bounds():
    assert saturation_shares(ROWL(4), np.array([-1.0, -1.0, 0.0, -1.0], dtype=np.float32)) == (75.0, 25.0)
    low, high = saturation_shares(MSP(5), np.array([0.2, 0.5, 1.0, 0.21], dtype=np.float32))
    assert (low, high) == (25.0, 25.0)


def test_a_constant_score_is_flagged_ties_and_a_spread_one_is_not():
    """A constant score gets FPR 0 and AUROC 50 under the paper's convention (OOD strictly above the threshold):
    the cell must say so. Regression: the built-in benchmark's collapsed CCU (every score 1/K) read 0.00, best."""
    from attacks.natural import Natural
    from oodbench.metrics import auroc, fpr_at_tpr

    constant_id, constant_ood = np.full(500, 0.1, np.float32), np.full(100, 0.1, np.float32)
    threshold = threshold_at_tpr(constant_id)
    assert fpr_at_tpr(constant_id, constant_ood) == 0.0 and auroc(constant_id, constant_ood) == 0.5
    assert tie_share(constant_ood, threshold) == 100.0
    ctx = AttackContext(device="cpu", batch_size=32, seed=0, pgd=PGDConfig())
    images = _images(100, seed=1)
    flagged = cell_diagnostics(Natural(), MSP(5), _model(), images, constant_ood, constant_id, threshold, ctx)
    assert "ties" in flagged["flags"] and flagged["diagnostics"]["tied_at_threshold"] == 100.0
    rng = np.random.default_rng(0)
    spread_id, spread_ood = rng.uniform(0.3, 1, 500).astype(np.float32), rng.uniform(0.2, 0.9, 100).astype(np.float32)
    spread_threshold = threshold_at_tpr(spread_id)
    clean = cell_diagnostics(Natural(), MSP(5), _model(), images, spread_ood, spread_id, spread_threshold, ctx)
    assert "ties" not in clean["flags"] and clean["diagnostics"]["tied_at_threshold"] <= 1.0


def test_sweep_flags():
    rising = {0: 0.0, 2: 10.0, 4: 30.0, 8: 60.0, 16: 90.0, 32: 100.0, 64: 100.0}
    assert sweep_flags(rising, 50, accepts_something=True) == []
    dropping = {**rising, 16: 50.0}  # fewer found at a larger eps: a weak attack
    assert sweep_flags(dropping, 50, accepts_something=True) == ["eps-sweep"]
    assert sweep_flags({**rising, 32: 88.0}, 50, True) == []  # one image (2 points) of slack
    stuck = {e: 0.0 for e in rising}  # 0 % at 64/255 although some inputs are accepted: the attack failed
    assert sweep_flags(stuck, 50, accepts_something=True) == ["large-eps"]
    assert sweep_flags(stuck, 50, accepts_something=False) == []


def test_flagged_cells_are_marked_in_every_table():
    import pandas as pd

    from oodbench.results import flags_report, summary_table, tidy, with_flags

    base = {"in_dist": "digits", "protocol": "strong", "arch": "small_cnn", "auroc": 50.0, "aupr_in": 50.0}
    cells = pd.DataFrame(
        [
            {**base, "method": "msp", "ood_set": "a", "threat": "linf", "fpr": 10.0, "flags": ["bb>wb"]},
            {**base, "method": "msp", "ood_set": "b", "threat": "linf", "fpr": 20.0, "flags": []},
            {**base, "method": "msp", "ood_set": "a", "threat": "natural", "fpr": 5.0, "flags": []},
        ]
    )
    markdown = summary_table(cells)
    assert (
        "15.00†" in markdown
        and " 5.00†" not in markdown
        and " 5.00 " in markdown
        and "gradient masking suspected" in markdown
    )
    per_ood = summary_table(cells, per_ood=True)
    assert "10.00†" in per_ood and "20.00†" not in per_ood
    assert "$^\\dagger$" in summary_table(cells, fmt="latex")
    csv = with_flags(tidy(cells), cells)
    flagged = csv[(csv["threat"] == "linf") & (csv["metric"] == "fpr")].set_index("ood_set")["flags"]
    assert flagged.to_dict() == {"a": "bb>wb", "b": "", "average": "bb>wb"}
    assert "bb>wb" in flags_report(cells)


def test_a_ties_flagged_value_is_never_bold_and_an_unflagged_one_still_is():
    """The collapsed CCU's 0.00 (a constant score, flag `ties`) was shown as the best detector; an unflagged 0.00
    stays bold (the pair: without the flag the same table bolds it)."""
    import pandas as pd

    from oodbench.results import summary_table

    base = {"in_dist": "shapes", "protocol": "paper", "arch": "small_cnn", "ood_set": "a", "threat": "natural"}
    rows = [
        {**base, "method": "msp", "fpr": 30.0, "auroc": 80.0, "flags": []},
        {**base, "method": "ccu", "fpr": 0.0, "auroc": 50.0, "flags": ["ties"]},
    ]
    flagged = summary_table(pd.DataFrame(rows))
    assert "**30.00**" in flagged and "**0.00**" not in flagged and "0.00†" in flagged
    assert "**80.00**" in flagged and "not ranked" in flagged
    rows[1]["flags"] = []
    unflagged = summary_table(pd.DataFrame(rows))
    assert "**0.00**" in unflagged and "**30.00**" not in unflagged and "not ranked" not in unflagged


def test_the_accepted_region_counts_attacked_ood_images_above_a_constant_threshold():
    """A constant in-dist score accepts no image strictly above its threshold, yet the cell's attack found OOD
    points above it: the region is not empty, so a sweep stuck at 0 % at 64/255 is the sweep's failure
    (`large-eps`); when nothing at all is above the threshold, nothing is known to be accepted."""
    constant = np.full(500, 0.1, np.float32)
    attacked = np.r_[np.full(79, 0.1), np.full(21, 0.2)].astype(np.float32)
    assert accepted_region_found(constant, attacked, 0.1)
    assert not accepted_region_found(constant, np.full(100, 0.1, np.float32), 0.1)
    assert accepted_region_found(np.r_[constant, 0.3], np.full(100, 0.1, np.float32), 0.1)
