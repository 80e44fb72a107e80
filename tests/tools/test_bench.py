"""`oodbench bench` (oodbench.tools.bench): the quick run's JSON, the reference-style baseline's agreement with the
suite, and the CIFAR-10 projection arithmetic."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from oodbench import cli
from oodbench.tools import bench

STAGES = ("clean_scoring", "pgd", "corruption_generation", "corruption_search", "mining") + tuple(
    f"train/{label}" for label, _ in bench.TRAIN_FAMILIES
)


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    """One `oodbench bench --quick` run through the command line (one thread: nothing here asserts a speed, and
    one thread is robust to an oversubscribed machine)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    torch.set_num_threads(1)
    code = cli.main(
        ["bench", "--quick", "--arch", "small_cnn", "--device", "cpu", "--threads", "1", "--project-cifar10"]
        + ["--json", str(out)]
    )
    assert code == 0
    return json.loads(out.read_text())


def test_quick_bench_json_schema(quick_result):
    r = quick_result
    assert r["schema"] == bench.SCHEMA
    assert r["arch"] == "small_cnn"
    for key in ("type", "name", "torch", "threads"):
        assert key in r["device"]
    assert r["device"]["type"] == "cpu" and r["device"]["threads"] == 1
    assert r["settings"]["quick"] is True and r["settings"]["batch_sizes"] == [32, 64]
    # raw sweep: every batch size measured, the best of each mode named
    assert [row["batch"] for row in r["raw"]["sweep"]] == [32, 64]
    for mode in ("forward", "fwd_grad"):
        assert r["raw"]["best"][mode]["images_per_s"] > 0
        assert r["raw"]["best"][mode]["batch"] in (32, 64)
    # every stage: a positive throughput, a unit, its work and efficiency formula, a positive efficiency
    assert set(STAGES) <= set(r["stages"])
    for name in STAGES:
        stage = r["stages"][name]
        assert stage["images_per_s"] > 0, name
        assert stage["unit"] and stage["work"] and stage["efficiency_formula"], name
        if name != "corruption_generation":  # CPU work, no model throughput to compare with
            assert stage["efficiency"] > 0, name
    assert r["stages"]["corruption_search"]["variants"] == 75
    assert r["stages"]["pgd"]["iterations"] == 2
    assert set(r["targets"]) == {
        "pgd_efficiency_at_least_80pct",
        "pgd_efficiency_same_batch_at_least_80pct",
        "corruption_search_efficiency_at_least_80pct",
        "corruption_search_efficiency_same_batch_at_least_80pct",
        "four_threat_speedup_at_least_10x",
        "four_threat_speedup_ceiling",
    }
    assert set(r["section_seconds"]) == {"raw", "stages", "training", "memory", "reference"}


def test_reference_style_matches_the_suite(quick_result):
    ref = quick_result["reference"]
    assert ref["n_ood"] == 8 and ref["reference_batch"] == 50 and ref["variants"] == 75
    assert set(ref["threats"]) == set(bench.THREATS4)
    checks = ref["checks"]
    # natural: identical; corruption: the regenerated variants are the cached bytes, and so the same scores;
    # linf / comp: the same random starts give the same points (CPU results do not depend on the batch size)
    assert checks == {
        "natural_identical": True,
        "corruption_identical": True,
        "linf_identical": True,
        "comp_identical": True,
        "variants_match_cache": True,
        "id_identical": True,
    }
    for threat, row in ref["threats"].items():
        assert row["reference_s"] > 0 and row["suite_s"] > 0, threat
        assert row["speedup_vs_reference"] == pytest.approx(row["reference_s"] / row["suite_s"])
    overall = ref["overall"]
    assert overall["speedup_vs_reference"] == pytest.approx(overall["reference_s"] / overall["suite_s"])
    # the ceiling counts the same attack work at the raw rates: 8 OOD + its in-dist images, 75 variants, 2 PGD steps
    work = overall["ideal_work"]
    assert work["forwards"] == ref["n_id"] + 8 * (1 + 75 + 2) and work["fwd_grads"] == 2 * 8 * 2
    assert overall["speedup_ceiling"] == pytest.approx(overall["reference_s"] / overall["ideal_suite_s"])
    assert ref["generation"]["included"] is False and ref["generation"]["suite_one_off_s"] > 0
    assert ref["released_code_pgd"]["extra_cost_factor"] > 0


def test_memory_section(quick_result):
    mem = quick_result["memory"]
    assert set(mem["suites"]) == {"cifar-c-15", "cifar-c-19"}
    assert mem["suites"]["cifar-c-15"]["variants"] == 75 and mem["suites"]["cifar-c-19"]["variants"] == 95
    assert mem["extra_variants_bytes"] == 20 * mem["bytes_per_variant_of_the_set"]
    assert isinstance(mem["grows_with_variants"], bool)
    assert mem["grows_with_variants"] is False  # one variant block at a time (exact NumPy tracing)


def test_projection_in_the_json(quick_result):
    proj = quick_result["projection"]
    assert proj["ood_images"] == 54565
    assert set(proj["evaluation"]) == {"75_variants", "95_variants"}
    assert proj["evaluation"]["95_variants"]["total_s"] > proj["evaluation"]["75_variants"]["total_s"]
    assert proj["atom_training"]["total_h"] > 0


def test_reference_style_pieces_on_fixed_inputs(tmp_path):
    """PNG round trip is lossless; the reference corruption search keeps the strictly best variant, clean first."""
    images = bench.bench_ood_images(5)
    blobs = bench.encode_png(images)
    decoded = bench.decode_batch(blobs)
    assert decoded.dtype.name == "uint8" and decoded.shape == (5, 32, 32, 3)
    assert torch.equal(torch.from_numpy(decoded).permute(0, 3, 1, 2), images)

    class Brightness:  # search score = mean pixel: the brightest variant wins, ties keep the earlier one
        def search_score(self, model, x):
            return x.mean(dim=(1, 2, 3))

    x = torch.full((2, 3, 32, 32), 0.5)
    variants = np.stack(
        [
            np.full((2, 32, 32, 3), 100, dtype=np.uint8),  # darker than clean (127.5)
            np.full((2, 32, 32, 3), 200, dtype=np.uint8),
            np.full((2, 32, 32, 3), 200, dtype=np.uint8),  # a tie: not taken
        ]
    )
    variants[2, 1] = 250  # image 1: the last variant is strictly brighter
    best = bench._reference_corrupt(Brightness(), None, x, variants, torch.device("cpu"))
    assert torch.allclose(best[0], torch.full((3, 32, 32), 200 / 255))
    assert torch.allclose(best[1], torch.full((3, 32, 32), 250 / 255))


def test_projection_arithmetic():
    rates = {
        "clean": 1000.0,
        "pgd": 500.0,
        "corruption_search": 1000.0,
        "corruption_generation": 2000.0,
        "mining": 4000.0,
        "atom_step": 300.0,
    }
    proj = bench.project_cifar10(rates)
    n = 10000 + 5640 + 10000 + 10000 + 10000 + 8925
    assert proj["ood_images"] == n == 54565
    ev = proj["evaluation"]["75_variants"]
    assert ev["threats_s"]["natural"] == pytest.approx(54.565)
    assert ev["threats_s"]["corruption"] == pytest.approx(n * 75 / 1000 + n / 1000)  # search + final scores
    assert ev["threats_s"]["linf"] == pytest.approx(n * 40 / 500)
    assert ev["threats_s"]["comp"] == pytest.approx(n * 40 / 500)  # the search is shared with corruption
    assert ev["in_dist_s"] == pytest.approx(10.0)
    assert ev["total_s"] == pytest.approx(54.565 + 4146.94 + 2 * 4365.2 + 10.0)
    assert ev["total_h"] == pytest.approx(ev["total_s"] / 3600)
    assert ev["one_off_generation_s"] == pytest.approx(n * 75 / 2000)
    assert proj["evaluation"]["95_variants"]["threats_s"]["corruption"] == pytest.approx(n * 95 / 1000 + n / 1000)
    train = proj["atom_training"]
    # per epoch: 50,000 in-dist + 100,000 outliers (50,000 adversarial) at 300/s, 400,000 candidates at 4,000/s
    assert train["per_epoch"]["train_images"] == 150000 and train["per_epoch"]["adversarial_images"] == 50000
    assert train["per_epoch"]["sgd_s"] == pytest.approx(500.0)
    assert train["per_epoch"]["mining_s"] == pytest.approx(100.0)
    assert train["total_s"] == pytest.approx(60000.0)
    assert train["total_h"] == pytest.approx(60000.0 / 3600)
    # without the training rates there is no training projection
    partial = bench.project_cifar10({k: v for k, v in rates.items() if k not in ("mining", "atom_step")})
    assert "atom_training" not in partial
    assert "ATOM training" in bench.projection_text(proj)
    assert bench.rates_for_projection({"pgd": {"images_per_s": 7.0}}) == {"pgd": 7.0}


def test_stage_sizing():
    # about `seconds` of work, a multiple of the batch once above it, within [floor, cap]
    assert bench._size(2.0, 1000.0, 1, 10000, 256) == 1792
    assert bench._size(2.0, 1000.0, 40, 10000, 256, floor=256) == 256
    assert bench._size(100.0, 1000.0, 1, 5000, 500) == 5000
    assert bench._size(0.01, 1000.0, 1, 5000, 500, floor=3) == 10


def test_config_from_args_quick_and_overrides():
    parser = cli.build_parser()
    args = parser.parse_args(["bench", "--quick", "--ref-ood", "12", "--batch-sizes", "16,32"])
    cfg = bench.config_from_args(args)
    assert cfg.quick and cfg.ref_ood == 12 and cfg.batch_sizes == (16, 32) and cfg.n_ood == 64
    full = bench.config_from_args(parser.parse_args(["bench", "--no-reference"]))
    assert not full.quick and not full.reference and full.ref_pgd_steps == 40 and full.eval_batch is None
    assert math.isclose(full.stage_seconds, bench.BenchConfig().stage_seconds)


def test_python_m_cli_knows_bench():
    """benchmarks/gpu_check.sh runs `python -m oodbench.cli bench`: the command must be registered there too."""
    proc = subprocess.run(
        [sys.executable, "-m", "oodbench.cli", "bench", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "--project-cifar10" in proc.stdout and "--ref-ood" in proc.stdout
