"""Data loaders on small files written in the exact on-disk formats (SPEC section 2), the training augmentation,
the built-in benchmark, and (when ../shared/data is present) real images."""

from __future__ import annotations

import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import oodbench.data as data
from oodbench.data import builtin, datasets, formats
from oodbench.data.augment import random_crop_flip, to_float
from oodbench.data.base import CIFAR_MEAN, CIFAR_STD, advise_random, channel_stats, read_rows
from oodbench.data.formats import TinyImagesPool
from oodbench.errors import DataError, UnknownNameError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test decodes into its own cache folder."""
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------------------------
# CIFAR


def _write_pickle(path: Path, obj: dict, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _cifar_root(tmp_path: Path, classes: int = 10, per_file: int = 3) -> tuple[Path, dict[str, np.ndarray]]:
    """A data root with CIFAR pickles in the release's layout; returns the raw rows of each file."""
    rng = _rng(classes)
    rows = {}
    if classes == 10:
        folder = tmp_path / "cifar-10-batches-py"
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            rows[name] = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            batch = {
                "batch_label": name,
                "labels": [int(v) for v in rng.integers(0, 10, per_file)],
                "data": rows[name],
                "filenames": [f"{name}_{i}.png" for i in range(per_file)],
            }
            if name == "data_batch_2":  # as re-pickled by code that loaded with encoding="bytes"
                batch = {k.encode(): v for k, v in batch.items()}
            _write_pickle(folder / name, batch)
        _write_pickle(folder / "batches.meta", {"label_names": [str(i) for i in range(10)], "num_vis": 3072})
    else:
        folder = tmp_path / "cifar-100-python"
        for name in ("train", "test"):
            rows[name] = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            _write_pickle(
                folder / name,
                {
                    "data": rows[name],
                    "fine_labels": [int(v) for v in rng.integers(0, 100, per_file)],
                    "coarse_labels": [int(v) for v in rng.integers(0, 20, per_file)],
                },
            )
        _write_pickle(folder / "meta", {"fine_label_names": [str(i) for i in range(100)]})
    return tmp_path, rows


def test_cifar10_pickles(tmp_path):
    root, rows = _cifar_root(tmp_path)
    ind = data.load_in_distribution("cifar10", root=root)
    assert ind.train.images.shape == (15, 3, 32, 32) and ind.test.images.shape == (3, 3, 32, 32)
    assert ind.train.images.dtype == torch.uint8 and ind.train.labels.dtype == torch.int64
    # channel-planar rows: the first 1,024 bytes are the red plane, row-major
    expected = np.concatenate([rows[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(ind.train.images.numpy(), expected)
    assert np.array_equal(ind.test.images.numpy(), rows["test_batch"].reshape(-1, 3, 32, 32))
    assert (ind.num_classes, ind.normalization, ind.augment) == (10, (CIFAR_MEAN, CIFAR_STD), True)
    assert ind.default_ood == ("svhn", "textures", "places365", "lsun_c", "lsun_r", "isun")
    assert (ind.default_aux, ind.schedule) == ("tinyimages", "cifar")
    ood = data.load_ood("cifar10", root=root)
    assert ood.labels is None and torch.equal(ood.images, ind.test.images)


def test_cifar100_pickles(tmp_path):
    root, rows = _cifar_root(tmp_path, classes=100, per_file=4)
    ind = data.load_in_distribution("cifar100", root=root)
    assert np.array_equal(ind.train.images.numpy(), rows["train"].reshape(-1, 3, 32, 32))
    assert int(ind.train.labels.max()) < 100
    assert ind.num_classes == 100
    with pytest.raises(UnknownNameError, match="cannot be used as an OOD"):
        data.load_ood("cifar100", root=root)


def test_cifar_missing_and_truncated(tmp_path, monkeypatch):
    with pytest.raises(DataError) as err:
        data.load_in_distribution("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(err.value)
    assert "Expected layout" in str(err.value) and "cifar-10-batches-py" in str(err.value)

    root, _ = _cifar_root(tmp_path)
    # present files are never downloaded again
    monkeypatch.setattr(datasets, "download_cifar", lambda *a: pytest.fail("download attempted"))
    data.load_in_distribution("cifar10", root=root, download=True)
    test_batch = root / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated") as err:
        data.load_ood("cifar10", root=root)
    assert str(test_batch) in str(err.value)


def _python2_pickle(rows: bytes, shape: tuple[int, int]) -> bytes:
    """A protocol-2 pickle as Python 2's cPickle wrote the CIFAR batches: 8-bit strings (BINSTRING) for keys and
    the array buffer, numpy 1.x's `numpy.core.multiarray._reconstruct`."""

    def binstring(b: bytes) -> bytes:
        return b"T" + struct.pack("<i", len(b)) + b

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + binstring(b"b") + b"\x87R"
        b"(K\x01M" + struct.pack("<H", shape[0]) + b"M" + struct.pack("<H", shape[1]) + b"\x86"
        b"cnumpy\ndtype\n" + binstring(b"u1") + b"K\x00K\x01\x87R"
        b"(K\x03" + binstring(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89" + binstring(rows) + b"tb"
    )
    labels = b"](" + b"".join(b"K" + bytes([i % 10]) for i in range(shape[0])) + b"e"
    return b"\x80\x02}(" + binstring(b"data") + array + binstring(b"labels") + labels + b"u."


def test_python2_cifar_pickle(tmp_path):
    rows = _rng(1).integers(0, 256, (2, 3072), dtype=np.uint8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(_python2_pickle(rows.tobytes(), rows.shape))
    s = data.load_ood("cifar10", root=tmp_path)
    assert np.array_equal(s.images.numpy(), rows.reshape(2, 3, 32, 32))


def test_pickle_refuses_foreign_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil"
    _write_pickle(path, {"data": Evil()})
    with pytest.raises(DataError, match="refusing"):
        formats.read_pickle(path, "test", "layout")


# --------------------------------------------------------------------------------------------------------------
# SVHN


def _write_svhn(path: Path, labels: list[int], seed: int = 0) -> np.ndarray:
    """A .mat in SVHN's layout: X (32, 32, 3, N), y (N, 1) with 10 for the digit 0. Returns X."""
    x = _rng(seed).integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": x, "y": np.array(labels, dtype=np.uint8).reshape(-1, 1)})
    return x


def test_svhn_mat_and_first_per_class(tmp_path, monkeypatch):
    train_y = [1, 10, 3, 10, 5]
    test_y = [10, 1, 10, 10, 2, 1, 1, 2, 10, 3]  # 10 means digit 0
    x_train = _write_svhn(tmp_path / "svhn" / "train_32x32.mat", train_y, 1)
    x_test = _write_svhn(tmp_path / "svhn" / "test_32x32.mat", test_y, 2)
    monkeypatch.setattr(datasets, "SVHN_TEST_PER_CLASS", 2)
    ind = data.load_in_distribution("svhn", root=tmp_path)
    assert ind.train.labels.tolist() == [1, 0, 3, 0, 5]
    assert np.array_equal(ind.train.images.numpy(), x_train.transpose(3, 2, 0, 1))
    # the first two of every class, in file order (the released code's select_svhn_data.py)
    keep = [0, 1, 2, 4, 5, 7, 9]
    assert ind.test.labels.tolist() == [0, 1, 0, 2, 1, 2, 3]
    assert np.array_equal(ind.test.images.numpy(), x_test.transpose(3, 2, 0, 1)[keep])
    assert (ind.normalization, ind.augment, ind.schedule) == (None, False, "svhn")
    assert ind.default_ood[0] == "cifar10"
    ood = data.load_ood("svhn", root=tmp_path)
    assert torch.equal(ood.images, ind.test.images) and ood.labels is None
    assert formats.first_per_class(np.array(test_y), 1).tolist() == [0, 1, 4, 9]


def test_svhn_errors(tmp_path):
    with pytest.raises(DataError, match="svhn/train_32x32.mat"):
        data.load_in_distribution("svhn", root=tmp_path)
    path = tmp_path / "svhn" / "test_32x32.mat"
    _write_svhn(path, [1, 2, 3] * 20)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated") as err:
        data.load_ood("svhn", root=tmp_path)
    assert str(path) in str(err.value)
    scipy.io.savemat(str(path), {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=r"\(32, 32, 3, N\)"):
        data.load_ood("svhn", root=tmp_path)


# --------------------------------------------------------------------------------------------------------------
# image folders


def _gradient(w: int, h: int) -> np.ndarray:
    """An RGB image whose pixels encode their position (R: column, G: row)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1).astype(np.uint8)


def test_resize_center_crop_matches_torchvision(tmp_path):
    import torchvision.transforms as T

    reference = T.Compose([T.Resize(32), T.CenterCrop(32), T.PILToTensor()])
    for w, h in [(64, 48), (48, 64), (36, 36), (32, 32), (100, 33), (31, 45), (500, 375)]:
        image = Image.fromarray(_gradient(w, h))
        ours = np.array(formats.resize_center_crop(image))
        assert torch.equal(torch.from_numpy(ours).permute(2, 0, 1), reference(image)), (w, h)
    # the 64x48 case worked by hand: shorter side 48 -> 32, longer int(32 * 64 / 48) = 42, left = round(10 / 2)
    image = Image.fromarray(_gradient(64, 48))
    by_hand = np.asarray(image.resize((42, 32), Image.BILINEAR).crop((5, 0, 37, 32)))
    assert np.array_equal(np.asarray(formats.resize_center_crop(image)), by_hand)


def _image_folder(folder: Path) -> list[str]:
    """Images of several formats, sizes and modes in nested folders; returns the expected (sorted) order."""
    (folder / "b").mkdir(parents=True)
    (folder / "a" / "deep").mkdir(parents=True)
    Image.fromarray(_gradient(64, 48)).save(folder / "b" / "grad.png")
    Image.fromarray(_gradient(50, 70)).save(folder / "a" / "x.JPG", quality=95)
    Image.fromarray(_gradient(40, 40)[:, :, 0]).save(folder / "a" / "deep" / "grey.bmp")
    Image.fromarray(np.dstack([_gradient(33, 35), np.full((35, 33), 128, np.uint8)])).save(folder / "rgba.PNG")
    (folder / "notes.txt").write_text("not an image")
    (folder / "b" / "._grad.png").write_bytes(b"AppleDouble")  # hidden: skipped
    return ["a/deep/grey.bmp", "a/x.JPG", "b/grad.png", "rgba.PNG"]


def test_image_folder_order_decode_and_cache(tmp_path, monkeypatch):
    folder = tmp_path / "ood"
    order = _image_folder(folder)
    assert formats.image_files(folder) == order
    s = data.load_ood(f"folder:{folder}")
    assert s.images.shape == (4, 3, 32, 32) and s.images.dtype == torch.uint8 and s.labels is None
    for i, rel in enumerate(order):
        with Image.open(folder / rel) as im:
            expected = np.asarray(formats.resize_center_crop(im.convert("RGB"))).transpose(2, 0, 1)
        assert np.array_equal(s.images[i].numpy(), expected), rel
    assert len(list((tmp_path / "cache" / "decoded").glob("folder-*.npy"))) == 1

    # the second load comes from the cache: nothing is decoded
    def no_decode(*args):
        raise RuntimeError("decoded again")

    monkeypatch.setattr(formats, "decode_image", no_decode)
    assert torch.equal(data.load_ood(f"folder:{folder}").images, s.images)
    # a changed file changes the key, so the folder is decoded again
    Image.fromarray(_gradient(70, 50)).save(folder / "b" / "grad.png")
    with pytest.raises(DataError, match="decoded again"):
        data.load_ood(f"folder:{folder}")


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_ood("lsun_c", root=tmp_path)
    assert str(tmp_path / "LSUN") in str(err.value) and "Expected layout" in str(err.value)
    folder = tmp_path / "LSUN"
    _image_folder(folder)
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError) as err:
        data.load_ood("lsun_c", root=tmp_path)
    assert "1 of 5" in str(err.value) and str(folder / "b" / "broken.jpg") in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        data.load_ood(f"folder:{empty}")


def test_places365_file_list(tmp_path):
    folder = tmp_path / "places365"
    names = [f"Places365_test_{i:08d}.jpg" for i in range(6)]
    for i, n in enumerate(names):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_gradient(40 + i, 40)).save(sub / n)
    assert len(data.load_ood("places365", root=tmp_path)) == 6  # no list: every image
    lines = [names[0], f"{names[1]} 17", f"/data/places/test_256/{names[2]}", f"a/{names[3]}", ""]
    (folder / "places365_test_list.txt").write_text("\n".join(lines))
    listed = data.load_ood("places365", root=tmp_path)
    assert len(listed) == 4
    everything = data.load_ood(f"folder:{folder}")  # the list file itself is not an image
    files = formats.image_files(folder)
    wanted = [files.index(p) for p in files if p.rsplit("/", 1)[-1] in names[:4]]
    assert torch.equal(listed.images, everything.images[wanted])
    (folder / "places365_test_list.txt").write_text("\n".join(names[:4] + ["missing_1.jpg", "missing_2.jpg"]))
    with pytest.raises(DataError, match="2 of the 6 files named"):
        data.load_ood("places365", root=tmp_path)


def test_folder_in_distribution(tmp_path):
    root = tmp_path / "mini"
    rng = _rng(3)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "ant"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    ind = data.load_in_distribution(f"folder:{root}")
    assert ind.num_classes == 2 and len(ind.train) == 8 and len(ind.test) == 4
    assert ind.train.labels.tolist() == [0] * 4 + [1] * 4  # classes sorted: ant, cat
    with Image.open(root / "train" / "ant" / "0.png") as im:
        assert np.array_equal(ind.train.images[0].numpy(), np.asarray(im).transpose(2, 0, 1))
    assert ind.normalization == channel_stats(ind.train.images)
    (root / "test" / "bee").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "test" / "bee" / "0.png")
    with pytest.raises(DataError, match="differ"):
        data.load_in_distribution(f"folder:{root}")
    with pytest.raises(DataError, match="train"):
        data.load_in_distribution(f"folder:{tmp_path / 'nothing'}")


# --------------------------------------------------------------------------------------------------------------
# TinyImages 80M


def _write_tiny(folder: Path, count: int, images: dict[int, np.ndarray], dup_one_based: list[int]) -> Path:
    """A sparse tiny_images.bin of `count` images (zeros except `images`, stored reshape(32, 32, 3, order='F'))."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_images.bin"
    with open(path, "wb") as f:
        f.truncate(count * 3072)
        for index, hwc in images.items():
            f.seek(index * 3072)
            f.write(hwc.reshape(-1, order="F").tobytes())
    (folder / "80mn_cifar_idxs.txt").write_text("".join(f"{i}\n" for i in dup_one_based))
    return path


def test_tinyimages_layout_duplicates_and_validation(tmp_path):
    rng = _rng(4)
    count = 10_050
    written = {i: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in (5, 10_000, 10_003, 10_006, 10_049)}
    dups = [3, 10_001, 10_006, 99_999_999]  # 1-based: file indices 2, 10,000 and 10,005 (the last is beyond)
    _write_tiny(tmp_path / "tinyimages", count, written, dups)
    pool = data.load_aux("tinyimages", root=tmp_path)
    assert len(pool) == count - 10_000 - 2 and pool.image_size == 32
    allowed = [i for i in range(10_000, count) if i not in (10_000, 10_005)]
    assert pool.file_index(np.arange(len(pool))).tolist() == allowed
    # order='F' round trip: the CHW image is the HWC image transposed
    position = allowed.index(10_003)
    got = pool.get(np.array([allowed.index(10_049), position]))
    assert np.array_equal(got[0].numpy(), written[10_049].transpose(2, 0, 1))
    assert np.array_equal(got[1].numpy(), written[10_003].transpose(2, 0, 1))
    with pytest.raises(IndexError):
        pool.get(np.array([len(pool)]))
    val = pool.validation()
    assert len(val) == 9_999  # indices 0..9,999 minus the duplicate 2
    assert np.array_equal(val.images[4].numpy(), written[5].transpose(2, 0, 1))  # index 5 is the 5th kept


def test_tinyimages_errors(tmp_path):
    folder = tmp_path / "tinyimages"
    with pytest.raises(DataError, match="tiny_images.bin"):
        data.load_aux("tinyimages", root=tmp_path)
    path = _write_tiny(folder, 20, {}, [1])
    with open(path, "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(DataError, match="multiple of 3072"):
        data.load_aux("tinyimages", root=tmp_path)
    path.write_bytes(b"\0" * 3072 * 20)
    (folder / "80mn_cifar_idxs.txt").unlink()
    with pytest.raises(DataError, match="80mn_cifar_idxs.txt"):
        data.load_aux("tinyimages", root=tmp_path)


def test_tinyimages_small_reservation(monkeypatch, tmp_path):
    """The position -> index arithmetic with many duplicates, against a brute-force list."""
    monkeypatch.setattr(TinyImagesPool, "reserved", 7)
    dups = sorted({int(v) for v in _rng(5).integers(1, 200, 60)})
    _write_tiny(tmp_path, 200, {}, dups)
    pool = TinyImagesPool(tmp_path / "tiny_images.bin", tmp_path / "80mn_cifar_idxs.txt")
    allowed = [i for i in range(7, 200) if i + 1 not in dups]
    assert len(pool) == len(allowed)
    assert pool.file_index(np.arange(len(pool))).tolist() == allowed
    assert len(pool.validation()) == len([i for i in range(7) if i + 1 not in dups])


# --------------------------------------------------------------------------------------------------------------
# TinyImages 300K, npy pools, ImageNet64


def test_tinyimages300k_npy(tmp_path):
    array = _rng(6).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "300K_random_images.npy", array)
    pool = data.load_aux("tinyimages300k", root=tmp_path)
    assert len(pool) == 20 and isinstance(pool.array, np.memmap)
    assert np.array_equal(pool.get(np.array([3, 1, 3])).numpy(), array[[3, 1, 3]].transpose(0, 3, 1, 2))
    assert pool.validation() is None
    generic = data.load_aux(f"npy:{tmp_path / '300K_random_images.npy'}")
    assert generic.fingerprint() == pool.fingerprint()
    ood = data.load_ood(f"npy:{tmp_path / '300K_random_images.npy'}")
    assert np.array_equal(ood.images.numpy(), array.transpose(0, 3, 1, 2))

    np.save(tmp_path / "300K_random_images.npy", array[:, :28, :28])
    with pytest.raises(DataError, match="300000, 32, 32, 3"):
        data.load_aux("tinyimages300k", root=tmp_path)
    path = tmp_path / "300K_random_images.npy"
    np.save(path, array)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated"):
        data.load_aux("tinyimages300k", root=tmp_path)


def test_read_rows_sparse_dense_and_sliced(tmp_path):
    array = _rng(8).integers(0, 256, (500, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    mapped = advise_random(np.load(tmp_path / "a.npy", mmap_mode="r"))
    cases = [np.array([5, 3, 4, 6, 7, 3]), np.arange(480, 500)[::-1], _rng(9).integers(0, 500, 50), np.zeros(0, int)]
    for index in cases:
        assert np.array_equal(read_rows(mapped, index), array[index])
        assert np.array_equal(read_rows(mapped, index, chunk_bytes=100), array[index])  # dense: chunked file reads
        inner = index[index < 490]
        assert np.array_equal(read_rows(mapped[10:], inner), array[10:][inner])  # a view starts further in
        assert np.array_equal(read_rows(array, index), array[index])  # in memory


def test_imagenet64_pickles_and_cache(tmp_path, monkeypatch):
    folder = tmp_path / "imagenet64"
    rng = _rng(7)
    planar = []
    for i in range(1, 11):
        rows = rng.integers(0, 256, (1 + i % 3, 12288), dtype=np.uint8)
        planar.append(rows)
        batch = {"data": rows, "labels": [int(v) for v in rng.integers(1, 1001, len(rows))], "mean": np.zeros(12288)}
        _write_pickle(folder / f"train_data_batch_{i}", batch, protocol=pickle.HIGHEST_PROTOCOL)
    expected = np.concatenate(planar).reshape(-1, 3, 64, 64)
    pool = data.load_aux("imagenet_rc", root=tmp_path)
    assert len(pool) == len(expected) and pool.image_size == 64
    positions = np.array([len(expected) - 1, 0, 5, 2, 5])
    assert np.array_equal(pool.get(positions).numpy(), expected[positions])
    assert len(list((tmp_path / "cache" / "decoded").glob("imagenet64-*.npy"))) == 10

    def no_pickle(*args):
        raise RuntimeError("converted again")

    monkeypatch.setattr(formats, "read_pickle", no_pickle)
    again = data.load_aux("imagenet_rc", root=tmp_path)
    assert np.array_equal(again.get(np.arange(len(expected))).numpy(), expected)
    # 64x64 pool images go through the augmentation's 32-out-of-72 crop
    assert random_crop_flip(again.get(np.arange(4))).shape == (4, 3, 32, 32)


def test_imagenet64_errors(tmp_path):
    folder = tmp_path / "imagenet64"
    with pytest.raises(DataError, match="train_data_batch_1"):
        data.load_aux("imagenet_rc", root=tmp_path)
    for i in range(1, 11):
        _write_pickle(folder / f"train_data_batch_{i}", {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]})
    with pytest.raises(DataError, match="12288"):
        data.load_aux("imagenet_rc", root=tmp_path)


# --------------------------------------------------------------------------------------------------------------
# augmentation


def _reference_crop_flip(images: torch.Tensor, seed: int, size: int = 32, padding: int = 4) -> torch.Tensor:
    """Per-sample RandomCrop + flip with the same draws as random_crop_flip (top, left, flip)."""
    g = torch.Generator().manual_seed(seed)
    b, _, s, _ = images.shape
    top = torch.randint(0, s + 2 * padding - size + 1, (b,), generator=g)
    left = torch.randint(0, s + 2 * padding - size + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    out = []
    for i in range(b):
        crop = padded[i, :, top[i] : top[i] + size, left[i] : left[i] + size]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("side", [32, 64])
def test_random_crop_flip_matches_per_sample_reference(side):
    images = torch.randint(0, 256, (64, 3, side, side), dtype=torch.uint8)
    out = random_crop_flip(images, generator=torch.Generator().manual_seed(11))
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out, _reference_crop_flip(images, 11))
    assert torch.equal(out, random_crop_flip(images, generator=torch.Generator().manual_seed(11)))
    assert not torch.equal(out, random_crop_flip(images, generator=torch.Generator().manual_seed(12)))


def test_random_crop_flip_padding_and_flip():
    white = torch.full((4000, 3, 32, 32), 255, dtype=torch.uint8)
    out = random_crop_flip(white, generator=torch.Generator().manual_seed(0))
    zero = out[:, 0] == 0
    assert zero.any() and not zero.all(dim=(1, 2)).any()
    # zeros only in border strips at most 4 wide, full rows or full columns
    rows, cols = zero.all(dim=2), zero.all(dim=1)
    assert torch.equal(zero, rows[:, :, None] | cols[:, None, :])
    assert rows.sum(1).max() <= 4 and cols.sum(1).max() <= 4
    assert (rows.sum(1) == 0).any() and (rows.sum(1) == 4).any()  # offsets cover 0..8
    # flips: a left-right ramp comes back mirrored about half the time
    ramp = torch.arange(32, dtype=torch.uint8).repeat(3, 32, 1)[None].repeat(2000, 1, 1, 1)
    out = random_crop_flip(ramp, padding=0, generator=torch.Generator().manual_seed(1))
    flipped = (out[:, 0, 0, 0] == 31).float().mean()
    assert torch.equal(out[out[:, 0, 0, 0] == 31], ramp[:1].flip(-1).expand(int(flipped * 2000), -1, -1, -1))
    assert 0.45 < flipped < 0.55


def test_to_float():
    x = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8).repeat(1, 3, 1, 1)
    y = to_float(x)
    assert y.dtype == torch.float32 and y.min() == 0 and y.max() == 1
    assert torch.allclose(y, x.float() / 255)
    with pytest.raises(TypeError):
        to_float(y)


# --------------------------------------------------------------------------------------------------------------
# built-in benchmark


def test_builtin_digits():
    ind = data.load_in_distribution("digits")
    assert (len(ind.train), len(ind.test), ind.num_classes) == (1297, 500, 10)
    assert ind.test.labels.bincount().tolist() == [50] * 10  # stratified
    assert ind.train.images.shape[1:] == (3, 32, 32) and ind.train.images.dtype == torch.uint8
    assert torch.equal(ind.train.images[:, 0], ind.train.images[:, 2])  # grey replicated
    assert ind.train.images.max() == 255 and ind.train.images.min() == 0
    assert ind.default_ood == ("tiles", "scenes_crop", "scenes_resize") and ind.default_aux == "photos"
    assert ind.schedule == "cifar"
    # the literal normalisation constants are the train split's statistics
    mean, std = builtin.digits_train_stats()
    assert np.allclose(ind.normalization[0], mean, atol=1e-7) and np.allclose(ind.normalization[1], std, atol=1e-7)
    # same pixels as scikit-learn's load_digits() through the documented transform; train and test partition it
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images * (255 / 16)).float()[:, None]
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    both = torch.cat([ind.train.images[:, :1], ind.test.images[:, :1]])
    assert torch.equal(both.flatten(1).unique(dim=0), x.flatten(1).unique(dim=0))
    assert sorted(torch.cat([ind.train.labels, ind.test.labels]).tolist()) == sorted(digits.target.tolist())
    again = builtin.make_digits()
    assert torch.equal(again[1].images, ind.test.images) and torch.equal(again[0].labels, ind.train.labels)


def test_builtin_ood_and_photos():
    start = time.perf_counter()
    sets = {n: data.load_ood(n) for n in ("tiles", "scenes_crop", "scenes_resize")}
    pool = data.load_aux("photos")
    elapsed = time.perf_counter() - start
    for s in sets.values():
        assert s.images.shape == (1000, 3, 32, 32) and s.images.dtype == torch.uint8
        assert s.images.float().std() > 10  # not blank
    assert len(pool) == 5000 and pool.get(np.arange(3)).shape == (3, 3, 32, 32)
    assert elapsed < 20  # generation takes ~1 s (the first call may include image-library imports)
    # deterministic: regenerated from the seeds, equal to the pixel
    assert np.array_equal(builtin.make_tiles(), sets["tiles"].images.numpy().transpose(0, 2, 3, 1))
    assert np.array_equal(builtin.make_scenes_crop(), builtin.make_scenes_crop())
    assert np.array_equal(builtin.make_photos(), pool.get(np.arange(5000)).numpy().transpose(0, 2, 3, 1))
    # callers cannot alter the cached pixels
    sets["tiles"].images.zero_()
    assert data.load_ood("tiles").images.any()


def test_builtin_test_photos_disjoint_from_aux():
    assert not set(builtin.TEST_PHOTOS) & set(builtin.AUX_PHOTOS)
    test = [builtin.load_photo(s) for s in builtin.TEST_PHOTOS]
    for source in builtin.AUX_PHOTOS:
        aux = builtin.load_photo(source)
        assert aux.dtype == np.uint8 and aux.ndim == 3 and aux.shape[2] == 3
        assert all(t.shape != aux.shape or not np.array_equal(t, aux) for t in test), source


# --------------------------------------------------------------------------------------------------------------
# registry and status


def test_registry_roles_and_status(tmp_path):
    rows = data.dataset_status(tmp_path)
    keys = {(r["name"], r["role"]) for r in rows}
    assert {("svhn", "in"), ("svhn", "ood"), ("cifar10", "in"), ("cifar10", "ood"), ("tinyimages", "aux")} <= keys
    assert {("digits", "in"), ("tiles", "ood"), ("photos", "aux"), ("places365", "ood")} <= keys
    assert set(rows[0]) >= {"name", "role", "present", "path", "layout", "obtain", "builtin"}
    by_key = {(r["name"], r["role"]): r for r in rows}
    assert by_key[("digits", "in")]["present"] and by_key[("digits", "in")]["builtin"]
    assert not by_key[("lsun_c", "ood")]["present"] and by_key[("lsun_c", "ood")]["path"] == str(tmp_path / "LSUN")
    _write_svhn(tmp_path / "svhn" / "test_32x32.mat", [1, 2])
    by_key = {(r["name"], r["role"]): r for r in data.dataset_status(tmp_path)}
    assert by_key[("svhn", "ood")]["present"] and not by_key[("svhn", "in")]["present"]
    with pytest.raises(UnknownNameError, match="did you mean 'svhn'"):
        data.load_ood("svhm", root=tmp_path)
    with pytest.raises(UnknownNameError, match="cannot be used as an auxiliary pool"):
        data.load_aux("tiles")


# --------------------------------------------------------------------------------------------------------------
# real images (../shared/data)


@pytest.mark.shared_data
def test_real_textures_folder_and_nature_npy(shared_dir, tmp_path):
    import torchvision
    import torchvision.transforms as T

    with tarfile.open(shared_dir / "data" / "ood-mini.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("textures-dtd10/") and m.isfile()]
        chosen = [m for m in members if m.name.split("/")[1] in ("banded", "bubbly")][:24]
        tar.extractall(tmp_path, members=chosen, filter="data")
    folder = tmp_path / "textures-dtd10"
    s = data.load_ood(f"folder:{folder}")
    assert len(s) == len(chosen) and s.images.shape[1:] == (3, 32, 32)
    reference = torchvision.datasets.ImageFolder(str(folder), transform=T.Compose([T.Resize(32), T.CenterCrop(32)]))
    expected = np.stack([np.asarray(reference[i][0]).transpose(2, 0, 1) for i in range(len(reference))])
    assert np.array_equal(s.images.numpy(), expected)

    path = shared_dir / "data" / "aux-nature-20k.npy"
    pool = data.load_aux(f"npy:{path}")
    assert len(pool) == 20_000 and pool.image_size == 32
    raw = np.load(path, mmap_mode="r")
    assert np.array_equal(pool.get(np.arange(8)).numpy(), np.asarray(raw[:8]).transpose(0, 3, 1, 2))
