"""Head sizes of every paper detector and the shared OE loss (formula on a tiny fixed batch)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.acet import ACET
from baselines.atom import AT, ATOM, NTOM
from baselines.ccu import CCU
from baselines.mahalanobis import Mahalanobis
from baselines.msp import MSP
from baselines.odin import ODIN
from baselines.oe import OE
from baselines.rowl import ROWL
from oodbench.detector import oe_loss
from oodbench.registry import DETECTORS
from tests.detectors.tiny import K


def test_registry_has_the_ten_detectors_and_at():
    for name in ("msp", "odin", "mahalanobis", "sofl", "oe", "acet", "ccu", "rowl", "ntom", "atom", "at"):
        assert name in DETECTORS
    assert DETECTORS.entry("at").meta.get("ablation")


@pytest.mark.parametrize(
    "cls, head",
    [
        (MSP, K),
        (ODIN, K),
        (Mahalanobis, K),
        (OE, K),
        (ACET, K),
        (CCU, K),
        (ROWL, K + 1),
        (NTOM, K + 1),
        (ATOM, K + 1),
        (AT, K + 1),
    ],
)
def test_head_sizes(cls, head):
    assert cls(K).head_size == head


def test_oe_loss_is_cross_entropy_to_uniform():
    logits = torch.randn(5, K)
    expected = -(F.log_softmax(logits, 1)).mean(dim=1)  # mean_i -log F_i (eq. 68)
    assert torch.allclose(oe_loss(logits), expected, atol=1e-6)
