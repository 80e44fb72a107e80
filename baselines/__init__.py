"""The detectors of the paper, one module each (SPEC section 4), in the order of the paper's Table 1."""

from baselines import msp, odin, mahalanobis, sofl, oe, acet, ccu, rowl, atom  # noqa: F401,I001  (registration)
