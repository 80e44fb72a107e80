"""Data sets of the benchmark (SPEC section 2): the public API the rest of the suite uses.

    ind = load_in_distribution("cifar10", root="data")      # InDistribution: train / test ImageSets + defaults
    ood = load_ood("lsun_c", root="data")                   # ImageSet, uint8 [N, 3, 32, 32]
    aux = load_aux("tinyimages300k", root="data")           # AuxPool: aux.get(positions) -> uint8 [n, 3, S, S]
    dataset_status("data")                                  # which sets are present, where, how to obtain them

Names are the registered data sets (`oodbench list`), plus `folder:PATH` and `npy:PATH` (see
`oodbench.data.datasets`). Images stay uint8 on the CPU; models normalise inside, `to_float` converts a batch and
`random_crop_flip` is the training augmentation.
"""

from __future__ import annotations

from pathlib import Path

from oodbench.data.augment import center_crop, random_crop_flip, to_float
from oodbench.data.base import (
    CIFAR_MEAN,
    CIFAR_STD,
    ArrayPool,
    AuxPool,
    DatasetSpec,
    ImageSet,
    InDistribution,
)
from oodbench.data.catalog import dataset_status, default_root
from oodbench.data.datasets import (
    load_folder_in,
    load_generic_aux,
    load_generic_ood,
    split_generic,
)
from oodbench.errors import UnknownNameError
from oodbench.registry import DATASETS

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "ArrayPool",
    "AuxPool",
    "DatasetSpec",
    "ImageSet",
    "InDistribution",
    "dataset_spec",
    "dataset_status",
    "default_root",
    "load_aux",
    "load_in_distribution",
    "load_ood",
    "center_crop",
    "random_crop_flip",
    "to_float",
]

_ROLE_WORDS = {"in": "an in-distribution set", "ood": "an OOD test set", "aux": "an auxiliary pool"}


def _root(root: Path | str | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()


def dataset_spec(name: str, role: str) -> DatasetSpec:
    """The registered spec of `name`, checked to serve `role` ("in", "ood", "aux"); UnknownNameError (with a
    did-you-mean hint) for an unknown name or one that cannot play that role."""
    spec = DATASETS.get(name)
    if role not in spec.loaders:
        usable = sorted(e.name for e in DATASETS.entries() if role in e.obj.loaders)
        raise UnknownNameError(
            f"data set '{name}' cannot be used as {_ROLE_WORDS[role]} (it is: {', '.join(spec.roles)}); "
            f"{role} sets: {', '.join(usable)}, or folder:PATH" + (", npy:PATH" if role != "in" else "")
        )
    return spec


def load_in_distribution(name: str, root: Path | str | None = None, download: bool = False) -> InDistribution:
    """An in-distribution set with its protocol defaults (SPEC section 2). `download=True` fetches CIFAR-10/100 and
    SVHN through torchvision when missing; any other missing file is a DataError naming the path and layout."""
    generic = split_generic(name)
    if generic is not None:
        kind, path = generic
        if kind != "folder":
            raise UnknownNameError(f"'{name}': an in-distribution set must be registered or folder:PATH")
        return load_folder_in(name, path)
    return dataset_spec(name, "in").loaders["in"](_root(root), download)


def load_ood(name: str, root: Path | str | None = None, download: bool = False) -> ImageSet:
    """An OOD test set as uint8 [N, 3, 32, 32] (SPEC section 2)."""
    generic = split_generic(name)
    if generic is not None:
        return load_generic_ood(name, *generic)
    return dataset_spec(name, "ood").loaders["ood"](_root(root), download)


def load_aux(name: str, root: Path | str | None = None) -> AuxPool:
    """An auxiliary outlier pool (SPEC section 2): memory-mapped where the files are large."""
    generic = split_generic(name)
    if generic is not None:
        return load_generic_aux(name, *generic)
    return dataset_spec(name, "aux").loaders["aux"](_root(root))
