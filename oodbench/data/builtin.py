"""The built-in benchmark: real images shipped inside the dependencies, so that a fresh install runs with no data
and no network (DESIGN: `oodbench run` without `--in`). Nothing is cached on disk; every set is generated in
memory from fixed seeds (deterministic, ~1 s for all of them) and kept for the process.

- in-distribution `digits`: scikit-learn's handwritten digits (1,797 8x8 images, grey levels 0..16, 10 classes),
  scaled to 0..255, upsampled bilinearly to 32x32, grey replicated to RGB. Fixed stratified split: 50 test images
  per class (500), drawn with `np.random.default_rng(DIGITS_SPLIT_SEED)`; the other 1,297 train.
- OOD `tiles` (textures: scikit-image's brick, grass, gravel and the frost photos of the imagecorruptions
  package), `scenes_crop` (32x32 crops of downscaled test photos, LSUN-C-like) and `scenes_resize` (64-256 px
  crops of the test photos resized to 32, LSUN-R-like): 1,000 images each. Test photos: scikit-learn's china.jpg,
  scikit-image's astronaut, coffee, rocket, motorcycle_left.
- auxiliary pool `photos`: 5,000 random crops (32-200 px, resized to 32, flipped at random) of other photos
  (`AUX_PHOTOS`), disjoint from the test photos.

Crops are resized with PIL's bilinear filter (antialiased when shrinking, like torchvision's Resize on PIL).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from oodbench.data.base import ArrayPool, ImageSet, InDistribution, channel_stats

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_PER_CLASS = 50
# per-channel mean / population std of the digits train split in [0, 1] pixels (grey: three equal channels);
# computed once by `digits_train_stats()` and checked by tests/test_data.py
DIGITS_MEAN = (0.30561399, 0.30561399, 0.30561399)
DIGITS_STD = (0.32401652, 0.32401652, 0.32401652)

TILES_SEED, SCENES_CROP_SEED, SCENES_RESIZE_SEED, PHOTOS_SEED = 1, 2, 3, 4
OOD_SIZE = 1000
PHOTOS_SIZE = 5000

TEXTURES = ("skimage:brick", "skimage:grass", "skimage:gravel", "imagecorruptions:frost1..6")
TEST_PHOTOS = ("sklearn:china.jpg", "skimage:astronaut", "skimage:coffee", "skimage:rocket", "skimage:motorcycle_left")
# other photos for the auxiliary pool: natural-ish photographs only (no synthetic images such as colorwheel or
# logo, no binary masks such as horse; skimage's `cat` is `chelsea`, motorcycle_right duplicates a test photo)
AUX_PHOTOS = (
    "sklearn:flower.jpg",
    "skimage:chelsea",
    "skimage:hubble_deep_field",
    "skimage:immunohistochemistry",
    "skimage:retina",
    "skimage:camera",
    "skimage:coins",
    "skimage:moon",
    "skimage:clock",
    "skimage:cell",
    "skimage:text",
)


def _package_dir(package: str) -> Path:
    """The folder of an installed package without importing it (importing sklearn.datasets takes ~1 s)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package '{package}' is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxW (grey) or HxWx3/4 -> HxWx3."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8, copy=False))


@functools.cache
def load_photo(source: str) -> np.ndarray:
    """One shipped image as uint8 HxWx3: `sklearn:<file>`, `skimage:<name>` or `imagecorruptions:frost<i>`."""
    package, _, name = source.partition(":")
    if package == "sklearn":
        path = _package_dir("sklearn") / "datasets" / "images" / name
        with Image.open(path) as im:
            return _rgb(np.asarray(im.convert("RGB")))
    if package == "skimage":
        import skimage.data

        if name == "motorcycle_left":
            return _rgb(skimage.data.stereo_motorcycle()[0])
        return _rgb(getattr(skimage.data, name)())
    if package == "imagecorruptions":
        folder = _package_dir("imagecorruptions") / "frost"
        (path,) = sorted(folder.glob(f"{name}.*"))
        with Image.open(path) as im:
            return _rgb(np.asarray(im.convert("RGB")))  # the package reads them with cv2, dropping alpha too
    raise ValueError(f"unknown image source '{source}'")


def _expand(sources: tuple[str, ...]) -> list[str]:
    out = []
    for s in sources:
        if s == "imagecorruptions:frost1..6":
            out += [f"imagecorruptions:frost{i}" for i in range(1, 7)]
        else:
            out.append(s)
    return out


def _shrink(image: np.ndarray, shorter: int) -> np.ndarray:
    """Downscale `image` so that its shorter side is `shorter` (never upscales)."""
    h, w = image.shape[:2]
    if min(h, w) <= shorter:
        return image
    f = shorter / min(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _random_crops(
    images: list[np.ndarray],
    n: int,
    rng: np.random.Generator,
    min_size: int,
    max_size: int,
    out_size: int = 32,
    flip: bool = False,
) -> np.ndarray:
    """n square crops with side uniform in min_size..max_size (capped by the image), source image uniform,
    position uniform, resized to out_size -> uint8 [n, out_size, out_size, 3]."""
    out = np.empty((n, out_size, out_size, 3), dtype=np.uint8)
    which = rng.integers(0, len(images), n)
    for i in range(n):
        img = images[which[i]]
        h, w = img.shape[:2]
        s = int(rng.integers(min_size, min(max_size, h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = img[y : y + s, x : x + s]
        if s != out_size:
            crop = np.asarray(Image.fromarray(crop).resize((out_size, out_size), Image.BILINEAR))
        out[i] = crop
    if flip:
        mirror = rng.random(n) < 0.5
        out[mirror] = out[mirror, :, ::-1]
    return out


# --------------------------------------------------------------------------------------------------------------
# generators (uncached; the loaders below cache their results for the process)


def make_digits() -> tuple[ImageSet, ImageSet]:
    """The digits train / test split (1,297 / 500 images, uint8 [N, 3, 32, 32], labels 0..9)."""
    raw = np.loadtxt(_package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    pixels, labels = raw[:, :-1].reshape(-1, 1, 8, 8), raw[:, -1].astype(np.int64)
    x = torch.from_numpy(pixels * (255.0 / 16.0)).to(torch.float32)  # 16 grey levels -> 0..255
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    images = x.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:DIGITS_TEST_PER_CLASS] for c in range(10)])
    )
    train = np.setdiff1d(np.arange(len(labels)), test)
    y = torch.from_numpy(labels)
    source = "scikit-learn load_digits()"
    return (
        ImageSet(images[train].contiguous(), y[train].contiguous(), "digits-train", source),
        ImageSet(images[test].contiguous(), y[test].contiguous(), "digits-test", source),
    )


def digits_train_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean / std of the digits train split in [0, 1] (how DIGITS_MEAN / DIGITS_STD were computed)."""
    return channel_stats(make_digits()[0].images)


def make_tiles(n: int = OOD_SIZE, seed: int = TILES_SEED) -> np.ndarray:
    """Texture tiles: random 32-128 px crops of brick / grass / gravel / frost, resized to 32 (uint8 NHWC)."""
    images = [load_photo(s) for s in _expand(TEXTURES)]
    return _random_crops(images, n, np.random.default_rng(seed), 32, 128)


SCENE_SCALES = (128, 192, 256)  # shorter side of the downscaled photos that scenes_crop cuts from


def make_scenes_crop(n: int = OOD_SIZE, seed: int = SCENES_CROP_SEED) -> np.ndarray:
    """32x32 crops of the test photos downscaled to a shorter side of 128, 192 or 256 px (LSUN-C-like)."""
    images = [_shrink(load_photo(s), k) for s in TEST_PHOTOS for k in SCENE_SCALES]
    return _random_crops(images, n, np.random.default_rng(seed), 32, 32)


def make_scenes_resize(n: int = OOD_SIZE, seed: int = SCENES_RESIZE_SEED) -> np.ndarray:
    """Random 64-256 px crops of the test photos resized to 32x32 (LSUN-R-like)."""
    images = [load_photo(s) for s in TEST_PHOTOS]
    return _random_crops(images, n, np.random.default_rng(seed), 64, 256)


def make_photos(n: int = PHOTOS_SIZE, seed: int = PHOTOS_SEED) -> np.ndarray:
    """The auxiliary pool: random 32-200 px crops of AUX_PHOTOS (each downscaled to a shorter side of at most
    512 px first), resized to 32, flipped at random."""
    images = [_shrink(load_photo(s), 512) for s in AUX_PHOTOS]
    return _random_crops(images, n, np.random.default_rng(seed), 32, 200, flip=True)


# --------------------------------------------------------------------------------------------------------------
# loaders (the registry's entry points; `root` and `download` are accepted and ignored)


@functools.cache
def _cached(maker: Callable[[], np.ndarray]) -> np.ndarray:
    array = maker()
    array.flags.writeable = False
    return array


def load_digits_in(root: object = None, download: bool = False) -> InDistribution:
    """The built-in in-distribution set (defaults: built-in OOD sets, `photos` aux, q 0.125, CIFAR schedule)."""
    train, test = make_digits()
    return InDistribution(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        normalization=(DIGITS_MEAN, DIGITS_STD),
        augment=True,
        default_ood=("tiles", "scenes_crop", "scenes_resize"),
        default_aux="photos",
        schedule="cifar",
    )


def _ood(name: str, maker: Callable[[], np.ndarray]) -> ImageSet:
    array = np.array(_cached(maker))  # a writable copy: callers may not alter the cached pixels
    return ImageSet(torch.from_numpy(array.transpose(0, 3, 1, 2).copy()), None, name, "built-in")


def load_tiles(root: object = None, download: bool = False) -> ImageSet:
    """Built-in OOD set `tiles` (1,000 texture tiles)."""
    return _ood("tiles", make_tiles)


def load_scenes_crop(root: object = None, download: bool = False) -> ImageSet:
    """Built-in OOD set `scenes_crop` (1,000 32x32 crops of downscaled photos)."""
    return _ood("scenes_crop", make_scenes_crop)


def load_scenes_resize(root: object = None, download: bool = False) -> ImageSet:
    """Built-in OOD set `scenes_resize` (1,000 resized photo crops)."""
    return _ood("scenes_resize", make_scenes_resize)


def load_photos(root: object = None) -> ArrayPool:
    """Built-in auxiliary pool `photos` (5,000 images, 32x32)."""
    return ArrayPool(_cached(make_photos), "photos", "built-in")
