"""Protocols and profiles: named presets over the switches and sizes of a run (SPEC preamble, DESIGN).

- A **protocol** says *what* is computed: `paper` (the paper as written), `atom-code` (parity with the
  released code, for cell-by-cell comparison with the published numbers) and `strong` (the paper's
  protocol with adaptive attacks). Each switch stays settable on its own.
- A **profile** says *at what scale*: `paper` (full data, 100 epochs, DenseNet-BC-100) or `smoke` (a tiny
  CNN, a few epochs, a few hundred OOD images: minutes on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from attacks.pgd import PGDConfig
from oodbench.errors import UnknownNameError


@dataclass(frozen=True)
class Protocol:
    """The switches where the paper, the released code and a stronger evaluation differ: those of the training
    loop, the threat models and the tuning split here, and those of a method as presets of its Config
    (`method_settings`: method -> Config field -> value, applied before the per-data-set defaults and `--set`)."""

    name: str
    aux_sampling: str = "uniform"  # "uniform" (paper) | "contiguous" (atom-code: a block from a random offset)
    corruption_suite: str = "cifar-c-15"  # 75 variants (paper) | "cifar-c-19": 95 (atom-code)
    densenet_init: str = "standard"  # "standard" | "atom-code" (every conv std sqrt(2/16))
    adaptive: bool = False  # strong: APGD + restarts + deployed-score objectives, worst case per sample
    tune_split: str = "test"  # "test": the paper's 1,000 in-dist test images | "heldout": training images
    method_settings: dict = field(default_factory=dict)

    def replace(self, **changes) -> Protocol:
        return dataclasses.replace(self, **changes)

    def settings_for(self, method: str) -> dict:
        """The Config fields this protocol presets for `method`."""
        return dict(self.method_settings.get(method, {}))

    def architecture_options(self) -> dict:
        """Options for the architectures that declare them (`register_arch(..., options=(...))`)."""
        return {"init": self.densenet_init}


PROTOCOLS = {
    "paper": Protocol("paper"),
    "atom-code": Protocol(
        "atom-code",
        aux_sampling="contiguous",
        corruption_suite="cifar-c-19",
        densenet_init="atom-code",
        method_settings={
            "odin": {"magnitude_source": "published"},
            "ccu": {"base_msp": True, "out_fit": "first"},
            "mahalanobis": {"regression": "released"},
            "rowl": {"train_attack": "released"},
        },
    ),
    "strong": Protocol("strong", adaptive=True),
}

#: the protocol switches that are method settings: `--switch KEY=VALUE` sets them, as
#: (method, Config field, {switch value: field value}); the first value is the method's default (the paper's)
METHOD_SWITCHES = {
    "odin_magnitude": ("odin", "magnitude_source", {"tuned": "tuned", "published": "published"}),
    "ccu_score": ("ccu", "base_msp", {"dr": False, "base_msp": True}),
    "ccu_out_fit": ("ccu", "out_fit", {"uniform": "uniform", "first": "first"}),
    "mahalanobis_regression": ("mahalanobis", "regression", {"converged": "converged", "released": "released"}),
    "rowl_train_attack": ("rowl", "train_attack", {"pgd": "pgd", "released": "released"}),
}

#: protocol switches that change training (part of the checkpoint key); the rest only change evaluation
TRAINING_SWITCHES = ("aux_sampling", "densenet_init")


@dataclass(frozen=True)
class Profile:
    """Scale of a run. `schedules` maps an in-dist schedule kind to (epochs, lr milestones)."""

    name: str
    default_arch: str
    schedules: dict = field(default_factory=dict)
    checkpoint_every: dict = field(default_factory=dict)
    max_train: int | None = None  # in-dist training images (None: all)
    max_id_test: int | None = None
    max_ood: int | None = None  # images per OOD test set
    mining_candidates_cap: int | None = None  # caps N (None: N = 4n as in the paper)
    gmm_components: int = 100  # CCU's mixtures
    eval_batch: int = 500  # evaluation / attack batch on an accelerator
    eval_batch_cpu: int = 32  # on CPU, small batches stay in cache: 2-2.4x the throughput of 256 (oodbench bench)
    pgd: PGDConfig = PGDConfig()
    train_pgd: PGDConfig = PGDConfig(steps=5, step_size=2 / 255)
    apgd_steps: int = 100  # `strong` protocol: APGD iterations and restarts per objective (SPEC section 6)
    apgd_restarts: int = 5
    square_queries: int = 5000  # `strong` protocol: Square attack queries per image (SPEC section 6: 5,000)

    def schedule(self, kind: str) -> tuple[int, tuple[int, ...]]:
        """(epochs, milestones) for an in-dist schedule kind ("cifar" or "svhn")."""
        return self.schedules[kind]

    def batch_for(self, device) -> int:
        """The evaluation batch size for a device ("cpu" or an accelerator)."""
        return self.eval_batch_cpu if str(device).startswith("cpu") else self.eval_batch

    def with_epochs(self, epochs: int) -> Profile:
        """The same profile with every schedule shortened or stretched to `epochs`, milestones at the paper's
        fractions (50 %, 75 %, 90 %)."""
        if epochs < 1:
            raise ValueError("epochs must be >= 1")
        milestones = tuple(
            sorted({m for m in (round(epochs * 0.5), round(epochs * 0.75), round(epochs * 0.9)) if 0 < m < epochs})
        )
        return dataclasses.replace(self, schedules={k: (epochs, milestones) for k in self.schedules})


PROFILES = {
    "paper": Profile(
        "paper",
        default_arch="densenet100",
        schedules={"cifar": (100, (50, 75, 90)), "svhn": (20, (10, 15, 18))},
        checkpoint_every={"cifar": 10, "svhn": 2},
    ),
    "smoke": Profile(
        "smoke",
        default_arch="small_cnn",
        schedules={"cifar": (6, (3, 4, 5)), "svhn": (6, (3, 4, 5))},
        checkpoint_every={"cifar": 2, "svhn": 2},
        max_train=None,
        max_id_test=None,
        max_ood=100,
        gmm_components=20,
        eval_batch=256,
        apgd_steps=25,
        apgd_restarts=1,
        square_queries=300,
    ),
}


#: what each switch changes, for `oodbench table --show protocol` and `oodbench list` (SPEC sections 3-6)
SWITCH_MEANINGS = {
    "aux_sampling": "auxiliary stream per epoch (SPEC 3)",
    "corruption_suite": "corruption types of the corruption attack (SPEC 6)",
    "odin_magnitude": "ODIN's preprocessing magnitude (SPEC 4)",
    "ccu_score": "what CCU scores (SPEC 4)",
    "ccu_out_fit": "auxiliary images CCU's out-mixture is fitted on (SPEC 4)",
    "mahalanobis_regression": "Mahalanobis' LogisticRegressionCV settings (SPEC 4)",
    "densenet_init": "DenseNet conv init: standard He | atom-code N(0, 2/16), the released scoping quirk (SPEC 3)",
    "rowl_train_attack": "ROWL's training attack: pgd | released (clean images, the released bug) (SPEC 4)",
    "adaptive": "strong attacks: APGD, restarts, deployed-score objectives (SPEC 6)",
    "tune_split": "tuning images of ODIN and Mahalanobis (SPEC 4)",
}


def method_switch_values(method_settings: dict) -> dict[str, object]:
    """The value of each of `METHOD_SWITCHES` under a protocol's method presets (the method's default where
    the protocol presets nothing); a preset value no switch names is shown as is."""
    values = {}
    for key, (method, setting, mapping) in METHOD_SWITCHES.items():
        preset = (method_settings or {}).get(method, {})
        if setting not in preset:
            values[key] = next(iter(mapping))
            continue
        names = [name for name, value in mapping.items() if value == preset[setting]]
        values[key] = names[0] if names else preset[setting]
    return values


def switch_values(recorded: dict) -> dict[str, object]:
    """Every switch of a protocol (as `dataclasses.asdict` or run.json records it) by its `--switch` name: the
    protocol's own fields, then its method presets under their `METHOD_SWITCHES` names."""
    values = {k: v for k, v in recorded.items() if k != "method_settings"}
    for key, value in method_switch_values(recorded.get("method_settings", {})).items():
        values.setdefault(key, value)  # a run.json from when the switch was a protocol field keeps its value
    return values


def protocol_lines(switches: dict) -> list[str]:
    """One line per protocol switch of a run's recorded protocol: value, meaning, and the `paper` value where
    it differs (so e.g. the DenseNet init quirk of `atom-code` is named, not hidden in a dict). Method presets
    are shown by their switch names (`METHOD_SWITCHES`)."""
    paper = switch_values(dataclasses.asdict(PROTOCOLS["paper"]))
    shown = switch_values(switches)
    lines = [f"protocol.name = {shown.get('name')}"]
    for key, value in shown.items():
        if key == "name":
            continue
        differs = f"  [paper: {paper[key]}]" if key in paper and paper[key] != value else ""
        meaning = f"  # {SWITCH_MEANINGS[key]}" if key in SWITCH_MEANINGS else ""
        lines.append(f"protocol.{key} = {value}{differs}{meaning}")
    return lines


#: the values each protocol switch takes (`--switch KEY=VALUE` is checked against them while planning)
SWITCH_CHOICES = {
    "aux_sampling": ("uniform", "contiguous"),
    "corruption_suite": ("cifar-c-15", "cifar-c-19", "imagenet-c"),
    "densenet_init": ("standard", "atom-code"),
    "tune_split": ("test", "heldout"),
}


def get_protocol(name: str) -> Protocol:
    """The named protocol preset, or a did-you-mean error."""
    if name not in PROTOCOLS:
        raise UnknownNameError(_unknown("protocol", name, PROTOCOLS))
    return PROTOCOLS[name]


def get_profile(name: str) -> Profile:
    """The named profile preset, or a did-you-mean error."""
    if name not in PROFILES:
        raise UnknownNameError(_unknown("profile", name, PROFILES))
    return PROFILES[name]


def _unknown(kind: str, name: str, known: dict) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} '{name}'{hint} (known: {', '.join(known)})"
