"""NTOM, ATOM and the AT ablation: tests that can fail (the losses equal the formulas on a tiny fixed batch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.atom import ATOM, NTOM, ood_class_objective
from oodbench.models import create_model
from tests.detectors.tiny import K, Linear, _grid, _zero_eps, batch


def test_ntom_loss_and_k_plus_one_scores():
    model, (x, y) = Linear(K + 1), batch()
    x_out = batch(8, seed=3)[0]
    det = NTOM(K)
    logits_in, logits_out = model(x), model(x_out)
    expected = F.cross_entropy(logits_in, y) + F.cross_entropy(logits_out, torch.full((8,), K))
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)
    assert torch.allclose(det.score(model, x), -F.softmax(model(x), 1)[:, K])
    # eq. 71: -log F_{K+1}
    assert torch.allclose(det.attack_objective(model, x), -F.log_softmax(model(x), 1)[:, K], atol=1e-5)
    assert torch.equal(det.score_and_predict(model, x)[1], model(x)[:, :K].argmax(1))


def test_atom_training_attack_raises_the_objective_and_restores_train_mode():
    model = create_model("small_cnn", K + 1)
    det = ATOM(K)

    class Ctx:
        class profile:
            from attacks.pgd import PGDConfig

            train_pgd = PGDConfig(steps=5, step_size=2 / 255)

            @staticmethod
            def schedule(kind):
                return 1, ()

        class in_dist:
            schedule = "cifar"

    det.stages(Ctx)
    model.train()
    x_out = torch.rand(8, 3, 32, 32).mul(255).round().div(255)
    mixed = det.adversarial_outliers(model, x_out)
    assert model.training
    assert torch.equal(mixed[:4], x_out[:4])  # the first half stays clean
    model.eval()
    with torch.no_grad():
        before = ood_class_objective(model, x_out[4:], K)
        after = ood_class_objective(model, mixed[4:], K)
    assert (after >= before - 1e-6).all() and (after > before).any()
    assert (mixed - x_out).abs().max() <= 8 / 255 + 1e-6


def test_atom_loss_equals_formula_with_a_null_attack():
    model, (x, y) = Linear(K + 1), batch()
    x_out = _grid(batch(8, seed=3)[0])
    det = _zero_eps(ATOM(K, ATOM.Config(lam=2.0)))
    expected = F.cross_entropy(model(x), y) + 2.0 * F.cross_entropy(model(x_out), torch.full((8,), K))
    assert torch.allclose(det.loss(model, x, y, x_out), expected, atol=1e-5)


def test_atom_q_is_zero_with_imagenet_rc_unless_set():
    """Table 8 (SPEC section 5): ATOM mines with q = 0 when ImageNet-RC is the auxiliary set (issue 12, point 5)."""
    from types import SimpleNamespace

    def ctx(aux_name):
        return SimpleNamespace(
            in_dist=SimpleNamespace(name="cifar10"), aux=SimpleNamespace(name=aux_name), protocol=None
        )

    assert ATOM.make_config(ctx("imagenet_rc")).q == 0.0
    assert ATOM.make_config(ctx("tinyimages")).q == 0.125
    assert ATOM.make_config(ctx("imagenet_rc"), {"q": "0.25"}).q == 0.25  # --set atom.q=0.25 wins
    assert NTOM.make_config(ctx("imagenet_rc")).q == 0.125  # Table 8 retrains ATOM, not NTOM
