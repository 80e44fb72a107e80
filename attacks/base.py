"""The threat-model interface: a threat model turns a set of OOD images into the detector's deployed scores
under attack (SPEC section 6). It sees the detector only through `attack_objective` (white-box),
`search_score` (black-box) and `score` (the deployed score of the final input)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from attacks.pgd import PGDConfig, random_start_noise
from oodbench.scoring import to_unit  # noqa: F401  (re-exported: attacks import it from here)
from oodbench.seeding import derive_seed  # noqa: F401  (re-exported: its home was here)

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
    """Base class; register subclasses with `@register_threat(name)`. Only `scores` is required: the class
    attributes below have defaults, so a minimal threat model is one method."""

    #: set by `@register_threat(name)` (never written by hand)
    name: ClassVar[str] = ""
    #: column title in the tables (default: the name)
    title: ClassVar[str] = ""
    #: column position in the tables and execution order within an OOD set (Table 1: natural, corruption, L-inf, comp)
    order: ClassVar[float] = 1000.0
    #: relative compute of one cell (natural = 1), how `--gpus` / `--launcher slurm` balance the cells of a run
    cost: ClassVar[float] = 8.0
    #: part of the default `--threats` (the paper's four)
    default: ClassVar[bool] = False
    #: the paper's numbers of this threat model come from the released code's settings of it (the corruption
    #: suites differ), so `table --vs-paper` flags cells of other protocols
    published_with_code_settings: ClassVar[bool] = False
    white_box: ClassVar[bool] = False

    @classmethod
    def table_title(cls) -> str:
        """The column title of this threat model's tables (its `title`, else its name)."""
        return cls.title or cls.name

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


def start_noise_for_set(n: int, shape: tuple[int, ...], config: PGDConfig, seed: int, device) -> list[torch.Tensor]:
    """One int8 random start per restart for a whole set of `n` images, independent of the batch size."""
    noises = []
    for restart in range(max(1, config.restarts)):
        generator = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "pgd-start", restart))
        noises.append(random_start_noise((n, *shape), config.eps, generator).to(device))
    return noises
