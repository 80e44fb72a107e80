"""The post-hoc detectors beyond the paper (SPEC section 4): Energy, MaxLogit, GEN, KNN, ViM, ReAct, ASH-S, and the
penultimate-feature hook they use (oodbench/features.py). Every score is checked against its formula computed
independently in numpy on fixed logits / features."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score
from torch import nn

from oodbench.cli import main
from oodbench.data.base import ImageSet
from oodbench.detector import FitData
from oodbench.errors import FeatureError, NotFittedError
from oodbench.features import find_head, penultimate
from oodbench.registry import ARCHS, DETECTORS
from oodbench.runner import resolve_methods

POSTHOC = ["energy", "maxlogit", "gen", "knn", "vim", "react", "ash"]
FITTED = ["knn", "vim", "react"]
K = 3


def _detector(name: str, **overrides):
    cls = DETECTORS.get(name)
    return cls(K, cls.make_config(None, overrides))


def _fit_data(images: torch.Tensor) -> FitData:
    train = ImageSet(images, torch.zeros(len(images), dtype=torch.long))
    return FitData(train=train, tune_in=train, tune_aux=None, device=torch.device("cpu"), batch_size=64)


@pytest.fixture(scope="module")
def linear_toy():
    """A model whose penultimate feature is the flattened input (Flatten -> Linear(192, 3)), so every feature
    formula can be recomputed in numpy from the pixels. In-dist images light up one of three blocks of 32 pixels
    among the first 96 (the head reads those blocks) and leave the last 96 almost dark; OOD images light up the
    last 96, which in-dist never uses (off the principal subspace, far from every training feature, weak logits)."""
    rng = np.random.default_rng(0)
    head = nn.Linear(192, K)
    with torch.no_grad():
        blocks = np.kron(np.eye(K), np.ones((1, 32))) * 0.2
        head.weight.copy_(torch.tensor(np.hstack([blocks, np.zeros((K, 96))]) + rng.normal(0, 0.002, (K, 192))))
        head.bias.copy_(torch.tensor(rng.normal(0, 0.1, K)))
    model = nn.Sequential(nn.Flatten(), head).eval()

    def to_images(pixels: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.round(pixels * 255), dtype=torch.uint8).view(len(pixels), 3, 8, 8)

    def in_dist(n: int) -> torch.Tensor:
        pixels = np.hstack([rng.uniform(0, 0.1, (n, 96)), rng.uniform(0, 0.02, (n, 96))])
        for i, c in enumerate(rng.integers(0, K, n)):
            pixels[i, 32 * c : 32 * (c + 1)] = rng.uniform(0.6, 1.0, 32)
        return to_images(pixels)

    train = in_dist(300)
    test = in_dist(100).float() / 255
    ood = to_images(np.hstack([rng.uniform(0, 0.1, (100, 96)), rng.uniform(0.6, 1.0, (100, 96))])).float() / 255
    return model, train, test, ood


def _fitted(name, model, train, **overrides):
    detector = _detector(name, **overrides)
    detector.fit(model, _fit_data(train))
    return detector


# ----- the group: registered, `all` unchanged, `posthoc` selects the seven -------------------------------
def test_posthoc_group_is_registered_outside_all():
    assert resolve_methods(["posthoc"]) == POSTHOC
    assert not set(POSTHOC) & set(resolve_methods(["all"]))
    assert len(resolve_methods(["all"])) == 10
    for name in POSTHOC:
        assert DETECTORS.get(name).recipe == "vanilla"  # all share the vanilla checkpoint: nothing new is trained


def test_list_shows_the_posthoc_group(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in POSTHOC:
        assert f"  {name:<16s} [posthoc] " in out


# ----- logit scores against their formulas ---------------------------------------------------------------------
LOGITS = np.array([[2.0, -1.0, 0.5], [10.0, 9.5, -3.0], [-0.2, -0.1, 0.0], [40.0, -40.0, 1.0]], dtype=np.float32)


def test_energy_maxlogit_gen_match_their_formulas():
    logits = torch.tensor(LOGITS)
    np.testing.assert_allclose(_detector("energy").score_logits(logits).numpy(), logsumexp(LOGITS, axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        _detector("energy", temperature=2.0).score_logits(logits).numpy(), 2 * logsumexp(LOGITS / 2, axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(_detector("maxlogit").score_logits(logits).numpy(), LOGITS.max(axis=1))
    p = np.exp(LOGITS.astype(np.float64) - logsumexp(LOGITS.astype(np.float64), axis=1, keepdims=True))
    for top_m, gamma in ((100, 0.1), (2, 0.5)):
        top = -np.sort(-p, axis=1)[:, : min(top_m, K)]
        expected = -(top**gamma * (1 - top) ** gamma).sum(axis=1)
        gen = _detector("gen", top_m=top_m, gamma=gamma)
        np.testing.assert_allclose(gen.score_logits(logits).numpy(), expected, rtol=1e-5, atol=1e-6)
        # the log-space form the attack uses is the same function, exact where 1 - p rounds to 0: 1 - p_j is
        # computed as the sum of the other probabilities (row 3: p_1 = 1 - 1e-17, whose term the float forms drop)
        from baselines.gen import generalized_entropy_log_space

        order = np.argsort(-p, axis=1)[:, : min(top_m, K)]
        not_p = p.sum(axis=1, keepdims=True) - p
        not_p[np.arange(len(p)), p.argmax(axis=1)] = np.sort(p, axis=1)[:, :-1].sum(axis=1)
        top, top_not = np.take_along_axis(p, order, 1), np.take_along_axis(not_p, order, 1)
        exact = -(top**gamma * top_not**gamma).sum(axis=1)
        np.testing.assert_allclose(exact[:3], expected[:3], rtol=1e-6)
        assert gamma != 0.1 or abs(exact[3] - expected[3]) > 0.01
        np.testing.assert_allclose(generalized_entropy_log_space(logits, gamma, top_m).numpy(), exact, rtol=1e-5)


def test_gen_attack_gradient_is_finite_where_the_float32_form_is_not():
    from baselines.gen import generalized_entropy

    logits = torch.tensor([[120.0, 0.0, -5.0]], requires_grad=True)  # p rounds to (1, 0, 0) in float32
    (naive,) = torch.autograd.grad(generalized_entropy(logits, 0.1, 100).sum(), logits)
    assert not torch.isfinite(naive).all()
    (stable,) = torch.autograd.grad(_detector("gen").attack_objective(nn.Identity(), logits).sum(), logits)
    assert torch.isfinite(stable).all() and stable.abs().sum() > 0


# ----- feature scores against their formulas -------------------------------------------------------------------
def test_knn_vim_react_ash_match_their_formulas(linear_toy):
    model, train, test, ood = linear_toy
    # off the 8-bit grid, so that no two activations tie at ASH's top-k boundary (ties break arbitrarily)
    x = torch.cat([test[:20], ood[:20]]) + torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1e-3
    feats = x.flatten(1).double().numpy()
    bank = train.flatten(1).double().numpy() / 255
    weight = model[1].weight.detach().double().numpy()
    bias = model[1].bias.detach().double().numpy()
    logits = feats @ weight.T + bias

    # KNN: minus the distance to the k-th nearest normalised training feature
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    unit_bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    distances = np.linalg.norm(unit[:, None, :] - unit_bank[None, :, :], axis=2)
    expected = -np.sort(distances, axis=1)[:, 9]
    np.testing.assert_allclose(_fitted("knn", model, train, k=10).score(model, x).numpy(), expected, atol=1e-4)

    # ViM: energy - alpha ||residual||, principal dim D/2 = 96 for 192-d features
    origin = -np.linalg.pinv(weight) @ bias
    centred = bank - origin
    eigenvalues, eigenvectors = np.linalg.eig(centred.T @ centred / len(centred))
    residual_space = eigenvectors.real[:, np.argsort(-eigenvalues.real)[96:]]
    alpha = (bank @ weight.T + bias).max(axis=1).mean() / np.linalg.norm(centred @ residual_space, axis=1).mean()
    expected = logsumexp(logits, axis=1) - alpha * np.linalg.norm((feats - origin) @ residual_space, axis=1)
    vim = _fitted("vim", model, train)
    assert vim.fit_info()["principal_dim"] == 96
    np.testing.assert_allclose(vim.alpha, alpha, rtol=1e-4)
    np.testing.assert_allclose(vim.score(model, x).numpy(), expected, rtol=1e-4, atol=1e-3)

    # ReAct: energy of the head on activations clipped at the 90th training percentile
    threshold = np.percentile(bank.ravel(), 90)
    expected = logsumexp(np.minimum(feats, threshold) @ weight.T + bias, axis=1)
    react = _fitted("react", model, train)
    np.testing.assert_allclose(react.threshold, threshold, rtol=1e-6)
    np.testing.assert_allclose(react.score(model, x).numpy(), expected, rtol=1e-5)

    # ASH-S@90: keep the top 19 of 192 activations, scale by exp(sum before / sum after), then energy
    keep = 192 - round(192 * 0.9)
    shaped = np.zeros_like(feats)
    for i, row in enumerate(feats):
        top = np.argsort(-row, kind="stable")[:keep]
        shaped[i, top] = row[top] * np.exp(row.sum() / row[top].sum())
    expected = logsumexp(shaped @ weight.T + bias, axis=1)
    np.testing.assert_allclose(_detector("ash").score(model, x).numpy(), expected, rtol=1e-4)


# ----- contract: sign, dtype, differentiable objective, fitted state, unfitted scoring -------------------------
@pytest.mark.parametrize("name", POSTHOC)
def test_higher_scores_for_in_dist_on_a_separable_toy(linear_toy, name):
    model, train, test, ood = linear_toy
    detector = _fitted(name, model, train)
    s_in, s_out = detector.score(model, test), detector.score(model, ood)
    assert s_in.dtype == torch.float32 and s_in.shape == (len(test),)
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    assert roc_auc_score(labels, np.r_[s_in.numpy(), s_out.numpy()]) > 0.95


@pytest.mark.parametrize("name", POSTHOC)
def test_attack_objective_is_the_score_with_a_nonzero_input_gradient(linear_toy, name):
    model, train, test, ood = linear_toy
    detector = _fitted(name, model, train)
    x = ood[:8].clone().requires_grad_(True)
    objective = detector.attack_objective(model, x)
    (grad,) = torch.autograd.grad(objective.sum(), x)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(dim=1) > 0).all()
    np.testing.assert_allclose(objective.detach().numpy(), detector.score(model, ood[:8]).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", FITTED)
def test_fitted_state_round_trips_through_weights_only_load(linear_toy, name):
    model, train, test, _ = linear_toy
    fitted = _fitted(name, model, train, **({"max_train": 200} if name == "knn" else {}))
    buffer = io.BytesIO()
    torch.save(fitted.fitted_state(), buffer)
    buffer.seek(0)
    restored = _detector(name, **({"max_train": 200} if name == "knn" else {}))
    restored.load_fitted_state(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.score(model, test), fitted.score(model, test))
    json.dumps(fitted.fit_info())
    if name == "knn":  # the cap is applied and recorded
        assert fitted.fit_info()["train_features"] == 200 and fitted.fit_info()["train_images"] == 300


@pytest.mark.parametrize("name", FITTED)
def test_scoring_before_fitting_is_a_clear_error(linear_toy, name):
    model, _, test, _ = linear_toy
    detector = _detector(name)
    with pytest.raises(NotFittedError, match="fit"):
        detector.score(model, test)
    with pytest.raises(NotFittedError):
        detector.attack_objective(model, test.clone().requires_grad_(True))


def test_react_and_ash_clipped_or_pruned_units_pass_no_gradient(linear_toy):
    """Where gradients mislead (issue 11): an input whose activations all exceed ReAct's clip has a zero gradient."""
    model, train, _, _ = linear_toy
    react = _fitted("react", model, train)
    bright = torch.ones(2, 3, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(react.attack_objective(model, bright).sum(), bright)
    assert react.threshold < 1.0 and grad.abs().max() == 0


# ----- the feature hook on every cheap architecture ------------------------------------------------------------
@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "densenet100", "wrn40_4"])
def test_penultimate_features_on_registered_architectures(arch):
    torch.manual_seed(0)
    model = ARCHS.get(arch)(10).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, features, head = penultimate(model, x)
        assert torch.equal(logits, model(x))
        torch.testing.assert_close(head(features), logits)
    assert features.shape == (2, head.in_features) and (features >= 0).all()  # post-ReLU pooled activations
    assert find_head(model)[1] is head


def test_models_without_a_final_linear_classifier_are_refused():
    conv_only = nn.Sequential(nn.Conv2d(3, 10, 32), nn.Flatten())
    with pytest.raises(FeatureError, match="no nn.Linear"):
        penultimate(conv_only, torch.rand(1, 3, 32, 32))

    class ScaledHead(nn.Module):  # the last linear layer's output is not the model's output
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return 2 * self.fc(x.mean(dim=(2, 3)))

    with pytest.raises(FeatureError, match="does not produce the model's output"):
        penultimate(ScaledHead(), torch.rand(1, 3, 8, 8))


# ----- end to end: one vanilla network, seven detectors, two threat models ------------------------------------
def test_posthoc_run_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["run", "--profile", "smoke", "--methods", "posthoc", "--threats", "natural,linf", "--epochs", "1"]
    args += ["--in", "digits", "--max-ood", "50", "--ood", "tiles", "--pgd-steps", "5", "--no-progress"]
    args += ["--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert len(list((out / "checkpoints").iterdir())) == 1  # the seven share the vanilla network
    rows = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert sorted(r["method"] for r in rows) == sorted(POSTHOC * 2)
    for r in rows:
        assert 0 <= r["fpr"] <= 100 and 0 <= r["auroc"] <= 100
    by_cell = {(r["method"], r["threat"]): r["fpr"] for r in rows}
    assert all(by_cell[(m, "linf")] >= by_cell[(m, "natural")] for m in POSTHOC)  # the attack never helps
    capsys.readouterr()
    assert main(["table", str(out), "--vs-paper"]) == 0
    table = capsys.readouterr().out
    for name in POSTHOC:
        assert f"| {name} " in table
    rows = [line for line in table.splitlines() if line.startswith("| digits")]
    assert len(rows) == 7 * 2 * 2  # detectors x threats x (FPR, AUROC), each without a reported value
    assert all("| -  " in row or "| - " in row for row in rows)


def test_vs_paper_shows_posthoc_detectors_without_a_reported_value(tmp_path, capsys):
    from tests.test_check import fake_run

    values = {(m, "svhn", "natural"): (40.0, 90.0) for m in ("msp", "energy", "vim")}
    run = fake_run(tmp_path / "run", values, in_dist="cifar10", arch="densenet100", protocol="atom-code")
    assert main(["table", str(run), "--vs-paper"]) == 0
    rows = {
        line.split("|")[2].strip() + line.split("|")[4].strip(): line
        for line in capsys.readouterr().out.splitlines()[2:]
    }
    assert "50.54" in rows["mspFPR"]  # the paper's value (Table 1) next to the measured one
    for name in ("energy", "vim"):
        assert "not in the paper" in rows[f"{name}FPR"] and "| -" in rows[f"{name}FPR"]
