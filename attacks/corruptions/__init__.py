"""Common corruptions for the black-box corruption threat model (SPEC section 6): the CIFAR-10-C generator of
Hendrycks & Dietterich (2019) at its 32x32 parameters (`cifar`), the suites built on it (`suites`: cifar-c-15,
cifar-c-19, imagenet-c), and an on-disk variant cache shared by every method (`cache`)."""

from attacks.corruptions.cache import STATS, cache_path, content_key, variants_for
from attacks.corruptions.cifar import CORRUPTION_VERSION, CORRUPTIONS, apply_cifar
from attacks.corruptions.suites import SUITES, corrupt, generate_variants, variant_list, variant_names

__all__ = [
    "CORRUPTIONS",
    "CORRUPTION_VERSION",
    "STATS",
    "SUITES",
    "apply_cifar",
    "cache_path",
    "content_key",
    "corrupt",
    "generate_variants",
    "variant_list",
    "variant_names",
    "variants_for",
]
