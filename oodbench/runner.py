"""A run: a grid of cells (detector x OOD set x threat model), planned and checked before any compute, then
executed in one direction: data -> trained network -> fitted detector -> threat model -> scores -> metrics.

The layout of a run directory is `oodbench.rundir`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.base import AttackContext
from attacks.diagnostics import cell_diagnostics
from attacks.pgd import PGDConfig
from oodbench import __version__
from oodbench.accel import check_precision, fp32_scoring, maybe_compile
from oodbench.cachedir import cache_root
from oodbench.checkpoint import check_meta, file_sha256, load_checkpoint
from oodbench.config import (
    METHOD_SWITCHES,
    SWITCH_CHOICES,
    TRAINING_SWITCHES,
    Profile,
    Protocol,
    get_profile,
    get_protocol,
    switch_values,
)
from oodbench.data import center_crop, load_aux, load_in_distribution, load_ood
from oodbench.data.base import AuxPool, ImageSet, InDistribution
from oodbench.detector import BuildContext, Detector, FitData
from oodbench.errors import CheckpointError, ConfigError
from oodbench.faults import crash_point
from oodbench.io import read_json, remove_stale_temporaries, write_json, write_npz
from oodbench.locks import file_lock
from oodbench.metrics import id_metrics, ood_metrics, threshold_at_tpr
from oodbench.options import RunOptions
from oodbench.provenance import config_hash
from oodbench.registry import ARCHS, DETECTORS, THREATS, load_plugins, resolve_methods, threat_order
from oodbench.rundir import DEFAULT_RUNS, FINAL_CHECKPOINT, MINING_LOG, MINING_PLOT, RunDir, merge_run_json
from oodbench.scoring import map_batches, to_unit
from oodbench.seeding import derive_seed, numpy_rng

TUNE_IMAGES = 1000  # ODIN / Mahalanobis tuning images (SPEC section 4)


@dataclass
class MethodPlan:
    """One detector of the run with its resolved configuration and keys."""

    name: str
    detector: Detector
    config: dict[str, Any]
    recipe: str
    train_key: str
    fit_key: str
    checkpoint: Path | None  # given with --checkpoint
    checkpoint_dir: Path


@dataclass
class CellPlan:
    """One (detector, OOD set, threat model) cell."""

    key: str
    method: str
    ood_set: str
    threat: str
    row: dict[str, Any]  # the identifying columns of its metrics row


@dataclass
class RunPlan:
    """A fully resolved, checked run."""

    options: RunOptions
    protocol: Protocol
    profile: Profile
    arch: str
    device: torch.device
    in_dist: InDistribution
    train: ImageSet
    test: ImageSet
    ood_sets: dict[str, ImageSet]
    aux: AuxPool | None
    aux_name: str | None
    methods: list[MethodPlan]
    cells: list[CellPlan]
    run_dir: Path
    pgd: PGDConfig
    build: BuildContext
    record: dict[str, Any]
    heldout: ImageSet | None = None  # training images reserved for tuning (--tune-split heldout)
    given_model: torch.nn.Module | None = None  # the user's network (evaluated as is: nothing is trained)

    @property
    def layout(self) -> RunDir:
        """The paths of the run directory."""
        return RunDir(self.run_dir)


# ----------------------------------------------------------------------------------------------------
# planning: every name, data set, checkpoint and option is checked here, before any compute
# ----------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """`auto`: the GPU when there is one; `cuda` without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but torch sees no GPU; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"unknown device '{name}' (auto, cpu, cuda, cuda:N)")
    return torch.device(name)


def default_run_dir(options: RunOptions) -> Path:
    return DEFAULT_RUNS / f"{options.in_dist}-{options.protocol}-{options.profile}-seed{options.seed}"


def _subsample(images: ImageSet, limit: int | None, salt: str) -> ImageSet:
    """A fixed subset of `limit` images (the same for every seed and method), or the set itself."""
    if limit is None or len(images) <= limit:
        return images
    rng = numpy_rng("subset", salt)
    return images.subset(np.sort(rng.permutation(len(images))[:limit]))


def _protocol(options: RunOptions) -> Protocol:
    """The named protocol with `--switch KEY=VALUE` applied (a method's former switches set its Config preset)."""
    protocol = get_protocol(options.protocol)
    fields = {f.name: f for f in dataclasses.fields(Protocol) if f.name not in ("name", "method_settings")}
    changes: dict[str, Any] = {}
    presets = {method: dict(values) for method, values in protocol.method_settings.items()}
    switches = {**options.protocol_overrides, **({"tune_split": options.tune_split} if options.tune_split else {})}
    for key, value in switches.items():
        if key in METHOD_SWITCHES:
            method, setting, values = METHOD_SWITCHES[key]
            if value not in values:
                raise ConfigError(f"--switch {key}: '{value}' is not one of {', '.join(values)}")
            presets.setdefault(method, {})[setting] = values[value]
            continue
        if key not in fields:
            known = ", ".join([*fields, *METHOD_SWITCHES])
            raise ConfigError(f"unknown protocol switch '{key}' (switches: {known})")
        if key in SWITCH_CHOICES and value not in SWITCH_CHOICES[key]:
            raise ConfigError(f"--switch {key}: '{value}' is not one of {', '.join(SWITCH_CHOICES[key])}")
        changes[key] = value.lower() in ("1", "true", "yes") if fields[key].type in ("bool", bool) else value
    if presets != protocol.method_settings:
        changes["method_settings"] = presets
    return protocol.replace(**changes) if changes else protocol


def plan_run(
    options: RunOptions,
    log: Callable[[str], None] = print,
    model: torch.nn.Module | None = None,
    detectors: dict[str, Detector] | None = None,
) -> RunPlan:
    """Resolve and check everything a run needs; raise a user-facing error before any training or attack.

    In steps: the protocol and profile, the names (methods, threats, architecture, device), the data, the given
    network (`model`, or `--model` / `--weights`), the methods (configs, keys, checkpoints), the cells, and the
    record written to run.json. `detectors` maps method names to Detector instances given from Python
    (`oodbench.evaluate`), used instead of building them from their Config."""
    options.check()
    load_plugins(options.plugins)
    protocol = _protocol(options)
    profile = resolve_profile(options)
    names = resolve_names(options, profile, model)
    data = load_data(options, protocol, profile, names.methods)
    given = resolve_given_model(options, names, data, model, log)
    build = BuildContext(
        in_dist=data.in_dist, arch=names.arch, protocol=protocol, profile=profile, aux=data.aux, device=names.device
    )
    pgd = resolve_pgd(options, profile)
    run_dir = Path(options.out) if options.out else default_run_dir(options)
    method_plans = plan_methods(options, protocol, profile, names, data, build, run_dir, given, detectors or {})
    cells = plan_cells(options, protocol, profile, pgd, names, data, method_plans, run_dir)
    attacks = attack_record(_attack_context(options, protocol, profile, pgd, names.device, run_dir))
    record = run_record(options, protocol, profile, names, data, pgd, method_plans, attacks)
    if given is not None:
        record["model"] = given.record
    _check_run_dir(run_dir, record)
    return RunPlan(
        options,
        protocol,
        profile,
        names.arch,
        names.device,
        data.in_dist,
        data.train,
        data.test,
        data.ood_sets,
        data.aux,
        data.aux_name,
        method_plans,
        cells,
        run_dir,
        pgd,
        build,
        record,
        heldout=data.heldout,
        given_model=given.module if given is not None else None,
    )


def resolve_profile(options: RunOptions) -> Profile:
    """The named profile with `--epochs`, `--max-ood` and `--max-train` applied."""
    profile = get_profile(options.profile)
    if options.epochs is not None:
        profile = profile.with_epochs(options.epochs)
    if options.max_ood is not None or options.max_train is not None:
        profile = dataclasses.replace(
            profile,
            max_ood=options.max_ood if options.max_ood is not None else profile.max_ood,
            max_train=options.max_train if options.max_train is not None else profile.max_train,
        )
    return profile


@dataclass
class ResolvedNames:
    """The registered names of a run, checked: methods (with `all` expanded), threat models, architecture, device."""

    methods: list[str]
    threats: list[str]
    arch: str
    device: torch.device


def resolve_names(options: RunOptions, profile: Profile, model: torch.nn.Module | None = None) -> ResolvedNames:
    """Check every name of the run against the registries (did-you-mean errors) and the device and precision.
    With a given network the architecture is its label: the factory, the weights file or the module's class."""
    methods = resolve_methods(options.methods)
    threats = list(dict.fromkeys(options.threats))
    for threat in threats:
        THREATS.entry(threat)
    arch = options.arch or profile.default_arch
    if not arch.startswith("timm/"):
        ARCHS.entry(arch)
    if model is not None or options.model or options.weights:
        if model is not None and (options.model or options.weights):
            raise ConfigError("a model object was given together with --model / --weights: give one of them")
        if options.checkpoints or options.init or options.train_only:
            raise ConfigError(
                "--checkpoint, --init and --train-only train or load oodbench networks; with a given model "
                "(--model / --weights) nothing is trained: drop them"
            )
        if model is not None:
            arch = f"model:{type(model).__qualname__}"
        elif options.model:
            arch = f"model:{options.model}"
        elif options.arch is None:  # a TorchScript / pickled module, or a state dict of the profile's arch
            arch = f"weights:{Path(options.weights).name}"
    if options.weights and not Path(options.weights).is_file():
        raise CheckpointError(f"--weights '{options.weights}' not found")
    device = resolve_device(options.device)
    try:
        check_precision(options.precision, device)
    except ValueError as error:
        raise ConfigError(f"--precision {options.precision}: {error}") from None
    for method in list(options.overrides) + list(options.checkpoints):
        if method not in methods:
            raise ConfigError(
                f"settings or a checkpoint were given for '{method}', which is not in --methods {methods}"
            )
    if options.init and not Path(options.init).is_file():
        raise CheckpointError(f"--init '{options.init}' not found")
    return ResolvedNames(methods, threats, arch, device)


@dataclass
class GivenModel:
    """The user's network (`oodbench.evaluate(model, ...)`, `--model`, `--weights`) and its run.json record."""

    module: torch.nn.Module
    fingerprint: str
    record: dict[str, Any]


def resolve_given_model(
    options: RunOptions, names: ResolvedNames, data: RunData, model: torch.nn.Module | None, log
) -> GivenModel | None:
    """Load and check the given network before any compute (oodbench.models.external); None without one."""
    from oodbench.models.external import load_user_model, looks_unnormalised, model_fingerprint

    if model is None and not options.model and not options.weights:
        return None
    in_dist = data.in_dist
    if model is None:
        arch = options.arch  # a state dict of a registered architecture (`--arch NAME --weights PATH`)
        base = None
        if arch is not None and not names.arch.startswith("model:"):
            from oodbench.models import create_model

            def base():
                return create_model(arch, in_dist.num_classes, normalization=in_dist.normalization)

        model = load_user_model(options.model, options.weights, in_dist.num_classes, options.trust_pickle, base)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (got {type(model).__name__})")
    model = model.eval()
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    probe = data.test.subset(np.arange(min(64, len(data.test))))
    warning = looks_unnormalised(model, to_unit(probe.images).to(device), probe.labels.to(device), in_dist.num_classes)
    if warning:
        log(f"warning: {warning}")
    fingerprint = model_fingerprint(model)
    record = {
        "label": names.arch,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "factory": options.model,
        "weights": str(Path(options.weights).resolve()) if options.weights else None,
        "weights_sha256": file_sha256(options.weights) if options.weights else None,
        "sha256": fingerprint,
    }
    return GivenModel(model, fingerprint, record)


@dataclass
class RunData:
    """The data of a run, loaded and subsampled, with the fingerprints recorded in run.json."""

    in_dist: InDistribution
    train: ImageSet
    test: ImageSet
    heldout: ImageSet | None
    ood_sets: dict[str, ImageSet]
    aux: AuxPool | None
    aux_name: str | None
    record: dict[str, Any]


def load_data(options: RunOptions, protocol: Protocol, profile: Profile, methods: list[str]) -> RunData:
    """Load the in-dist, OOD and (when a method needs it) auxiliary sets; DataError names the path and layout."""
    root = Path(options.data_root) if options.data_root else None
    in_dist = load_in_distribution(options.in_dist, root, download=options.download)
    ood_names = list(options.ood) if options.ood else list(in_dist.default_ood)
    if not ood_names:
        raise ConfigError(
            f"in-distribution set '{options.in_dist}' has no default OOD test sets: pass --ood NAME[,NAME] "
            "(registered sets, folder:PATH or npy:PATH; `oodbench list`)"
        )
    ood_sets = {
        name: _subsample(load_ood(name, root, download=options.download), profile.max_ood, name) for name in ood_names
    }
    detectors_cls = [DETECTORS.get(m) for m in methods]
    needs_aux = any(cls.uses_aux for cls in detectors_cls)
    aux_name = options.aux or in_dist.default_aux
    needs_tuning_aux = any(cls.tunes_on_aux for cls in detectors_cls)
    aux = None
    if needs_aux or (needs_tuning_aux and aux_name):
        if aux_name is None:
            raise ConfigError(f"methods {methods} train with auxiliary outliers: pass --aux NAME")
        aux = load_aux(aux_name, root)

    train, test = in_dist.train, in_dist.test
    heldout = None
    if protocol.tune_split == "heldout":
        order = numpy_rng("heldout").permutation(len(train))
        heldout, train = train.subset(np.sort(order[:TUNE_IMAGES])), train.subset(np.sort(order[TUNE_IMAGES:]))
    elif protocol.tune_split != "test":
        raise ConfigError(f"unknown tune split '{protocol.tune_split}' (test or heldout)")
    train = _subsample(train, profile.max_train, "train")
    test = _subsample(test, profile.max_id_test, "test")
    record = {
        "in_dist": {
            "name": in_dist.name,
            "train": train.fingerprint(),
            "test": test.fingerprint(),
            "n_train": len(train),
            "n_test": len(test),
        },
        "ood": {n: {"fingerprint": s.fingerprint(), "n": len(s), "source": s.source} for n, s in ood_sets.items()},
        "aux": None
        if aux is None
        else {"name": aux_name, "fingerprint": aux.fingerprint(), "n": len(aux), "source": aux.source},
    }
    return RunData(in_dist, train, test, heldout, ood_sets, aux, aux_name, record)


def resolve_pgd(options: RunOptions, profile: Profile) -> PGDConfig:
    """The profile's PGD with the `--pgd-*` options applied."""
    changes = {
        "steps": options.pgd_steps,
        "restarts": options.pgd_restarts,
        "step_size": options.pgd_step_size,
        "eps": options.pgd_eps,
    }
    return dataclasses.replace(profile.pgd, **{k: v for k, v in changes.items() if v is not None})


def plan_methods(
    options: RunOptions,
    protocol: Protocol,
    profile: Profile,
    names: ResolvedNames,
    data: RunData,
    build: BuildContext,
    run_dir: Path,
    given: GivenModel | None = None,
    given_detectors: dict[str, Detector] | None = None,
) -> list[MethodPlan]:
    """Each method's resolved Config, detector, training key (its network) and fit key (its fitted state).
    With a given network every method scores it (its head checked against the detector's) and nothing trains."""
    from oodbench.models.external import check_head

    in_dist, train, aux, arch = data.in_dist, data.train, data.aux, names.arch
    data_record = data.record
    init_hash = file_sha256(options.init) if options.init else None
    training_switches = {k: getattr(protocol, k) for k in TRAINING_SWITCHES}
    method_plans = []
    with_layers = [
        m for m in names.methods if "layers" in {f.name for f in dataclasses.fields(DETECTORS.get(m).Config)}
    ]
    if options.features and not with_layers:
        raise ConfigError(
            f"--features names layers for feature-based detectors that take them (e.g. mahalanobis); none of "
            f"--methods {', '.join(names.methods)} does"
        )
    for name in names.methods:
        cls = DETECTORS.get(name)
        if name in (given_detectors or {}):
            detector = given_detectors[name]
            if detector.num_classes != in_dist.num_classes:
                raise ConfigError(
                    f"detector '{name}' was built for {detector.num_classes} classes; {in_dist.name} has "
                    f"{in_dist.num_classes}"
                )
            config = detector.config
        else:
            settings = dict(options.overrides.get(name, {}))
            if options.features and "layers" in {f.name for f in dataclasses.fields(cls.Config)}:
                settings.setdefault("layers", ",".join(options.features))  # --set NAME.layers wins
            config = cls.make_config(build, settings)
            detector = cls(in_dist.num_classes, config)
        if given is not None:
            device = next((t.device for t in given.module.parameters()), torch.device("cpu"))
            probe = to_unit(data.test.images[:4]).to(device)
            check_head(given.module, probe, detector.head_size, in_dist.num_classes, name)
        recipe = cls.recipe_name()
        config_dict = dataclasses.asdict(config)
        train_key = config_hash(
            {
                "recipe": recipe,
                "config": config_dict if recipe == name else {},
                "in_dist": in_dist.name,
                "train": train.fingerprint(),
                "arch": arch,
                "head": detector.head_size,
                "aux": data_record["aux"]["fingerprint"] if (aux is not None and cls.uses_aux) else None,
                "protocol": training_switches,
                "profile": profile.name,
                "schedule": profile.schedule(in_dist.schedule),
                "seed": options.seed,
                "init": init_hash,
                "lr": options.lr,
                "version": 1,
                # a detector whose training changed bumps its own `training_version`: the other keys stay valid
                **({"training_version": cls.training_version} if cls.training_version != 1 else {}),
            }
        )
        checkpoint = Path(options.checkpoints[name]) if name in options.checkpoints else None
        if checkpoint is not None:
            payload = load_checkpoint(checkpoint)  # CheckpointError now, not after an hour of other work
            # a released-code checkpoint has no metadata: its tensors are checked against the model when loaded
            if not payload.get("released"):
                check_meta(
                    checkpoint,
                    payload["meta"],
                    {
                        "recipe": recipe,
                        "arch": arch,
                        "num_classes": in_dist.num_classes,
                        "head_size": detector.head_size,
                    },
                )
            train_key = "ckpt-" + file_sha256(checkpoint)[:16]
        if given is not None:
            train_key = "model-" + given.fingerprint[:16]
        fit_key = config_hash(
            {
                "train": train_key,
                "method": name,
                "config": config_dict,
                "tune": protocol.tune_split,
                "aux": data_record["aux"]["fingerprint"]
                if aux is not None and (cls.uses_aux or cls.tunes_on_aux)
                else None,
            }
        )
        method_plans.append(
            MethodPlan(
                name,
                detector,
                config_dict,
                recipe,
                train_key,
                fit_key,
                checkpoint,
                RunDir(run_dir).checkpoint_dir(recipe, train_key),
            )
        )
    return method_plans


def plan_cells(
    options: RunOptions,
    protocol: Protocol,
    profile: Profile,
    pgd: PGDConfig,
    names: ResolvedNames,
    data: RunData,
    method_plans: list[MethodPlan],
    run_dir: Path,
) -> list[CellPlan]:
    """The grid: one cell per (method, OOD set, threat model), keyed by everything that changes its numbers."""
    in_dist, test, ood_sets, aux_name, arch, device = (
        data.in_dist,
        data.test,
        data.ood_sets,
        data.aux_name,
        names.arch,
        names.device,
    )
    cells = []
    for method in method_plans:
        name, fit_key, config_dict = method.name, method.fit_key, method.config
        cls = DETECTORS.get(name)
        for ood_name in ood_sets:
            for threat in names.threats:
                threat_obj = THREATS.get(threat)()
                ctx = _attack_context(options, protocol, profile, pgd, device, run_dir)
                key = config_hash(
                    {
                        "fit": fit_key,
                        "ood": ood_name,
                        "ood_fp": ood_sets[ood_name].fingerprint(),
                        "threat": threat,
                        "threat_config": threat_obj.config(ctx),
                        "adaptive": protocol.adaptive,
                        "test": test.fingerprint(),
                        "seed": options.seed,
                        **({"precision": options.precision} if options.precision != "fp32" else {}),
                        **({"compile": True} if options.compile else {}),
                    }
                )
                row = {
                    "key": key,
                    "in_dist": in_dist.name,
                    "method": name,
                    "ood_set": ood_name,
                    "threat": threat,
                    "protocol": protocol.name,
                    "profile": profile.name,
                    "arch": arch,
                    "aux": aux_name if cls.uses_aux else None,
                    "seed": options.seed,
                    "settings": config_dict,
                    "threat_config": threat_obj.config(ctx),
                }
                cells.append(CellPlan(key, name, ood_name, threat, row))
    if options.only_cells is not None:
        cells = [c for c in cells if c.key in set(options.only_cells)]
    return cells


def run_record(
    options: RunOptions,
    protocol: Protocol,
    profile: Profile,
    names: ResolvedNames,
    data: RunData,
    pgd: PGDConfig,
    method_plans: list[MethodPlan],
    attacks: dict[str, Any],
) -> dict[str, Any]:
    """What run.json records of a plan: the command, resolved settings, every attack (`attack_record`), keys
    and data fingerprints."""
    return {
        "oodbench_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": dataclasses.asdict(options),
        "protocol": dataclasses.asdict(protocol),
        "profile": dataclasses.asdict(profile),
        "arch": names.arch,
        "in_dist": data.in_dist.name,
        "seed": options.seed,
        "pgd": dataclasses.asdict(pgd),
        "attacks": attacks,
        "methods": {
            m.name: {
                "recipe": m.recipe,
                "settings": m.config,
                "train_key": m.train_key,
                "fit_key": m.fit_key,
                "checkpoint": str(m.checkpoint) if m.checkpoint else None,
            }
            for m in method_plans
        },
        "data": data.record,
        "tune_split": protocol.tune_split,
    }


def _attack_context(
    options: RunOptions, protocol: Protocol, profile: Profile, pgd: PGDConfig, device, run_dir: Path
) -> AttackContext:
    cache = Path(options.cache_dir) if options.cache_dir else cache_root()
    return AttackContext(
        device=device,
        batch_size=options.batch_size or profile.batch_for(device),
        seed=options.seed,
        pgd=pgd,
        corruption_suite=protocol.corruption_suite,
        corruption_seed=options.seed,
        cache_dir=cache / "variants",
        adaptive=protocol.adaptive,
        precision=options.precision,
        apgd_steps=options.apgd_steps if options.apgd_steps is not None else profile.apgd_steps,
        apgd_restarts=options.apgd_restarts if options.apgd_restarts is not None else profile.apgd_restarts,
        square_queries=options.square_queries if options.square_queries is not None else profile.square_queries,
        progress=options.progress,
    )


def attack_record(ctx: AttackContext) -> dict[str, Any]:
    """Every attack of the run's protocol with its settings (run.json `attacks`; SPEC section 6)."""
    from attacks.diagnostics import BLACK_BOX_SLACK, EPS_SWEEP, LARGE_EPS, LARGE_EPS_MIN_FPR
    from attacks.strong import APGD_OBJECTIVES, square_config

    record: dict[str, Any] = {
        "pgd": {**dataclasses.asdict(ctx.pgd), "objective": "attack"},
        "corruption": {"suite": ctx.corruption_suite, "seed": ctx.corruption_seed, "objective": "search_score"},
        "diagnostics": {"images": ctx.diagnostics_images, "zero_grad": True, "saturation": True},
    }
    if ctx.adaptive:
        record["apgd"] = {"steps": ctx.apgd_steps, "restarts": ctx.apgd_restarts, "objectives": list(APGD_OBJECTIVES)}
        if ctx.square_queries > 0:
            record["square"] = {**dataclasses.asdict(square_config(ctx)), "objective": "score"}
        record["diagnostics"].update(
            eps_sweep=list(EPS_SWEEP),
            large_eps={"eps": LARGE_EPS, "min_fpr": LARGE_EPS_MIN_FPR},
            black_box_slack=BLACK_BOX_SLACK,
        )
    return record


IDENTITY_FIELDS = ("in_dist", "seed", "arch")


def _check_run_dir(run_dir: Path, record: dict[str, Any]) -> None:
    """A results directory holds one protocol/profile/in-dist/seed/arch: refuse to mix another into it."""
    path = RunDir(run_dir).run_json
    if not path.exists():
        return
    try:
        existing = read_json(path)
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"'{path}' is unreadable; move the directory away or pass another --out") from None
    wrong = []
    before, now = switch_values(existing.get("protocol", {})), switch_values(record["protocol"])
    if before.get("name") != now["name"]:
        wrong.append(f"protocol {before.get('name')!r} (this run: {now['name']!r})")
    elif before != now:  # same name, other switches (e.g. a switch a newer oodbench added): say which (method
        # presets by their switch names, so a run.json written before a switch became a preset still matches)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        wrong.append(
            "protocol switches "
            + ", ".join(f"{k}={before.get(k, '(absent)')!r} (this run: {now.get(k, '(absent)')!r})" for k in changed)
        )
    if existing.get("profile", {}).get("name") != record["profile"]["name"]:
        wrong.append(f"profile {existing.get('profile', {}).get('name')!r} (this run: {record['profile']['name']!r})")
    for key in IDENTITY_FIELDS:
        if existing.get(key) != record[key]:
            wrong.append(f"{key} {existing.get(key)!r} (this run: {record[key]!r})")
    if wrong:
        raise ConfigError(
            f"results directory '{run_dir}' belongs to another run: "
            + "; ".join(wrong)
            + ". Pass another --out (nothing was written)."
        )


# ----------------------------------------------------------------------------------------------------
# execution
# ----------------------------------------------------------------------------------------------------
def run(
    options: RunOptions,
    log: Callable[[str], None] = print,
    model: torch.nn.Module | None = None,
    detectors: dict[str, Detector] | None = None,
) -> Path:
    """Plan, then train what is missing, fit, score every unfinished cell; returns the run directory. The one
    path of `oodbench run` and `oodbench.evaluate` (`model`, `detectors`: see `plan_run`)."""
    plan = plan_run(options, log, model=model, detectors=detectors)
    execute(plan, log)
    return plan.run_dir


def record_run(
    plan: RunPlan, timings: dict[str, float] | None = None, method_facts: dict[str, dict[str, Any]] | None = None
) -> None:
    """Merge this process's record of `plan` (and timings, facts about methods) into the run's run.json."""
    merge_run_json(plan.run_dir, plan.record, str(plan.device), timings, method_facts)


def _relative(path: Path, root: Path) -> str:
    """`path` relative to the run directory when inside it (run directories can be moved), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def checkpoint_facts(plan: RunPlan, method: MethodPlan) -> dict[str, Any]:
    """Provenance of a method's network: checkpoint file and sha256, and what its outlier mining did."""
    path = method.checkpoint or method.checkpoint_dir / FINAL_CHECKPOINT
    facts: dict[str, Any] = {"checkpoint_file": _relative(path, plan.run_dir)}
    if path.exists():
        facts["checkpoint_sha256"] = file_sha256(path)
    mining = method.checkpoint_dir / MINING_LOG
    if mining.exists():
        log = read_json(mining)
        facts["mining"] = {
            "epochs": len(log),
            "q": log[0]["q"] if log else None,
            "n": log[0]["n"] if log else None,
            "candidates": log[0]["candidates"] if log else None,
            "with_replacement": any(entry["with_replacement"] for entry in log),
            "plot": _relative(method.checkpoint_dir / MINING_PLOT, plan.run_dir),
        }
    return facts


def execute(plan: RunPlan, log: Callable[[str], None] = print) -> None:
    """Run a plan: one direction of data flow, skipping everything already finished. Deployed scores are IEEE
    fp32 throughout (TF32 off on GPUs; SPEC section 1); only the attacks may use `--precision`."""
    with fp32_scoring(plan.device):
        _execute(plan, log)


def _execute(plan: RunPlan, log: Callable[[str], None]) -> None:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(plan.run_dir)
    if removed:
        log(f"removed {removed} partial file(s) left by a killed run")
    record_run(plan)
    ood_on_device = {name: s.images.to(plan.device) for name, s in plan.ood_sets.items()}
    cells_by_method: dict[str, list[CellPlan]] = {}
    for cell in plan.cells:
        cells_by_method.setdefault(cell.method, []).append(cell)
    models: dict[str, torch.nn.Module] = {}
    for method in plan.methods:
        method_cells = cells_by_method.get(method.name, [])
        if plan.options.only_cells is not None and not plan.options.train_only and not method_cells:
            continue  # a job restricted to other methods' cells: nothing of this one to load or train
        pending = [c for c in method_cells if not plan.layout.cell_finished(c.key)]
        if not pending and not plan.options.train_only:
            log(f"[{method.name}] all {len(method_cells)} cells finished; nothing to do")
            continue
        timings: dict[str, float] = {}
        started = time.time()
        if method.train_key not in models:
            models[method.train_key] = obtain_model(plan, method, log)
        model = models[method.train_key]
        timings[f"{method.name}/train_or_load"] = time.time() - started
        facts = {method.name: checkpoint_facts(plan, method)}
        if plan.options.train_only:
            record_run(plan, timings, facts)
            continue
        started = time.time()
        fit_detector(plan, method, model, log)
        timings[f"{method.name}/fit"] = time.time() - started
        started = time.time()
        id_record = in_distribution_scores(plan, method, model)
        timings[f"{method.name}/id_scores"] = time.time() - started
        if plan.options.attack_id:
            started = time.time()
            in_distribution_under_attack(plan, method, model, id_record, log)
            timings[f"{method.name}/id_attack"] = time.time() - started
        memo: dict = {"attack_model": maybe_compile(model, plan.options.compile)}  # shared by this detector's cells
        for cell in sorted(pending, key=lambda c: (c.ood_set, threat_order(c.threat))):
            started = time.time()
            evaluate_cell(plan, method, model, cell, id_record, ood_on_device[cell.ood_set], log, memo)
            timings[f"{method.name}/{cell.ood_set}/{cell.threat}"] = time.time() - started
        record_run(plan, timings, facts)


def obtain_model(plan: RunPlan, method: MethodPlan, log) -> torch.nn.Module:
    """The method's trained network: a given checkpoint, a finished one in the run directory, or trained now."""
    from oodbench.training import TrainingJob, build_network, train

    meta = {
        "method": method.recipe,
        "recipe": method.recipe,
        "arch": plan.arch,
        "num_classes": plan.in_dist.num_classes,
        "head_size": method.detector.head_size,
        "in_dist": plan.in_dist.name,
        "train_key": method.train_key,
        "protocol": plan.protocol.name,
        "profile": plan.profile.name,
        "seed": plan.options.seed,
        "oodbench_version": __version__,
    }
    train_set = method.detector.training_set(plan.build, plan.train)
    job = TrainingJob(
        method.detector,
        plan.build,
        train_set,
        plan.aux,
        method.checkpoint_dir,
        plan.options.seed,
        meta,
        init=Path(plan.options.init) if plan.options.init else None,
        progress=plan.options.progress,
        log=log,
        lr=plan.options.lr,
    )
    if plan.given_model is not None:
        return plan.given_model.to(plan.device).eval()
    if method.checkpoint is not None:
        model = build_network(dataclasses.replace(job, init=None))
        payload = load_checkpoint(method.checkpoint)
        state = payload["model"]
        if payload.get("released"):
            from oodbench.models.released import convert_released_state

            state = convert_released_state(state, model, str(method.checkpoint))
        model.load_state_dict(state)
        return model.to(plan.device).eval()
    with file_lock(method.checkpoint_dir / ".lock"):
        model = train(job)
    return model.eval()


def fit_detector(plan: RunPlan, method: MethodPlan, model, log) -> None:
    """Fit (or load the cached fit of) a post-hoc detector."""
    path = plan.layout.fitted_state(method.name, method.fit_key)
    detector = method.detector
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            detector.load_fitted_state(torch.load(path, map_location="cpu", weights_only=True))
            return
        tune_in, tune_aux = tuning_data(plan)
        data = FitData(
            train=plan.train,
            tune_in=tune_in,
            tune_aux=tune_aux,
            device=plan.device,
            batch_size=plan.options.batch_size or plan.profile.batch_for(plan.device),
            tune_split=plan.protocol.tune_split,
            arch=plan.arch,
            in_dist=plan.in_dist.name,
        )
        torch.manual_seed(derive_seed(plan.options.seed, "fit", method.name))
        detector.fit(model, data)
        state = detector.fitted_state()
        if state:
            from oodbench.io import atomic_path

            with atomic_path(path) as tmp:
                torch.save(state, tmp)
            info = detector.fit_info()
            if info:
                write_json(path.with_suffix(".json"), info)
                log(
                    f"[{method.name}] fitted: "
                    + ", ".join(f"{k}={v}" for k, v in info.items() if not isinstance(v, (dict, list)))
                )


def tuning_data(plan: RunPlan) -> tuple[ImageSet, ImageSet | None]:
    """1,000 in-dist images (test split or held-out training images) and 1,000 auxiliary images (SPEC 4)."""
    if plan.heldout is not None:
        tune_in = plan.heldout
    else:
        tune_in = _subsample(plan.test, TUNE_IMAGES, "tune")
    tune_aux = None
    if plan.aux is not None:
        rng = numpy_rng("tune-aux")
        count = min(TUNE_IMAGES, len(plan.aux))
        images = plan.aux.get(np.sort(rng.choice(len(plan.aux), size=count, replace=False)))
        images = center_crop(images, 32)  # ImageNet-RC: the central 32x32 crop
        tune_aux = ImageSet(images, name="tune_aux", source=plan.aux.source)
    return tune_in, tune_aux


def in_distribution_scores(plan: RunPlan, method: MethodPlan, model) -> dict[str, Any]:
    """Clean in-dist test scores and predictions, computed once per detector and cached."""
    base = plan.layout.id_scores(method.name, method.fit_key, plan.test.fingerprint())
    with file_lock(base.with_suffix(".lock")):  # several workers of one method compute them once
        return _in_distribution_scores(plan, method, model, base)


def _in_distribution_scores(plan: RunPlan, method: MethodPlan, model, base: Path) -> dict[str, Any]:
    npz = base.with_suffix(".npz")
    if npz.exists():
        with np.load(npz) as data:
            return {k: data[k] for k in data.files}
    detector = method.detector
    batch = plan.options.batch_size or plan.profile.batch_for(plan.device)
    images = plan.test.images.to(plan.device)
    model.eval()

    def score_and_predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, predictions = detector.score_and_predict(model, x)
        return scores.float().cpu(), predictions.cpu()

    scores, predictions = map_batches(score_and_predict, images, batch)
    record = {
        "scores": scores.numpy().astype(np.float32),
        "predictions": predictions.numpy().astype(np.int64),
        "labels": plan.test.labels.numpy().astype(np.int64),
    }
    metrics = id_metrics(record["scores"], record["predictions"], record["labels"], threshold=detector.fixed_threshold)
    write_npz(npz, **record)
    write_json(
        base.with_suffix(".json"),
        {"method": method.name, "in_dist": plan.in_dist.name, **metrics, "n": len(record["scores"])},
    )
    return record


def in_distribution_under_attack(plan: RunPlan, method: MethodPlan, model, id_record: dict[str, Any], log) -> float:
    """FNR of in-dist test images attacked towards OOD (`--attack-id`; SPEC section 6, `strong`), at the clean
    threshold; cached per detector and attack setting, and added to the detector's in-dist record."""
    from attacks.strong import attack_in_distribution

    ctx = _attack_context(plan.options, plan.protocol, plan.profile, plan.pgd, plan.device, plan.run_dir)
    ctx.seed = derive_seed(plan.options.seed, "in-dist")
    ctx.label = f"{method.name}/in-dist"
    setting = config_hash(
        {
            "pgd": dataclasses.asdict(plan.pgd),
            "adaptive": ctx.adaptive,
            "apgd": [ctx.apgd_steps, ctx.apgd_restarts],
            "seed": ctx.seed,
        }
    )
    base = plan.layout.id_scores(method.name, method.fit_key, plan.test.fingerprint())
    path = base.parent / f"{base.name}-attack-{setting}.npz"
    detector = method.detector
    threshold = (
        detector.fixed_threshold if detector.fixed_threshold is not None else threshold_at_tpr(id_record["scores"])
    )
    if path.exists():
        with np.load(path) as data:
            attacked = data["scores"]
    else:
        attacked = attack_in_distribution(detector, model, plan.test.images.to(plan.device), ctx).float().cpu().numpy()
        write_npz(path, scores=attacked.astype(np.float32))
    fnr = 100.0 * float(np.mean(attacked <= threshold))
    with file_lock(base.with_suffix(".lock")):
        record = read_json(base.with_suffix(".json"))
        record.update(fnr_under_attack=fnr, id_attack_setting=setting)
        write_json(base.with_suffix(".json"), record)
    clean_fnr = 100.0 * float(np.mean(id_record["scores"] <= threshold))
    log(f"[{method.name}] in-dist under attack: FNR {fnr:.2f} % (clean {clean_fnr:.2f} %)")
    return fnr


def threat_in_distribution_scores(plan: RunPlan, method: MethodPlan, model, threat, memo: dict | None):
    """The in-dist test scores under `threat` (float32 numpy), or None when it attacks OOD inputs only; computed
    once per detector and threat model (its seed does not depend on the OOD set) and shared through `memo`."""
    key = ("in-distribution under", threat.name)
    if memo is not None and key in memo:
        return memo[key]
    ctx = _attack_context(plan.options, plan.protocol, plan.profile, plan.pgd, plan.device, plan.run_dir)
    ctx.seed = derive_seed(plan.options.seed, "in-dist", threat.name)
    ctx.label = f"{method.name}/in-dist"
    if memo is not None:
        ctx.memo = memo
        ctx.attack_model = memo.get("attack_model")
    scores = threat.in_distribution_scores(method.detector, model, plan.test.images.to(plan.device), ctx)
    result = None if scores is None else scores.float().cpu().numpy()
    if memo is not None:
        memo[key] = result
    return result


def evaluate_cell(
    plan: RunPlan,
    method: MethodPlan,
    model,
    cell: CellPlan,
    id_record: dict[str, Any],
    images: torch.Tensor,
    log,
    memo: dict | None = None,
) -> dict[str, Any]:
    """Score one OOD set under one threat model and write its per-sample scores and metrics row."""
    started = time.time()
    threat = THREATS.get(cell.threat)()
    ctx = _attack_context(plan.options, plan.protocol, plan.profile, plan.pgd, plan.device, plan.run_dir)
    ctx.seed = derive_seed(plan.options.seed, cell.ood_set, cell.threat)
    ctx.label = f"{method.name}/{cell.ood_set}"
    if memo is not None:
        ctx.memo = memo
        ctx.attack_model = memo.get("attack_model")
    ctx.per_attack = {} if ctx.adaptive else None  # the worst case's per-attack scores, for the diagnostics
    ood_scores = threat.scores(method.detector, model, images, ctx).float().cpu().numpy()
    crash_point(f"attack:{cell.threat}")
    detector = method.detector
    attacked_id = threat_in_distribution_scores(plan, method, model, threat, memo)
    id_scores = id_record["scores"] if attacked_id is None else attacked_id
    threshold = detector.fixed_threshold if detector.fixed_threshold is not None else threshold_at_tpr(id_scores)
    metrics = ood_metrics(id_scores, ood_scores, threshold=detector.fixed_threshold)
    id_part = id_metrics(
        id_record["scores"], id_record["predictions"], id_record["labels"], threshold=detector.fixed_threshold
    )
    checks = cell_diagnostics(threat, detector, model, images, ood_scores, id_scores, threshold, ctx, ctx.per_attack)
    row = {
        **cell.row,
        **metrics,
        **{k: id_part[k] for k in ("id_accuracy", "fnr", "e2e_accuracy")},
        "threshold": threshold,
        "id_attacked": attacked_id is not None,
        **checks,
        "n_id": int(len(id_record["scores"])),
        "n_ood": int(len(ood_scores)),
        "seconds": round(time.time() - started, 3),
        "device": str(plan.device),
    }
    extra = {} if attacked_id is None else {"id_scores": attacked_id.astype(np.float32)}
    write_npz(plan.layout.cell_scores(cell.key), ood_scores=ood_scores.astype(np.float32), **extra)
    crash_point(f"write:{cell.threat}")
    write_json(plan.layout.cell_row(cell.key), row)
    log(
        f"[{method.name}] {cell.ood_set:>14s} {cell.threat:<10s} "
        f"FPR {metrics['fpr']:6.2f}  AUROC {metrics['auroc']:6.2f}  ({row['seconds']:.1f} s)"
        + (f"  flags: {', '.join(row['flags'])}" if row["flags"] else "")
    )
    return row
