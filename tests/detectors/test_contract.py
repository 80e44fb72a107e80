"""The detector contract (DESIGN "Bring your own model and detector"), run over every registered detector without
listing any: its Config resolves, it builds and initialises its network, fits, and then its deployed score,
search score and objectives have the shapes and dtypes the attacks and metrics rely on; the white-box objectives
are differentiable; its fitted state survives `torch.save` / `torch.load(weights_only=True)`."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from oodbench.config import PROFILES, PROTOCOLS
from oodbench.data import load_aux, load_in_distribution
from oodbench.data.base import ArrayPool, ImageSet
from oodbench.detector import BuildContext, Detector, FitData
from oodbench.models import create_model
from oodbench.registry import DETECTORS

BATCH = 6


@pytest.fixture(scope="module")
def tiny():
    """A tiny built-in context: 96 digits training images, 64 tuning images, 300 auxiliary photos."""
    digits = load_in_distribution("digits")
    profile = dataclasses.replace(PROFILES["smoke"], schedules={"cifar": (1, ())}, gmm_components=2)
    aux = load_aux("photos")
    small_aux = ArrayPool(aux.array[:300], name="photos-300", source="test")
    ctx = BuildContext(in_dist=digits, arch="small_cnn", protocol=PROTOCOLS["paper"], profile=profile, aux=small_aux)
    train = digits.train.subset(np.arange(96))
    tune = digits.test.subset(np.arange(64))
    tune_aux = ImageSet(small_aux.get(np.arange(64)), name="tune_aux", source="test")
    fit = FitData(train=train, tune_in=tune, tune_aux=tune_aux, device=torch.device("cpu"), batch_size=32)
    images = digits.test.images[64 : 64 + BATCH].float() / 255.0
    return ctx, train, fit, images


_FITTED: dict[str, tuple[Detector, torch.nn.Module]] = {}


def fitted(name: str, tiny) -> tuple[Detector, torch.nn.Module]:
    """The detector `name` with its network built, initialised and fitted on the tiny context (once per module)."""
    if name not in _FITTED:
        _FITTED[name] = _fit(name, tiny)
    return _FITTED[name]


def _fit(name: str, tiny) -> tuple[Detector, torch.nn.Module]:
    ctx, train, fit, _ = tiny
    cls = DETECTORS.get(name)
    torch.manual_seed(0)
    detector = cls(ctx.in_dist.num_classes, cls.make_config(ctx))
    base = create_model(ctx.arch, detector.head_size, ctx.in_dist.normalization)
    model = detector.build_model(ctx, base)
    detector.initialise(model, ctx, detector.training_set(ctx, train), ctx.aux, torch.device("cpu"))
    model.eval()
    detector.fit(model, fit)
    return detector, model


@pytest.mark.parametrize("name", DETECTORS.names())
def test_registration_names_the_class(name):
    cls = DETECTORS.get(name)
    assert issubclass(cls, Detector) and cls.name == name
    assert dataclasses.is_dataclass(cls.Config)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_scores_and_objectives_have_the_contract_shapes(name, tiny):
    detector, model = fitted(name, tiny)
    x = tiny[3]
    for method in ("score", "search_score"):
        values = getattr(detector, method)(model, x)
        assert values.shape == (BATCH,) and values.dtype == torch.float32, method
        assert torch.isfinite(values).all(), method
    scores, predictions = detector.score_and_predict(model, x)
    assert torch.equal(scores, detector.score(model, x))
    assert predictions.shape == (BATCH,) and int(predictions.max()) < model(x).shape[1]
    gradient_mass = {}
    for method in ("attack_objective", "adaptive_objective", "margin_objective"):
        z = x.clone().requires_grad_(True)
        objective = getattr(detector, method)(model, z)
        assert objective.shape == (BATCH,), method
        (grad,) = torch.autograd.grad(objective.sum(), z)  # raises if the objective is cut off from x
        assert torch.isfinite(grad).all(), method
        gradient_mass[method] = float(grad.abs().sum())
    # a paper objective may saturate on an untrained network (CCU's eq. 68 through its mixtures), but the
    # white-box attacks must have at least one objective with a gradient to follow
    assert max(gradient_mass.values()) > 0, gradient_mass


@pytest.mark.parametrize("name", DETECTORS.names())
def test_fitted_state_round_trips_through_weights_only_load(name, tiny):
    detector, model = fitted(name, tiny)
    buffer = io.BytesIO()
    torch.save(detector.fitted_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    ctx = tiny[0]
    restored = type(detector)(ctx.in_dist.num_classes, type(detector).make_config(ctx))
    restored.load_fitted_state(state)
    assert torch.equal(restored.score(model, tiny[3]), detector.score(model, tiny[3]))
