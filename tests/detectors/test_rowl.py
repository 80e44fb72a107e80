"""ROWL: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.rowl import ROWL, RetargetingObjective
from tests.detectors.tiny import K, Linear, _grid, _zero_eps, batch


def test_rowl_targets_differ_from_the_true_class_and_score_is_binary():
    model = Linear(K + 1)
    labels = torch.tensor([0, 1, 2, 3, 4] * 40)
    seen = []
    objective = RetargetingObjective(model, labels, K + 1)
    original = F.cross_entropy

    def spy(logits, targets, reduction="mean"):
        seen.append(targets.clone())
        return original(logits, targets, reduction=reduction)

    F.cross_entropy = spy
    try:
        for _ in range(20):
            objective(torch.rand(len(labels), 3, 4, 4))
    finally:
        F.cross_entropy = original
    targets = torch.stack(seen)
    assert not (targets == labels).any()
    assert len(targets[:, 0].unique()) == K  # uniform over the K other classes
    det = ROWL(K)
    x = batch()[0]
    scores = det.score(model, x)
    assert set(scores.tolist()) <= {0.0, -1.0}
    assert torch.equal(scores == -1.0, model(x).argmax(1) == K)
    assert det.fixed_threshold == -0.5


def test_rowl_loss_equals_formula_with_a_null_attack():
    model, (x, y) = Linear(K + 1), batch()
    x = _grid(x)
    det = _zero_eps(ROWL(K))
    expected = 2 * F.cross_entropy(model(x), y)  # CE(nat) + 1.0 * CE(adv), adv = nat when eps = 0
    assert torch.allclose(det.loss(model, x, y, None), expected, atol=1e-5)
