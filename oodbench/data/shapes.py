"""The default built-in benchmark `shapes`: a small model of the paper's setting (CIFAR-10 in-dist, natural-image
OOD sets, a disjoint auxiliary pool) built only from images that ship inside the dependencies, so that a fresh
install runs with no data and no network. Everything is generated in memory from fixed seeds (deterministic,
about a second) and kept for the process.

Photographs are split so that no pixel region is shared between roles:

- `BACKGROUND_PHOTOS` (scikit-image, scikit-learn, matplotlib photos): the **left half** of each is the background
  of the in-dist images and of the near-OOD set `photo_digits`; the **right half** feeds the auxiliary pool.
- the test photos of `scenes_resize` and the textures of `tiles` (oodbench/data/builtin.py) appear nowhere else.

Sets:

- in-distribution `shapes` (10 classes, 1,300 train / 500 test, balanced): one coloured geometric object per image
  (disc, ring, square, frame, triangle, plus, cross, star, crescent, bars), random size (12-26 px), position,
  rotation (+-20 degrees), colour (kept away from the background colour) and opacity, with 25 % of the
  background's texture showing through it, antialiased (drawn at 4x and box-filtered), on a random 32-128 px crop
  of a background half resized to 32x32 and flipped at random. Train and test use separate random streams.
- OOD `photo_digits` (1,000, SVHN-like near OOD: other objects on the same backgrounds): one of scikit-learn's
  handwritten digits, upsampled to 12-24 px, composited as a coloured stroke in the same way.
- OOD `tiles` (Textures-like) and `scenes_resize` (LSUN-R-like): the existing built-in sets.
- auxiliary pool `shape_aux` (5,000, TinyImages-like): random 32-160 px crops of the background photos' right
  halves and of scikit-image's `cell` and `text`, resized to 32, flipped at random; no objects drawn.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from oodbench.data import builtin
from oodbench.data.base import ArrayPool, ImageSet, InDistribution, channel_stats

SHAPE_CLASSES = ("disc", "ring", "square", "frame", "triangle", "plus", "cross", "star", "crescent", "bars")
SHAPES_TRAIN_PER_CLASS, SHAPES_TEST_PER_CLASS = 130, 50
PHOTO_DIGITS_SIZE, SHAPE_AUX_SIZE = 1000, 5000
SHAPES_TRAIN_SEED, SHAPES_TEST_SEED, PHOTO_DIGITS_SEED, SHAPE_AUX_SEED = 11, 12, 13, 14

# photographs whose left half is in-dist / photo_digits background and whose right half is auxiliary
BACKGROUND_PHOTOS = (
    "sklearn:flower.jpg",
    "skimage:chelsea",
    "skimage:camera",
    "skimage:coins",
    "skimage:clock",
    "skimage:moon",
    "skimage:immunohistochemistry",
    "skimage:hubble_deep_field",
    "skimage:retina",
    "matplotlib:grace_hopper.jpg",
)
AUX_ONLY_PHOTOS = ("skimage:cell", "skimage:text")

SUPERSAMPLE = 4  # objects are drawn at 4x and box-filtered down (antialiasing)
OBJECT_SIZE = (18, 28)  # object extent in output pixels
DIGIT_SIZE = (12, 24)
BACKGROUND_CROP = (32, 128)
AUX_CROP = (32, 160)
POSITION_JITTER = 3  # largest offset (px) of an object's centre from the image centre
SHOW_THROUGH = 0.15  # share of the background texture kept inside an object
CLASS_HUES = True  # each class has a typical hue (class / 10 on the colour wheel), as CIFAR classes have colours
HUE_JITTER = 0.05
SATURATION, VALUE = (0.6, 1.0), (0.55, 1.0)  # HSV ranges of an object's colour
MIN_CONTRAST = 60.0  # minimum distance (RGB, 0..255) between an object's colour and the background under it


@functools.cache
def load_photo(source: str) -> np.ndarray:
    """One shipped image as uint8 HxWx3: the sources of `builtin.load_photo` plus `matplotlib:<sample file>`."""
    package, _, name = source.partition(":")
    if package == "matplotlib":
        import matplotlib

        with Image.open(matplotlib.get_data_path() + "/sample_data/" + name) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    return builtin.load_photo(source)


def background_halves(side: str) -> list[np.ndarray]:
    """The left (`side="left"`: in-dist backgrounds) or right (`"right"`: auxiliary) half of every background
    photo, each downscaled to a shorter side of at most 384 px first (crops then span a useful share of it)."""
    halves = []
    for source in BACKGROUND_PHOTOS:
        image = builtin._shrink(load_photo(source), 384)
        mid = image.shape[1] // 2
        halves.append(image[:, :mid] if side == "left" else image[:, mid:])
    return [np.ascontiguousarray(h) for h in halves]


def _polygon(n: int, radius: float, phase: float = 0.0) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _star(radius: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.42
        a = -math.pi / 2 + math.pi * k / 5
        points.append((r * math.cos(a), r * math.sin(a)))
    return points


def _rect(w: float, h: float, cx: float = 0.0, cy: float = 0.0) -> list[tuple[float, float]]:
    return [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]


def shape_mask(kind: str, size: int, angle: float) -> np.ndarray:
    """Alpha mask in [0, 1], float32 [size, size], of one object of class `kind` filling most of the square,
    rotated by `angle` degrees (drawn at SUPERSAMPLE x and box-filtered)."""
    big = size * SUPERSAMPLE
    r = big / 2 * 0.95
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    c = big / 2
    box = (c - r, c - r, c + r, c + r)
    inner = (c - 0.55 * r, c - 0.55 * r, c + 0.55 * r, c + 0.55 * r)
    polygons: list[list[tuple[float, float]]] = []
    if kind == "disc":
        draw.ellipse(box, fill=255)
    elif kind == "ring":
        draw.ellipse(box, fill=255)
        draw.ellipse(inner, fill=0)
    elif kind == "square":
        polygons = [_rect(1.6 * r, 1.6 * r)]
    elif kind == "frame":
        polygons = [_rect(1.7 * r, 1.7 * r)]
    elif kind == "triangle":
        polygons = [[(x, y + 0.2 * r) for x, y in _polygon(3, 1.1 * r, -math.pi / 2)]]
    elif kind == "plus":
        polygons = [_rect(1.9 * r, 0.55 * r), _rect(0.55 * r, 1.9 * r)]
    elif kind == "cross":
        d = 1.9 * r / math.sqrt(2) / 2
        w = 0.55 * r / math.sqrt(2) / 2
        polygons = [
            [(-d - w, -d + w), (-d + w, -d - w), (d + w, d - w), (d - w, d + w)],
            [(d + w, -d + w), (d - w, -d - w), (-d - w, d - w), (-d + w, d + w)],
        ]
    elif kind == "star":
        polygons = [_star(r)]
    elif kind == "crescent":
        draw.ellipse(box, fill=255)
        shift = 0.45 * r
        draw.ellipse((c - r + shift, c - r - 0.1 * r, c + r + shift, c + r - 0.1 * r), fill=0)
    elif kind == "bars":
        polygons = [_rect(1.8 * r, 0.45 * r, cy=-0.5 * r), _rect(1.8 * r, 0.45 * r, cy=0.5 * r)]
    else:
        raise ValueError(f"unknown shape '{kind}'")
    for points in polygons:
        draw.polygon([(c + x, c + y) for x, y in points], fill=255)
    if kind == "frame":
        draw.polygon([(c + x, c + y) for x, y in _rect(1.0 * r, 1.0 * r)], fill=0)
    canvas = canvas.rotate(angle, resample=Image.BILINEAR)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _backgrounds(n: int, rng: np.random.Generator, photos: list[np.ndarray], crop: tuple[int, int]) -> np.ndarray:
    return builtin._random_crops(photos, n, rng, crop[0], crop[1], flip=True)


def composite(
    background: np.ndarray, mask: np.ndarray, rng: np.random.Generator, hue: float | None = None
) -> np.ndarray:
    """Paste an object (alpha `mask`, smaller than the 32x32 `background`) at a random position, in a random
    colour at least MIN_CONTRAST from the background under it, opacity 0.8-1, SHOW_THROUGH of the background's
    texture kept, and a mild linear shading across the object -> uint8 HxWx3."""
    h, w = background.shape[:2]
    s = mask.shape[0]
    jitter_y, jitter_x = min(POSITION_JITTER, (h - s) // 2), min(POSITION_JITTER, (w - s) // 2)
    y = (h - s) // 2 + int(rng.integers(-jitter_y, jitter_y + 1))
    x = (w - s) // 2 + int(rng.integers(-jitter_x, jitter_x + 1))
    alpha = np.zeros((h, w), np.float32)
    alpha[y : y + s, x : x + s] = mask * rng.uniform(0.8, 1.0)
    bg = background.astype(np.float32)
    under = (bg * alpha[..., None]).sum((0, 1)) / max(float(alpha.sum()), 1e-6)

    def draw_colour() -> np.ndarray:
        if hue is None:
            return rng.uniform(0, 255, 3)
        h = (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
        return 255.0 * np.array(colorsys.hsv_to_rgb(h, rng.uniform(*SATURATION), rng.uniform(*VALUE)))

    colour = draw_colour()
    for _ in range(8):  # redraw a colour too close to the background
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            break
        colour = draw_colour()
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    shading = 1.0 + 0.15 * ((gx - w / 2) * np.cos(direction) + (gy - h / 2) * np.sin(direction)) / (w / 2)
    paint = np.clip(colour[None, None] * shading[..., None], 0, 255)
    paint = (1 - SHOW_THROUGH) * paint + SHOW_THROUGH * bg
    out = bg * (1 - alpha[..., None]) + paint * alpha[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_shapes_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` images of each of the 10 SHAPE_CLASSES on left-half backgrounds -> (uint8 NHWC, int64 labels),
    in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(SHAPE_CLASSES)), per_class))
    backgrounds = _backgrounds(len(labels), rng, background_halves("left"), BACKGROUND_CROP)
    out = np.empty_like(backgrounds)
    for i, label in enumerate(labels):
        size = int(rng.integers(OBJECT_SIZE[0], OBJECT_SIZE[1] + 1))
        mask = shape_mask(SHAPE_CLASSES[label], size, float(rng.uniform(-20, 20)))
        hue = label / len(SHAPE_CLASSES) if CLASS_HUES else None
        out[i] = composite(backgrounds[i], mask, rng, hue)
    return out, labels.astype(np.int64)


@functools.cache
def _digit_strokes() -> np.ndarray:
    """scikit-learn's 1,797 handwritten digits as float32 [N, 8, 8] in [0, 1]."""
    raw = np.loadtxt(builtin._package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return (raw[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32)


def make_photo_digits(n: int = PHOTO_DIGITS_SIZE, seed: int = PHOTO_DIGITS_SEED) -> np.ndarray:
    """Near OOD: a handwritten digit (scikit-learn) upsampled to 12-24 px and composited like the shapes on
    left-half backgrounds -> uint8 NHWC."""
    rng = np.random.default_rng(seed)
    strokes = _digit_strokes()
    backgrounds = _backgrounds(n, rng, background_halves("left"), BACKGROUND_CROP)
    out = np.empty_like(backgrounds)
    for i in range(n):
        size = int(rng.integers(DIGIT_SIZE[0], DIGIT_SIZE[1] + 1))
        digit = Image.fromarray(strokes[int(rng.integers(len(strokes)))])
        mask = np.clip(np.asarray(digit.resize((size, size), Image.BILINEAR)), 0, 1)
        out[i] = composite(backgrounds[i], mask, rng)
    return out


def make_shape_aux(n: int = SHAPE_AUX_SIZE, seed: int = SHAPE_AUX_SEED) -> np.ndarray:
    """The auxiliary pool: random 32-160 px crops of the background photos' right halves and of AUX_ONLY_PHOTOS,
    resized to 32, flipped at random -> uint8 NHWC."""
    photos = background_halves("right") + [builtin._shrink(load_photo(s), 384) for s in AUX_ONLY_PHOTOS]
    return builtin._random_crops(photos, n, np.random.default_rng(seed), AUX_CROP[0], AUX_CROP[1], flip=True)


# --------------------------------------------------------------------------------------------------------------
# loaders (the registry's entry points; `root` and `download` are accepted and ignored)


@functools.cache
def _cached(maker: Callable[[], object]):
    return maker()


def _make_shapes() -> tuple[ImageSet, ImageSet]:
    sets = []
    for split, per_class, seed in (
        ("train", SHAPES_TRAIN_PER_CLASS, SHAPES_TRAIN_SEED),
        ("test", SHAPES_TEST_PER_CLASS, SHAPES_TEST_SEED),
    ):
        images, labels = make_shapes_split(per_class, seed)
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        sets.append(ImageSet(tensor, torch.from_numpy(labels), f"shapes-{split}", "built-in shapes"))
    return sets[0], sets[1]


def load_shapes_in(root: object = None, download: bool = False) -> InDistribution:
    """The default built-in in-distribution set (10 shape classes; defaults: OOD photo_digits, tiles,
    scenes_resize; aux shape_aux; q 0.125 as CIFAR-10; CIFAR schedule)."""
    train, test = _cached(_make_shapes)
    train = ImageSet(train.images.clone(), train.labels.clone(), train.name, train.source)  # callers may alter
    test = ImageSet(test.images.clone(), test.labels.clone(), test.name, test.source)
    return InDistribution(
        name="shapes",
        train=train,
        test=test,
        num_classes=len(SHAPE_CLASSES),
        normalization=channel_stats(train.images),
        augment=True,
        default_ood=("photo_digits", "tiles", "scenes_resize"),
        default_aux="shape_aux",
        schedule="cifar",  # the methods' defaults apply: ATOM q 0.125, ROWL a tenth of train, SOFL 5 classes
    )


def load_photo_digits(root: object = None, download: bool = False) -> ImageSet:
    """Built-in OOD set `photo_digits` (1,000 handwritten digits on photo backgrounds)."""
    array = np.array(_cached(make_photo_digits))
    return ImageSet(torch.from_numpy(array.transpose(0, 3, 1, 2).copy()), None, "photo_digits", "built-in")


def load_shape_aux(root: object = None) -> ArrayPool:
    """Built-in auxiliary pool `shape_aux` (5,000 photo crops disjoint from every built-in test image)."""
    array = _cached(make_shape_aux)
    array.flags.writeable = False
    return ArrayPool(array, "shape_aux", "built-in")
