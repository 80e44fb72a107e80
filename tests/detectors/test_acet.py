"""ACET: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.acet import ACET
from oodbench.detector import oe_loss
from tests.detectors.tiny import K, Linear, _grid, _zero_eps, batch


def test_acet_loss_equals_formula_with_a_null_attack():
    model, (x, y) = Linear(K), batch()
    x_out = _grid(batch(8, seed=2)[0])
    det = _zero_eps(ACET(K))
    logits_in, logits_out = model(x), model(x_out)
    expected = F.cross_entropy(logits_in, y) + 1.0 * oe_loss(logits_out).mean()
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)
