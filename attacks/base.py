"""The threat-model interface: a threat model turns a set of OOD images into the detector's deployed scores
under attack (SPEC section 6). It sees the detector only through `attack_objective` (white-box),
`search_score` (black-box) and `score` (the deployed score of the final input)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from attacks.pgd import PGDConfig, random_start_noise

if TYPE_CHECKING:
    from oodbench.detector import Detector


@dataclass
class AttackContext:
    """Everything a threat model needs besides the detector and the images."""

    device: torch.device = torch.device("cpu")
    batch_size: int = 256
    seed: int = 0
    pgd: PGDConfig = PGDConfig()
    corruption_suite: str = "cifar-c-15"
    corruption_seed: int = 0  # variants depend on (image, type, severity, this seed): shared by every detector
    cache_dir: Path | None = None
    workers: int | None = None  # processes generating corruption variants (None: all cores)
    adaptive: bool = False  # `strong` protocol: adaptive attacks on the deployed score
    apgd_steps: int = 100  # `strong` protocol: APGD iterations and restarts per objective
    apgd_restarts: int = 5
    square_queries: int = 5000  # `strong` protocol: Square attack queries per image (0: no Square)
    diagnostics_images: int = 64  # attack diagnostics run on this many images of a cell (attacks.diagnostics)
    progress: bool = True
    precision: str = "fp32"  # of the attacks' forward/backward passes (oodbench.accel); scores stay IEEE fp32
    attack_model: Any = None  # a compiled copy of the model for the attacks (--compile), or None
    label: str = ""  # names the cell in progress bars
    #: per-detector memo shared by the cells of one detector (the corruption search of `comp` reuses the one of
    #: `corruption` on the same OOD set): key -> tensor
    memo: dict = field(default_factory=dict)
    #: filled by the `strong` worst case with each attack's deployed scores (attack name -> float32 [N]) when
    #: not None: the diagnostics compare the black-box attack with the white-box ones
    per_attack: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ThreatModel:
    """Base class; register subclasses with `@register_threat(name)`."""

    name: ClassVar[str] = ""
    white_box: ClassVar[bool] = False

    def config(self, ctx: AttackContext) -> dict[str, Any]:
        """The settings that change this threat model's numbers (part of the cell key)."""
        return {}

    def scores(self, detector: Detector, model: nn.Module, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        """Deployed scores float32 [N] of `images` (uint8 [N, 3, H, W], on ctx.device) under this threat."""
        raise NotImplementedError

    def in_distribution_scores(
        self, detector: Detector, model: nn.Module, images: torch.Tensor, ctx: AttackContext
    ) -> torch.Tensor | None:
        """Deployed scores of the in-dist test images under this threat, or None: the clean scores (the paper's
        threat models attack OOD inputs only; `linf-joint` attacks both, SPEC section 6 "Joint")."""
        return None

    def attack_sources(
        self, detector: Detector, model: nn.Module, images: torch.Tensor, ctx: AttackContext
    ) -> torch.Tensor:
        """The points a white-box attack of this threat starts from (the images; comp: the chosen corruptions),
        where the diagnostics measure the input gradient."""
        return images


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def start_noise_for_set(n: int, shape: tuple[int, ...], config: PGDConfig, seed: int, device) -> list[torch.Tensor]:
    """One int8 random start per restart for a whole set of `n` images, independent of the batch size."""
    noises = []
    for restart in range(max(1, config.restarts)):
        generator = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "pgd-start", restart))
        noises.append(random_start_noise((n, *shape), config.eps, generator).to(device))
    return noises


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (on the images' device)."""
    return images.float().div_(255.0)
