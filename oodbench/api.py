"""The public Python API (DESIGN "Bring your own model and detector"): `evaluate`, `train`, `Result`,
`detector_from_score`. `oodbench run` is a thin layer over the same `run_options` -> `plan_run` -> `execute`
path, so a run started here has the same run directory, cells, resume, provenance, tables and checks.

    import oodbench
    result = oodbench.evaluate(my_net, "energy", in_dist="shapes", threats=("natural", "linf"), profile="smoke")
    print(result.table())
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from oodbench.detector import Detector
from oodbench.errors import ConfigError
from oodbench.options import RunOptions
from oodbench.registry import DETECTORS, register_detector


@dataclasses.dataclass
class Result:
    """A finished run: `run_dir`, `.frame` (the tidy frame of `oodbench table --format csv`: in_dist, method,
    ood_set, threat, metric, value in %, flags; FPR@95%TPR with in-dist as the positive class, the paper's
    convention, SPEC section 1) and `.table(format)` (the Table 1 layout)."""

    run_dir: Path

    @property
    def cells(self) -> pd.DataFrame:
        from oodbench.results import load_cells

        return load_cells([self.run_dir])

    @property
    def frame(self) -> pd.DataFrame:
        from oodbench.results import tidy, with_flags

        cells = self.cells
        return with_flags(tidy(cells), cells)

    def table(self, format: str = "markdown", per_ood: bool = False) -> str:
        """The rendered table ("markdown", "latex"): methods x threat models, FPR and AUROC."""
        from oodbench.results import summary_table

        return summary_table(self.cells, format, per_ood=per_ood)

    def __repr__(self) -> str:
        return f"Result(run_dir={str(self.run_dir)!r})"


def run_options(**settings: Any) -> RunOptions:
    """RunOptions from keyword settings named as the fields of `oodbench run` (`profile`, `seed`, `arch`, `aux`,
    `pgd_steps`, `max_ood`, ...); an unknown name raises a ConfigError listing the known ones."""
    fields = {f.name: f for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    for name in ("methods", "ood", "threats", "plugins", "only_cells"):
        if isinstance(settings.get(name), str):
            settings[name] = [t.strip() for t in settings[name].split(",") if t.strip()]
        elif settings.get(name) is not None:
            settings[name] = list(settings[name])
    return RunOptions(**settings)


def _detector_names(detector) -> tuple[list[str], dict[str, Detector]]:
    """Method names for the run and the Detector instances given as objects (registered if their class is not)."""
    items = detector if isinstance(detector, (list, tuple)) else [detector]
    names, given = [], {}
    for item in items:
        if isinstance(item, str):
            names.extend(t.strip() for t in item.split(",") if t.strip())
            continue
        cls = item if isinstance(item, type) else type(item)
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise ConfigError(
                f"detector must be a registered name, a Detector subclass or instance (got {type(item).__name__}); "
                "for a plain score function use oodbench.detector_from_score(fn, name=...)"
            )
        if not cls.name or cls.name not in DETECTORS or DETECTORS.get(cls.name) is not cls:
            register_detector(cls.name or cls.__name__.lower())(cls)
        names.append(cls.name)
        if not isinstance(item, type):
            given[cls.name] = item
    return names, given


def evaluate(
    model: nn.Module | str | None,
    detector: str | Detector | type | Iterable = "msp",
    *,
    in_dist: str = "shapes",
    ood: str | Iterable[str] | None = None,
    threats: str | Iterable[str] = ("natural", "linf"),
    protocol: str = "paper",
    out: str | Path | None = None,
    device: str = "auto",
    weights: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> Result:
    """Evaluate `detector` on `model` under `threats` and write a run directory (resumable: a second call with
    the same arguments computes nothing); returns its `Result`.

    - `model`: an `nn.Module` taking [0, 1] RGB pixels [B, 3, H, W] to logits [B, K] (wrap one trained on
      normalised inputs in `oodbench.models.Normalize(model, mean, std)`); a registered architecture name with
      `weights=` (a state dict); or None to train / load the detector's own network as `oodbench run` does.
    - `detector`: a registered name (`oodbench list`), a Detector subclass or instance, or several of them.
    - `in_dist`, `ood`: registered names or `folder:PATH` / `npy:PATH` specs; `ood` defaults to the in-dist set's.
    - `settings`: any option of `oodbench run` by its field name (`profile="smoke"`, `seed`, `aux`, `pgd_steps`,
      `max_ood`, `overrides={"odin": {"temperature": "100"}}`, ...).
    """
    methods, given = _detector_names(detector)
    arch_name = None
    if isinstance(model, str):
        arch_name, model = model, None
        if weights is None:
            raise ConfigError(f"model '{arch_name}' is an architecture name: pass weights=PATH (a state dict)")
    options = run_options(
        methods=methods,
        in_dist=in_dist,
        ood=[ood] if isinstance(ood, str) else ood,
        threats=[threats] if isinstance(threats, str) else threats,
        protocol=protocol,
        out=str(out) if out is not None else None,
        device=device,
        weights=str(weights) if weights is not None else None,
        **({"arch": arch_name} if arch_name else {}),
        **settings,
    )
    from oodbench.runner import run

    return Result(run(options, log or _stderr, model=model, detectors=given))


def train(
    detector: str | type = "msp",
    *,
    in_dist: str = "shapes",
    arch: str | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> tuple[nn.Module, Path]:
    """Train (or find, if already trained in `out`) the network of a training-based `detector` by its recipe
    (SPEC section 3): returns the model (eval mode) and its checkpoint, which `evaluate(model, detector)` or
    `oodbench run --checkpoint METHOD=PATH` take."""
    from oodbench.rundir import FINAL_CHECKPOINT
    from oodbench.runner import execute, obtain_model, plan_run

    methods, given = _detector_names(detector)
    if len(methods) != 1:
        raise ConfigError(f"train one detector at a time (got {', '.join(methods)})")
    options = run_options(
        methods=methods,
        in_dist=in_dist,
        arch=arch,
        out=str(out) if out is not None else None,
        train_only=True,
        threats=["natural"],
        **settings,
    )
    plan = plan_run(options, log or _stderr, detectors=given)
    execute(plan, log or _stderr)
    method = plan.methods[0]
    model = obtain_model(plan, method, log or _stderr)  # the finished checkpoint, loaded
    return model, method.checkpoint or method.checkpoint_dir / FINAL_CHECKPOINT


def detector_from_score(fn: Callable[..., torch.Tensor], name: str, summary: str = "") -> type[Detector]:
    """A registered post-hoc detector from one score function, higher = more in-distribution: `fn(logits)` or
    `fn(model, x)`, returning [B]. Its white-box objective is the score itself (an adaptive attack by
    construction: the attacks maximise exactly what is deployed). Returns the class; use its name anywhere."""
    try:
        arity = len([p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty])
    except (TypeError, ValueError):
        arity = 1
    if arity not in (1, 2):
        raise ConfigError(f"detector_from_score: fn must take (logits) or (model, x); it takes {arity} arguments")

    if arity == 1:  # a function of the logits: the base class derives score and score_and_predict from it
        members = {
            "score_logits": lambda self, logits: fn(logits).float(),
            "attack_objective": lambda self, model, x: fn(model(x)).float(),
        }
    else:

        def score_and_predict(self, model, x):
            with torch.no_grad():
                return fn(model, x).float(), self.predict_logits(model(x))

        members = {
            "score": lambda self, model, x: _no_grad(fn, model, x),
            "score_and_predict": score_and_predict,
            "attack_objective": lambda self, model, x: fn(model, x).float(),
        }

    doc = (fn.__doc__ or "").strip().splitlines()
    cls = type(
        f"ScoreDetector_{name}",
        (Detector,),
        {
            "__doc__": summary or (doc[0] if doc else f"score {getattr(fn, '__name__', 'fn')} (detector_from_score)"),
            "__module__": getattr(fn, "__module__", __name__),
            "recipe": "vanilla",
            **members,
        },
    )
    return register_detector(name, summary=summary)(cls)


def _no_grad(fn, model, x):
    with torch.no_grad():
        return fn(model, x).float()


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
