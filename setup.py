"""Packaging shim: everything else is in pyproject.toml.

The reference numbers live in the top-level `results/` folder of the repository (the design card's layout). A
non-editable install (`pip install .`, the wheel) carries them as the package data of `oodbench._results`, mapped
onto that folder here (pyproject.toml alone cannot map a package onto a folder outside the package tree while
discovering the others), so `oodbench table --vs-paper` and `oodbench check --against paper|reference:NAME`
work without a source checkout. Read them with `oodbench.resources.bundled`.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["oodbench*", "baselines*", "attacks*"]) + ["oodbench._results"],
    package_dir={"oodbench._results": "results"},
    package_data={
        "oodbench": ["py.typed"],
        "oodbench._results": ["paper/*.csv", "paper/README.md", "reference/*.csv", "reference/*.sh"],
    },
)
