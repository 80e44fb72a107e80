"""The detectors of the paper, one module each (SPEC section 4), in the order of the paper's Table 1, then the
post-hoc detectors beyond the paper (group "posthoc", on the vanilla network)."""

from baselines import msp, odin, mahalanobis, sofl, oe, acet, ccu, rowl, atom  # noqa: F401,I001  (registration)
from baselines import energy, maxlogit, gen, knn, vim, react, ash  # noqa: F401,I001  (beyond the paper)
