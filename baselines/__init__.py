"""The detectors, one module each (SPEC section 4). Importing the package imports every module in it (pkgutil), so
a new detector is one new file here; each class's `order` places it in the paper's Table 1."""

from oodbench.registry import import_submodules

import_submodules(__name__)
