"""The one configuration object of a run, from the command line (or the Python API) to the attacks.

`RunOptions` holds what `oodbench run` was asked to do; each field that is a command-line option declares its
flag, help and parsing in the field's metadata (`option(...)`). `add_run_arguments` builds the argparse options
from those fields and `from_args` reads the parsed namespace back into `RunOptions`, so a new option is one field.
The runner resolves the options into a plan (`oodbench.runner.plan_run`) and the attack context.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from oodbench.errors import ConfigError


def parse_csv(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']."""
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_pixels(text: str) -> float:
    """A pixel-space magnitude: '8/255', '0.0314' or '8' (read as 8/255 when > 1)."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or fraction such as 8/255") from None
    return value / 255.0 if value > 1 else value


def parse_assignments(items: list[str] | None, what: str, dotted: bool) -> dict:
    """['atom.q=0.25', ...] -> {'atom': {'q': '0.25'}} (dotted) or ['k=v', ...] -> {'k': 'v'}."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} '{item}' must look like {'METHOD.FIELD=VALUE' if dotted else 'KEY=VALUE'}")
        key, value = item.split("=", 1)
        if dotted:
            if "." not in key:
                raise ConfigError(f"{what} '{item}' must look like METHOD.FIELD=VALUE (e.g. atom.q=0.25)")
            method, name = key.split(".", 1)
            out.setdefault(method.strip(), {})[name.strip()] = value.strip()
        else:
            out[key.strip()] = value.strip()
    return out


def option(
    default: Any = None,
    *flags: str,
    help: str = "",
    cli_default: Any = dataclasses.MISSING,
    convert: Callable[[Any], Any] | None = None,
    factory: Callable[[], Any] | None = None,
    minimum: float | None = None,
    positive: bool = False,
    **argparse_kwargs: Any,
) -> Any:
    """A RunOptions field that is a command-line option: `flags` (default: `--field-name`), argparse keywords,
    `cli_default` when the command line's default differs from the Python API's, `convert` from the parsed value;
    `minimum` (inclusive) / `positive` bound a number (checked by `RunOptions.check`, CLI and Python alike)."""
    metadata = {
        "flags": flags,
        "help": help,
        "cli_default": cli_default,
        "convert": convert,
        "argparse": argparse_kwargs,
        "minimum": minimum,
        "positive": positive,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _default_threats(value: list[str] | None) -> list[str]:
    from oodbench.registry import default_threats

    return value or default_threats()


@dataclass
class RunOptions:
    """What `oodbench run` was asked to do (command-line options, unresolved)."""

    methods: list[str] = option(
        type=parse_csv,
        cli_default=["all"],
        factory=lambda: ["msp"],
        help="comma-separated detectors, 'all' (the paper's ten), 'posthoc' (seven beyond the paper); `oodbench list`",
    )
    in_dist: str = option(
        "shapes",
        "--in",
        help="in-distribution data set (default: the built-in 'shapes' benchmark; the older built-in: 'digits')",
    )
    ood: list[str] | None = option(type=parse_csv, help="OOD test sets (default: the in-dist set's six)")
    threats: list[str] = option(
        type=parse_csv,
        cli_default=None,
        convert=_default_threats,
        factory=lambda: ["natural", "linf"],
        help="threat models (default: those declared default, natural,corruption,linf,comp)",
    )
    arch: str | None = option(help="architecture (default: the profile's: densenet100 / small_cnn)")
    aux: str | None = option(help="auxiliary outlier pool (default: the in-dist set's)")
    protocol: str = option("paper", help="paper | atom-code | strong (SPEC preamble)")
    profile: str = option("paper", help="paper (full scale) | smoke (tiny, CPU minutes)")
    seed: int = option(0, type=int, minimum=0)
    data_root: str | None = option(help="folder holding the data sets (see `oodbench data`)")
    out: str | None = option(help="run directory (default: oodbench-runs/<in>-<protocol>-<profile>-seed<S>)")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    download: bool = option(
        False,
        action="store_true",
        help="before any compute, download and verify every data set the run reads that is missing "
        "(see `oodbench data --help`)",
    )
    overrides: dict[str, dict[str, str]] = option(
        None,
        "--set",
        factory=dict,
        action="append",
        metavar="METHOD.FIELD=VALUE",
        convert=lambda items: parse_assignments(items, "--set", dotted=True),
        help="override a method's hyper-parameter, e.g. --set atom.q=0.25 (repeatable)",
    )
    protocol_overrides: dict[str, str] = option(
        None,
        "--switch",
        factory=dict,
        action="append",
        metavar="KEY=VALUE",
        convert=lambda items: parse_assignments(items, "--switch", dotted=False),
        help="override one protocol switch, e.g. --switch corruption_suite=cifar-c-19",
    )
    tune_split: str | None = option(
        choices=["test", "heldout"],
        help="ODIN/Mahalanobis tuning images: in-dist test (paper, code) or held-out training",
    )
    checkpoints: dict[str, str] = option(
        None,
        "--checkpoint",
        factory=dict,
        action="append",
        metavar="METHOD=PATH",
        convert=lambda items: parse_assignments(items, "--checkpoint", dotted=False),
        help="evaluate this trained checkpoint instead of training (repeatable)",
    )
    init: str | None = option(help="fine-tune every trained network from this checkpoint")
    model: str | None = option(
        metavar="MODULE:CALLABLE",
        help="evaluate your own network: a factory in your code returning an nn.Module that takes [0, 1] RGB pixels "
        "(called with num_classes=K when it has that argument); nothing is trained",
    )
    weights: str | None = option(
        metavar="PATH",
        help="weights of the evaluated network: a state dict (for --model or a registered --arch), a TorchScript "
        "file, or a pickled module (needs --trust-pickle)",
    )
    features: list[str] | None = option(
        type=parse_csv,
        metavar="LAYER,LAYER",
        help="layers (module names of the model) that feature-based detectors such as Mahalanobis score, for a "
        "model without forward_features; sets METHOD.layers of each such method (default: the architecture's list, "
        "else the input of the final nn.Linear)",
    )
    trust_pickle: bool = option(
        False, action="store_true", help="allow --weights to be a pickled Python module (unpickling runs its code)"
    )
    plugins: list[str] = option(
        None,
        "--plugin",
        factory=list,
        action="append",
        metavar="MODULE",
        convert=lambda items: list(items or []),
        help="import this module first: its @register_detector / register_threat / register_dataset / register_arch "
        "entries join the registries (repeatable; also $OODBENCH_PLUGINS, comma-separated)",
    )
    train_only: bool = option(False, action="store_true", help="train the networks, evaluate nothing")
    lr: float | None = option(
        type=float,
        positive=True,
        help="base learning rate of every training stage (paper: 0.1; lower it to fine-tune with --init)",
    )
    pgd_steps: int | None = option(type=int, minimum=1, help="PGD iterations (paper: 40)")
    pgd_restarts: int | None = option(type=int, minimum=1, help="PGD random restarts (paper: 1)")
    pgd_step_size: float | None = option(
        None, "--pgd-step", type=parse_pixels, positive=True, metavar="PGD_STEP", help="PGD step size (paper: 1/255)"
    )
    pgd_eps: float | None = option(type=parse_pixels, positive=True, help="L-inf radius (paper: 8/255)")
    apgd_steps: int | None = option(
        type=int,
        minimum=0,
        help="strong protocol: APGD iterations per objective (profile paper: 100, smoke: 25; 0: no APGD)",
    )
    apgd_restarts: int | None = option(
        type=int, minimum=1, help="strong protocol: APGD restarts per objective (profile paper: 5, smoke: 1)"
    )
    square_queries: int | None = option(
        type=int,
        minimum=0,
        help="strong protocol: Square attack queries per image (profile paper: 5000, smoke: 300; 0: no Square)",
    )
    batch_size: int | None = option(type=int, minimum=1, help="evaluation / attack batch size")
    cache_dir: str | None = option(help="cache of corruption variants (default: ~/.cache/oodbench)")
    epochs: int | None = option(type=int, minimum=1, help="override the profile's epochs (lr steps at 50/75/90%%)")
    max_ood: int | None = option(type=int, minimum=1, help="override the profile's images per OOD set")
    max_train: int | None = option(type=int, minimum=1, help="override the profile's in-dist training images")
    attack_id: bool = option(
        False, action="store_true", help="also attack in-dist test images towards OOD and report the FNR under attack"
    )
    precision: str = option(
        "fp32",
        choices=["fp32", "tf32", "bf16"],
        help="precision of the attacks' passes (scores are always IEEE fp32); fp32 is the default "
        "because bf16 measurably weakened PGD (oodbench.accel)",
    )
    compile: bool = option(False, action="store_true", help="torch.compile the model inside the attacks")
    progress: bool = option(True, "--no-progress", action="store_false", help="no progress bars")
    only_cells: list[str] | None = None  # evaluate just these cell keys (job arrays; not a command-line option)

    def check(self) -> None:
        """ConfigError for a number out of its declared range or of the wrong type (before any compute)."""
        for f in _cli_fields():
            value, low, positive = getattr(self, f.name), f.metadata["minimum"], f.metadata["positive"]
            if value is None or (low is None and not positive):
                continue
            flag = _flags(f)[0]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{flag} (setting {f.name}): {value!r} is not a number")
            if f.type in ("int", "int | None") and not float(value).is_integer():
                raise ConfigError(f"{flag} (setting {f.name}): {value!r} is not a whole number")
            if low is not None and value < low:
                raise ConfigError(f"{flag} {value}: must be >= {low:g}")
            if positive and not value > 0:
                raise ConfigError(f"{flag} {value}: must be > 0")


def _cli_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(RunOptions) if "flags" in f.metadata]


def _flags(f: dataclasses.Field) -> tuple[str, ...]:
    return f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)


def _cli_default(f: dataclasses.Field) -> Any:
    if f.metadata["cli_default"] is not dataclasses.MISSING:
        return f.metadata["cli_default"]
    if f.metadata["convert"] is not None:  # parsed into another shape: the raw command-line default is "none given"
        return None
    if f.default is not dataclasses.MISSING:
        return f.default
    return None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The `oodbench run` options, one per command-line field of `RunOptions`."""
    for f in _cli_fields():
        kwargs = dict(f.metadata["argparse"])
        if f.metadata["help"]:
            kwargs["help"] = f.metadata["help"]
        parser.add_argument(*_flags(f), dest=f.name, default=_cli_default(f), **kwargs)


def from_args(args: argparse.Namespace) -> RunOptions:
    """RunOptions from arguments parsed by a parser that `add_run_arguments` built (fields it lacks keep their
    defaults)."""
    values = {}
    for f in _cli_fields():
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        convert = f.metadata["convert"]
        values[f.name] = convert(value) if convert is not None else value
    return RunOptions(**values)
