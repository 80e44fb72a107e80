"""oodbench: a benchmarking suite for robust out-of-distribution detection (the ATOM paper's protocol).

The public Python API (README "Evaluate your own detector"):

- `evaluate(model, detector, *, in_dist, ood, threats, protocol, out, device, **settings) -> Result`
- `train(detector, *, in_dist, arch, **settings) -> (model, checkpoint)`
- `Result` (`.frame`, `.table()`, `.run_dir`), `Detector`, `detector_from_score(fn, name=...)`
- `register_detector`, `register_threat`, `register_dataset`, `register_arch`

Names are imported on first use, so `import oodbench` (and the CLI's start) stays fast.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate": "oodbench.api",
    "train": "oodbench.api",
    "Result": "oodbench.api",
    "detector_from_score": "oodbench.api",
    "Detector": "oodbench.detector",
    "register_detector": "oodbench.registry",
    "register_threat": "oodbench.registry",
    "register_dataset": "oodbench.registry",
    "register_arch": "oodbench.registry",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in ("data", "models", "metrics", "results"):  # `oodbench.data.load_in_distribution(...)` etc.
        import importlib

        return importlib.import_module(f"oodbench.{name}")
    raise AttributeError(f"module 'oodbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
