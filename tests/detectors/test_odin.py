"""ODIN: tests that can fail (values equal the formulas on a tiny fixed batch; scores, objectives)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from baselines.odin import ODIN, ge_sign
from oodbench.detector import FitData
from oodbench.errors import NotFittedError
from tests.detectors.tiny import K, Linear, _set, batch


def test_odin_preprocessing_sign_convention_and_score():
    assert torch.equal(ge_sign(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([-1.0, 1.0, 1.0]))
    model, (x, _) = Linear(K), batch()
    det = ODIN(K, ODIN.Config(magnitude=0.002))
    x_req = x.clone().requires_grad_(True)
    logits = model(x_req)
    loss = F.cross_entropy(logits / 1000.0, logits.argmax(1))
    (grad,) = torch.autograd.grad(loss, x_req)
    x_tilde = x - 0.002 * ge_sign(grad)
    expected = F.softmax(model(x_tilde) / 1000.0, 1).max(1).values
    assert torch.allclose(det.score(model, x), expected, atol=1e-7)


def test_odin_tunes_the_magnitude_on_the_grid():
    model = Linear(K)
    x, y = batch(40)
    det = ODIN(K, ODIN.Config(grid_max=0.001))
    data = FitData(train=None, tune_in=_set(x, y), tune_aux=_set(batch(40, 9)[0]), device=torch.device("cpu"))
    det.fit(model, data)
    assert det.magnitude in {0.0, 0.0002, 0.0004, 0.0006, 0.0008, 0.001}
    assert set(det.tuning) == {"0.0000", "0.0002", "0.0004", "0.0006", "0.0008", "0.0010"}
    assert det.tuning[f"{det.magnitude:.4f}"] == min(det.tuning.values())


def test_odin_refuses_to_score_until_its_magnitude_is_known():
    """Unfitted, ODIN would score with magnitude 0; a magnitude fixed by the Config (or published, atom-code)
    counts as fitted, so no tuning data is needed then."""
    model, (x, _) = Linear(K), batch()
    with pytest.raises(NotFittedError, match="odin is not fitted"):
        ODIN(K).score(model, x)
    assert ODIN(K, ODIN.make_config(None, {"magnitude": "0.002"})).is_fitted()
    ctx = SimpleNamespace(arch="densenet100", in_dist=SimpleNamespace(name="cifar10"))
    published = ODIN(K, ODIN.resolve_defaults(ODIN.Config(magnitude_source="published"), ctx))
    assert published.is_fitted() and published.magnitude == 0.0016
