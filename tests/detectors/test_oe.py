"""Outlier Exposure: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.oe import OE
from tests.detectors.tiny import K, Linear, batch


def test_oe_training_loss_equals_formula():
    model, (x, y) = Linear(K), batch()
    x_out = batch(8, seed=2)[0]
    det = OE(K)
    logits_in, logits_out = model(x), model(x_out)
    expected = F.cross_entropy(logits_in, y) + 0.5 * (-(F.log_softmax(logits_out, 1)).mean(1)).mean()
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)
