"""The detector contract (DESIGN "Bring your own model and detector"), run over every registered detector without
listing any: its Config resolves and refuses unknown settings, it builds and initialises its network, fits, and
then its deployed score, search score and objectives have the shapes and dtypes the attacks and metrics rely on;
the white-box objectives are differentiable; its fitted state survives `torch.save` /
`torch.load(weights_only=True)`; a detector that fits refuses to score before fitting; on a network that separates
in-dist from OOD inputs, its scores do too (the sign convention: higher = more in-distribution)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from oodbench.config import PROFILES, PROTOCOLS
from oodbench.data import load_aux, load_in_distribution
from oodbench.data.base import ArrayPool, ImageSet
from oodbench.detector import SCORING_MEMBERS, BuildContext, Detector, FitData, TrainingRecipe
from oodbench.errors import ConfigError, NotFittedError
from oodbench.models import create_model
from oodbench.registry import DETECTORS

BATCH = 6


@pytest.fixture(scope="module")
def tiny():
    """A tiny built-in context: 96 digits training images, 32 tuning images and 32 auxiliary ones (enough for every
    fit, and quick through ODIN's and Mahalanobis' tuning grids), 300 auxiliary photos."""
    digits = load_in_distribution("digits")
    profile = dataclasses.replace(PROFILES["smoke"], schedules={"cifar": (1, ())}, gmm_components=2)
    aux = load_aux("photos")
    small_aux = ArrayPool(aux.array[:300], name="photos-300", source="test")
    ctx = BuildContext(in_dist=digits, arch="small_cnn", protocol=PROTOCOLS["paper"], profile=profile, aux=small_aux)
    train = digits.train.subset(np.arange(96))
    tune = digits.test.subset(np.arange(32))
    tune_aux = ImageSet(small_aux.get(np.arange(32)), name="tune_aux", source="test")
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
    assert restored.is_fitted()
    assert torch.equal(restored.score(model, tiny[3]), detector.score(model, tiny[3]))


@pytest.mark.parametrize("name", DETECTORS.names())
def test_unknown_settings_are_refused_naming_the_known_ones(name):
    cls = DETECTORS.get(name)
    with pytest.raises(ConfigError, match=f"{name} has no setting 'no_such_field'") as error:
        cls.make_config(None, {"no_such_field": "1"})
    assert all(field.name in str(error.value) for field in dataclasses.fields(cls.Config))


def _call(detector: Detector, member: str, model: torch.nn.Module, x: torch.Tensor):
    return getattr(detector, member)(model, x if member in ("score", "score_and_predict") else x.requires_grad_(True))


@pytest.mark.parametrize("name", DETECTORS.names())
def test_a_detector_that_fits_refuses_to_score_before_fitting(name, tiny):
    """A detector that overrides `fit` refuses every scoring member until it is fitted (an unfitted ODIN would
    score with magnitude 0, an unfitted Mahalanobis with no statistics); one that fits nothing is never blocked."""
    _, model = fitted(name, tiny)
    ctx, x = tiny[0], tiny[3]
    cls = DETECTORS.get(name)
    fresh = cls(ctx.in_dist.num_classes, cls.make_config(ctx))
    if not cls.needs_fit:
        assert fresh.is_fitted() and fresh.score(model, x).shape == (BATCH,)
        return
    assert not fresh.is_fitted()
    for member in SCORING_MEMBERS:
        with pytest.raises(NotFittedError, match=r"call fit\(model, data\) or load_fitted_state"):
            _call(fresh, member, model, x.clone())


def test_a_new_detector_gets_the_refusal_without_writing_it():
    """The refusal is inherited, not listed: a plugin detector that overrides `fit` (and only `score_logits`)
    refuses to score until fitted, though its fit may score (here, to centre its scores); one that declares its
    fit optional (`needs_fit = False`) is never blocked."""

    class Centred(Detector):
        shift = 0.0

        def fit(self, model, data):
            self.shift = float(self.score(model, data).mean())

        def score_logits(self, logits):
            return logits.max(dim=1).values - self.shift

    class OptionalFit(Centred):
        needs_fit = False

    model, x = torch.nn.Flatten(), torch.rand(4, 1, 1, 3)
    top = x.flatten(1).max(dim=1).values
    detector = Centred(3)
    assert detector.needs_fit and not OptionalFit.needs_fit
    with pytest.raises(NotFittedError, match="Centred is not fitted"):
        detector.score(model, x)
    detector.fit(model, x)
    assert torch.allclose(detector.score(model, x), top - top.mean())
    assert torch.equal(OptionalFit(3).score(model, x), top)


# ----- the sign convention on a network that separates in-dist from OOD ------------------------------------------
TOY_K, UNITS = 4, 4  # classes; feature units per concept (K class concepts + 2 OOD concepts, 32 pixels each)


def _toy_images(concepts: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """3x8x8 images whose 6 concepts (blocks of 32 pixels) are dark except the given one, lit per image."""
    levels = rng.uniform(0.0, 0.1, (len(concepts), TOY_K + 2))
    levels[np.arange(len(concepts)), concepts] = rng.uniform(0.6, 1.0, len(concepts))
    pixels = np.repeat(levels, 32, axis=1) + rng.normal(0, 0.03, (len(concepts), 192))
    return torch.tensor(np.round(np.clip(pixels, 0, 1) * 255), dtype=torch.uint8).view(-1, 3, 8, 8)


def _separating_network(head_size: int) -> torch.nn.Module:
    """Flatten -> fixed unit means (UNITS per concept: the penultimate features) -> linear head. Class c's logit
    reads concept c; the outputs beyond K (a K+1 or reject-class head) read the two OOD concepts, as training
    with outliers would make them. In-dist images get one confident class logit and small extra outputs; OOD
    images near-uniform class logits (and large extra outputs)."""
    dim = (TOY_K + 2) * UNITS
    pool = torch.nn.Linear(192, dim, bias=False)
    head = torch.nn.Linear(dim, head_size)
    with torch.no_grad():
        pool.weight.copy_(torch.kron(torch.eye(dim), torch.full((1, 8), 1 / 8)))
        concept_of_unit = torch.arange(dim) // UNITS
        rows = torch.arange(head_size)[:, None]
        reads = (concept_of_unit[None] == rows) | ((rows >= TOY_K) & (concept_of_unit[None] >= TOY_K))
        head.weight.copy_(2.0 * reads.float())
        head.bias.zero_()
    return torch.nn.Sequential(torch.nn.Flatten(), pool, head).eval()


@pytest.fixture(scope="module")
def separable():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, TOY_K, 380)
    in_dist = _toy_images(labels, rng)
    ood = _toy_images(rng.integers(TOY_K, TOY_K + 2, 80), rng)
    # 300 training images: every class has more than KNN's k = 50 of them
    train = ImageSet(in_dist[:300], torch.as_tensor(labels[:300]))
    tune = ImageSet(in_dist[300:340], torch.as_tensor(labels[300:340]))
    fit = FitData(train=train, tune_in=tune, tune_aux=ImageSet(ood[:40]), device=torch.device("cpu"), batch_size=100)
    return fit, in_dist[340:].float() / 255, ood[40:].float() / 255


@pytest.mark.parametrize("name", DETECTORS.names())
def test_scores_are_higher_for_in_dist_on_a_separating_network(name, tiny, separable):
    """Whatever a detector does with the logits, features or extra outputs, the network here already tells in-dist
    from OOD: its scores must keep that order on average (a flipped sign fails). The network is fixed, not trained,
    so a detector that fits part of its network before training (`initialise`: CCU's pixel-space mixtures) is out
    of scope here."""
    cls = DETECTORS.get(name)
    if cls.initialise is not TrainingRecipe.initialise:
        pytest.skip(f"{name} fits part of its network in `initialise` before training; the network here is fixed")
    fit, x_in, x_out = separable
    detector = cls(TOY_K, cls.make_config(tiny[0]))
    model = detector.build_model(tiny[0], _separating_network(detector.head_size))
    detector.fit(model, fit)
    s_in, s_out = detector.score(model, x_in), detector.score(model, x_out)
    assert s_in.shape == (len(x_in),) and torch.isfinite(torch.cat([s_in, s_out])).all()
    assert s_in.mean() > s_out.mean(), (float(s_in.mean()), float(s_out.mean()))
