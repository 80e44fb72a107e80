"""Decoded data sets: every image is a uint8 tensor [N, 3, H, W]; conversion to float happens per batch."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from oodbench.errors import DataError

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


@dataclass
class ImageSet:
    """A decoded image set: `images` uint8 [N, 3, H, W] (CPU), optional int64 `labels` [N]."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    name: str = ""
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DataError(
                f"{self.name or 'image set'}: expected uint8 images [N, 3, H, W], got "
                f"{self.images.dtype} {tuple(self.images.shape)} (from {self.source or 'unknown source'})"
            )
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor | slice, name: str | None = None) -> ImageSet:
        """The images at `index` (a new ImageSet sharing no fingerprint with this one)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index].contiguous(), labels, name or self.name, self.source)

    def fingerprint(self) -> str:
        """sha256 of the pixels and labels: the content key of this set in caches and provenance."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(str(tuple(self.images.shape)).encode())
            h.update(self.images.contiguous().numpy().tobytes())
            if self.labels is not None:
                h.update(self.labels.numpy().astype(np.int64).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def images_from_hwc(array: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] numpy -> uint8 [N, 3, H, W] contiguous tensor."""
    array = np.ascontiguousarray(np.asarray(array, dtype=np.uint8).transpose(0, 3, 1, 2))
    return torch.from_numpy(array)


def advise_random(array: np.ndarray) -> np.ndarray:
    """Tell the kernel that a memory-mapped pool is read at random (madvise MADV_RANDOM): readahead around every
    3 KB image costs ~5x on cold random reads (and far more on sparse files). No-op for in-memory arrays."""
    mm = getattr(array, "_mmap", None)  # np.memmap's mapping
    if mm is not None and hasattr(mmap, "MADV_RANDOM"):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_RANDOM)
    return array


def _file_position(array: np.ndarray) -> tuple[str, int] | None:
    """(file name, byte position of row 0) of a C-contiguous np.memmap, else None."""
    mm, filename = getattr(array, "_mmap", None), getattr(array, "filename", None)
    if mm is None or filename is None or not array.flags.c_contiguous:
        return None
    mapped_from = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY  # np.memmap maps from this boundary
    return filename, mapped_from + array.ctypes.data - np.frombuffer(mm, dtype=np.uint8).ctypes.data


def read_rows(array: np.ndarray, index: np.ndarray, chunk_bytes: int = 1 << 26) -> np.ndarray:
    """`array[index]`, reading in sorted order (much faster on a memory map). A dense run of rows of a memory map
    (a contiguous block, as the `atom-code` protocol draws) is read with plain sequential file reads of
    `chunk_bytes`: pools are mapped without readahead (`advise_random`), which would make such a block ~10x
    slower through the map."""
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    out = np.empty((len(index),) + array.shape[1:], dtype=array.dtype)
    place = _file_position(array) if len(ordered) else None
    if place is None or int(ordered[-1]) + 1 - int(ordered[0]) > 2 * len(ordered):
        out[order] = array[ordered]
        return out
    filename, row0 = place
    row = array.strides[0]
    step = max(1, chunk_bytes // row)
    lo_all, hi_all = int(ordered[0]), int(ordered[-1]) + 1
    with open(filename, "rb", buffering=0) as f:
        for lo in range(lo_all, hi_all, step):
            hi = min(lo + step, hi_all)
            a, b = np.searchsorted(ordered, [lo, hi])
            if a == b:
                continue
            f.seek(row0 + lo * row)
            block = np.frombuffer(f.read((hi - lo) * row), dtype=array.dtype).reshape((hi - lo,) + array.shape[1:])
            out[order[a:b]] = block[ordered[a:b] - lo]
    return out


@dataclass
class InDistribution:
    """An in-distribution data set with its protocol defaults (SPEC section 2). Images and classes only: the
    settings of a method that depend on the data set (ATOM's q, ROWL's outliers, SOFL's R) are in its Config."""

    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None  # (mean, std) applied inside the model
    augment: bool = True  # RandomCrop(32, pad 4) + flip on training batches
    default_ood: tuple[str, ...] = ()
    default_aux: str | None = None
    schedule: str = "cifar"  # "cifar": 100 epochs, milestones 50/75/90; "svhn": 20 epochs, 10/15/18


class AuxPool:
    """An auxiliary outlier pool: images addressed by position 0..len-1 over the usable file indices.

    Subclasses keep the pixels on disk (memory-mapped) or in memory, never as float. `get` returns
    uint8 [n, 3, S, S] where S is the pool's native size (32, or 64 for ImageNet-RC, which the
    training augmentation crops to 32).
    """

    name: str = "aux"
    image_size: int = 32
    source: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, positions: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def validation(self) -> ImageSet | None:
        """The images reserved for validation (TinyImages indices 0..9,999), or None."""
        return None

    def fingerprint(self) -> str:
        """A cheap content key (path, size and a sample of images)."""
        h = hashlib.sha256(f"{type(self).__name__}:{self.source}:{len(self)}".encode())
        probe = np.linspace(0, len(self) - 1, num=min(len(self), 64)).astype(np.int64)
        h.update(self.get(probe).numpy().tobytes())
        return h.hexdigest()


class ArrayPool(AuxPool):
    """A pool backed by a uint8 [N, H, W, 3] array (in memory or a memory-mapped .npy)."""

    def __init__(self, array: np.ndarray, name: str, source: str = "", positions: np.ndarray | None = None):
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise DataError(f"{name}: expected uint8 [N, H, W, 3], got {array.dtype} {array.shape} ({source})")
        self.array = array
        self.name = name
        self.source = source
        self.image_size = int(array.shape[1])
        self.positions = positions  # file indices that may be used, or None for all
        advise_random(array)

    def __len__(self) -> int:
        return len(self.array) if self.positions is None else len(self.positions)

    def get(self, positions: np.ndarray) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64)
        index = positions if self.positions is None else self.positions[positions]
        return images_from_hwc(read_rows(self.array, index))


ROLES = ("in", "ood", "aux")


@dataclass
class DatasetSpec:
    """What the data registry stores: how to load a set, and how to explain its on-disk layout.

    One spec per registered name. A set that serves several roles (SVHN and CIFAR-10 are in-dist sets and
    OOD test sets) lists a loader per role in `loaders`; `role` / `loader` are the primary role and its
    loader (the first entry). Loader signatures: "in": (root, download) -> InDistribution;
    "ood": (root, download) -> ImageSet; "aux": (root) -> AuxPool.
    """

    name: str
    role: str  # "in", "ood" or "aux": the primary role
    loader: Callable[..., object]
    layout: str  # the expected files under the data root, shown by `oodbench data` and in errors
    obtain: str = ""  # how to get it
    builtin: bool = False
    loaders: dict[str, Callable[..., object]] = field(default_factory=dict)  # role -> loader (all roles)
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # role -> files that must exist under root
    sizes: dict[str, int] = field(default_factory=dict)  # role -> number of images of the full data set

    def __post_init__(self) -> None:
        if not self.loaders:
            self.loaders = {self.role: self.loader}
        self.loaders.setdefault(self.role, self.loader)
        unknown = set(self.loaders) - set(ROLES)
        if unknown:
            raise ValueError(f"data set '{self.name}': unknown role(s) {sorted(unknown)}; roles are {ROLES}")

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this set can play, primary role first."""
        return (self.role,) + tuple(r for r in self.loaders if r != self.role)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 images [N, C, H, W] in [0, 1] pixels,
    exact in float64 from a histogram of the 256 grey levels (no float copy of the set)."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        m = float((hist * levels).sum() / hist.sum())
        mean.append(m)
        std.append(float(((hist * (levels - m) ** 2).sum() / hist.sum()).sqrt()))
    return tuple(mean), tuple(std)


def require(path: Path, what: str, layout: str) -> Path:
    """`path` if it exists, else DataError naming the path and the expected layout."""
    if not path.exists():
        raise DataError(f"{what}: '{path}' not found. Expected layout:\n{layout}")
    return path
