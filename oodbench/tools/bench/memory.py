"""Peak memory of a corruption search with 75 vs 95 variants."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodbench.tools.bench.common import BenchConfig, _build_context, _detector, _sync, bench_ood_images

if TYPE_CHECKING:
    import torch
    from torch import nn


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
