"""Corruption suites and their variant lists (SPEC section 6).

- `cifar-c-15`: the 15 standard CIFAR-10-C types of Hendrycks & Dietterich (2019), make_cifar_c.py parameters:
  the paper's 75 variants (`paper` protocol).
- `cifar-c-19`: those 15 plus speckle_noise, gaussian_blur, spatter, saturate: the released ATOM code's 95
  variants (`atom-code` protocol).
- `imagenet-c`: the 19 types of the `imagecorruptions` package with its ImageNet parameters (far harsher at
  32x32; for comparison and for images larger than 32x32).

Variants are ordered severity-major: for each severity 1..5, every type in suite order.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np

from attacks.corruptions.cifar import (
    BATCHED,
    CORRUPTIONS,
    EXTRA_4,
    STANDARD_15,
    Rng,
    _randint,
    _reseeded,
    check_image,
    image_digest,
    seed_words,
)

IMAGENET_TYPES: tuple[str, ...] = STANDARD_15 + EXTRA_4  # imagecorruptions uses the same 19 names and order

SUITES: dict[str, tuple[str, ...]] = {
    "cifar-c-15": STANDARD_15,
    "cifar-c-19": STANDARD_15 + EXTRA_4,
    "imagenet-c": IMAGENET_TYPES,
}

# The seed family: both CIFAR suites share it, so cifar-c-15's variants are exactly the first 15 types of
# cifar-c-19's (same image, type, severity and seed give the same bytes in both).
_FAMILY = {"cifar-c-15": "cifar", "cifar-c-19": "cifar", "imagenet-c": "imagenet"}

SEVERITIES = (1, 2, 3, 4, 5)
_BATCH = 16  # images per batched call: keeps the float64 temporaries in cache (measured fastest)


def _check_suite(suite: str) -> tuple[str, ...]:
    try:
        return SUITES[suite]
    except KeyError:
        raise ValueError(f"unknown corruption suite {suite!r}; known: {', '.join(SUITES)}") from None


def _imagenet_corruption(name: str) -> Callable[[np.ndarray, int, Rng], np.ndarray]:
    """Wrap `imagecorruptions.corrupt(image, corruption_name=name, severity=...)` (ImageNet-C parameters,
    Hendrycks & Dietterich 2019) so that it is a deterministic function of the RNG it is given: the package
    draws from the global NumPy RNG (seeded here, and restored afterwards so callers are not disturbed) and
    from explicit seeds for glass_blur (numba) and impulse_noise (skimage Generator), which are passed too."""

    def fn(x: np.ndarray, severity: int, rng: Rng) -> np.ndarray:
        import imagecorruptions

        seed32 = int(_randint(rng, 0, 2**32))
        kwargs = {"seed": seed32} if name in ("glass_blur", "impulse_noise") else {}
        state = np.random.get_state()
        try:
            np.random.seed(seed32)
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints its border fix-ups
                return imagecorruptions.corrupt(
                    np.ascontiguousarray(x), severity=severity, corruption_name=name, **kwargs
                )
        finally:
            np.random.set_state(state)

    fn.__name__ = f"imagenet_{name}"
    fn.__doc__ = f"ImageNet-C `{name}` of the imagecorruptions package, seeded by `rng`."
    return fn


_IMAGENET = {name: _imagenet_corruption(name) for name in IMAGENET_TYPES}


def seed_family(suite: str) -> str:
    """The seed family of a suite ("cifar" for both CIFAR suites, "imagenet"), part of every variant's seed."""
    _check_suite(suite)
    return _FAMILY[suite]


def suite_corruption(suite: str, name: str) -> tuple[Callable[[np.ndarray, int, Rng], np.ndarray], bool]:
    """The function of corruption `name` in `suite` and whether the suite needs 32x32 images (CIFAR suites)."""
    types = _check_suite(suite)
    if name not in types:
        raise ValueError(f"corruption {name!r} is not in suite {suite!r}: {', '.join(types)}")
    if suite == "imagenet-c":
        return _IMAGENET[name], False
    return CORRUPTIONS[name], True


def variant_list(suite: str) -> list[tuple[str, int]]:
    """The suite's variants as (type, severity), severity-major (SPEC section 6): 75 for cifar-c-15 (the paper,
    Hendrycks & Dietterich 2019's 15 types x 5), 95 for cifar-c-19 and imagenet-c."""
    types = _check_suite(suite)
    return [(name, sev) for sev in SEVERITIES for name in types]


def variant_names(suite: str) -> list[str]:
    """Display names `"<type>-<severity>"` of the suite's variants, in `variant_list` order."""
    return [f"{name}-{sev}" for name, sev in variant_list(suite)]


def generate_variants(images: np.ndarray, suite: str, seed: int) -> np.ndarray:
    """All variants of every image: uint8 [V, N, H, W, 3] from uint8 [N, H, W, 3], V = len(variant_list(suite)).

    Variant (v, n) is `corrupt(images[n], *variant_list(suite)[v], seed, suite)`: a function of the image's
    content, not of its position, so any batching or process split gives the same bytes. CIFAR suites use the
    make_cifar_c.py parameters of Hendrycks & Dietterich (2019) and need 32x32 images."""
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got shape {arr.shape}")
    variants = variant_list(suite)
    family = seed_family(suite)
    out = np.empty((len(variants), *arr.shape), dtype=np.uint8)
    if arr.shape[0] == 0:
        return out
    fns = {name: suite_corruption(suite, name) for name in SUITES[suite]}
    for img in arr:
        check_image(img, exact=fns[variants[0][0]][1])
    digests = [image_digest(img) for img in arr]
    batched = BATCHED if family == "cifar" else {}
    for v, (name, sev) in enumerate(variants):
        if name in batched:  # deterministic: no RNG, whole sub-batches at once
            for start in range(0, arr.shape[0], _BATCH):
                out[v, start : start + _BATCH] = np.uint8(batched[name](arr[start : start + _BATCH], sev))
            continue
        fn = fns[name][0]
        for n, img in enumerate(arr):
            out[v, n] = np.uint8(fn(img, sev, _reseeded(seed_words(digests[n], name, sev, seed, family))))
    return out


def corrupt(image: np.ndarray, name: str, severity: int, seed: int, suite: str = "cifar-c-19") -> np.ndarray:
    """One corrupted variant (uint8 HxWx3) of `image` (uint8 HxWx3): a deterministic function of (image bytes,
    corruption `name`, `severity` 1..5, `seed`, suite family). The CIFAR suites (same bytes in cifar-c-15 and
    cifar-c-19) use the make_cifar_c.py parameters (Hendrycks & Dietterich 2019); `suite="imagenet-c"` uses the
    `imagecorruptions` package's ImageNet ones. Equals `apply_cifar(image, name, severity, variant_rng(...))`."""
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    fn, needs_32 = suite_corruption(suite, name)
    arr = check_image(image, exact=needs_32)
    rng = _reseeded(seed_words(image_digest(arr), name, severity, seed, seed_family(suite)))
    return np.uint8(fn(arr, severity, rng))
