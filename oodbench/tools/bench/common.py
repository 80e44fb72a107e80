"""Shared parts of `oodbench bench`: its settings, constants, timing helpers, and the built-in data and models it
measures on."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


SCHEMA = "oodbench-bench/1"
THREATS4 = ("natural", "corruption", "linf", "comp")
REFERENCE_BATCH = 50  # eval_ood_detection.py's default --batch-size

#: the six CIFAR-10 OOD test sets of the paper (SPEC section 2) and their sizes
CIFAR10_OOD_SIZES = {
    "svhn": 10000,
    "textures": 5640,
    "places365": 10000,
    "lsun_c": 10000,
    "lsun_r": 10000,
    "isun": 8925,
}
CIFAR10_TRAIN, CIFAR10_TEST = 50000, 10000
#: paper Table 4 (one RTX 2080 Ti): ATOM training 21 h, evaluation 4 h per method
PAPER_COSTS_HOURS = {"atom_training": 21.0, "evaluation_per_method": 4.0, "device": "RTX 2080 Ti (paper Table 4)"}

#: method families timed with `run_epoch`: (label, registered detector)
TRAIN_FAMILIES = (
    ("vanilla", "msp"),
    ("oe", "oe"),
    ("acet", "acet"),
    ("atom-like", "at"),
    ("rowl", "rowl"),
    ("ccu", "ccu"),
    ("sofl", "sofl"),
)


@dataclass
class BenchConfig:
    """Settings of one `oodbench bench` run (sizes are upper bounds; `stage_seconds` sizes each stage)."""

    arch: str = "small_cnn"
    device: str = "cpu"
    batch_sizes: tuple[int, ...] | None = None  # raw sweep (None: 32..1024 on CPU, 64..4096 on GPU)
    eval_batch: int | None = None  # the suite's evaluation batch (None: as the runner chooses, 500 on GPU, 32 on CPU)
    n_ood: int = 1000  # OOD images available to the throughput stages
    stage_seconds: float = 4.0  # target seconds of one repetition of a stage (sizes each stage)
    repeats: int = 3  # repetitions per stage (median)
    min_time: float = 0.5  # seconds per raw measurement
    pgd_steps: int = 40  # PGD iterations in the throughput stage
    suite: str = "cifar-c-15"  # corruption suite (75 variants; cifar-c-19: 95)
    workers: int | None = None  # processes generating corruption variants (None: all cores)
    mining_candidates: int = 20000  # upper bound of candidates in the mining stage
    train_steps: int = 4  # SGD steps per timed training epoch
    reference: bool = True
    ref_ood: int = 100  # N OOD images of the reference comparison
    ref_id: int | None = None  # M in-dist images there (None: N x 10,000 / 54,565, CIFAR-10's in-dist : OOD ratio)
    ref_pgd_steps: int = 40  # the paper's 40 x 1/255
    memory: bool = True
    memory_images: int = 200
    memory_repeats: int = 2  # searches per suite (alternating; the max is kept)
    train_batch_divisor: int = 1  # --quick: the training batches divided by this (same code path, less work)
    training: bool = True
    project: bool = False
    threads: int | None = None
    cache_dir: str | None = None  # where the fresh, temporary variant caches go (None: the system's temp folder)
    quick: bool = False

    @classmethod
    def quick_preset(cls, **changes: Any) -> BenchConfig:
        """Tiny sizes for tests and smoke checks (seconds on 2 CPU cores; numbers are indicative only)."""
        base = dict(
            batch_sizes=(32, 64),
            eval_batch=64,
            n_ood=64,
            stage_seconds=0.2,
            repeats=1,
            min_time=0.05,
            pgd_steps=2,
            workers=1,
            mining_candidates=256,
            train_steps=1,
            ref_ood=8,
            ref_id=50,
            ref_pgd_steps=2,
            memory_images=8,
            memory_repeats=1,
            train_batch_divisor=8,
            quick=True,
        )
        base.update(changes)
        return cls(**base)


# ---------------------------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn(), wall seconds), the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def rate(fn: Callable[[], Any], images_per_call: int, device: torch.device, min_time: float) -> float:
    """images/s of `fn` (one call processes `images_per_call` images): one warm-up call, then calls until
    `min_time` seconds have passed (at least two)."""
    fn()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if calls >= 2 and elapsed >= min_time:
            return calls * images_per_call / elapsed


class _Clock:
    """Accumulates the time between start() and stop() (device synchronised), so checks can be left out."""

    def __init__(self, device: torch.device):
        self.device, self.total, self._started = device, 0.0, None

    def start(self) -> None:
        _sync(self.device)
        self._started = time.perf_counter()

    def stop(self) -> None:
        _sync(self.device)
        self.total += time.perf_counter() - self._started

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()


# ---------------------------------------------------------------------------------------------------------------
# data and models
# ---------------------------------------------------------------------------------------------------------------
def _repeat_to(images: torch.Tensor, n: int) -> torch.Tensor:
    """`n` images from `images`, repeated with a horizontal roll of k pixels on the k-th repetition (distinct
    content, so content-keyed caches see distinct images)."""
    import torch

    reps = []
    for k in range(math.ceil(n / len(images))):
        reps.append(images if k == 0 else torch.roll(images, shifts=k, dims=3))
    return torch.cat(reps)[:n].contiguous()


def bench_ood_images(n: int) -> torch.Tensor:
    """uint8 [n, 3, 32, 32]: the built-in OOD sets tiles, scenes_crop, scenes_resize (3,000 images), repeated."""
    import torch

    from oodbench.data import load_ood

    base = torch.cat([load_ood(name).images for name in ("tiles", "scenes_crop", "scenes_resize")])
    return _repeat_to(base, n)


def bench_id_images(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [m, 3, 32, 32] in-dist images and labels: the built-in digits test split (500), repeated."""
    from oodbench.data import load_in_distribution

    test = load_in_distribution("digits").test
    reps = math.ceil(m / len(test))
    return _repeat_to(test.images, m), test.labels.repeat(reps)[:m].contiguous()


def _build_context(arch: str, device: torch.device):
    from oodbench.config import get_profile, get_protocol
    from oodbench.data import load_aux, load_in_distribution
    from oodbench.detector import BuildContext

    return BuildContext(
        in_dist=load_in_distribution("digits"),
        arch=arch,
        protocol=get_protocol("paper"),
        profile=get_profile("paper"),
        aux=load_aux("photos"),
        device=device,
    )


def _detector(name: str, ctx) -> Any:
    from oodbench.registry import DETECTORS

    cls = DETECTORS.get(name)
    return cls(ctx.in_dist.num_classes, cls.make_config(ctx))


def _cifar_model(arch: str, num_outputs: int, device: torch.device, seed: int = 0) -> nn.Module:
    import torch

    from oodbench.data import CIFAR_MEAN, CIFAR_STD
    from oodbench.models import create_model

    torch.manual_seed(seed)
    return create_model(arch, num_outputs, (CIFAR_MEAN, CIFAR_STD)).to(device).eval()


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:4.0f} %"


def _line(stage: dict[str, Any]) -> str:
    same = stage.get("efficiency_same_batch")
    return (
        f"  {stage['stage'][:72]:<72s} {_fmt_rate(stage['images_per_s']):>10s} {stage['unit']:<22s} "
        f"eff {_pct(stage['efficiency'])}" + (f" (at the suite's batch {_pct(same)})" if same is not None else "")
    )
