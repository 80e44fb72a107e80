"""The training loop shared by every method (SPEC section 3).

SGD with Nesterov momentum 0.9, weight decay 1e-4, lr x0.1 at each milestone (epochs counted from 0);
one train-mode forward pass per batch over in-dist + outliers (the detector's loss does it); outliers
augmented with RandomCrop(32, pad 4) + flip. After every epoch a resume checkpoint is written
atomically; a killed run continues from the last finished epoch with the same numbers, because all
randomness of an epoch (data order, augmentation, outlier draws, attack starts) is seeded from
(seed, stage, epoch).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oodbench.checkpoint import check_meta, load_checkpoint, save_checkpoint, transfer_weights
from oodbench.data import random_crop_flip
from oodbench.detector import BuildContext, Detector, Mining, Stage
from oodbench.errors import CheckpointError
from oodbench.faults import crash_point
from oodbench.io import write_json
from oodbench.mining import mine_outliers, mining_record, plot_mining_log, sample_positions
from oodbench.models import create_model
from oodbench.progress import progress
from oodbench.registry import ARCHS
from oodbench.rundir import FINAL_CHECKPOINT, MINING_LOG, MINING_PLOT, RESUME_CHECKPOINT
from oodbench.seeding import derive_seed

MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4


@dataclass
class TrainingJob:
    """Everything needed to train (or resume, or reuse) one method's network."""

    detector: Detector
    ctx: BuildContext
    train: Any  # ImageSet: the in-dist training set as the recipe sees it
    aux: Any  # AuxPool | None
    directory: Path
    seed: int
    meta: dict[str, Any]
    init: Path | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    lr: float | None = None  # overrides every stage's base learning rate (fine-tuning with --init)
    stage_times: dict[str, float] = field(default_factory=dict)


def set_epoch_seed(seed: int, stage: int, epoch: int) -> int:
    """Seed torch's global RNG (CPU and CUDA) for one epoch; returns the derived seed."""
    epoch_seed = derive_seed(seed, "train", stage, epoch)
    torch.manual_seed(epoch_seed)
    return epoch_seed


def learning_rate(base_lr: float, epoch: int, milestones: tuple[int, ...]) -> float:
    """base_lr x 0.1 per milestone reached (epoch counted from 0): 0.1, 0.01 from 50, 0.001 from 75, 1e-4 from 90."""
    return base_lr * (0.1 ** sum(epoch >= m for m in milestones))


def build_network(job: TrainingJob) -> nn.Module:
    """The method's network: architecture with the method's head, optionally initialised from --init."""
    ctx = job.ctx
    declared = () if ctx.arch.startswith("timm/") else ARCHS.entry(ctx.arch).meta.get("options", ())
    options = {key: value for key, value in ctx.protocol.architecture_options().items() if key in declared}
    base = create_model(ctx.arch, job.detector.head_size, ctx.in_dist.normalization, **options)
    if job.init is not None:
        transfer_weights(base, init_state(job.init), str(job.init))
    return job.detector.build_model(ctx, base)


def init_state(path: Path) -> dict[str, torch.Tensor]:
    """Weights to fine-tune from: an oodbench checkpoint, or a CIFAR ResNet `.th` file (akamaster layout)."""
    from oodbench.models.resnet_cifar import load_pretrained_resnet

    try:
        payload = load_checkpoint(path)
    except CheckpointError as first_error:
        try:
            return load_pretrained_resnet(path).state_dict()
        except Exception:
            raise first_error from None
    if payload.get("released"):  # a bare {'state_dict': ...} file: akamaster's ResNets have the same layout
        try:
            return load_pretrained_resnet(path).state_dict()
        except CheckpointError:
            pass
    return payload["model"]


def train(job: TrainingJob) -> nn.Module:
    """Train `job.detector`'s network, resuming from `directory/last.pt` and reusing `directory/final.pt`."""
    device = job.ctx.device
    final_path = job.directory / FINAL_CHECKPOINT
    torch.manual_seed(derive_seed(job.seed, "weights"))  # the initial weights are part of the seed's identity
    model = build_network(job)
    if final_path.exists():
        payload = load_checkpoint(final_path)
        check_meta(final_path, payload["meta"], _identity(job.meta))
        model.load_state_dict(payload["model"])
        return model.to(device)

    stages = job.detector.stages(job.ctx)
    model.to(device)
    resume = _load_resume(job, model)
    if not resume:
        for warning in job.detector.training_warnings(job.ctx, job.train):
            job.log(f"[{job.meta['method']}] warning: {warning}")
        torch.manual_seed(derive_seed(job.seed, "initialise"))
        job.detector.initialise(model, job.ctx, job.train, job.aux, device)
    start_stage, start_epoch = resume.get("stage", 0), resume.get("epoch", 0)
    mining_log: list[dict] = resume.get("mining_log", [])
    history: list[dict] = resume.get("history", [])
    for stage_index, stage in enumerate(stages):
        if stage_index < start_stage:
            continue
        base_lr = job.lr if job.lr is not None else stage.lr
        optimizer = torch.optim.SGD(
            job.detector.param_groups(model, base_lr, WEIGHT_DECAY), lr=base_lr, momentum=MOMENTUM, nesterov=True
        )
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        first_epoch = start_epoch if stage_index == start_stage else 0
        if stage_index == start_stage and "optimizer" in resume:
            optimizer.load_state_dict(resume["optimizer"])
        epochs = progress(
            range(first_epoch, stage.epochs),
            desc=f"train {job.meta['method']} [{stage.name}]",
            enabled=job.progress,
            unit="epoch",
            initial=first_epoch,
            total=stage.epochs,
        )
        started = time.time()
        for epoch in epochs:
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = learning_rate(base, epoch, stage.milestones)
            record = run_epoch(job, model, optimizer, stage, stage_index, epoch, mining_log)
            crash_point(f"train:{stage.name}:{epoch}")
            history.append(record)
            job.log(
                f"[{job.meta['method']}] {stage.name} epoch {epoch + 1}/{stage.epochs}: loss {record['loss']:.4f} "
                f"lr {record['lr']:.4g} ({record['seconds']:.1f} s)"
            )
            _save_resume(job, model, optimizer, stage_index, epoch + 1, mining_log, history)
            every = job.ctx.profile.checkpoint_every.get(job.ctx.in_dist.schedule, 10)
            if (epoch + 1) % every == 0 or epoch + 1 == stage.epochs:
                save_checkpoint(job.directory / f"{stage.name}_epoch{epoch + 1:03d}.pt", model, job.meta)
        job.stage_times[stage.name] = job.stage_times.get(stage.name, 0.0) + time.time() - started
        start_epoch = 0
    save_checkpoint(final_path, model, {**job.meta, "history": history, "stage_times": job.stage_times})
    if mining_log:
        write_json(job.directory / MINING_LOG, mining_log)
        plot_mining_log(mining_log, job.directory / MINING_PLOT)
    (job.directory / RESUME_CHECKPOINT).unlink(missing_ok=True)
    return model


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("method", "recipe", "arch", "num_classes", "head_size", "in_dist", "train_key")
    return {k: meta[k] for k in keys if k in meta}


def _load_resume(job: TrainingJob, model: nn.Module) -> dict[str, Any]:
    path = job.directory / RESUME_CHECKPOINT
    if not path.exists():
        return {}
    payload = load_checkpoint(path)
    check_meta(path, payload["meta"], _identity(job.meta))
    model.load_state_dict(payload["model"])
    job.log(f"[{job.meta['method']}] resuming from {path} (stage {payload['stage']}, epoch {payload['epoch']})")
    job.stage_times.update(payload.get("stage_times", {}))
    return {
        "stage": int(payload["stage"]),
        "epoch": int(payload["epoch"]),
        "optimizer": payload["optimizer"],
        "mining_log": json.loads(payload.get("mining_log", "[]")),
        "history": json.loads(payload.get("history", "[]")),
    }


def _save_resume(job, model, optimizer, stage_index, epoch, mining_log, history) -> None:
    save_checkpoint(
        job.directory / RESUME_CHECKPOINT,
        model,
        job.meta,
        optimizer=optimizer.state_dict(),
        stage=stage_index,
        epoch=epoch,
        mining_log=json.dumps(mining_log),
        history=json.dumps(history),
        stage_times=dict(job.stage_times),
    )


def epoch_outliers(
    job: TrainingJob,
    model: nn.Module,
    stage: Stage,
    stage_index: int,
    epoch: int,
    needed: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    mining_log: list[dict],
) -> torch.Tensor | None:
    """The epoch's outliers as augmented uint8 [n, 3, 32, 32] on the device (None without outliers)."""
    if stage.outliers == "none":
        return None
    aux, device = job.aux, job.ctx.device
    if stage.outliers == "uniform":
        positions, _ = sample_positions(len(aux), needed, job.ctx.protocol.aux_sampling, rng)
        return aux.get(positions).to(device)  # augmented per batch
    if stage.outliers != "mined":
        raise ValueError(f"unknown outlier stream '{stage.outliers}'")
    mining = stage.mining or Mining()
    n = mining.n if mining.n else 2 * len(job.train)
    n_candidates = mining.candidates if mining.candidates else 4 * n
    positions, with_replacement = sample_positions(len(aux), n_candidates, job.ctx.protocol.aux_sampling, rng)
    candidates = augment_in_chunks(aux.get(positions), generator, device)
    scores = score_candidates(job.detector, model, candidates, job.ctx.profile.batch_for(device))
    selected = mine_outliers(scores, mining.q, n)
    crash_point(f"mining:{stage.name}:{epoch}")
    record = mining_record(scores, selected, with_replacement)
    mining_log.append(
        {
            "stage": stage.name,
            "epoch": epoch,
            "q": mining.q,
            "n": n,
            "candidates": n_candidates,
            "with_replacement": with_replacement,
            "histogram": record.histogram,
            "bin_edges": record.bin_edges,
            "selected_range": record.selected_range,
        }
    )
    return candidates[selected.to(candidates.device)]


def augment_in_chunks(images: torch.Tensor, generator: torch.Generator, device, chunk: int = 65536) -> torch.Tensor:
    """RandomCrop(32, pad 4) + flip of uint8 images, moved to `device` chunk by chunk (pools stay uint8)."""
    return torch.cat(
        [
            random_crop_flip(images[i : i + chunk].to(device), size=32, padding=4, generator=generator)
            for i in range(0, len(images), chunk)
        ]
    )


@torch.no_grad()
def score_candidates(detector: Detector, model: nn.Module, candidates: torch.Tensor, batch: int) -> torch.Tensor:
    """Mining scores (higher = more OOD) of uint8 candidates, model in eval mode, in large batches."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat(
            [
                detector.mining_score(model, candidates[i : i + batch].float() / 255.0).float()
                for i in range(0, len(candidates), batch)
            ]
        )
    finally:
        model.train(was_training)


def run_epoch(
    job: TrainingJob, model: nn.Module, optimizer, stage: Stage, stage_index: int, epoch: int, mining_log: list[dict]
) -> dict[str, Any]:
    """One epoch: (mine or draw outliers), then SGD over zip(in-dist batches, outlier batches)."""
    started = time.time()
    device = job.ctx.device
    epoch_seed = set_epoch_seed(job.seed, stage_index, epoch)
    rng = np.random.default_rng(epoch_seed)
    generator = torch.Generator(device=device).manual_seed(epoch_seed)
    train_images = job.train.images
    order = torch.from_numpy(rng.permutation(len(train_images)))
    n_batches = math.ceil(len(train_images) / stage.in_batch)
    outliers = epoch_outliers(
        job, model, stage, stage_index, epoch, n_batches * stage.out_batch, rng, generator, mining_log
    )
    if outliers is not None:
        n_batches = min(n_batches, math.ceil(len(outliers) / stage.out_batch))
        if stage.outliers == "mined":
            outliers = outliers[torch.randperm(len(outliers), generator=generator, device=outliers.device)]
    model.train()
    total, count = 0.0, 0
    augment = job.ctx.in_dist.augment
    for b in progress(range(n_batches), desc=f"epoch {epoch + 1}", enabled=job.progress, unit="batch", leave=False):
        index = order[b * stage.in_batch : (b + 1) * stage.in_batch]
        x_in = train_images[index].to(device, non_blocking=True)
        if augment:
            x_in = random_crop_flip(x_in, size=32, padding=4, generator=generator)
        y_in = job.train.labels[index].to(device, non_blocking=True)
        x_out = None
        if outliers is not None:
            x_out = outliers[b * stage.out_batch : (b + 1) * stage.out_batch]
            if stage.outliers == "uniform" or x_out.shape[-1] != 32:
                x_out = random_crop_flip(x_out, size=32, padding=4, generator=generator)
            x_out = x_out.float() / 255.0
        loss = stage.loss(model, x_in.float() / 255.0, y_in, x_out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        job.detector.after_step(model)
        total = total + loss.detach() * len(index)  # stays on the device: no host sync per step
        count += len(index)
    total = float(total)
    if not np.isfinite(total):
        from oodbench.errors import OodbenchError

        raise OodbenchError(
            f"{job.meta['method']}: the training loss became {total} in stage {stage.name}, epoch {epoch}; lower the "
            "learning rate or check the data (the last finished epoch is kept in last.pt; nothing of this one is saved)"
        )
    return {
        "stage": stage.name,
        "epoch": epoch,
        "loss": total / max(count, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": time.time() - started,
        "outliers": 0 if outliers is None else int(len(outliers)),
    }
