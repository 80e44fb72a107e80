"""SOFL: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.sofl import SOFL
from tests.detectors.tiny import K, Linear, batch


def test_sofl_head_has_reject_classes():
    assert SOFL(10).head_size == 15
    assert SOFL(100).head_size == 110


def test_sofl_pseudo_label_rule():
    det = SOFL(K, SOFL.Config(reject_classes=3))
    logits = torch.full((6, K + 3), -5.0)
    logits[0, K + 1] = 5  # argmax is a reject class: kept
    logits[1, K + 2] = 5
    logits[2:, 0] = 5  # argmax is an in-dist class: a random reject class
    torch.manual_seed(0)
    labels = det.pseudo_labels(logits)
    assert labels[0] == K + 1 and labels[1] == K + 2
    assert ((labels[2:] >= K) & (labels[2:] < K + 3)).all()
    draws = torch.stack([det.pseudo_labels(logits)[2:] for _ in range(50)])
    assert len(draws.unique()) == 3  # every reject class is drawn


def test_sofl_score_and_objective():
    det = SOFL(K, SOFL.Config(reject_classes=2))
    model, (x, _) = Linear(K + 2), batch()
    p = F.softmax(model(x), 1)
    assert torch.allclose(det.score(model, x), -p[:, K:].sum(1), atol=1e-6)
    assert torch.allclose(det.attack_objective(model, x), -torch.log(p[:, K:].sum(1)), atol=1e-5)  # eq. 70


def test_sofl_stage2_loss_equals_formula():
    model, (x, y) = Linear(K + 2), batch()
    x_out = batch(8, seed=4)[0]
    det = SOFL(K, SOFL.Config(reject_classes=2))
    torch.manual_seed(0)
    got = det.loss(model, x, y, x_out)
    torch.manual_seed(0)
    targets = det.pseudo_labels(model(x_out).detach())
    expected = F.cross_entropy(model(x), y) + 5.0 * F.cross_entropy(model(x_out), targets)
    assert torch.allclose(got, expected, atol=1e-5)
