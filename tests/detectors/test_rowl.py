"""ROWL: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import pytest
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


def _rowl_under(protocol_name: str) -> ROWL:
    from types import SimpleNamespace

    from attacks.pgd import PGDConfig
    from oodbench.config import get_protocol

    ctx = SimpleNamespace(in_dist=SimpleNamespace(name="tiny", train=[0] * 100), protocol=get_protocol(protocol_name))
    det = ROWL(K, ROWL.make_config(ctx))
    det.train_pgd = PGDConfig(steps=5, step_size=2 / 255)  # the training attack of SPEC section 3
    return det


def test_rowl_training_attack_moves_points_under_paper_not_under_atom_code():
    """paper: targeted PGD moves most images; atom-code: the released best-point bug returns the clean
    images, so the loss is CE(nat) + CE(nat) even at eps 8/255 (issue 12, point 1)."""
    model, (x, y) = Linear(K + 1), batch(64)
    x = _grid(x)
    paper, code = _rowl_under("paper"), _rowl_under("atom-code")
    assert (paper.config.train_attack, code.config.train_attack) == ("pgd", "released")
    torch.manual_seed(0)
    moved = (paper.adversarial_batch(model, x, y) - x).flatten(1).abs().amax(dim=1)
    assert (moved > 0).float().mean() > 0.5 and moved.max() <= 8 / 255 + 1e-6  # 52 of 64 with this seed
    assert torch.equal(code.adversarial_batch(model, x, y), x)
    assert torch.allclose(code.loss(model, x, y, None), 2 * F.cross_entropy(model(x), y), atol=1e-6)
    torch.manual_seed(0)
    assert not torch.allclose(paper.loss(model, x, y, None), 2 * F.cross_entropy(model(x), y), atol=1e-4)
    with pytest.raises(Exception, match="rowl_train_attack"):
        ROWL(K, ROWL.Config(train_attack="clean"))
