"""On-disk cache of corruption variants (SPEC section 6: "generate once, cache, reuse for every method").

`variants_for(images, suite, seed, cache_dir)` returns a read-only memmap uint8 [V, N, 3, H, W] (variant-major,
so variant v of every image is one contiguous block), stored as a real `.npy` named by a content key: sha256 of
the image bytes and shape, the suite, the seed and `CORRUPTION_VERSION`. The file is generated once, in parallel
processes, into a temporary file that is renamed into place only when complete: a killed generation never leaves a
file that looks complete, and the next call regenerates. Peak memory is a few chunks, never V x N.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from hashlib import sha256
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from attacks.corruptions.cifar import CORRUPTION_VERSION, IMG_SIZE
from attacks.corruptions.suites import generate_variants, suite_corruption, variant_list, variant_names
from oodbench.io import pid_alive  # light: no torch in the corruption workers

__all__ = ["STATS", "cache_path", "content_key", "variant_names", "variants_for"]

log = logging.getLogger(__name__)

# Observable cache behaviour (per process): "generated" counts files written, "hits" calls served from disk.
STATS: dict[str, int] = {"generated": 0, "hits": 0}

_CACHE_FORMAT = "oodbench-corruption-variants/1"  # layout [V, N, 3, H, W] uint8


def _as_uint8_nchw(images) -> np.ndarray:
    """uint8 [N, 3, H, W] numpy view of a numpy array or torch tensor (no copy when already contiguous)."""
    if hasattr(images, "detach"):  # torch.Tensor, without importing torch here
        images = images.detach().cpu().contiguous().numpy()
    arr = np.ascontiguousarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {arr.dtype} {tuple(arr.shape)}")
    return arr


def content_key(images, suite: str, seed: int) -> str:
    """sha256 hex of (format, CORRUPTION_VERSION, suite, seed, shape, image bytes) of uint8 [N, 3, H, W] images."""
    arr = _as_uint8_nchw(images)
    h = sha256(f"{_CACHE_FORMAT}|v{CORRUPTION_VERSION}|{suite}|{int(seed)}|{arr.shape}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def cache_path(cache_dir: Path, images, suite: str, seed: int) -> Path:
    """Where `variants_for` stores these variants: `cache_dir / "<content key>.npy"`."""
    return Path(cache_dir) / f"{content_key(images, suite, seed)}.npy"


def _generate_chunk(chunk_nchw: np.ndarray, suite: str, seed: int) -> np.ndarray:
    """Worker: variants of one chunk, uint8 [V, n, 3, H, W] (importable top-level: spawn-safe)."""
    hwc = np.ascontiguousarray(chunk_nchw.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(generate_variants(hwc, suite, seed).transpose(0, 1, 4, 2, 3))


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; cv2's pool only adds overhead on 32x32 images


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _remove_dead_partials(cache_dir: Path, key: str) -> None:
    """Delete this key's temporary files left by killed generations on this host (their pid is gone); partial
    files of live processes or other hosts are left alone (a concurrent generation may own them)."""
    host = socket.gethostname()
    for path in cache_dir.glob(f"{key}.partial-*.npy"):
        parts = path.name[len(key) + len(".partial-") : -len(".npy")].rsplit("-", 2)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not pid_alive(int(parts[1])):
            path.unlink(missing_ok=True)


def _load_complete(path: Path, shape: tuple[int, ...]) -> np.memmap | None:
    try:
        mm = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        log.warning("unreadable corruption cache %s (%s): regenerating", path, err)
        return None
    if mm.shape != shape or mm.dtype != np.uint8:
        log.warning("corruption cache %s has %s %s, expected uint8 %s: regenerating", path, mm.dtype, mm.shape, shape)
        return None
    return mm


def variants_for(
    images,
    suite: str,
    seed: int,
    cache_dir: Path,
    workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 64,
) -> np.memmap:
    """Every corruption variant of `images` (uint8 [N, 3, H, W], numpy or torch) as a read-only memmap uint8
    [V, N, 3, H, W], V = len(variant_list(suite)) in severity-major order (SPEC section 6; Hendrycks & Dietterich
    2019's corruptions at make_cifar_c.py parameters for the CIFAR suites).

    Cached in `cache_dir / "<content key>.npy"`; generated once with `workers` processes (default: all cores;
    1 = in this process) in chunks of `chunk_size` images, into a temporary file renamed into place when
    complete. A later call with the same inputs returns the memmap without regenerating (`STATS["hits"]`).
    Variants depend only on each image's content, the suite and the seed, so chunking and worker count do not
    change a byte. An empty image set gives an empty (non-memmap) array."""
    arr = _as_uint8_nchw(images)
    n, _, h, w = arr.shape
    variants = variant_list(suite)
    if suite_corruption(suite, variants[0][0])[1] and (h, w) != (IMG_SIZE, IMG_SIZE):  # fail before any file
        raise ValueError(f"suite {suite!r} uses the CIFAR-10-C 32x32 parameters; got {h}x{w} images")
    shape = (len(variants), n, 3, h, w)
    if n == 0:
        return np.zeros(shape, dtype=np.uint8)
    cache_dir = Path(cache_dir)
    key = content_key(arr, suite, seed)
    final = cache_dir / f"{key}.npy"
    if final.exists():
        mm = _load_complete(final, shape)
        if mm is not None:
            STATS["hits"] += 1
            log.info("corruption variants %s (%s, seed %d): cache hit %s", shape, suite, seed, final)
            return mm
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(cache_dir, key)
    tmp = cache_dir / f"{key}.partial-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy"
    workers = max(1, min(workers or os.cpu_count() or 1, -(-n // chunk_size)))
    log.info(
        "generating %d x %d corruption variants (%s, seed %d) with %d process(es) into %s",
        shape[0],
        n,
        suite,
        seed,
        workers,
        final,
    )
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        disable = not progress or os.environ.get("OODBENCH_PROGRESS", "1") == "0"
        with tqdm(
            total=n, desc=f"corruptions {suite}", unit="img", disable=disable, leave=False, dynamic_ncols=True
        ) as bar:
            if workers == 1:
                for start, stop in _chunks(n, chunk_size):
                    out[:, start:stop] = _generate_chunk(arr[start:stop], suite, seed)
                    bar.update(stop - start)
            else:
                _fill_parallel(out, arr, suite, seed, workers, chunk_size, bar)
        out.flush()
        del out
        with open(tmp, "rb+") as fh:  # data on disk before the name says "complete"
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    STATS["generated"] += 1
    return np.load(final, mmap_mode="r")


def _fill_parallel(
    out: np.memmap, arr: np.ndarray, suite: str, seed: int, workers: int, chunk_size: int, bar: tqdm
) -> None:
    """Fill `out` chunk by chunk from a spawn-context process pool, at most 2 chunks per worker in flight (so
    memory stays bounded by a few chunks)."""
    ctx = multiprocessing.get_context("spawn")  # safe with torch/CUDA/threads in the parent, unlike fork
    pending: dict[Future, tuple[int, int]] = {}
    todo = _chunks(arr.shape[0], chunk_size)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        try:
            while True:
                while len(pending) < 2 * workers:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    pending[pool.submit(_generate_chunk, arr[nxt[0] : nxt[1]], suite, seed)] = nxt
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    start, stop = pending.pop(fut)
                    out[:, start:stop] = fut.result()
                    bar.update(stop - start)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
