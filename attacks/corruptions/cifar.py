"""The 19 common corruptions of CIFAR-10-C at their 32x32 parameters.

Re-implementation of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019), generator `make_cifar_c.py` (github hendrycks/robustness, ImageNet-C/create_c/),
**CIFAR parameter tables** (not the ImageNet ones of `make_imagenet_c.py` / the `imagecorruptions` package, which
are far harsher at 32x32). Every function consumes its random numbers in the same order and with the same
legacy-NumPy calls as the reference, so with `rng = np.random.RandomState(s)` it reproduces the reference run
after `np.random.seed(s)`; this was checked pixel by pixel against `shared/data/cifar_c_reference.npz`:
18 of 19 types are identical at every pixel (impulse noise drew from skimage's unseeded Generator in the
reference and can only be matched by statistics). ImageMagick (used by the reference for motion blur and the
snow layer's motion blur) is replaced by `_motion_blur_magick`, an exact model of `MagickMotionBlurImage`
(Q16 build) including its quantisation to 8 bits.

Quirks of the reference kept on purpose (they are part of the published CIFAR-10-C and of the ATOM numbers):
glass blur's "swap" is a copy (NumPy views) and its offsets are drawn from {-1, 0} only; frost draws from the
first five of the six frost textures; saturate's first two severities desaturate; elastic transform's affine part
shrinks with severity.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import threading
from collections.abc import Callable
from io import BytesIO

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage.color import hsv2rgb, rgb2hsv

Rng = np.random.Generator | np.random.RandomState

IMG_SIZE = 32  # the reference hard-codes CIFAR's 32x32 (loops, crops, elastic scale, plasma map size)

# Bump when any algorithm or parameter changes: it is part of the variant cache's content key.
CORRUPTION_VERSION = 2  # 2: motion blur radii of the released code (cached variants regenerate)

# ---------------------------------------------------------------------------------------------------------------
# Parameter tables (make_cifar_c.py, CIFAR-10-C), index = severity - 1.
# ---------------------------------------------------------------------------------------------------------------
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)  # std in [0, 1] units
SHOT_NOISE = (500, 250, 100, 75, 50)  # photons per unit intensity
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)  # fraction of values replaced (s&p, salt:pepper 1:1)
SPECKLE_NOISE = (0.06, 0.10, 0.12, 0.16, 0.20)  # std of the multiplicative noise
GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)  # sigma in pixels
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max_delta, iterations
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, alias blur
# (radius, sigma) of ImageMagick's motion blur, as the ATOM code's `utils/gen_corruption_image.py` passes them
# (the CIFAR-10-C generator's values): radius 6, 6, 6, 8, 9 with sigma 1, 1.5, 2, 2, 2.5; the 8-bit outputs match
# shared/data/cifar_c_reference.npz at every pixel (tests/test_corruptions.py).
MOTION_BLUR = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))
ZOOM_BLUR = tuple(np.arange(1, stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26))  # zoom factors averaged
# loc, scale, zoom, threshold, blur radius, blur sigma, image mix
SNOW = (
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # image weight, frost weight
FROST_SCALE = 0.2  # the frost photographs are shrunk by 0.2 before a random 32x32 crop
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_DRAWN = 5  # the reference draws np.random.randint(5): frost6.jpg is never used
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # fog weight, plasma wibble decay
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to HSV value
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # factor towards the per-channel mean
# elastic: (displacement alpha, displacement sigma, affine jitter), pixels = IMG_SIZE * fraction; the jitter shrinks
ELASTIC = (
    (IMG_SIZE * 0, IMG_SIZE * 0, IMG_SIZE * 0.08),
    (IMG_SIZE * 0.05, IMG_SIZE * 0.2, IMG_SIZE * 0.07),
    (IMG_SIZE * 0.08, IMG_SIZE * 0.06, IMG_SIZE * 0.06),
    (IMG_SIZE * 0.1, IMG_SIZE * 0.04, IMG_SIZE * 0.05),
    (IMG_SIZE * 0.1, IMG_SIZE * 0.03, IMG_SIZE * 0.03),
)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # BOX down-scale factor (then BOX back up, unlike ImageNet's NEAREST)
JPEG_QUALITY = (80, 65, 58, 50, 40)
# loc, scale, sigma, threshold, (water: intensity | mud: mask sigma), mud?
SPATTER = (
    (0.62, 0.1, 0.7, 0.7, 0.5, 0),
    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
    (0.65, 0.3, 1, 0.69, 0.5, 0),
    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
    (0.65, 0.1, 0.5, 0.68, 0.6, 1),
)
SATURATE = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))  # HSV saturation * a + b


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
def _randint(rng: Rng, low: int, high: int | None = None, size=None):
    """`randint` of the legacy RandomState (reference draw order) or `integers` of a Generator."""
    if isinstance(rng, np.random.RandomState):
        return rng.randint(low, high, size=size)
    return rng.integers(low, high, size=size)


def _as_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) / 255.0


def _sk_gaussian(
    x: np.ndarray, sigma: float, channels: bool = True, mode: str = "nearest", truncate: float = 4.0
) -> np.ndarray:
    """`skimage.filters.gaussian` on a float image, as the reference calls it (no blur across channels)."""
    sig = (sigma, sigma, 0.0) if channels else sigma
    return gaussian_filter(x, sigma=sig, mode=mode, truncate=truncate)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """Anti-aliased disk kernel of the reference (`disk` in make_cifar_c.py)."""
    if radius <= 8:
        ax, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        ax, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(ax, ax)
    aliased = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)


_DISKS = tuple(_disk(r, a) for r, a in DEFOCUS_BLUR)  # precomputed once


def _clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Centre crop of 1/zoom, zoomed back (bilinear, scipy), trimmed to the input size (CIFAR variant)."""
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    out = scizoom(img[top : top + ch, top : top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim : trim + h, trim : trim + h]


def _motion_blur_magick(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's `MagickMotionBlurImage(radius, sigma, angle)` on an 8-bit image, as the reference calls it
    through Wand, returning the 8-bit result as floats.

    IM's kernel is a one-sided Gaussian of `2*ceil(radius)+1` taps, `k[i] ~ exp(-i^2 / 2 sigma^2)`, normalised;
    tap i reads the pixel offset by `(ceil(i*cos(a) - 0.5), ceil(i*sin(a) - 0.5))` (x, y), edge pixels
    replicated (IM's default virtual-pixel method). A Q16 build rounds the sum to 1/257 of a grey level and the
    PNG encoder's 16->8-bit conversion then truncates: `floor(round(257 v) / 257)`. This model reproduces every
    pixel of the reference's motion blur and snow outputs (rounding or truncating the float sum directly misses
    1-50 % of pixels by one grey level).
    """
    width = 2 * math.ceil(radius) + 1
    taps = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(taps * taps) / (2.0 * sigma * sigma)) / (math.sqrt(2.0 * math.pi) * sigma)
    kernel /= kernel.sum()
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(px, py)
    ox = np.array([math.ceil(i * py / hyp - 0.5) for i in range(width)])  # IM's exact expressions
    oy = np.array([math.ceil(i * px / hyp - 0.5) for i in range(width)])
    h, w = x.shape[:2]
    ys = np.clip(np.arange(h)[None, :] + oy[:, None], 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + ox[:, None], 0, w - 1)
    # all taps in one gather, summed by BLAS: the Q16 quantisation below absorbs the summation-order noise
    taps_img = np.asarray(x, dtype=np.float64)[ys[:, :, None], xs[:, None, :]]
    out = np.tensordot(kernel, taps_img, axes=1)
    return np.floor(np.round(out * 257.0) / 257.0)


def _plasma_fractal(rng: Rng, mapsize: int = IMG_SIZE, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square height map in [0, 1] (float64, the reference's draw order)."""
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of two"
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        # squares
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        acc = corners + np.roll(corners, shift=-1, axis=0)
        acc += np.roll(acc, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(acc)
        # diamonds
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


_FROST_CACHE: list[np.ndarray] = []


def frost_textures() -> list[np.ndarray]:
    """The frost photographs shipped with the `imagecorruptions` package (the same files as Hendrycks'
    repository), BGR as `cv2.imread` gives them, shrunk by `FROST_SCALE` (make_cifar_c.py); loaded once."""
    if not _FROST_CACHE:
        root = importlib.resources.files("imagecorruptions") / "frost"
        for name in FROST_FILES:
            with importlib.resources.as_file(root / name) as path:
                img = cv2.imread(str(path))
            if img is None:
                raise FileNotFoundError(f"frost texture {name} missing from the imagecorruptions package")
            _FROST_CACHE.append(cv2.resize(img, (0, 0), fx=FROST_SCALE, fy=FROST_SCALE))
    return _FROST_CACHE


# ---------------------------------------------------------------------------------------------------------------
# The corruptions: fn(image uint8 HxWx3, severity 1..5, rng) -> float array in [0, 255] (or uint8).
# ---------------------------------------------------------------------------------------------------------------
def gaussian_noise(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Additive Gaussian noise, std `GAUSSIAN_NOISE` (make_cifar_c.py `gaussian_noise`; Hendrycks & Dietterich
    2019)."""
    c = GAUSSIAN_NOISE[severity - 1]
    x = _as_float(x)
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Poisson (shot) noise with `SHOT_NOISE` photons per unit (make_cifar_c.py `shot_noise`; H&D 2019)."""
    c = SHOT_NOISE[severity - 1]
    x = _as_float(x)
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Salt-and-pepper noise on a fraction `IMPULSE_NOISE` of the values (make_cifar_c.py `impulse_noise`,
    skimage `random_noise(mode='s&p')`; H&D 2019). Draws: one uniform per value for "flipped", one for
    "salt", as skimage's `_bernoulli` (the reference's skimage Generator was unseeded, so only the
    statistics can match)."""
    c = IMPULSE_NOISE[severity - 1]
    out = _as_float(x)
    flipped = rng.random(out.shape) <= c
    salted = rng.random(out.shape) <= 0.5
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return np.clip(out, 0, 1) * 255


def speckle_noise(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Multiplicative Gaussian noise, std `SPECKLE_NOISE` (make_cifar_c.py `speckle_noise`; H&D 2019)."""
    c = SPECKLE_NOISE[severity - 1]
    x = _as_float(x)
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Gaussian blur, sigma `GAUSSIAN_BLUR` (make_cifar_c.py `gaussian_blur`; H&D 2019). Deterministic."""
    return np.clip(_sk_gaussian(_as_float(x), GAUSSIAN_BLUR[severity - 1]), 0, 1) * 255


def glass_blur(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Glass blur: blur, locally shuffle pixels, blur (make_cifar_c.py `glass_blur`, `GLASS_BLUR`; H&D 2019).

    The reference scans h, w downwards from 32-delta to delta+1, draws `randint(-delta, delta, size=2)` = (dx, dy)
    per pixel and "swaps" with NumPy views, which in fact copies x[h+dy, w+dx] into x[h, w]. With delta = 1 (all
    CIFAR severities) the offsets are in {-1, 0}, so every source pixel is read before the scan reaches it and one
    iteration is exactly a gather from the iteration's input: vectorised here, same draws, same result.
    """
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    if delta != 1:  # the vectorised scan is exact only for offsets in {-1, 0}
        raise NotImplementedError("glass_blur's vectorised pixel shuffle requires max_delta == 1")
    img = np.uint8(_sk_gaussian(_as_float(x), sigma) * 255)
    h, w = img.shape[:2]
    hs = np.arange(h - delta, delta, -1)  # scan order of the reference
    ws = np.arange(w - delta, delta, -1)
    draws = _randint(rng, -delta, delta, size=(iterations, hs.size, ws.size, 2))
    for it in range(iterations):
        dx, dy = draws[it, ..., 0], draws[it, ..., 1]
        src = img[hs[:, None] + dy, ws[None, :] + dx]
        img = img.copy()
        img[hs[:, None], ws[None, :]] = src
    return np.clip(_sk_gaussian(img / 255.0, sigma), 0, 1) * 255


def defocus_blur(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Defocus blur with an anti-aliased disk `DEFOCUS_BLUR` (make_cifar_c.py `defocus_blur`; H&D 2019)."""
    # cv2 filters a 3-channel image channel by channel, like the reference's per-channel loop
    return np.clip(cv2.filter2D(_as_float(x), -1, _DISKS[severity - 1]), 0, 1) * 255


def motion_blur(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Motion blur at a random angle in [-45, 45) degrees (make_cifar_c.py `motion_blur`, `MOTION_BLUR`; H&D 2019),
    ImageMagick replaced by its exact model `_motion_blur_magick`."""
    radius, sigma = MOTION_BLUR[severity - 1]
    angle = rng.uniform(-45, 45)
    return np.clip(_motion_blur_magick(x, radius, sigma, angle), 0, 255)


def _zoom_taps(h: int, zoom_factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_clipped_zoom` on an h x h image as 4 bilinear taps per output pixel: (flat source index, row weight,
    column weight), each [4, h*h], with scipy's own 1-D weights (zoom of an identity matrix)."""
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    weights = scizoom(np.eye(ch), (zoom_factor, 1), order=1)  # [round(ch*z), ch], row o: weights of inputs
    trim = (weights.shape[0] - h) // 2
    weights = np.pad(weights[trim : trim + h], ((0, 0), (0, 1)))  # a zero column for the last tap's neighbour
    first = np.argmax(weights != 0, axis=1)  # order-1: at most two adjacent non-zero inputs per output
    w = np.stack([weights[np.arange(h), first], weights[np.arange(h), first + 1]], axis=1)
    src = np.minimum(first + top, h - 1)
    idx, wr, wc = [], [], []
    for a in (0, 1):  # scipy's tap order: row tap major, column tap minor
        for b in (0, 1):
            rows, cols = np.minimum(src + a, h - 1), np.minimum(src + b, h - 1)
            idx.append((rows[:, None] * h + cols[None, :]).ravel())
            wr.append(np.repeat(w[:, a], h))
            wc.append(np.tile(w[:, b], h))
    return np.array(idx), np.array(wr)[..., None], np.array(wc)[..., None]


_ZOOM_TAPS: dict[tuple[int, int], list] = {}


def zoom_blur_batch(images: np.ndarray, severity: int) -> np.ndarray:
    """`zoom_blur` of uint8 [N, H, H, 3] images at once (float32 [N, H, H, 3] in [0, 255]).

    The reference sums `_clipped_zoom` layers (scipy `zoom`, order 1) in float32. Each layer is computed here
    with scipy's weights and scipy's arithmetic, `sum over taps of (value * w_row) * w_col` in float64 in
    scipy's tap order, then cast to float32 and accumulated in the same order, so the result is bit-identical
    to calling scipy per image and per factor (checked in the tests), about 5x faster."""
    factors = ZOOM_BLUR[severity - 1]
    n, h, w, c = images.shape
    if h != w:
        raise ValueError("zoom_blur needs square images")
    key = (h, severity)
    if key not in _ZOOM_TAPS:
        _ZOOM_TAPS[key] = [_zoom_taps(h, z) for z in factors]
    xf = (np.asarray(images) / 255.0).astype(np.float32)
    flat = xf.astype(np.float64).transpose(1, 2, 0, 3).reshape(h * w, n * c)  # pixels x (image, channel)
    out = np.zeros((h * w, n * c), dtype=np.float32)
    for idx, wr, wc in _ZOOM_TAPS[key]:
        layer = (flat[idx[0]] * wr[0]) * wc[0]
        for t in range(1, 4):
            layer += (flat[idx[t]] * wr[t]) * wc[t]
        out += layer.astype(np.float32)
    out = out.reshape(h, w, n, c).transpose(2, 0, 1, 3)
    return np.clip((xf + out) / (len(factors) + 1), 0, 1) * 255


def zoom_blur(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Average of centre zooms by `ZOOM_BLUR` factors (make_cifar_c.py `zoom_blur`; H&D 2019). Deterministic;
    see `zoom_blur_batch`."""
    return zoom_blur_batch(np.asarray(x)[None], severity)[0]


def snow(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Snow: a thresholded, zoomed, motion-blurred noise layer added twice (rot 180) over a brightened image
    (make_cifar_c.py `snow`, `SNOW`; H&D 2019); the layer's ImageMagick motion blur at [-135, -45) degrees is
    `_motion_blur_magick` on the 8-bit layer, as the reference round-trips it through PNG."""
    c = SNOW[severity - 1]
    xf = np.asarray(x, dtype=np.float32) / 255.0
    h, w = xf.shape[:2]
    layer = rng.normal(size=(h, w), loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer8 = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)
    layer = _motion_blur_magick(layer8, c[4], c[5], rng.uniform(-135, -45)) / 255.0
    layer = layer[..., np.newaxis]
    gray = cv2.cvtColor(xf, cv2.COLOR_RGB2GRAY).reshape(h, w, 1)
    xf = c[6] * xf + (1 - c[6]) * np.maximum(xf, gray * 1.5 + 0.5)
    return np.clip(xf + layer + np.rot90(layer, k=2), 0, 1) * 255


def frost(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Blend with a random 32x32 crop of a shrunk frost photograph (make_cifar_c.py `frost`, `FROST`; H&D 2019)."""
    c = FROST[severity - 1]
    texture = frost_textures()[_randint(rng, FROST_DRAWN)]
    h, w = np.shape(x)[:2]
    y0 = _randint(rng, 0, texture.shape[0] - h)
    x0 = _randint(rng, 0, texture.shape[1] - w)
    crop = texture[y0 : y0 + h, x0 : x0 + w][..., [2, 1, 0]]  # BGR -> RGB
    return np.clip(c[0] * np.asarray(x) + c[1] * crop, 0, 255)


def fog(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Add a plasma-fractal fog layer, `FOG` (make_cifar_c.py `fog`, map size 32; H&D 2019)."""
    c = FOG[severity - 1]
    xf = _as_float(x)
    h, w = xf.shape[:2]
    max_val = xf.max()
    xf += c[0] * _plasma_fractal(rng, wibbledecay=c[1])[:h, :w][..., np.newaxis]
    return np.clip(xf * max_val / (max_val + c[0]), 0, 1) * 255


def brightness(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Add `BRIGHTNESS` to the HSV value channel (make_cifar_c.py `brightness`; H&D 2019). Deterministic."""
    hsv = rgb2hsv(_as_float(x))
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + BRIGHTNESS[severity - 1], 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def contrast(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Scale deviations from the per-channel mean by `CONTRAST` (make_cifar_c.py `contrast`; H&D 2019)."""
    c = CONTRAST[severity - 1]
    xf = _as_float(x)
    means = np.mean(xf, axis=(0, 1), keepdims=True)
    return np.clip((xf - means) * c + means, 0, 1) * 255


def elastic_transform(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Random affine warp then a smooth displacement field (make_cifar_c.py `elastic_transform`, `ELASTIC`;
    H&D 2019). The affine jitter shrinks with severity while the displacement grows, so the mean change
    *decreases* with severity at 32x32."""
    alpha, sigma, jitter = ELASTIC[severity - 1]
    img = np.asarray(x, dtype=np.float32) / 255.0
    shape = img.shape
    size = shape[:2]
    center = np.float32(size) // 2
    square = min(size) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    pts2 = pts1 + rng.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
    affine = cv2.getAffineTransform(pts1, pts2)
    img = cv2.warpAffine(img, affine, size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (_sk_gaussian(rng.uniform(-1, 1, size=size), sigma, False, "reflect", 3) * alpha).astype(np.float32)
    dy = (_sk_gaussian(rng.uniform(-1, 1, size=size), sigma, False, "reflect", 3) * alpha).astype(np.float32)
    xx, yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    coords = (
        np.reshape(yy + dy[..., None], (-1, 1)),
        np.reshape(xx + dx[..., None], (-1, 1)),
        np.reshape(zz, (-1, 1)),
    )
    return np.clip(map_coordinates(img, coords, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def pixelate(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """BOX down-scale by `PIXELATE` and BOX up-scale back (make_cifar_c.py `pixelate`; H&D 2019)."""
    c = PIXELATE[severity - 1]
    img = Image.fromarray(np.asarray(x, dtype=np.uint8))
    w, h = img.size
    img = img.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    return np.asarray(img)


def jpeg_compression(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """PIL JPEG round trip at quality `JPEG_QUALITY` (make_cifar_c.py `jpeg_compression`; H&D 2019)."""
    buf = BytesIO()
    Image.fromarray(np.asarray(x, dtype=np.uint8)).save(buf, "JPEG", quality=JPEG_QUALITY[severity - 1])
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def spatter(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """Water (severities 1-3) or mud (4-5) splashes (make_cifar_c.py `spatter`, `SPATTER`; H&D 2019)."""
    c = SPATTER[severity - 1]
    xf = np.asarray(x, dtype=np.float32) / 255.0
    liquid = rng.normal(size=xf.shape[:2], loc=c[0], scale=c[1])
    liquid = _sk_gaussian(liquid, c[2], channels=False)
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        liquid8 = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid8, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = (liquid8 * dist)[..., np.newaxis]  # uint8 * float32 -> float32, as the reference
        peak = m.max()
        # the reference divides by the maximum; an empty layer (max 0) would give NaN there: no spatter here
        m = m / peak * c[4] if peak > 0 else m
        # pale turquoise (175, 238, 238) in the reference's channel order (it treats RGB as BGR)
        color = np.array([175 / 255.0, 238 / 255.0, 238 / 255.0], dtype=np.float32)
        return np.clip(xf + m * color, 0, 1) * 255
    m = np.where(liquid > c[3], 1, 0)
    m = _sk_gaussian(m.astype(np.float32), c[4], channels=False)
    m[m < 0.8] = 0
    color = np.array([63 / 255.0, 42 / 255.0, 20 / 255.0], dtype=np.float32)  # mud brown
    color = color * m[..., np.newaxis]
    xf = xf * (1 - m[..., np.newaxis])
    return np.clip(xf + color, 0, 1) * 255


def saturate(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
    """HSV saturation * a + b with `SATURATE` (make_cifar_c.py `saturate`; H&D 2019): severities 1-2 desaturate
    (a = 0.3, 0.1), 3-5 saturate, so the change is not monotone in severity. Deterministic."""
    a, b = SATURATE[severity - 1]
    hsv = rgb2hsv(_as_float(x))
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * a + b, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


# The 15 standard types in the reference's order, then the 4 extra ("validation") types.
CORRUPTIONS: dict[str, Callable[[np.ndarray, int, Rng], np.ndarray]] = {
    f.__name__: f
    for f in (
        gaussian_noise,
        shot_noise,
        impulse_noise,
        defocus_blur,
        glass_blur,
        motion_blur,
        zoom_blur,
        snow,
        frost,
        fog,
        brightness,
        contrast,
        elastic_transform,
        pixelate,
        jpeg_compression,
        speckle_noise,
        gaussian_blur,
        spatter,
        saturate,
    )
}
STANDARD_15: tuple[str, ...] = tuple(CORRUPTIONS)[:15]
EXTRA_4: tuple[str, ...] = tuple(CORRUPTIONS)[15:]
# Batched implementations (uint8 [N, H, W, 3], severity) -> float [N, H, W, 3], bit-identical to the per-image
# functions, used by `generate_variants` for deterministic types where batching pays.
BATCHED: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"zoom_blur": zoom_blur_batch}
DETERMINISTIC: frozenset[str] = frozenset(
    {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression", "gaussian_blur", "saturate"}
)


# ---------------------------------------------------------------------------------------------------------------
# Seeding and the public entry point
# ---------------------------------------------------------------------------------------------------------------
def image_digest(image: np.ndarray) -> bytes:
    """sha256 of an image's shape and bytes: the per-image part of every variant's seed."""
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).digest()


def seed_words(digest: bytes, name: str, severity: int, seed: int, family: str = "cifar") -> np.ndarray:
    """128-bit seed (uint32[4]) of one variant: sha256 of (image digest, suite family, corruption name, severity,
    seed). It depends on the image's content, never on its position in a batch."""
    key = hashlib.sha256(digest + f"|{family}|{name}|{int(severity)}|{int(seed)}".encode()).digest()
    return np.frombuffer(key[:16], dtype=np.uint32)


def variant_rng(digest: bytes, name: str, severity: int, seed: int, family: str = "cifar") -> np.random.RandomState:
    """A fresh RNG for one variant: a legacy `RandomState` (the reference's generator, so each function consumes
    it exactly as make_cifar_c.py consumes the global NumPy RNG) seeded with `seed_words(...)`."""
    return np.random.RandomState(seed_words(digest, name, severity, seed, family))


_LOCAL = threading.local()


def _reseeded(words: np.ndarray) -> np.random.RandomState:
    """The thread's scratch RandomState reseeded with `words`: the same stream as `RandomState(words)`, without
    the ~0.13 ms construction cost (which would be a third of the generation time). Valid until the next call."""
    rs = getattr(_LOCAL, "rs", None)
    if rs is None:
        rs = _LOCAL.rs = np.random.RandomState(0)
    rs.seed(words)
    return rs


def check_image(image: np.ndarray, min_size: int = IMG_SIZE, exact: bool = True) -> np.ndarray:
    """Validate an HxWx3 uint8 image; the CIFAR-parameter suites need exactly 32x32 (their parameters are in
    pixels of a 32x32 image)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {arr.dtype} {arr.shape}")
    if exact and arr.shape[:2] != (IMG_SIZE, IMG_SIZE):
        raise ValueError(
            f"the CIFAR-10-C parameters are defined for {IMG_SIZE}x{IMG_SIZE} images, got {arr.shape[:2]}; "
            "use suite='imagenet-c' for larger images"
        )
    if arr.shape[0] < min_size or arr.shape[1] < min_size:
        raise ValueError(f"images must be at least {min_size}x{min_size}, got {arr.shape[:2]}")
    return arr


def apply_cifar(image: np.ndarray, name: str, severity: int, rng: Rng) -> np.ndarray:
    """One CIFAR-10-C corruption with an explicit RNG, truncated to uint8 like make_cifar_c.py's `np.uint8(...)`.
    With `rng = np.random.RandomState(s)` this equals the reference after `np.random.seed(s)`."""
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    try:
        fn = CORRUPTIONS[name]
    except KeyError:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}") from None
    return np.uint8(fn(check_image(image), severity, rng))
