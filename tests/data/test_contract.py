"""The data-set contract, run over every registered data set without listing any: each declares a layout and
known roles, and each built-in one loads in every role it declares with the image format the suite relies on
(uint8 [N, 3, S, S], in-dist labels in 0..K-1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodbench.data import load_aux, load_in_distribution, load_ood
from oodbench.data.base import ROLES
from oodbench.registry import DATASETS

BUILTIN_IMAGE_SETS = [
    (entry.name, role)
    for entry in DATASETS.entries()
    if entry.obj.builtin
    for role in entry.obj.roles
    if role in ("in", "ood", "aux")
]


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_data_set_declares_layout_and_roles(name):
    spec = DATASETS.get(name)
    assert spec.name == name and spec.layout
    assert set(spec.roles) <= set(ROLES) | {"toy"}


@pytest.mark.parametrize("name, role", BUILTIN_IMAGE_SETS)
def test_builtin_sets_load_in_every_role(name, role):
    if role == "in":
        ind = load_in_distribution(name)
        for split in (ind.train, ind.test):
            assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
            assert int(split.labels.min()) >= 0 and int(split.labels.max()) < ind.num_classes
        assert all(isinstance(o, str) for o in ind.default_ood)
    elif role == "ood":
        ood = load_ood(name)
        assert ood.images.dtype == torch.uint8 and ood.images.shape[1:] == (3, 32, 32) and len(ood) > 0
    else:
        aux = load_aux(name)
        batch = aux.get(np.arange(min(4, len(aux))))
        assert batch.dtype == torch.uint8 and batch.shape[1] == 3 and batch.shape[2] == batch.shape[3]


def test_the_builtin_benchmark_is_covered():
    assert {("digits", "in"), ("tiles", "ood"), ("photos", "aux")} <= set(BUILTIN_IMAGE_SETS)
