"""Readers of the exact on-disk formats of the benchmark's data sets (SPEC section 2).

Every reader checks its files before any decoding and raises `DataError` naming the path and the expected layout
when a file is missing, truncated or malformed. Everything is decoded to uint8 (images [N, 3, H, W] for sets,
[N, H, W, 3] memory maps for auxiliary pools); nothing is normalised here.

Decoded image folders and the converted ImageNet64 batches are cached under `cache_dir()`
(`$OODBENCH_CACHE/decoded`, default `~/.cache/oodbench/decoded`), keyed by file names, sizes and modification times,
and written atomically (temporary file + rename), so a crash never leaves a half-written cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oodbench import cachedir
from oodbench.data.base import ArrayPool, AuxPool, ImageSet, advise_random, images_from_hwc, read_rows, require
from oodbench.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_DECODER_VERSION = "resize-shorter-bilinear+center-crop/v1"  # part of every folder cache key


# --------------------------------------------------------------------------------------------------------------
# cache


def cache_dir() -> Path:
    """Where decoded folders and converted ImageNet64 batches are cached: `decoded/` of the cache directory
    (`oodbench.cachedir`: `$OODBENCH_CACHE`, default `~/.cache/oodbench`)."""
    return cachedir.cache_dir("decoded")


def _atomic_save(path: Path, array: np.ndarray) -> None:
    """np.save to a temporary file beside `path`, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _file_key(base: Path, files: Iterable[str], *extra: object) -> str:
    """sha256 over relative names, sizes and mtimes (cheap: no file is read)."""
    h = hashlib.sha256("|".join(str(e) for e in extra).encode())
    for rel in files:
        st = os.stat(os.path.join(base, rel))
        h.update(f"\n{rel}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# pickles (CIFAR, ImageNet64): a restricted unpickler that builds only dicts, lists and numpy arrays


_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("core.multiarray", "_reconstruct"),
    ("core.multiarray", "scalar"),
    ("core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # bytes inside protocol-2 pickles written by Python 3
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the data-set pickles without executing arbitrary code: only numpy arrays are reconstructed."""

    def find_class(self, module: str, name: str) -> object:
        key = module
        for prefix in ("numpy._core.", "numpy.core."):
            if module.startswith(prefix):
                key = "core." + module[len(prefix) :]
        if (key, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' from a data pickle")
        if key.startswith("core."):
            # numpy >= 2 names its core `numpy._core`; pickles written by numpy 1.x name `numpy.core`
            for prefix in ("numpy._core.", "numpy.core."):
                with contextlib.suppress(ImportError, AttributeError):
                    return super().find_class(prefix + key[len("core.") :], name)
        return super().find_class(module, name)


def read_pickle(path: Path, what: str, layout: str) -> dict:
    """A python pickle holding a dict (CIFAR batch, ImageNet64 batch), keys as str; DataError when the file is
    missing, truncated or not such a pickle."""
    require(path, what, layout)
    try:
        with open(path, "rb") as f:
            # latin1: the CIFAR pickles were written by Python 2 (numpy buffers as 8-bit str)
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as err:  # any parse failure of a foreign binary file means "malformed"
        raise DataError(
            f"{what}: '{path}' is truncated or not a data-set pickle ({type(err).__name__}: {err}). "
            f"Expected layout:\n{layout}"
        ) from err
    if not isinstance(obj, dict):
        raise DataError(f"{what}: '{path}' holds a {type(obj).__name__}, expected a dict. Expected layout:\n{layout}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _pickle_images(batch: dict, path: Path, what: str, layout: str, side: int, label_key: str | None):
    """The `data` array (N x 3*side*side uint8, channel-planar) and the labels of a batch dict."""
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * side * side:
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{what}: '{path}' has no 'data' array of shape (N, {3 * side * side}) (found {shape}). "
            f"Expected layout:\n{layout}"
        )
    if data.dtype != np.uint8:
        if data.size and (data.min() < 0 or data.max() > 255):
            raise DataError(f"{what}: '{path}': 'data' values outside 0..255. Expected layout:\n{layout}")
        data = data.astype(np.uint8)
    labels = None
    if label_key is not None:
        if label_key not in batch:
            raise DataError(
                f"{what}: '{path}' has no '{label_key}' entry (keys: {sorted(batch)}). Expected layout:\n{layout}"
            )
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        if len(labels) != len(data):
            raise DataError(f"{what}: '{path}' has {len(data)} images but {len(labels)} labels")
    return data, labels


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickles)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_LAYOUT = (
    f"ROOT/{CIFAR10_FOLDER}/data_batch_1 .. data_batch_5, test_batch (python pickles: dict with 'data' N x 3072 "
    "uint8 channel-planar and 'labels'), as extracted from cifar-10-python.tar.gz"
)
CIFAR100_LAYOUT = (
    f"ROOT/{CIFAR100_FOLDER}/train, test (python pickles: dict with 'data' N x 3072 uint8 channel-planar and "
    "'fine_labels'), as extracted from cifar-100-python.tar.gz"
)


def cifar_files(folder: Path, classes: int, split: str) -> list[Path]:
    """The pickle files of one split: CIFAR-10 train = data_batch_1..5, test = test_batch; CIFAR-100 = train/test."""
    if classes == 10:
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        names = [split]
    return [folder / n for n in names]


def read_cifar(folder: Path | str, classes: int, split: str, name: str = "") -> ImageSet:
    """CIFAR-10 (`classes=10`) or CIFAR-100 (`classes=100`) split `train`/`test` from the python pickles in
    `folder` (`cifar-10-batches-py` / `cifar-100-python`), in file order, labels int64 (CIFAR-100: fine labels)."""
    if classes not in (10, 100) or split not in ("train", "test"):
        raise ValueError(f"read_cifar: classes must be 10 or 100 and split train/test, got {classes}, {split}")
    folder = Path(folder)
    layout = CIFAR10_LAYOUT if classes == 10 else CIFAR100_LAYOUT
    what = f"CIFAR-{classes} {split}"
    files = cifar_files(folder, classes, split)
    for f in files:  # all files before the first decode
        require(f, what, layout)
    label_key = "labels" if classes == 10 else "fine_labels"
    images, labels = [], []
    for f in files:
        data, y = _pickle_images(read_pickle(f, what, layout), f, what, layout, 32, label_key)
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise DataError(f"{what}: '{f}': labels outside 0..{classes - 1}. Expected layout:\n{layout}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(np.concatenate(images))),
        torch.from_numpy(np.concatenate(labels)),
        name or f"cifar{classes}-{split}",
        str(folder),
    )


# --------------------------------------------------------------------------------------------------------------
# SVHN (.mat)

SVHN_LAYOUT = (
    "ROOT/svhn/train_32x32.mat, ROOT/svhn/test_32x32.mat (MATLAB files of http://ufldl.stanford.edu/housenumbers/: "
    "X uint8 (32, 32, 3, N), y (N, 1) in 1..10, 10 meaning digit 0)"
)


def read_svhn(path: Path | str, name: str = "") -> ImageSet:
    """An SVHN `.mat` file (X (32, 32, 3, N) uint8, y in 1..10) as an ImageSet in file order; label 10 -> 0."""
    import scipy.io

    path = Path(path)
    require(path, "SVHN", SVHN_LAYOUT)
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as err:  # scipy raises many types on a truncated or foreign file
        raise DataError(
            f"SVHN: '{path}' is truncated or not a MATLAB file ({type(err).__name__}: {err}). "
            f"Expected layout:\n{SVHN_LAYOUT}"
        ) from err
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y is None:
        raise DataError(
            f"SVHN: '{path}' has no X of shape (32, 32, 3, N) and y (found X {getattr(x, 'shape', None)}). "
            f"Expected layout:\n{SVHN_LAYOUT}"
        )
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(y) != x.shape[3] or (y.size and (y.min() < 1 or y.max() > 10)):
        raise DataError(f"SVHN: '{path}': expected {x.shape[3]} labels in 1..10. Expected layout:\n{SVHN_LAYOUT}")
    y[y == 10] = 0  # SVHN stores digit 0 as class 10
    images = np.ascontiguousarray(x.astype(np.uint8, copy=False).transpose(3, 2, 0, 1))  # (32,32,3,N) -> NCHW
    return ImageSet(torch.from_numpy(images), torch.from_numpy(y), name or path.stem, str(path))


def first_per_class(labels: np.ndarray | torch.Tensor, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of every class, in file order (SPEC section 2: the SVHN test
    subset is the first 1,000 per class of test_32x32.mat, as the released code's select_svhn_data.py)."""
    labels = np.asarray(labels)
    keep = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------------------------
# image folders


def image_files(folder: Path | str) -> list[str]:
    """Every image file under `folder`, recursively, as relative posix paths sorted by path components
    (ImageFolder's order: sorted sub-folders, then sorted files). Extensions are matched case-insensitively;
    hidden files and folders (`.x`, macOS `._x`) are skipped."""
    base = os.fspath(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, base)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found += [
            prefix + fn
            for fn in filenames
            if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in IMAGE_EXTENSIONS
        ]
    found.sort(key=lambda r: r.split("/"))
    return found


def list_images(folder: Path | str) -> list[Path]:
    """`image_files(folder)` as full paths."""
    return [Path(folder) / r for r in image_files(folder)]


def resize_center_crop(image: Image.Image, size: int = 32) -> Image.Image:
    """torchvision's Resize(size) (shorter side to `size`, longer side int(size * long / short), PIL bilinear
    with antialiasing) followed by CenterCrop(size) (offsets int(round((dim - size) / 2)))."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def decode_image(path: Path | str, size: int = 32) -> np.ndarray:
    """One image file -> uint8 [3, size, size]: converted to RGB, Resize(size) + CenterCrop(size)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    return np.asarray(resize_center_crop(im, size), dtype=np.uint8).transpose(2, 0, 1)


def _decode_or_error(path: Path, size: int) -> np.ndarray | str:
    try:
        return decode_image(path, size)
    except Exception as err:  # PIL raises many types on corrupt files; report them all together
        return f"{type(err).__name__}: {err}"


def decode_files(
    base: Path, files: Sequence[str], what: str, size: int = 32, cache: bool = True, workers: int | None = None
) -> np.ndarray:
    """Decode `files` (relative paths under `base`) to uint8 [N, 3, size, size] with a thread pool (PIL releases
    the GIL while decoding and resizing), cached as .npy under `cache_dir()` keyed by the names, sizes and mtimes.
    Unreadable files -> one DataError naming them all."""
    files = list(files)
    if not files:
        raise DataError(f"{what}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under '{base}'")
    paths = [os.path.join(base, r) for r in files]
    try:
        key = _file_key(base, files, _DECODER_VERSION, size, len(files))
    except OSError as err:
        raise DataError(f"{what}: cannot stat the files under '{base}': {err}") from err
    cached = cache_dir() / f"folder-{key[:32]}.npy"
    if cache and cached.is_file():
        with contextlib.suppress(Exception):  # a damaged cache entry is simply decoded again
            array = np.load(cached)
            if array.shape == (len(files), 3, size, size) and array.dtype == np.uint8:
                return array
    workers = workers or min(16, (os.cpu_count() or 1) + 2)
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    errors = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, result in enumerate(pool.map(lambda f: _decode_or_error(f, size), paths)):
            if isinstance(result, str):
                errors.append(f"  {paths[i]}: {result}")
            else:
                out[i] = result
    if errors:
        shown = "\n".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise DataError(f"{what}: {len(errors)} of {len(files)} image files under '{base}' cannot be read:\n{shown}")
    if cache:
        try:
            _atomic_save(cached, out)
        except OSError as err:  # a read-only cache must not stop an evaluation
            warnings.warn(f"could not write the decoded-image cache '{cached}': {err}", stacklevel=2)
    return out


def read_file_list(list_path: Path, folder: Path, files: Sequence[str]) -> list[str]:
    """The files (relative paths under `folder`) named in `list_path` (Places365's `places365_test_list.txt`),
    in folder order.

    One entry a line: `name` or `name label`; a name may carry a leading path (absolute or relative), which is
    matched against the relative path, then its ever shorter suffixes, then the bare file name (if unique).
    DataError saying how many named files are missing.
    """
    try:
        lines = list_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise DataError(f"file list '{list_path}' cannot be read: {err}") from err
    entries = [line.split()[0].replace("\\", "/") for line in lines if line.strip()]
    if not entries:
        raise DataError(f"file list '{list_path}' names no files")
    known = set(files)
    by_name: dict[str, list[str]] = {}
    for f in files:
        by_name.setdefault(f.rsplit("/", 1)[-1], []).append(f)
    chosen, missing = set(), []
    for entry in entries:
        parts = entry.lstrip("/").split("/")
        suffixes = ("/".join(parts[k:]) for k in range(len(parts)))
        hit = next((r for r in suffixes if r in known), None)
        if hit is None and len(by_name.get(parts[-1], ())) == 1:
            hit = by_name[parts[-1]][0]
        if hit is None:
            missing.append(entry)
        else:
            chosen.add(hit)
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(entries)} files named in '{list_path}' are missing under '{folder}' "
            f"(first: {', '.join(missing[:5])})"
        )
    return [f for f in files if f in chosen]


def read_image_folder(
    folder: Path | str,
    layout: str,
    what: str = "",
    file_list: Path | str | None = None,
    size: int = 32,
    cache: bool = True,
) -> ImageSet:
    """Every image under `folder` (recursively, sorted), Resize(size) + CenterCrop(size), as an unlabeled
    ImageSet (SPEC section 2: LSUN-C/R, iSUN, Textures, Places365). With `file_list`, only the files it names."""
    folder = Path(folder)
    what = what or folder.name
    require(folder, what, layout)
    if not folder.is_dir():
        raise DataError(f"{what}: '{folder}' is not a folder. Expected layout:\n{layout}")
    files = image_files(folder)
    if not files:
        raise DataError(f"{what}: no image files under '{folder}'. Expected layout:\n{layout}")
    if file_list is not None:
        files = read_file_list(Path(file_list), folder, files)
    array = decode_files(folder, files, what, size=size, cache=cache)
    return ImageSet(torch.from_numpy(array), None, what, str(folder))


def read_class_folder(folder: Path | str, layout: str, what: str = "", size: int = 32, cache: bool = True):
    """An ImageFolder `folder/<class>/*` (classes sorted; files of a class recursively, sorted) ->
    (ImageSet with int64 labels, class names)."""
    folder = Path(folder)
    what = what or folder.name
    require(folder, what, layout)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{what}: no class folders in '{folder}'. Expected layout:\n{layout}")
    files, labels = [], []
    for c, cls in enumerate(classes):
        found = image_files(folder / cls)
        files += [f"{cls}/{r}" for r in found]
        labels += [c] * len(found)
    array = decode_files(folder, files, what, size=size, cache=cache)
    return ImageSet(torch.from_numpy(array), torch.tensor(labels, dtype=torch.int64), what, str(folder)), classes


# --------------------------------------------------------------------------------------------------------------
# .npy arrays (TinyImages 300K layout)

NPY_LAYOUT = "a .npy file holding uint8 (N, S, S, 3) images, HWC (the layout of TinyImages' 300K_random_images.npy)"


def read_npy_images(path: Path | str, what: str = "", layout: str = NPY_LAYOUT, size: int | None = None) -> np.ndarray:
    """A memory-mapped uint8 (N, S, S, 3) .npy (never read whole); `size` checks S."""
    path = Path(path)
    what = what or path.name
    require(path, what, layout)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise DataError(
            f"{what}: '{path}' is truncated or not a .npy file ({type(err).__name__}: {err}). "
            f"Expected layout:\n{layout}"
        ) from err
    ok = array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3 and array.shape[1] == array.shape[2]
    if not ok or (size is not None and array.shape[1] != size) or len(array) == 0:
        raise DataError(f"{what}: '{path}' holds {array.dtype} {array.shape}. Expected layout:\n{layout}")
    return array


def npy_pool(path: Path | str, name: str = "", layout: str = NPY_LAYOUT) -> ArrayPool:
    """An auxiliary pool over a (N, S, S, 3) uint8 .npy, memory-mapped."""
    path = Path(path)
    return ArrayPool(read_npy_images(path, name, layout), name or path.stem, str(path))


# --------------------------------------------------------------------------------------------------------------
# TinyImages 80M

TINYIMAGES_LAYOUT = (
    "ROOT/tinyimages/tiny_images.bin (3,072 bytes per image, each reshape(32, 32, 3, order='F')) and "
    "ROOT/tinyimages/80mn_cifar_idxs.txt beside it (1-based indices of CIFAR duplicates, one a line)"
)


class TinyImagesPool(AuxPool):
    """TinyImages 80M as an auxiliary pool (SPEC section 2), memory-mapped and never read whole.

    File indices < 10,000 are reserved for validation (`validation()`); the 1-based indices in
    `80mn_cifar_idxs.txt` are CIFAR duplicates and never used. Pool position p maps to the p-th allowed index
    arithmetically (a sorted array of the excluded indices and np.searchsorted: O(#excluded) memory, no
    79M-element index array).
    """

    image_bytes = 3072
    reserved = 10_000

    def __init__(self, bin_path: Path | str, idx_path: Path | str, name: str = "tinyimages"):
        bin_path, idx_path = Path(bin_path), Path(idx_path)
        require(bin_path, "TinyImages", TINYIMAGES_LAYOUT)
        require(idx_path, "TinyImages CIFAR-duplicate list", TINYIMAGES_LAYOUT)
        size = bin_path.stat().st_size
        if size == 0 or size % self.image_bytes:
            raise DataError(
                f"TinyImages: '{bin_path}' has {size} bytes, not a positive multiple of {self.image_bytes} "
                f"(truncated?). Expected layout:\n{TINYIMAGES_LAYOUT}"
            )
        self.name, self.source, self.image_size = name, str(bin_path), 32
        self.count = size // self.image_bytes
        self._data = advise_random(np.memmap(bin_path, dtype=np.uint8, mode="r", shape=(self.count, self.image_bytes)))
        try:
            one_based = np.loadtxt(idx_path, dtype=np.int64, ndmin=1)
        except Exception as err:
            raise DataError(
                f"TinyImages: '{idx_path}' is not a list of integers ({err}). Expected layout:\n{TINYIMAGES_LAYOUT}"
            ) from err
        if one_based.size and one_based.min() < 1:
            raise DataError(f"TinyImages: '{idx_path}' holds indices < 1; they are 1-based")
        dup = np.unique(one_based - 1)
        self.duplicates = dup[dup < self.count]  # 0-based file indices never used
        self._reserved = min(self.reserved, self.count)
        excluded = self.duplicates[self.duplicates >= self._reserved]
        # allowed positions that precede each excluded index: position p lies after k excluded indices
        self._gaps = excluded - np.arange(len(excluded)) - self._reserved
        self._len = self.count - self._reserved - len(excluded)

    def __len__(self) -> int:
        return self._len

    def file_index(self, positions: np.ndarray) -> np.ndarray:
        """0-based file indices of pool positions (for provenance and the `atom-code` contiguous blocks)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self._len):
            raise IndexError(f"TinyImages positions must lie in 0..{self._len - 1}")
        return self._reserved + positions + np.searchsorted(self._gaps, positions, side="right")

    def _read(self, index: np.ndarray) -> torch.Tensor:
        raw = read_rows(self._data, index)
        # reshape(32, 32, 3, order='F') as HWC == reshape(3, 32, 32) with H and W swapped
        return torch.from_numpy(np.ascontiguousarray(raw.reshape(-1, 3, 32, 32).transpose(0, 1, 3, 2)))

    def get(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 [n, 3, 32, 32] images at pool `positions`."""
        return self._read(self.file_index(positions))

    def validation(self) -> ImageSet:
        """File indices 0..9,999 minus CIFAR duplicates, in index order (SPEC section 5: q is chosen on them)."""
        index = np.setdiff1d(np.arange(self._reserved), self.duplicates)
        return ImageSet(self._read(index), None, f"{self.name}-validation", self.source)


# --------------------------------------------------------------------------------------------------------------
# ImageNet64x64 (ImageNet-RC)

IMAGENET64_LAYOUT = (
    "ROOT/imagenet64/train_data_batch_1 .. train_data_batch_10 (Downsampled ImageNet 64x64 python pickles: dict "
    "with 'data' N x 12288 uint8 channel-planar and 'labels')"
)
IMAGENET64_BATCHES = 10


class ConcatArrayPool(AuxPool):
    """A pool over several uint8 [N_i, S, S, 3] arrays (memory maps), addressed as one."""

    def __init__(self, arrays: Sequence[np.ndarray], name: str, source: str = ""):
        self.arrays = [advise_random(a) for a in arrays]
        self.name, self.source, self.image_size = name, source, int(self.arrays[0].shape[1])
        self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in self.arrays])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 [n, 3, S, S] images at `positions`."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"{self.name}: positions must lie in 0..{len(self) - 1}")
        which = np.searchsorted(self.offsets, positions, side="right") - 1
        out = np.empty((len(positions),) + self.arrays[0].shape[1:], dtype=np.uint8)
        for a in np.unique(which):
            sel = np.flatnonzero(which == a)
            out[sel] = read_rows(self.arrays[a], positions[sel] - self.offsets[a])
        return images_from_hwc(out)


def _convert_imagenet64_batch(path: Path, cached: Path) -> None:
    """One channel-planar pickle -> (N, 64, 64, 3) uint8 .npy, written atomically."""
    batch = read_pickle(path, "ImageNet64", IMAGENET64_LAYOUT)
    data, _ = _pickle_images(batch, path, "ImageNet64", IMAGENET64_LAYOUT, 64, None)
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=cached.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(data), 64, 64, 3))
        out[:] = data.reshape(-1, 3, 64, 64).transpose(0, 2, 3, 1)
        out.flush()
        del out
        os.replace(tmp, cached)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def imagenet64_pool(folder: Path | str, name: str = "imagenet_rc") -> ConcatArrayPool:
    """ImageNet64x64 `train_data_batch_1..10` as a pool of 64x64 images (SPEC section 2: ImageNet-RC; the training
    augmentation crops 32 out of the padded 72x72 image). Each pickle is converted once to a memory-mapped
    (N, 64, 64, 3) .npy in `cache_dir()` (one per batch, keyed by name, size and mtime, so an interrupted
    conversion keeps the finished batches) and reused on later loads."""
    folder = Path(folder)
    files = [folder / f"train_data_batch_{i}" for i in range(1, IMAGENET64_BATCHES + 1)]
    for f in files:
        require(f, "ImageNet64", IMAGENET64_LAYOUT)
    arrays = []
    for f in files:
        cached = cache_dir() / f"imagenet64-{_file_key(folder, [f.name], 'imagenet64/v1')[:32]}.npy"
        array = None
        if cached.is_file():
            with contextlib.suppress(Exception):
                array = np.load(cached, mmap_mode="r")
                if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (64, 64, 3):
                    array = None
        if array is None:
            try:
                _convert_imagenet64_batch(f, cached)
            except OSError as err:
                raise DataError(
                    f"ImageNet64: cannot write the converted batch '{cached}' ({err}); set OODBENCH_CACHE to a "
                    "writable folder with ~16 GB free"
                ) from err
            array = np.load(cached, mmap_mode="r")
        arrays.append(array)
    return ConcatArrayPool(arrays, name, str(folder))
