"""Decoded data sets: every image is a uint8 tensor [N, 3, H, W]; conversion to float happens per batch."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

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


@dataclass
class InDistribution:
    """An in-distribution data set with its protocol defaults (SPEC section 2)."""

    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None  # (mean, std) applied inside the model
    augment: bool = True  # RandomCrop(32, pad 4) + flip on training batches
    default_ood: tuple[str, ...] = ()
    default_aux: str | None = None
    default_q: float = 0.0  # informative outlier mining quantile (SPEC section 5)
    schedule: str = "cifar"  # "cifar": 100 epochs, milestones 50/75/90; "svhn": 20 epochs, 10/15/18
    rowl_outliers: int = 5000  # size of ROWL's fixed outlier class (SPEC section 4)
    reject_classes: int = 5  # SOFL's R


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

    def __len__(self) -> int:
        return len(self.array) if self.positions is None else len(self.positions)

    def get(self, positions: np.ndarray) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64)
        index = positions if self.positions is None else self.positions[positions]
        order = np.argsort(index, kind="stable")  # sorted reads are much faster on a memory map
        out = np.empty((len(index),) + self.array.shape[1:], dtype=np.uint8)
        out[order] = self.array[index[order]]
        return images_from_hwc(out)


@dataclass
class DatasetSpec:
    """What the data registry stores: how to load a set, and how to explain its on-disk layout."""

    name: str
    role: str  # "in", "ood" or "aux"
    loader: Callable[..., object]
    layout: str  # the expected files under the data root, shown by `oodbench data` and in errors
    obtain: str = ""  # how to get it
    builtin: bool = False


def require(path: Path, what: str, layout: str) -> Path:
    """`path` if it exists, else DataError naming the path and the expected layout."""
    if not path.exists():
        raise DataError(f"{what}: '{path}' not found. Expected layout:\n{layout}")
    return path
