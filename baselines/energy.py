"""Energy score (Liu, Wang, Owens, Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oodbench.detector import Detector
from oodbench.registry import register_detector


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy, -E(x; f) = T * logsumexp_i(f_i(x) / T) (Liu et al. 2020, eq. 2 with the sign
    flipped so that higher = more in-distribution). Also the final score of ReAct, ASH and ViM's energy term."""
    return temperature * torch.logsumexp(logits.float() / temperature, dim=1)


@dataclass
class EnergyConfig:
    """T = 1: the paper's setting for a network trained without outliers (and OpenOOD's / pytorch-ood's)."""

    temperature: float = 1.0


@register_detector(
    "energy", summary="negative free energy T logsumexp(z/T) of the vanilla network (Liu et al. 2020)", group="posthoc"
)
class Energy(Detector):
    """Score: T * logsumexp(z / T), T = 1, on the vanilla network's logits z. Attack: the score itself
    (differentiable everywhere), so the paper's L-inf attack on it is adaptive."""

    order = 200  # after the paper\'s detectors, in the post-hoc group\'s order
    recipe = "vanilla"
    Config = EnergyConfig

    def score_logits(self, logits):
        return energy(logits, self.config.temperature)

    def attack_objective(self, model, x):
        return self.score_logits(model(x))
