"""The default built-in benchmark (oodbench/data/shapes.py) and the figures of `oodbench plot run / samples`."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from oodbench import data
from oodbench.cli import main
from oodbench.data import builtin, shapes


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(im.numpy().tobytes()).hexdigest() for im in images}


def test_shapes_sizes_classes_and_defaults():
    ind = data.load_in_distribution("shapes")
    assert ind.train.images.shape == (1300, 3, 32, 32) and ind.test.images.shape == (500, 3, 32, 32)
    assert ind.train.images.dtype == torch.uint8 and ind.num_classes == len(shapes.SHAPE_CLASSES) == 10
    assert torch.bincount(ind.train.labels).tolist() == [130] * 10
    assert torch.bincount(ind.test.labels).tolist() == [50] * 10
    assert ind.default_ood == ("photo_digits", "tiles", "scenes_resize") and ind.default_aux == "shape_aux"
    mean, std = ind.normalization
    assert all(0.2 < m < 0.7 for m in mean) and all(0.1 < s < 0.4 for s in std)
    assert data.load_ood("photo_digits").images.shape == (1000, 3, 32, 32)
    pool = data.load_aux("shape_aux")
    assert len(pool) == 5000 and pool.get(np.arange(4)).shape == (4, 3, 32, 32)


def test_shapes_deterministic_and_protected():
    images, labels = shapes.make_shapes_split(3, seed=5)
    again, labels_again = shapes.make_shapes_split(3, seed=5)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    other, _ = shapes.make_shapes_split(3, seed=6)
    assert not np.array_equal(images, other)  # the seed matters
    ind = data.load_in_distribution("shapes")
    assert np.array_equal(
        shapes.make_shapes_split(50, shapes.SHAPES_TEST_SEED)[0], ind.test.images.numpy().transpose(0, 2, 3, 1)
    )
    assert np.array_equal(
        shapes.make_photo_digits(), data.load_ood("photo_digits").images.numpy().transpose(0, 2, 3, 1)
    )
    ind.train.images.zero_()  # a caller's change does not reach the next load
    assert data.load_in_distribution("shapes").train.images.any()


def test_no_image_shared_between_roles():
    ind = data.load_in_distribution("shapes")
    groups = {
        "train": _hashes(ind.train.images),
        "test": _hashes(ind.test.images),
        "aux": _hashes(data.load_aux("shape_aux").get(np.arange(5000))),
    }
    for name in ind.default_ood:
        groups[name] = _hashes(data.load_ood(name).images)
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not groups[a] & groups[b], (a, b)


def test_photo_sources_disjoint_between_roles():
    """Test photos (scenes_resize) and textures (tiles) are never backgrounds nor auxiliary; in-dist backgrounds
    and the auxiliary pool use opposite halves of the same photos."""
    ood_sources = set(builtin.TEST_PHOTOS) | set(builtin._expand(builtin.TEXTURES))
    assert not ood_sources & (set(shapes.BACKGROUND_PHOTOS) | set(shapes.AUX_ONLY_PHOTOS))
    left, right = shapes.background_halves("left"), shapes.background_halves("right")
    for source, a, b in zip(shapes.BACKGROUND_PHOTOS, left, right):
        full = builtin._shrink(shapes.load_photo(source), 384)
        assert a.shape[1] + b.shape[1] == full.shape[1] and np.array_equal(np.concatenate([a, b], 1), full), source


@pytest.mark.parametrize("size", [18, 28])
def test_shape_masks_distinct(size):
    masks = {k: shapes.shape_mask(k, size, 0.0) for k in shapes.SHAPE_CLASSES}
    for k, m in masks.items():
        assert m.shape == (size, size) and 0.1 * size * size < m.sum() < 0.95 * size * size, k
    kinds = list(masks)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1 :]:
            overlap = np.minimum(masks[a], masks[b]).sum() / np.maximum(masks[a], masks[b]).sum()
            assert overlap < 0.8, (a, b, overlap)
    with pytest.raises(ValueError, match="unknown shape"):
        shapes.shape_mask("blob", size, 0.0)


def test_plot_samples_writes_png(tmp_path, capsys):
    out = tmp_path / "samples.png"
    assert main(["plot", "samples", "--out", str(out), "--per-set", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in capsys.readouterr().out


def test_plot_run_writes_png(tmp_path, capsys):
    from tests.test_check import fake_run

    values = {
        (m, o, t): (v, 100 - v)
        for m, base in (("msp", 50.0), ("atom", 10.0))
        for o in ("tiles", "photo_digits")
        for t, v in (("natural", base), ("linf", min(100.0, 2 * base)))
    }
    run_dir = fake_run(tmp_path / "run", values, in_dist="shapes")
    assert main(["plot", "run", str(run_dir)]) == 0
    assert (run_dir / "fpr_by_threat.png").read_bytes()[:4] == b"\x89PNG"
    assert "fpr_by_threat.png" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["plot", "run"])  # a run directory is required
