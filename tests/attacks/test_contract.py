"""The threat-model contract, run over every registered threat model without listing any: it declares a title,
a table order and a cost (with defaults), its settings are JSON, and `scores` returns one finite float32 deployed
score per image, the same for the same seed; a minimal threat model that defines only `scores` works."""

from __future__ import annotations

import json

import pytest
import torch

from attacks.base import AttackContext, ThreatModel
from attacks.pgd import PGDConfig
from oodbench.data import load_ood
from oodbench.models import create_model
from oodbench.registry import DETECTORS, THREATS, Registry, default_threats, threat_cost, threat_order, threat_title

N = 4


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    detector = DETECTORS.get("msp")(10)
    torch.manual_seed(0)
    model = create_model("small_cnn", 10).eval()
    images = load_ood("tiles").images[:N]
    ctx = AttackContext(
        batch_size=3,  # not a divisor of N: the last batch is short
        pgd=PGDConfig(steps=2),
        cache_dir=tmp_path_factory.mktemp("variants"),
        workers=1,
        progress=False,
        apgd_steps=2,
        apgd_restarts=1,
    )
    return detector, model, images, ctx


@pytest.mark.parametrize("name", THREATS.names())
def test_declarations(name):
    cls = THREATS.get(name)
    assert issubclass(cls, ThreatModel) and cls.name == name
    assert isinstance(threat_title(name), str) and threat_title(name)
    assert isinstance(threat_order(name), float) and threat_cost(name) > 0


@pytest.mark.parametrize("name", THREATS.names())
def test_scores_are_one_finite_float_per_image_and_reproducible(name, setting):
    detector, model, images, ctx = setting
    threat = THREATS.get(name)()
    json.dumps(threat.config(ctx))
    first = threat.scores(detector, model, images, ctx)
    assert first.shape == (N,) and first.dtype == torch.float32 and torch.isfinite(first).all()
    ctx_again = AttackContext(**{**ctx.__dict__, "memo": {}})
    assert torch.equal(threat.scores(detector, model, images, ctx_again), first)


def test_default_grid_is_the_papers_four_in_table_order():
    assert default_threats() == ["natural", "corruption", "linf", "comp"]
    assert [threat_title(t) for t in default_threats()] == ["Natural", "Corruption", "L-inf", "Comp."]


def test_a_minimal_threat_model_gets_defaults_and_its_name_from_the_decorator():
    registry = Registry("threat model")

    @registry.register("minimal")
    class Minimal(ThreatModel):
        def scores(self, detector, model, images, ctx):
            return torch.zeros(len(images))

    assert Minimal.name == "minimal" and Minimal.table_title() == "minimal"
    assert Minimal.order > 40 and Minimal.cost > 0 and not Minimal.default  # after the paper's four
    assert Minimal().config(AttackContext()) == {}
    # unknown names (results of a plugin that is not loaded) still sort and render
    assert threat_order("not-registered") > threat_order("comp") and threat_title("not-registered") == "not-registered"
