"""MSP: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.msp import MSP
from oodbench.detector import oe_loss
from tests.detectors.tiny import K, Linear, batch


def test_msp_score_and_attack_objective():
    model, (x, _) = Linear(K), batch()
    det = MSP(K)
    assert torch.allclose(det.score(model, x), F.softmax(model(x), 1).max(1).values)
    assert torch.allclose(det.attack_objective(model, x), oe_loss(model(x)))
