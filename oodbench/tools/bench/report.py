"""One `oodbench bench` run (every job in order, JSON written as it goes) and its printed summary."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodbench.tools.bench.common import SCHEMA, BenchConfig, _cifar_model, _fmt_rate, _line
from oodbench.tools.bench.memory import measure_search_memory
from oodbench.tools.bench.projection import project_cifar10, rates_for_projection
from oodbench.tools.bench.raw import raw_sweep
from oodbench.tools.bench.reference import measure_reference
from oodbench.tools.bench.stages import measure_eval_stages, measure_training

if TYPE_CHECKING:
    import torch


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
