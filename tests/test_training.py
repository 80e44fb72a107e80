"""The shared training loop (SPEC section 3) and informative outlier mining (SPEC section 5): schedule, mining
slice, sampling modes, and one short end-to-end training per method on tiny data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from attacks.pgd import PGDConfig
from oodbench.checkpoint import load_checkpoint
from oodbench.config import PROFILES, PROTOCOLS
from oodbench.data import load_aux, load_in_distribution
from oodbench.data.base import ArrayPool
from oodbench.detector import BuildContext
from oodbench.mining import mine_outliers, mining_record, sample_positions
from oodbench.registry import DETECTORS
from oodbench.training import TrainingJob, learning_rate, train


def test_learning_rate_schedule_matches_spec():
    milestones = (50, 75, 90)
    assert [learning_rate(0.1, e, milestones) for e in (0, 49, 50, 74, 75, 89, 90, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4]
    )


def test_mining_returns_exactly_the_q_slice_of_the_sorted_scores():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4])
    picked = mine_outliers(scores, q=0.25, n=4)  # N = 8: sorted[2:6]
    assert torch.equal(scores[picked], torch.tensor([0.3, 0.4, 0.5, 0.7]))
    assert torch.equal(scores[mine_outliers(scores, q=0.0, n=3)], torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="exceeds"):
        mine_outliers(scores, q=0.75, n=4)
    record = mining_record(scores, picked, with_replacement=False, bins=10)
    assert sum(record.histogram) == 8 and record.selected_range == pytest.approx((0.3, 0.7))


def test_sampling_modes():
    rng = np.random.default_rng(0)
    uniform, repl = sample_positions(100, 40, "uniform", rng)
    assert not repl and len(set(uniform.tolist())) == 40
    block, repl = sample_positions(100, 30, "contiguous", rng)
    assert not repl and np.all(np.diff(block) % 100 == 1)  # consecutive, wrapping around
    over, repl = sample_positions(10, 40, "uniform", rng)
    assert repl and len(over) == 40 and over.max() < 10  # N > pool: with replacement, recorded


def _tiny_context(protocol="paper"):
    digits = load_in_distribution("digits")
    profile = dataclasses.replace(
        PROFILES["smoke"],
        schedules={"cifar": (2, (1,))},
        gmm_components=2,
        eval_batch=64,
        train_pgd=PGDConfig(steps=2, step_size=4 / 255),
    )
    train = digits.train.subset(np.arange(96))
    aux = load_aux("photos")
    small_aux = ArrayPool(aux.array[:600], name="photos-600", source="test")
    ctx = BuildContext(in_dist=digits, arch="small_cnn", protocol=PROTOCOLS[protocol], profile=profile, aux=small_aux)
    return ctx, train, small_aux


@pytest.mark.parametrize("method", ["msp", "oe", "sofl", "acet", "ccu", "rowl", "ntom", "atom", "at"])
def test_each_method_trains_end_to_end_on_tiny_data(tmp_path, method):
    ctx, train_set, aux = _tiny_context()
    cls = DETECTORS.get(method)
    overrides = {"candidates": 400} if method in ("ntom", "atom") else {"outliers": 20} if method == "rowl" else {}
    config = cls.make_config(ctx, overrides)
    detector = cls(10, config)
    meta = {
        "method": method,
        "recipe": cls.recipe or method,
        "arch": "small_cnn",
        "num_classes": 10,
        "head_size": detector.head_size,
        "in_dist": "digits",
        "train_key": "test",
    }
    job = TrainingJob(
        detector,
        ctx,
        detector.training_set(ctx, train_set),
        aux,
        tmp_path / method,
        seed=0,
        meta=meta,
        progress=False,
        log=lambda m: None,
    )
    model = train(job)
    payload = load_checkpoint(tmp_path / method / "final.pt")
    history = payload["meta"]["history"]
    assert len(history) == 2 * len(detector.stages(ctx))
    assert all(np.isfinite(h["loss"]) for h in history)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(4, 3, 32, 32))
    assert out.shape == (4, detector.head_size if method != "ccu" else 10)
    assert torch.isfinite(detector.score(model, torch.rand(4, 3, 32, 32))).all()
    if method in ("ntom", "atom"):
        mining = (tmp_path / method / "mining.json").read_text()
        assert '"selected_range"' in mining and (tmp_path / method / "mining.png").stat().st_size > 0
    if method == "rowl":
        assert len(job.train) == 96 + 20 and (job.train.labels == 10).sum() == 20


def test_training_resumes_to_identical_weights(tmp_path):
    ctx, train_set, aux = _tiny_context()
    cls = DETECTORS.get("oe")

    def job(directory):
        detector = cls(10, cls.make_config(ctx))
        meta = {
            "method": "oe",
            "recipe": "oe",
            "arch": "small_cnn",
            "num_classes": 10,
            "head_size": 10,
            "in_dist": "digits",
            "train_key": "t",
        }
        return TrainingJob(
            detector, ctx, train_set, aux, directory, seed=3, meta=meta, progress=False, log=lambda m: None
        )

    straight = train(job(tmp_path / "straight"))
    # interrupted after the first epoch: the resume checkpoint is all that is left
    interrupted = job(tmp_path / "interrupted")
    one_epoch = dataclasses.replace(ctx.profile, schedules={"cifar": (1, (1,))})
    interrupted.ctx = dataclasses.replace(ctx, profile=one_epoch)
    import oodbench.training as training

    original = training._save_resume
    saved = {}

    def keep(job_, model, optimizer, stage_index, epoch, mining_log, history):
        original(job_, model, optimizer, stage_index, epoch, mining_log, history)
        saved["last"] = (job_.directory / "last.pt").read_bytes()

    training._save_resume = keep
    try:
        train(interrupted)
    finally:
        training._save_resume = original
    (tmp_path / "interrupted" / "final.pt").unlink()
    (tmp_path / "interrupted" / "last.pt").write_bytes(saved["last"])
    resumed = train(job(tmp_path / "interrupted"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_method_or_head_is_refused(tmp_path):
    from oodbench.checkpoint import check_meta
    from oodbench.errors import CheckpointError

    with pytest.raises(CheckpointError, match="head_size"):
        check_meta("x.pt", {"method": "atom", "head_size": 11}, {"method": "atom", "head_size": 10})
    with pytest.raises(CheckpointError, match="method"):
        check_meta("x.pt", {"method": "oe", "head_size": 10}, {"method": "atom", "head_size": 10})


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    from oodbench.errors import CheckpointError

    ctx, train_set, aux = _tiny_context()
    cls = DETECTORS.get("msp")
    meta = {
        "method": "vanilla",
        "recipe": "vanilla",
        "arch": "small_cnn",
        "num_classes": 10,
        "head_size": 10,
        "in_dist": "digits",
        "train_key": "t",
    }
    job = TrainingJob(cls(10), ctx, train_set, aux, tmp_path, seed=0, meta=meta, progress=False, log=lambda m: None)
    train(job)
    data = (tmp_path / "final.pt").read_bytes()
    (tmp_path / "final.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        train(job)
