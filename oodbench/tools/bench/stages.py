"""Images/s of every stage of the suite through its own code path (clean scoring, PGD, corruption generation and search,
mining) and of one training epoch per method family, with their efficiency."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodbench.tools.bench.common import (
    TRAIN_FAMILIES,
    BenchConfig,
    _build_context,
    _cifar_model,
    _detector,
    _line,
    _repeat_to,
    bench_ood_images,
    timed,
)
from oodbench.tools.bench.raw import raw_rate

if TYPE_CHECKING:
    import torch
    from torch import nn


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
