"""The detectors of the paper, one module each (SPEC section 4)."""

from baselines import mahalanobis, msp, odin  # noqa: F401  (registration)
