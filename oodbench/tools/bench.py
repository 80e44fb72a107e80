"""`oodbench bench`: images/s of every stage of the suite and its efficiency against the model's raw throughput
(DESIGN "Performance principles"), a reference-style baseline, and CIFAR-10 projections.

What is measured, for one architecture on one device, on built-in data (the `tiles` / `scenes_*` OOD sets and the
`digits` in-dist set, 32x32x3 = CIFAR scale, repeated and shifted to the sizes asked for) and a randomly initialised
network (throughput does not depend on the weights):

- **raw**: forward and forward + input-gradient images/s in eval mode over a sweep of batch sizes (the best one is
  the reference), and train-mode forward + backward + SGD step images/s at each training batch size.
- **stages**, each through the suite's own code path: clean scoring (`attacks.natural.batched_scores`), PGD
  (`attacks.linf.pgd_scores`), corruption generation (`attacks.corruptions.variants_for` into an empty cache) and
  search over cached variants (`attacks.corruption.corruption_search`), mining (`sample_positions` ->
  `AuxPool.get` -> `oodbench.training.augment_in_chunks` -> `score_candidates` -> `mine_outliers`), and one epoch of
  `oodbench.training.run_epoch` per method family (vanilla, OE, ACET, ATOM-like = the AT ablation: ATOM's loss on
  uniformly drawn outliers, mining measured separately, ROWL, CCU, SOFL stage 2).
- **efficiency** = ideal time / measured time, the ideal time being the stage's work at the raw throughput
  (each stage states its formula). The raw throughput is re-measured next to every repetition of a stage, so
  the ratio holds on a shared, noisy machine.
- **reference**: the four-threat evaluation (natural, corruption, linf, comp) of MSP done the way the released ATOM
  code does it (`eval_ood_detection.py`: batches of 50, PNG bytes decoded with PIL per batch, corruption variants
  regenerated for every image in the evaluating process, clean in-dist scores recomputed per threat model) against
  the suite (uint8 sets resident on the device, cached variants, in-dist scores once, the corruption search shared
  by `corruption` and `comp`), on the same images with the same attack settings; the scores are compared.
- **memory**: peak memory of a corruption search with 75 vs 95 variants.
- **projection** (`--project-cifar10`): the paper-scale costs from the measured rates (`project_cifar10`).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import gc
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodbench.commands import add_command

if TYPE_CHECKING:
    import argparse

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
# raw throughput
# ---------------------------------------------------------------------------------------------------------------
RAW_MODES = {
    "forward": "eval mode, torch.no_grad(): model(x)",
    "fwd_grad": "eval mode: d/dx sum(oe_loss(model(x))) by torch.autograd.grad (input gradient only)",
    "train": "train mode: cross-entropy forward + backward + SGD (Nesterov) step",
}


def _raw_call(mode: str, model: nn.Module, x: torch.Tensor, optimizer=None, y=None) -> Callable[[], Any]:
    import torch
    import torch.nn.functional as F

    from oodbench.detector import oe_loss

    if mode == "forward":

        def call():
            with torch.no_grad():
                return model(x)

    elif mode in ("fwd_grad", "fwd_grad_params"):
        xg = x.clone().requires_grad_(True)

        def call():
            obj = oe_loss(model(xg)).sum()
            if mode == "fwd_grad":
                return torch.autograd.grad(obj, xg)[0]
            obj.backward()  # the released code's PGD: loss.backward() also fills every parameter's .grad
            return xg.grad

    elif mode == "train":

        def call():
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

    else:
        raise ValueError(f"unknown raw mode '{mode}'")
    return call


def raw_rate(model: nn.Module, mode: str, batch: int, device: torch.device, min_time: float) -> float:
    """Raw images/s of `model` in `mode` (see RAW_MODES; `fwd_grad_params` = the released code's PGD backward)
    at batch size `batch` on random inputs already on the device."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(batch)
    x = torch.rand((batch, 3, 32, 32), generator=generator).to(device)
    if mode == "train":
        net = copy.deepcopy(model).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
        y = torch.randint(0, net.num_outputs, (batch,), generator=generator).to(device)
        return rate(_raw_call(mode, net, x, optimizer, y), batch, device, min_time)
    model.eval()
    try:
        return rate(_raw_call(mode, model, x), batch, device, min_time)
    finally:
        model.zero_grad(set_to_none=True)


def _is_oom(error: BaseException) -> bool:
    return "out of memory" in str(error).lower()


def raw_sweep(model: nn.Module, device: torch.device, batch_sizes: tuple[int, ...], min_time: float) -> dict[str, Any]:
    """Forward and fwd+input-grad images/s per batch size (stops at the first size that does not fit)."""
    import torch

    rows = []
    for batch in sorted(set(batch_sizes)):
        try:
            rows.append(
                {
                    "batch": batch,
                    "forward": raw_rate(model, "forward", batch, device, min_time),
                    "fwd_grad": raw_rate(model, "fwd_grad", batch, device, min_time),
                }
            )
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            if not _is_oom(error):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append({"batch": batch, "out_of_memory": True})
            break
    ok = [r for r in rows if "forward" in r]
    if not ok:
        raise RuntimeError("no batch size of the sweep fits on the device")
    best = {
        mode: {"batch": max(ok, key=lambda r: r[mode])["batch"], "images_per_s": max(r[mode] for r in ok)}
        for mode in ("forward", "fwd_grad")
    }
    return {"modes": RAW_MODES, "sweep": rows, "best": best}


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


# ---------------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------------
def _size(seconds: float, raw: float, work_per_image: float, cap: int, batch: int, floor: int = 1) -> int:
    """Images for one stage repetition of about `seconds` (a multiple of `batch` once above it), in [floor, cap]."""
    n = int(seconds * raw / work_per_image)
    if n >= batch:
        n = n // batch * batch
    return max(floor, min(cap, n))


def _stage_record(
    name: str, unit: str, work: str, formula: str, rates: list[float], effs: list[float], **extra: Any
) -> dict[str, Any]:
    return {
        "stage": name,
        "images_per_s": statistics.median(rates),
        "unit": unit,
        "work": work,
        "efficiency_formula": formula,
        "efficiency": statistics.median(effs) if effs else None,
        "repeats": len(rates),
        **extra,
    }


def measure_eval_stages(
    cfg: BenchConfig, model: nn.Module, device: torch.device, raw: dict[str, Any], cache_dir: Path, log
) -> dict[str, dict[str, Any]]:
    """Clean scoring, PGD, corruption generation and search, mining: images/s and efficiency (median of repeats,
    each against raw throughput measured right before it, at the sweep's best batch and at the suite's batch)."""
    import torch

    from attacks.base import AttackContext
    from attacks.corruption import corruption_search
    from attacks.corruptions import variant_list, variants_for
    from attacks.linf import pgd_scores
    from attacks.natural import batched_scores
    from attacks.pgd import PGDConfig
    from oodbench.mining import mine_outliers, sample_positions
    from oodbench.training import augment_in_chunks, score_candidates

    ctx_build = _build_context(cfg.arch, device)
    msp = _detector("msp", ctx_build)
    best_f = raw["best"]["forward"]["batch"]
    best_g = raw["best"]["fwd_grad"]["batch"]
    f_raw, g_raw = raw["best"]["forward"]["images_per_s"], raw["best"]["fwd_grad"]["images_per_s"]
    images = bench_ood_images(cfg.n_ood)
    images_dev = images.to(device)
    n_variants = len(variant_list(cfg.suite))
    stages: dict[str, dict[str, Any]] = {}

    def ctx(**kw: Any) -> AttackContext:
        return AttackContext(device=device, batch_size=cfg.eval_batch, progress=False, label="bench", **kw)

    def paired(mode: str, best_batch: int) -> tuple[float, float]:
        at_best = raw_rate(model, mode, best_batch, device, cfg.min_time)
        at_suite = (
            raw_rate(model, mode, cfg.eval_batch, device, cfg.min_time) if cfg.eval_batch != best_batch else at_best
        )
        return at_best, at_suite

    def repeat(run: Callable[[], float], mode: str, best_batch: int, work: float):
        """run() -> achieved units/s; returns (rates, eff vs best batch, eff vs the suite's batch), the raw rates
        being the mean of measurements right before and right after each run (drift on a shared machine)."""
        rates, effs, effs_same = [], [], []
        for _ in range(cfg.repeats):
            before = paired(mode, best_batch)
            r = run()
            after = paired(mode, best_batch)
            at_best, at_suite = ((b + a) / 2 for b, a in zip(before, after))
            rates.append(r)
            effs.append(r * work / at_best)
            effs_same.append(r * work / at_suite)
        return rates, effs, effs_same

    # clean scoring ------------------------------------------------------------------------------------
    # every stage runs at least one full suite batch: a smaller set would measure a smaller batch
    floor = min(cfg.eval_batch, cfg.n_ood)
    n_clean = _size(cfg.stage_seconds, f_raw, 1, cfg.n_ood, cfg.eval_batch, floor)
    sub = images_dev[:n_clean]

    def run_clean() -> float:
        _, seconds = timed(lambda: batched_scores(msp, model, sub, ctx(), "bench"), device)
        return n_clean / seconds

    rates, effs, same = repeat(run_clean, "forward", best_f, 1.0)
    stages["clean_scoring"] = _stage_record(
        "clean scoring (attacks.natural.batched_scores, MSP)",
        "images/s",
        "1 forward per image",
        "(images/s) / raw forward images/s",
        rates,
        effs,
        efficiency_same_batch=statistics.median(same),
        batch=cfg.eval_batch,
        n=n_clean,
    )
    log(_line(stages["clean_scoring"]))

    # PGD ----------------------------------------------------------------------------------------------
    steps = cfg.pgd_steps
    n_pgd = _size(cfg.stage_seconds, g_raw, steps, cfg.n_ood, cfg.eval_batch, floor)
    sub_pgd = images_dev[:n_pgd]

    def run_pgd() -> float:
        c = ctx(pgd=PGDConfig(steps=steps), seed=1)
        _, seconds = timed(lambda: pgd_scores(msp, model, sub_pgd, c, "bench"), device)
        return n_pgd * steps / seconds

    rates, effs, same = repeat(run_pgd, "fwd_grad", best_g, 1.0)
    stages["pgd"] = _stage_record(
        f"PGD (attacks.linf.pgd_scores, {steps} iterations, MSP objective)",
        "images x iterations / s",
        "1 forward + input gradient per image per iteration (the clean, final and scoring forwards, 3 per image, "
        "count as overhead)",
        "(images x iterations / s) / raw fwd+input-grad images/s",
        rates,
        effs,
        efficiency_same_batch=statistics.median(same),
        batch=cfg.eval_batch,
        n=n_pgd,
        iterations=steps,
    )
    log(_line(stages["pgd"]))

    # corruption generation (one-off per OOD set) and search over the cached variants ------------------
    n_corr = _size(cfg.stage_seconds, f_raw, n_variants, cfg.n_ood, cfg.eval_batch, floor)
    corr_images = images[:n_corr]
    workers = cfg.workers or os.cpu_count() or 1
    _, gen_seconds = timed(
        lambda: variants_for(corr_images, cfg.suite, 0, cache_dir, workers=cfg.workers, progress=False), device
    )
    stages["corruption_generation"] = _stage_record(
        f"corruption generation (variants_for into an empty cache, {cfg.suite}, {workers} process(es))",
        "images x variants / s",
        "CPU work (not a model stage): one corruption call per image and variant",
        "none (no model work)",
        [n_corr * n_variants / gen_seconds],
        [],
        n=n_corr,
        variants=n_variants,
        seconds=gen_seconds,
        workers=workers,
    )
    log(_line(stages["corruption_generation"]))
    corr_dev = images_dev[:n_corr]

    def run_search() -> float:
        c = ctx(corruption_suite=cfg.suite, corruption_seed=0, cache_dir=cache_dir, workers=cfg.workers)
        _, seconds = timed(lambda: corruption_search(msp, model, corr_dev, c), device)
        return n_corr * n_variants / seconds

    rates, effs, same = repeat(run_search, "forward", best_f, 1.0)
    stages["corruption_search"] = _stage_record(
        f"corruption search (attacks.corruption.corruption_search, {n_variants} cached variants)",
        "images x variants / s",
        "1 forward per image per variant (the clean image's forward, 1 per image, counts as overhead)",
        "(images x variants / s) / raw forward images/s",
        rates,
        effs,
        efficiency_same_batch=statistics.median(same),
        batch=cfg.eval_batch,
        n=n_corr,
        variants=n_variants,
    )
    log(_line(stages["corruption_search"]))

    # mining ---------------------------------------------------------------------------------------------
    atom = _detector("atom", ctx_build)
    miner = _cifar_model(cfg.arch, atom.head_size, device, seed=1).train()
    n_cand = _size(
        cfg.stage_seconds, f_raw, 1, cfg.mining_candidates, cfg.eval_batch, min(floor, cfg.mining_candidates)
    )
    aux = ctx_build.aux
    parts: dict[str, list[float]] = {"sample_get": [], "augment": [], "score": [], "select": []}

    def run_mining() -> float:
        rng = np.random.default_rng(0)
        generator = torch.Generator(device=device).manual_seed(0)
        t0 = time.perf_counter()
        positions, _ = sample_positions(len(aux), n_cand, "uniform", rng)
        pool = aux.get(positions)
        t1 = time.perf_counter()
        candidates, t_aug = timed(lambda: augment_in_chunks(pool, generator, device), device)
        scores, t_score = timed(lambda: score_candidates(atom, miner, candidates, cfg.eval_batch), device)
        _, t_sel = timed(lambda: mine_outliers(scores, 0.125, max(1, n_cand // 4)), device)
        for key, value in zip(parts, (t1 - t0, t_aug, t_score, t_sel)):
            parts[key].append(value)
        return n_cand / (t1 - t0 + t_aug + t_score + t_sel)

    rates, effs, same = repeat(run_mining, "forward", best_f, 1.0)
    score_only = [n_cand / t for t in parts["score"]]
    stages["mining"] = _stage_record(
        "mining (sample_positions, AuxPool.get, augment_in_chunks, score_candidates, mine_outliers; ATOM head)",
        "candidates/s",
        "1 forward per candidate",
        "(candidates/s) / raw forward images/s",
        rates,
        effs,
        efficiency_same_batch=statistics.median(same),
        batch=cfg.eval_batch,
        n=n_cand,
        seconds_per_part={k: statistics.median(v) for k, v in parts.items()},
        score_candidates_images_per_s=statistics.median(score_only),
        score_candidates_efficiency=statistics.median(
            [s / r * e for s, r, e in zip(score_only, rates, effs)]  # same raw reference as the whole path
        ),
    )
    log(_line(stages["mining"]))
    return stages


def _train_spec(label: str, detector, stage) -> dict[str, Any]:
    """Images of one SGD step (throughput unit), images through the train-mode forward + backward, and the
    adversarial images with their PGD steps."""
    in_b, out_b = stage.in_batch, stage.out_batch
    adv, adv_steps = 0, 0
    if label in ("acet", "atom-like"):
        adv = int(out_b * detector.config.adv_fraction)
    elif label == "rowl":
        adv = in_b
    if adv:
        adv_steps = detector.train_pgd.steps if detector.train_pgd is not None else 5
    fwd_bwd = in_b + out_b + (adv if label == "rowl" else 0)  # ROWL trains on x and x_adv; ACET/ATOM replace
    return {"images": in_b + out_b, "fwd_bwd": fwd_bwd, "adv": adv, "adv_steps": adv_steps}


def measure_training(
    cfg: BenchConfig, device: torch.device, log, families: tuple[tuple[str, str], ...] = TRAIN_FAMILIES
) -> dict[str, dict[str, Any]]:
    """One `run_epoch` of `cfg.train_steps` SGD steps per method family (after a 1-step warm-up epoch)."""
    ctx = _build_context(cfg.arch, device)
    stages: dict[str, dict[str, Any]] = {}
    for label, name in families:
        stages[f"train/{label}"] = _measure_family(cfg, ctx, device, label, name)
        log(_line(stages[f"train/{label}"]))
    return stages


def _measure_family(cfg: BenchConfig, ctx, device: torch.device, label: str, name: str) -> dict[str, Any]:
    import torch

    from oodbench.data.base import ImageSet
    from oodbench.training import MOMENTUM, WEIGHT_DECAY, TrainingJob, build_network, run_epoch

    detector = _detector(name, ctx)
    stage_list = detector.stages(ctx)
    # the stage with outliers (SOFL: stage 2); vanilla and ROWL have a single stage without
    index = next((i for i, s in enumerate(stage_list) if s.outliers != "none"), 0)
    stage = stage_list[index]
    if cfg.train_batch_divisor > 1:  # --quick: smaller batches through the same run_epoch
        d = cfg.train_batch_divisor
        stage = dataclasses.replace(stage, in_batch=max(2, stage.in_batch // d), out_batch=stage.out_batch // d)
    spec = _train_spec(label, detector, stage)
    train_set = detector.training_set(ctx, ctx.in_dist.train)

    def job_for(steps: int) -> TrainingJob:
        n = stage.in_batch * steps
        labels = train_set.labels.repeat(math.ceil(n / len(train_set)))[:n].contiguous()
        return TrainingJob(
            detector,
            ctx,
            ImageSet(_repeat_to(train_set.images, n), labels, "bench-train", "built-in"),
            ctx.aux,
            Path(tempfile.gettempdir()),  # run_epoch writes nothing
            seed=0,
            meta={"method": detector.name},
            progress=False,
        )

    torch.manual_seed(0)
    model = build_network(job_for(1)).to(device)
    optimizer = torch.optim.SGD(
        detector.param_groups(model, stage.lr, WEIGHT_DECAY), lr=stage.lr, momentum=MOMENTUM, nesterov=True
    )
    run_epoch(job_for(1), model, optimizer, stage, index, 0, [])  # warm-up (allocations, kernels)
    raw_net = _cifar_model(cfg.arch, detector.head_size, device, seed=2)
    rates, effs = [], []
    for _ in range(cfg.repeats):
        r_train = raw_rate(raw_net, "train", spec["fwd_bwd"], device, cfg.min_time)
        r_grad = raw_rate(raw_net, "fwd_grad", spec["adv"], device, cfg.min_time) if spec["adv"] else None
        job = job_for(cfg.train_steps)
        _, seconds = timed(lambda job=job: run_epoch(job, model, optimizer, stage, index, 1, []), device)
        per_step = seconds / cfg.train_steps
        ideal = spec["fwd_bwd"] / r_train + (spec["adv"] * spec["adv_steps"] / r_grad if r_grad else 0.0)
        rates.append(spec["images"] / per_step)
        effs.append(ideal / per_step)
    formula = f"[{spec['fwd_bwd']} / raw train images/s at batch {spec['fwd_bwd']}"
    if spec["adv"]:
        formula += f" + {spec['adv']} x {spec['adv_steps']} / raw fwd+input-grad images/s at batch {spec['adv']}"
    formula += "] / measured seconds per step"
    note = {
        "ccu": "; the work counts the base network only (whitening and the two mixtures are extra method work)",
        "atom-like": "; the AT ablation (ATOM's loss, uniformly drawn outliers): mining is its own stage",
    }.get(label, "")
    work = f"per step {spec['images']} images (in {stage.in_batch} + out {stage.out_batch}); forward+backward over "
    work += f"{spec['fwd_bwd']}" + (f"; PGD {spec['adv_steps']} steps on {spec['adv']}" if spec["adv"] else "") + note
    return _stage_record(
        f"training step {label} ({name}, oodbench.training.run_epoch, stage '{stage.name}')",
        "images/s",
        work,
        formula,
        rates,
        effs,
        steps=cfg.train_steps,
        in_batch=stage.in_batch,
        out_batch=stage.out_batch,
        fwd_bwd_images=spec["fwd_bwd"],
        adversarial_images=spec["adv"],
        adversarial_steps=spec["adv_steps"],
    )


# ---------------------------------------------------------------------------------------------------------------
# reference-style evaluation (the released code's structure) vs the suite
# ---------------------------------------------------------------------------------------------------------------
def encode_png(images: torch.Tensor) -> list[bytes]:
    """uint8 [N, 3, H, W] -> one PNG file per image (what an image-folder data set holds on disk; lossless)."""
    from PIL import Image

    out = []
    for img in images.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def decode_batch(blobs: list[bytes]) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [B, H, W, 3] with PIL, as an image-folder DataLoader decodes every batch."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


def _to_tensor(hwc: np.ndarray, device: torch.device) -> torch.Tensor:
    """torchvision ToTensor on a batch: [B, H, W, 3] uint8 -> contiguous float [B, 3, H, W] / 255 on `device`."""
    import torch

    return torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous().float().div(255).to(device)


def _reference_corrupt(detector, model, x: torch.Tensor, variants: np.ndarray, device) -> torch.Tensor:
    """eval_ood_detection.py's corrupt_attack: keep, per image, the variant with the strictly highest score."""
    import torch

    with torch.no_grad():
        best_score = detector.search_score(model, x).float()
        best = x.clone()
        for block in variants:
            xv = _to_tensor(block, device)
            score = detector.search_score(model, xv).float()
            improved = score > best_score
            best_score = torch.where(improved, score, best_score)
            best[improved] = xv[improved]
    return best


def reference_style_evaluation(
    detector,
    model: nn.Module,
    ood_png: list[bytes],
    id_png: list[bytes],
    threat: str,
    *,
    device: torch.device,
    suite: str,
    corruption_seed: int,
    pgd,
    pgd_seed: int,
    batch: int = REFERENCE_BATCH,
    check_variants: np.ndarray | None = None,
) -> dict[str, Any]:
    """One threat model evaluated the released code's way (`eval_ood_detection.py` run with --adv / --corrupt /
    --adv-corrupt / neither): in-dist scores recomputed (plus its second forward for the predictions), then the OOD
    set in batches of `batch`, decoded from PNG per batch, corruption variants regenerated per batch in this process
    (`generate_variants`, the generator the cache uses), PGD (`pgd_linf`, the same random starts as the suite).

    Returns the OOD and in-dist scores, the seconds spent (in-dist, OOD, of which generation) and, when
    `check_variants` (the cache, [V, N, 3, H, W]) is given, whether every regenerated variant equals it byte for
    byte (the comparison is not timed)."""
    import torch.nn.functional as F

    from attacks.base import start_noise_for_set
    from attacks.corruptions import generate_variants
    from attacks.pgd import pgd_linf

    model.eval()
    clock = _Clock(device)
    clock.start()
    id_scores = []
    for s in range(0, len(id_png), batch):
        x = _to_tensor(decode_batch(id_png[s : s + batch]), device)
        id_scores.append(detector.score(model, x).float().cpu().numpy())
        # eval_ood_detection.py computes the predictions with a second forward pass, outside torch.no_grad()
        F.softmax(model(x)[:, : detector.num_classes], dim=1).detach().cpu().numpy().argmax(axis=1)
    clock.stop()
    id_seconds = clock.total

    clock = _Clock(device)
    clock.start()
    gen_seconds, variants_match = 0.0, None
    noises = None
    if threat in ("linf", "comp"):
        noises = start_noise_for_set(len(ood_png), (3, 32, 32), pgd, pgd_seed, device)
    scores = []
    for s in range(0, len(ood_png), batch):
        hwc = decode_batch(ood_png[s : s + batch])
        x = _to_tensor(hwc, device)
        if threat in ("corruption", "comp"):
            started = time.perf_counter()
            variants = generate_variants(hwc, suite, corruption_seed)  # [V, B, H, W, 3], every run
            gen_seconds += time.perf_counter() - started
            if check_variants is not None:
                with clock.paused():
                    same = np.array_equal(variants.transpose(0, 1, 4, 2, 3), check_variants[:, s : s + len(hwc)])
                    variants_match = same if variants_match is None else (variants_match and same)
            x = _reference_corrupt(detector, model, x, variants, device)
        if threat in ("linf", "comp"):
            x, _ = pgd_linf(
                lambda z: detector.attack_objective(model, z),
                x,
                pgd,
                model=model,
                start_noise=[n[s : s + len(hwc)] for n in noises],
            )
        scores.append(detector.score(model, x).float().cpu().numpy())
    clock.stop()
    return {
        "ood_scores": np.concatenate(scores),
        "id_scores": np.concatenate(id_scores),
        "id_seconds": id_seconds,
        "ood_seconds": clock.total,
        "generation_seconds": gen_seconds,
        "variants_match_cache": variants_match,
    }


def _suite_in_distribution(detector, model, id_images, id_labels, device, batch: int, run_dir: Path):
    """The runner's once-per-detector clean in-dist scores (`oodbench.runner.in_distribution_scores`), called with
    the few plan fields it reads."""
    from types import SimpleNamespace

    from oodbench.data.base import ImageSet
    from oodbench.runner import in_distribution_scores

    plan = SimpleNamespace(
        run_dir=run_dir,
        test=ImageSet(id_images, id_labels, "bench-id", "built-in"),
        options=SimpleNamespace(batch_size=batch),
        profile=SimpleNamespace(eval_batch=batch),
        device=device,
        in_dist=SimpleNamespace(name="bench"),
    )
    method = SimpleNamespace(name=detector.name, fit_key="bench", detector=detector)
    return in_distribution_scores(plan, method, model)


def _compare(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return {
        "identical": bool(a.shape == b.shape and np.array_equal(a, b)),
        "fraction_identical": float(np.mean(a == b)) if a.shape == b.shape else 0.0,
        "max_abs_diff": float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else 0.0,
    }


def measure_reference(cfg: BenchConfig, model: nn.Module, device: torch.device, log) -> dict[str, Any]:
    """The four-threat evaluation of MSP, reference style vs the suite, on the same N OOD and M in-dist images
    (interleaved per threat model so both sides see the same machine load), with score checks."""
    with tempfile.TemporaryDirectory(prefix="oodbench-bench-ref-", dir=cfg.cache_dir) as work:
        return _measure_reference(cfg, model, device, log, Path(work))


def _measure_reference(cfg: BenchConfig, model: nn.Module, device: torch.device, log, work: Path) -> dict[str, Any]:

    from attacks.base import AttackContext
    from attacks.corruptions import variant_list, variants_for
    from attacks.pgd import PGDConfig
    from oodbench.registry import THREATS
    from oodbench.seeding import derive_seed

    ctx_build = _build_context(cfg.arch, device)
    msp = _detector("msp", ctx_build)
    ood = bench_ood_images(cfg.ref_ood)
    n_id = (
        cfg.ref_id
        if cfg.ref_id is not None
        else max(1, round(cfg.ref_ood * CIFAR10_TEST / sum(CIFAR10_OOD_SIZES.values())))
    )
    id_images, id_labels = bench_id_images(n_id)
    ood_png, id_png = encode_png(ood), encode_png(id_images)
    pgd = PGDConfig(steps=cfg.ref_pgd_steps)
    seeds = {t: derive_seed(0, "bench", t) for t in THREATS4}
    n_variants = len(variant_list(cfg.suite))
    cache_dir = work / "variants"

    # one-off: the suite's variant cache for this set (shared by every method; reported, not counted)
    cache, gen_seconds = timed(
        lambda: variants_for(ood, cfg.suite, 0, cache_dir, workers=cfg.workers, progress=False), device
    )
    suite_seconds: dict[str, float] = {}
    (ood_dev, transfer_seconds) = timed(lambda: ood.to(device), device)  # runner: ood_on_device, once per run
    id_record, suite_id_seconds = timed(
        lambda: _suite_in_distribution(msp, model, id_images, id_labels, device, cfg.eval_batch, work / "run"),
        device,
    )
    memo: dict = {}
    threats: dict[str, dict[str, Any]] = {}
    ref_gen_total = 0.0
    for threat in THREATS4:
        ref = reference_style_evaluation(
            msp,
            model,
            ood_png,
            id_png,
            threat,
            device=device,
            suite=cfg.suite,
            corruption_seed=0,
            pgd=pgd,
            pgd_seed=seeds[threat],
            check_variants=cache,
        )
        ctx = AttackContext(
            device=device,
            batch_size=cfg.eval_batch,
            seed=seeds[threat],
            pgd=pgd,
            corruption_suite=cfg.suite,
            corruption_seed=0,
            cache_dir=cache_dir,
            workers=cfg.workers,
            progress=False,
            label="bench",
            memo=memo,  # one detector's cells share it (comp reuses the corruption search)
        )
        scores, seconds = timed(
            lambda ctx=ctx, threat=threat: THREATS.get(threat)().scores(msp, model, ood_dev, ctx).float().cpu().numpy(),
            device,
        )
        suite_seconds[threat] = seconds
        ref_gen_total += ref["generation_seconds"]
        ref_total = ref["id_seconds"] + ref["ood_seconds"]
        suite_share = seconds + suite_id_seconds / len(THREATS4)
        threats[threat] = {
            "reference_s": ref_total,
            "reference_id_s": ref["id_seconds"],
            "reference_ood_s": ref["ood_seconds"],
            "reference_generation_s": ref["generation_seconds"],
            "suite_s": suite_share,
            "suite_ood_s": seconds,
            "speedup_vs_reference": ref_total / suite_share,
            "speedup_ood_only": ref["ood_seconds"] / seconds,
            "scores": _compare(ref["ood_scores"], scores),
            "id_scores": _compare(ref["id_scores"], id_record["scores"]),
        }
        if ref["variants_match_cache"] is not None:
            threats[threat]["variants_match_cache"] = ref["variants_match_cache"]
        log(
            f"  reference vs suite, {threat:<10s}: {ref_total:8.2f} s vs {suite_share:7.2f} s "
            f"-> {ref_total / suite_share:6.1f}x  (scores identical: {threats[threat]['scores']['identical']})"
        )
    ref_total = sum(t["reference_s"] for t in threats.values())
    suite_total = suite_id_seconds + transfer_seconds + sum(suite_seconds.values())
    cores = os.cpu_count() or 1
    raw50 = {
        mode: raw_rate(model, mode, REFERENCE_BATCH, device, cfg.min_time) for mode in ("fwd_grad", "fwd_grad_params")
    }
    # The ceiling: the same attacks with zero overhead, i.e. the suite's model work at the raw rates of its batch.
    # Forwards: in-dist once, natural, one per variant (comp reuses the corruption search), the final scoring of
    # linf and comp; forward + input-gradient: every PGD iteration of linf and comp.
    raw_suite = {mode: raw_rate(model, mode, cfg.eval_batch, device, cfg.min_time) for mode in ("forward", "fwd_grad")}
    forwards = len(id_images) + len(ood) * (1 + n_variants + 2)
    fwd_grads = 2 * len(ood) * pgd.steps * pgd.restarts
    ideal_s = forwards / raw_suite["forward"] + fwd_grads / raw_suite["fwd_grad"]
    out = {
        "n_ood": len(ood),
        "n_id": len(id_images),
        "detector": "msp",
        "reference_batch": REFERENCE_BATCH,
        "suite_batch": cfg.eval_batch,
        "suite": cfg.suite,
        "variants": n_variants,
        "pgd": dataclasses.asdict(pgd),
        "threats": threats,
        "in_dist": {
            "reference_s_per_threat": [t["reference_id_s"] for t in threats.values()],
            "suite_s": suite_id_seconds,
        },
        "generation": {
            "suite_one_off_s": gen_seconds,
            "included": False,
            "workers": cfg.workers or cores,
            "reference_s": ref_gen_total,
            "reference_workers": 1,
        },
        "overall": {
            "reference_s": ref_total,
            "suite_s": suite_total,
            "speedup_vs_reference": ref_total / suite_total,
            # no implementation of the same attacks can beat this on this device and model
            "speedup_ceiling": ref_total / ideal_s,
            "ideal_suite_s": ideal_s,
            "ideal_work": {"forwards": forwards, "fwd_grads": fwd_grads, "raw_images_per_s": raw_suite},
            "speedup_including_generation": ref_total / (suite_total + gen_seconds),
            # the released code spreads generation over every core with joblib: an optimistic bound for it
            "speedup_if_reference_generation_used_all_cores": (ref_total - ref_gen_total * (1 - 1 / cores))
            / suite_total,
        },
        "checks": {
            "natural_identical": threats["natural"]["scores"]["identical"],
            "corruption_identical": threats["corruption"]["scores"]["identical"],
            "linf_identical": threats["linf"]["scores"]["identical"],
            "comp_identical": threats["comp"]["scores"]["identical"],
            "variants_match_cache": bool(
                threats["corruption"].get("variants_match_cache") and threats["comp"].get("variants_match_cache")
            ),
            "id_identical": threats["natural"]["id_scores"]["identical"],
        },
        "released_code_pgd": {
            "note": "ConfidenceLinfPGDAttack calls loss.backward() with the model's parameters requiring grad, so it "
            "also computes weight gradients every iteration; the reference side here uses pgd_linf (input gradient "
            "only, the same numbers). Factor = raw fwd+input-grad / fwd+grad-with-parameter-grads at batch 50.",
            "fwd_grad_images_per_s": raw50["fwd_grad"],
            "fwd_grad_params_images_per_s": raw50["fwd_grad_params"],
            "extra_cost_factor": raw50["fwd_grad"] / raw50["fwd_grad_params"],
        },
        "notes": [
            "reference: eval_ood_detection.py's structure (batches of 50, PNG decoded with PIL per batch, variants "
            "regenerated per batch in the evaluating process with 1 process, in-dist recomputed per threat with a "
            "second forward for predictions); suite: uint8 set on the device once, in-dist scores once "
            "(runner.in_distribution_scores), THREATS[t].scores per cell with the detector's shared memo",
            "per threat: reference_s = its in-dist + OOD time; suite_s = OOD time + 1/4 of the in-dist time",
            "the suite's one-off variant generation is reported in 'generation', not counted in the totals",
        ],
    }
    log(
        f"  overall: reference {ref_total:.1f} s, suite {suite_total:.1f} s -> "
        f"{out['overall']['speedup_vs_reference']:.1f}x (with the one-off generation: "
        f"{out['overall']['speedup_including_generation']:.1f}x); ceiling (the same attacks at the raw "
        f"throughput, no overhead) {out['overall']['speedup_ceiling']:.1f}x"
    )
    return out


# ---------------------------------------------------------------------------------------------------------------
# memory of the corruption search vs the number of variants
# ---------------------------------------------------------------------------------------------------------------
def _rss_anon() -> int | None:
    """Anonymous resident memory of this process in bytes (Linux), excluding file-backed pages such as the
    memory-mapped variant cache (which the kernel can drop at will)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakSampler:
    """Samples RssAnon every `interval` seconds in a thread; `peak` is the largest value seen."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon() or 0)
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self.peak = _rss_anon() or 0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon() or 0)


def measure_search_memory(cfg: BenchConfig, model: nn.Module, device: torch.device, log) -> dict[str, Any]:
    """Peak memory added by `corruption_search` with cifar-c-15 (75 variants) and cifar-c-19 (95) on the same
    images: RssAnon (sampled), tracemalloc (NumPy allocations) and, on CUDA, torch.cuda.max_memory_allocated.
    Memory that grew with the number of variants would differ by about (95 - 75) x N x 3 KB."""
    with tempfile.TemporaryDirectory(prefix="oodbench-bench-mem-", dir=cfg.cache_dir) as work:
        return _measure_search_memory(cfg, model, device, log, Path(work))


def _measure_search_memory(
    cfg: BenchConfig, model: nn.Module, device: torch.device, log, cache_dir: Path
) -> dict[str, Any]:
    import torch

    from attacks.base import AttackContext
    from attacks.corruption import corruption_search
    from attacks.corruptions import variant_list, variants_for

    ctx_build = _build_context(cfg.arch, device)
    msp = _detector("msp", ctx_build)
    images = bench_ood_images(cfg.memory_images)
    images_dev = images.to(device)
    suites = ("cifar-c-15", "cifar-c-19")
    for suite in suites:
        variants_for(images, suite, 0, cache_dir, workers=cfg.workers, progress=False)
    results: dict[str, dict[str, list[float]]] = {s: {"rss_anon": [], "tracemalloc": [], "cuda": []} for s in suites}
    for suite in suites * cfg.memory_repeats:  # alternating: the first search also warms allocator pools
        gc.collect()
        _malloc_trim()
        ctx = AttackContext(
            device=device,
            batch_size=cfg.eval_batch,
            progress=False,
            corruption_suite=suite,
            corruption_seed=0,
            cache_dir=cache_dir,
            workers=cfg.workers,
        )
        base_rss = _rss_anon() or 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base_cuda = torch.cuda.memory_allocated(device)
        tracemalloc.start()
        with PeakSampler() as sampler:
            best = corruption_search(msp, model, images_dev, ctx)
            _sync(device)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results[suite]["rss_anon"].append(sampler.peak - base_rss)
        results[suite]["tracemalloc"].append(traced_peak)
        if device.type == "cuda":
            results[suite]["cuda"].append(torch.cuda.max_memory_allocated(device) - base_cuda)
        del best, ctx
    n = len(images)
    per_variant = 3 * 32 * 32 * n
    summary: dict[str, Any] = {"n_images": n, "bytes_per_variant_of_the_set": per_variant, "suites": {}}
    for suite in suites:
        v = len(variant_list(suite))
        summary["suites"][suite] = {
            "variants": v,
            "all_variants_bytes": v * per_variant,
            "peak_rss_anon_bytes": max(results[suite]["rss_anon"]),
            "peak_tracemalloc_bytes": max(results[suite]["tracemalloc"]),
            "peak_cuda_bytes": max(results[suite]["cuda"]) if results[suite]["cuda"] else None,
        }
    a, b = summary["suites"][suites[0]], summary["suites"][suites[1]]
    extra_variants_bytes = b["all_variants_bytes"] - a["all_variants_bytes"]
    grow = {
        "rss_anon": b["peak_rss_anon_bytes"] - a["peak_rss_anon_bytes"],
        "tracemalloc": b["peak_tracemalloc_bytes"] - a["peak_tracemalloc_bytes"],
    }
    if a["peak_cuda_bytes"] is not None:
        grow["cuda"] = b["peak_cuda_bytes"] - a["peak_cuda_bytes"]
    summary["growth_75_to_95_bytes"] = grow
    summary["extra_variants_bytes"] = extra_variants_bytes
    # the tracemalloc (NumPy) and CUDA figures are exact; RssAnon is sampled and noisier
    exact = [grow["tracemalloc"]] + ([grow["cuda"]] if "cuda" in grow else [])
    summary["grows_with_variants"] = bool(max(exact) > 0.5 * extra_variants_bytes)
    summary["method"] = (
        "peak minus baseline around corruption_search; RssAnon sampled every 2 ms (the memory-mapped cache is "
        "file-backed and not counted); tracemalloc traces NumPy allocations; each suite measured twice, max kept"
    )
    log(
        f"  corruption search peak memory, {n} images: 75 variants {a['peak_rss_anon_bytes'] / 2**20:.1f} MiB RssAnon"
        f" / {a['peak_tracemalloc_bytes'] / 2**20:.2f} MiB traced; 95 variants {b['peak_rss_anon_bytes'] / 2**20:.1f}"
        f" MiB / {b['peak_tracemalloc_bytes'] / 2**20:.2f} MiB (all 20 extra variants: "
        f"{extra_variants_bytes / 2**20:.1f} MiB)"
    )
    return summary


# ---------------------------------------------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------------------------------------------
def project_cifar10(
    rates: dict[str, float],
    variants: tuple[int, ...] = (75, 95),
    pgd_steps: int = 40,
    ood_sizes: dict[str, int] | None = None,
    n_id: int = CIFAR10_TEST,
    epochs: int = 100,
    n_train: int = CIFAR10_TRAIN,
    outliers_per_epoch: int = 2 * CIFAR10_TRAIN,
    candidates_per_epoch: int = 8 * CIFAR10_TRAIN,
) -> dict[str, Any]:
    """Paper-scale costs from measured rates (all per second):

    - `clean` images, `pgd` images x iterations, `corruption_search` images x variants, `corruption_generation`
      images x variants, `mining` candidates, `atom_step` training images (in-dist + outliers, adversarial half
      included).

    Evaluation of one method on the six CIFAR-10 OOD sets (N = 54,565 images): natural N / clean; corruption
    N x V / search + N / clean (the final deployed scores); linf N x steps / pgd; comp N x steps / pgd (the search
    is shared with corruption); in-dist 10,000 / clean once. The variant generation N x V / generation is one-off
    (shared by every method) and reported apart. ATOM training: per epoch (n_train + outliers) / atom_step +
    candidates / mining, times `epochs`."""
    sizes = ood_sizes or CIFAR10_OOD_SIZES
    n = sum(sizes.values())
    out: dict[str, Any] = {"ood_images": n, "ood_sets": dict(sizes), "pgd_steps": pgd_steps, "evaluation": {}}
    for v in variants:
        threats = {
            "natural": n / rates["clean"],
            "corruption": n * v / rates["corruption_search"] + n / rates["clean"],
            "linf": n * pgd_steps / rates["pgd"],
            "comp": n * pgd_steps / rates["pgd"],
        }
        in_dist = n_id / rates["clean"]
        total = sum(threats.values()) + in_dist
        out["evaluation"][f"{v}_variants"] = {
            "threats_s": threats,
            "in_dist_s": in_dist,
            "total_s": total,
            "total_h": total / 3600,
            "one_off_generation_s": n * v / rates["corruption_generation"]
            if rates.get("corruption_generation")
            else None,
        }
    if rates.get("atom_step") and rates.get("mining"):
        step_s = (n_train + outliers_per_epoch) / rates["atom_step"]
        mining_s = candidates_per_epoch / rates["mining"]
        epoch_s = step_s + mining_s
        out["atom_training"] = {
            "epochs": epochs,
            "per_epoch": {
                "train_images": n_train + outliers_per_epoch,
                "adversarial_images": outliers_per_epoch // 2,
                "mining_candidates": candidates_per_epoch,
                "sgd_s": step_s,
                "mining_s": mining_s,
                "total_s": epoch_s,
            },
            "total_s": epochs * epoch_s,
            "total_h": epochs * epoch_s / 3600,
        }
    out["paper_costs_h"] = PAPER_COSTS_HOURS
    return out


def rates_for_projection(stages: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The rates `project_cifar10` needs, from measured stages (missing stages are left out)."""
    keys = {
        "clean": "clean_scoring",
        "pgd": "pgd",
        "corruption_search": "corruption_search",
        "corruption_generation": "corruption_generation",
        "mining": "mining",
        "atom_step": "train/atom-like",
    }
    return {k: stages[s]["images_per_s"] for k, s in keys.items() if s in stages}


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _device_info(device: torch.device) -> dict[str, Any]:
    import torch

    info = {
        "type": device.type,
        "name": _cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_bytes=props.total_memory, cuda=torch.version.cuda)
        with contextlib.suppress(Exception):
            info["cudnn_conv_fp32_precision"] = torch.backends.cudnn.conv.fp32_precision
            info["cuda_matmul_fp32_precision"] = torch.backends.cuda.matmul.fp32_precision
    return info


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    stages = result.get("stages", {})
    out: dict[str, Any] = {}
    for key in ("pgd", "corruption_search"):
        if key in stages and stages[key]["efficiency"] is not None:
            out[f"{key}_efficiency_at_least_80pct"] = stages[key]["efficiency"] >= 0.8  # vs the best batch size
            out[f"{key}_efficiency_same_batch_at_least_80pct"] = stages[key]["efficiency_same_batch"] >= 0.8
    if "reference" in result:
        out["four_threat_speedup_at_least_10x"] = result["reference"]["overall"]["speedup_vs_reference"] >= 10
        out["four_threat_speedup_ceiling"] = result["reference"]["overall"]["speedup_ceiling"]
    return out


def run_bench(cfg: BenchConfig, json_path: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every section of the benchmark; the JSON is rewritten after each section (a timeout keeps the rest)."""
    import torch

    from oodbench.registry import load_plugins
    from oodbench.runner import resolve_device

    load_plugins()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.eval_batch is None:
        from oodbench.config import get_profile

        profile = get_profile("paper" if device.type == "cuda" else "smoke")
        cfg = dataclasses.replace(cfg, eval_batch=profile.batch_for(device))
    if cfg.batch_sizes is None:
        cfg = dataclasses.replace(
            cfg,
            batch_sizes=(64, 128, 256, 512, 1024, 2048, 4096)
            if device.type == "cuda"
            else (32, 64, 128, 256, 512, 1024),
        )
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
        "device": _device_info(device),
        "arch": cfg.arch,
        "settings": dataclasses.asdict(cfg),
    }

    def save() -> None:
        result["targets"] = _targets(result)
        if cfg.project and result.get("stages"):
            result["projection"] = project_cifar10(rates_for_projection(result["stages"]), pgd_steps=40)
        if json_path is not None:
            from oodbench.io import write_json

            write_json(json_path, result)

    started = time.time()
    model = _cifar_model(cfg.arch, 10, device)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    log(
        f"oodbench bench: {cfg.arch} ({result['parameters'] / 1e6:.2f} M parameters) on {result['device']['name']} "
        f"({device.type}, {torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    sections = result["section_seconds"] = {}

    def section(name: str, fn: Callable[[], Any]) -> Any:
        started_section = time.time()
        out = fn()
        sections[name] = time.time() - started_section
        return out

    sweep = tuple(sorted(set(cfg.batch_sizes) | {cfg.eval_batch}))
    result["raw"] = section("raw", lambda: raw_sweep(model, device, sweep, cfg.min_time))
    log(_raw_table(result["raw"]))
    save()
    with tempfile.TemporaryDirectory(prefix="oodbench-bench-cache-", dir=cfg.cache_dir) as cache_root:
        result["stages"] = section(
            "stages", lambda: measure_eval_stages(cfg, model, device, result["raw"], Path(cache_root), log)
        )
    save()
    # most telling first: a timeout (benchmarks/gpu_check.sh) keeps every finished section in the JSON
    if cfg.reference:
        log("reference-style evaluation (released code's structure) vs the suite:")
        result["reference"] = section("reference", lambda: measure_reference(cfg, model, device, log))
        save()
    if cfg.training:
        result["stages"].update(section("training", lambda: measure_training(cfg, device, log)))
        save()
    if cfg.memory:
        result["memory"] = section("memory", lambda: measure_search_memory(cfg, model, device, log))
        save()
    if cfg.project:
        log(projection_text(result["projection"]))
    result["seconds"] = time.time() - started
    save()
    log(summary_table(result))
    return result


# ---------------------------------------------------------------------------------------------------------------
# printing
# ---------------------------------------------------------------------------------------------------------------
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


def _raw_table(raw: dict[str, Any]) -> str:
    lines = ["raw throughput (images/s):", "  batch    forward   fwd+input-grad"]
    for row in raw["sweep"]:
        if row.get("out_of_memory"):
            lines.append(f"  {row['batch']:>5d}   out of memory")
        else:
            lines.append(f"  {row['batch']:>5d} {_fmt_rate(row['forward']):>10s} {_fmt_rate(row['fwd_grad']):>16s}")
    best = raw["best"]
    lines.append(
        f"  best: forward {_fmt_rate(best['forward']['images_per_s'])} @ {best['forward']['batch']}, "
        f"fwd+input-grad {_fmt_rate(best['fwd_grad']['images_per_s'])} @ {best['fwd_grad']['batch']}"
    )
    return "\n".join(lines)


def summary_table(result: dict[str, Any]) -> str:
    """The printed summary: stages with throughput, work formula and efficiency; the reference comparison."""
    lines = [f"\n== oodbench bench: {result['arch']} on {result['device']['name']} ({result['device']['type']}) =="]
    lines.append(_raw_table(result["raw"]))
    lines.append(f"  {'stage':<72s} {'throughput':>10s} {'unit':<22s} efficiency")
    for stage in result.get("stages", {}).values():
        lines.append(_line(stage))
        lines.append(f"      work: {stage['work']}")
        lines.append(f"      efficiency = {stage['efficiency_formula']}")
    ref = result.get("reference")
    if ref:
        lines.append(
            f"reference-style vs suite ({ref['n_ood']} OOD + {ref['n_id']} in-dist images, {ref['variants']} variants, "
            f"PGD {ref['pgd']['steps']} x {ref['pgd']['step_size'] * 255:.0f}/255):"
        )
        for threat, row in ref["threats"].items():
            lines.append(
                f"  {threat:<10s} reference {row['reference_s']:8.2f} s  suite {row['suite_s']:8.2f} s  "
                f"speedup {row['speedup_vs_reference']:6.1f}x  scores identical {row['scores']['identical']}"
            )
        o = ref["overall"]
        lines.append(
            f"  overall    reference {o['reference_s']:8.2f} s  suite {o['suite_s']:8.2f} s  "
            f"speedup {o['speedup_vs_reference']:6.1f}x  (with the one-off generation "
            f"{o['speedup_including_generation']:.1f}x; generation {ref['generation']['suite_one_off_s']:.2f} s; "
            f"ceiling {o['speedup_ceiling']:.1f}x)"
        )
        lines.append(f"  checks: {json.dumps(ref['checks'])}")
    mem = result.get("memory")
    if mem:
        lines.append(
            f"corruption search memory grows with the number of variants: {mem['grows_with_variants']} "
            f"(75 -> 95 variants: {mem['growth_75_to_95_bytes']}, all 20 extra variants "
            f"{mem['extra_variants_bytes']} bytes)"
        )
    if result.get("targets"):
        lines.append(f"targets: {json.dumps(result['targets'])}")
    return "\n".join(lines)


def projection_text(projection: dict[str, Any]) -> str:
    """Human-readable CIFAR-10 projections."""
    lines = [f"projection to CIFAR-10 ({projection['ood_images']:,} OOD images, PGD {projection['pgd_steps']} steps):"]
    for key, ev in projection["evaluation"].items():
        t = ev["threats_s"]
        gen = ev["one_off_generation_s"]
        lines.append(
            f"  evaluation of one method, {key.replace('_', ' ')}: {ev['total_h']:.2f} h "
            f"(natural {t['natural']:.0f} s, corruption {t['corruption']:.0f} s, linf {t['linf']:.0f} s, "
            f"comp {t['comp']:.0f} s, in-dist {ev['in_dist_s']:.0f} s)"
            + (f"; one-off variant generation {gen / 3600:.2f} h" if gen else "")
        )
    if "atom_training" in projection:
        a = projection["atom_training"]
        lines.append(
            f"  ATOM training, {a['epochs']} epochs: {a['total_h']:.2f} h "
            f"(per epoch: SGD {a['per_epoch']['sgd_s']:.0f} s + mining {a['per_epoch']['mining_s']:.0f} s)"
        )
    p = projection["paper_costs_h"]
    lines.append(
        f"  paper ({p['device']}): ATOM training {p['atom_training']} h, evaluation {p['evaluation_per_method']} h "
        "per method"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `oodbench bench` to the command line."""
    p = subparsers.add_parser(
        "bench",
        help="images/s and efficiency of every stage, a reference-style baseline, CIFAR-10 projections",
        description=__doc__.split("\n\n")[0],
    )
    d = BenchConfig()
    p.add_argument("--arch", default=d.arch, help="architecture (small_cnn, densenet100, wrn40_4, resnet20, ...)")
    p.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N | auto")
    p.add_argument("--json", dest="json_path", default=None, help="write every number to this JSON file")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="raw sweep, e.g. 32,64,128 (default by device)")
    sized = {
        "--eval-batch": (int, "the suite's evaluation batch"),
        "--n-ood": (int, "OOD images available to the throughput stages"),
        "--stage-seconds": (float, "target seconds per stage repetition (sizes each stage)"),
        "--repeats": (int, "repetitions per stage (median)"),
        "--min-time": (float, "seconds per raw measurement"),
        "--pgd-steps": (int, "PGD iterations in the throughput stage"),
        "--mining-candidates": (int, "max candidates of the mining stage"),
        "--train-steps": (int, "SGD steps per timed training epoch"),
        "--ref-ood": (int, "N OOD images of the reference comparison"),
        "--ref-id": (int, "M in-dist images of the reference comparison"),
        "--ref-pgd-steps": (int, "PGD iterations of the reference comparison (paper: 40)"),
        "--memory-images": (int, "images of the memory measurement"),
    }
    for flag, (kind, text) in sized.items():
        default = getattr(d, flag[2:].replace("-", "_"))
        shown = {"--eval-batch": "500 on GPU, 32 on CPU", "--ref-id": "N x 10,000 / 54,565"}.get(flag, default)
        p.add_argument(flag, type=kind, default=None, help=f"{text} (default {shown}; --quick: smaller)")
    p.add_argument("--suite", default=d.suite, help="corruption suite: cifar-c-15 (75 variants) | cifar-c-19 (95)")
    p.add_argument("--workers", type=int, default=None, help="corruption generation processes (default: all cores)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--cache-dir", default=None, help="folder for the temporary variant caches (fresh, deleted at the end)"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the reference-style comparison")
    p.add_argument("--no-training", action="store_true", help="skip the training steps")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--project-cifar10", action="store_true", help="project paper-scale costs from the measured rates")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; smoke test of the benchmark itself)")
    p.set_defaults(func=cmd_bench)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """BenchConfig from parsed arguments: `--quick` starts from the quick preset; options given override."""
    given = {
        "arch": args.arch,
        "device": args.device,
        "batch_sizes": args.batch_sizes,
        "threads": args.threads,
        "cache_dir": args.cache_dir,
        "workers": args.workers,
        "reference": not args.no_reference,
        "training": not args.no_training,
        "memory": not args.no_memory,
        "project": args.project_cifar10,
        "suite": args.suite,
    }
    for name in (
        "eval_batch",
        "n_ood",
        "stage_seconds",
        "repeats",
        "min_time",
        "pgd_steps",
        "mining_candidates",
        "train_steps",
        "ref_ood",
        "ref_id",
        "ref_pgd_steps",
        "memory_images",
    ):
        given[name] = getattr(args, name)
    given = {k: v for k, v in given.items() if v is not None}
    return BenchConfig.quick_preset(**given) if args.quick else BenchConfig(**given)


def cmd_bench(args: argparse.Namespace) -> int:
    """`oodbench bench`."""
    cfg = config_from_args(args)
    run_bench(cfg, Path(args.json_path) if args.json_path else None)
    if args.json_path:
        print(f"wrote {args.json_path}")
    return 0


add_command(register)
