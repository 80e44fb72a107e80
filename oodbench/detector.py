"""The detector interface (DESIGN "Core interfaces"; SPEC section 4).

A detector is a scoring rule on top of a trained network, plus (for training-based methods) the recipe
that trains that network. Scores follow one convention: **higher = more in-distribution**.

- `score(model, x)`: the deployed score, float32 [B]; may be non-differentiable (ROWL's decision,
  ODIN's and Mahalanobis' gradient-based input preprocessing).
- `search_score(model, x)`: the continuous score the black-box corruption search maximises
  (defaults to `score`).
- `attack_objective(model, x)`: differentiable [B], maximised by the white-box attacks (the paper's
  eqs. 68-71). Attacks see only this, never the method's name.
- `adaptive_objective(model, x)`: the deployed score made differentiable end to end, used by the
  `strong` protocol (defaults to `attack_objective`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from oodbench.errors import NotFittedError

if TYPE_CHECKING:
    from oodbench.data.base import AuxPool, ImageSet, InDistribution

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class Stage:
    """One training stage: a fresh SGD optimiser running `epochs` epochs (SPEC section 3).

    `outliers`: "none" (in-dist only), "uniform" (a fresh random draw of auxiliary images each epoch), or
    "mined" (informative outlier mining, SPEC section 5, with the stage's `mining` settings). `loss(model, x_in,
    y_in, x_out)` returns the scalar training loss of one batch (x_out is None without outliers).
    """

    name: str
    epochs: int
    milestones: tuple[int, ...]
    in_batch: int
    loss: Loss
    out_batch: int = 0
    outliers: str = "none"
    lr: float = 0.1
    mining: Mining | None = None  # with outliers="mined"


@dataclass(frozen=True)
class Mining:
    """Informative outlier mining of one stage (Algorithm 1, SPEC section 5): every epoch, score N candidates drawn
    from the auxiliary pool and keep the n after the q-quantile by OOD score (`oodbench.mining.mine_outliers`)."""

    q: float = 0.0
    n: int | None = None  # outliers per epoch (None: 2 |train|)
    candidates: int | None = None  # N (None: 4 n)


@dataclass
class FitData:
    """What post-hoc fitting may look at (SPEC section 4, 'Tuning data')."""

    train: ImageSet  # in-dist training images, no augmentation
    tune_in: ImageSet  # 1,000 in-dist images: test split (paper, atom-code) or held-out train (--tune-split heldout)
    tune_aux: ImageSet | None  # 1,000 auxiliary images (ODIN's magnitude tuning)
    device: torch.device
    batch_size: int = 256
    tune_split: str = "test"
    arch: str = ""
    in_dist: str = ""


@dataclass
class BuildContext:
    """What a detector needs to know to build its model and training stages."""

    in_dist: InDistribution
    arch: str
    protocol: Any  # oodbench.config.Protocol
    profile: Any  # oodbench.config.Profile
    aux: AuxPool | None = None
    device: torch.device = torch.device("cpu")


class TrainingRecipe:
    """How a detector's network is built and trained (SPEC section 3): its stages, outlier streams and hooks.
    The training loop (`oodbench.training`) sees a detector only through these members."""

    #: which trained network it scores: "vanilla" for the post-hoc methods (MSP, ODIN, Mahalanobis share it)
    recipe: ClassVar[str] = ""
    #: head size = K + extra_outputs
    extra_outputs: ClassVar[int] = 0
    #: trains with auxiliary outliers (the run then needs an auxiliary pool)
    uses_aux: ClassVar[bool] = False
    num_classes: int
    #: bumped when the training recipe changes, so that checkpoints trained by the old one are not reused
    training_version: ClassVar[int] = 1

    #: the members a training recipe overrides; a detector overriding none of them trains like the vanilla network
    RECIPE_MEMBERS: ClassVar[tuple[str, ...]] = (
        "build_model",
        "stages",
        "initialise",
        "training_set",
        "param_groups",
        "after_step",
        "loss",
    )

    @classmethod
    def recipe_name(cls) -> str:
        """Which trained network the detector scores: its declared `recipe`, "vanilla" when it changes nothing of
        the training (a post-hoc detector, e.g. one defining only `score` and `attack_objective`), else its name."""
        if cls.recipe:
            return cls.recipe
        changed = any(
            getattr(cls, member, None) is not getattr(TrainingRecipe, member, None) for member in cls.RECIPE_MEMBERS
        )
        return cls.name if (changed or cls.extra_outputs or cls.uses_aux) else "vanilla"

    def build_model(self, ctx: BuildContext, base: nn.Module) -> nn.Module:
        """The network trained and checkpointed for this method (CCU wraps `base` with its mixtures)."""
        return base

    def stages(self, ctx: BuildContext) -> list[Stage]:
        """The training recipe. The default is vanilla cross-entropy (SPEC section 4: batch 64)."""
        epochs, milestones = ctx.profile.schedule(ctx.in_dist.schedule)
        return [Stage("vanilla", epochs, milestones, in_batch=64, loss=vanilla_loss)]

    def initialise(
        self, model: nn.Module, ctx: BuildContext, train: ImageSet, aux: AuxPool | None, device: torch.device
    ) -> None:
        """Called once before the first epoch of a fresh training run (CCU fits its mixtures here)."""

    def training_warnings(self, ctx: BuildContext, train: ImageSet) -> list[str]:
        """What the user should know before this recipe trains on `train` (logged, nothing stops): e.g. CCU's
        pixel-space mixtures on fewer images than pixels."""
        return []

    def training_set(self, ctx: BuildContext, train: ImageSet) -> ImageSet:
        """The in-dist training set as the recipe sees it (ROWL adds its fixed outlier class)."""
        return train

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """Optimiser parameter groups (CCU gives its mixture parameters their own learning rate)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (CCU clamps its out-distribution variance)."""

    def mining_score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The OOD score used by informative outlier mining (higher = more OOD): softmax_{K+1}."""
        return F.softmax(model(x), dim=1)[:, self.num_classes]


#: the members that score or attack inputs: a detector that needs a fit refuses them until it is fitted
SCORING_MEMBERS = (
    "score",
    "score_and_predict",
    "search_score",
    "attack_objective",
    "adaptive_objective",
    "margin_objective",
)


class PostHocFit:
    """What a detector fits on a trained network before scoring (SPEC section 4, "Tuning data"), and the fitted
    state the runner saves (`torch.save`) and restores (`torch.load(weights_only=True)`).

    A detector that overrides `fit` needs it (`needs_fit`, set automatically; a class whose fit is optional sets
    it False): until `fit` or `load_fitted_state` has run (`is_fitted`), its scoring members (`SCORING_MEMBERS`)
    raise `NotFittedError` instead of scoring with unfitted defaults (DESIGN: "refuses to score before fitting").
    Subclasses get this without writing it: `__init_subclass__` wraps their members."""

    #: tunes post-hoc parameters on auxiliary images (ODIN's magnitude)
    tunes_on_aux: ClassVar[bool] = False
    #: scoring needs `fit` (or `load_fitted_state`) first; default: whether the class overrides `fit`
    needs_fit: ClassVar[bool] = False
    _fitted: bool = False  # set by the (wrapped) fit / load_fitted_state of the instance
    _fitting: bool = False  # inside them

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "needs_fit" not in cls.__dict__:
            cls.needs_fit = cls.fit is not PostHocFit.fit
        for name in ("fit", "load_fitted_state"):
            if name in cls.__dict__:
                setattr(cls, name, _marks_fitted(cls.__dict__[name]))
        if cls.needs_fit:
            for name in SCORING_MEMBERS:
                member = getattr(cls, name, None)
                if member is not None and not getattr(member, "refuses_unfitted", False):
                    setattr(cls, name, _refuses_unfitted(member))

    def is_fitted(self) -> bool:
        """Whether the detector may score: it needs no fit, or `fit` / `load_fitted_state` has run. Detectors may
        read it off their fitted state instead (ODIN: a magnitude, tuned or fixed by its Config)."""
        return not self.needs_fit or self._fitted

    def fit(self, model: nn.Module, data: FitData) -> None:
        """Fit post-hoc parameters (ODIN magnitude, Mahalanobis statistics). Default: nothing to fit."""

    def fitted_state(self) -> dict[str, Any]:
        """Fitted parameters as tensors / numbers (saved with `torch.save`, loaded with weights_only)."""
        return {}

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore what `fitted_state` returned."""

    def fit_info(self) -> dict[str, Any]:
        """Human-readable facts about the fit for run metadata (e.g. the chosen magnitude)."""
        return {}


def _marks_fitted(method: Callable) -> Callable:
    """`fit` / `load_fitted_state` that mark the instance fitted when they return; while they run, the detector
    may score (a fit that tunes a parameter on its own scores)."""

    @functools.wraps(method)
    def marking(self, *args: Any, **kwargs: Any) -> Any:
        outer, self._fitting = self._fitting, True
        try:
            result = method(self, *args, **kwargs)
        finally:
            self._fitting = outer
        self._fitted = True
        return result

    return marking


def _refuses_unfitted(method: Callable) -> Callable:
    """A scoring member that raises `NotFittedError` while its detector `is_fitted()` is False."""

    @functools.wraps(method)
    def checked(self, *args: Any, **kwargs: Any) -> Any:
        if not (self._fitting or self.is_fitted()):
            raise NotFittedError(
                f"{self.name or type(self).__name__} is not fitted: call fit(model, data) or "
                f"load_fitted_state(state) before {method.__name__} (`oodbench run` fits it on the training and "
                "tuning data)"
            )
        return method(self, *args, **kwargs)

    checked.refuses_unfitted = True
    return checked


class ScoringRule:
    """How a detector scores inputs (higher = more in-distribution) and what the attacks maximise (module
    docstring). The threat models see a detector only through these members."""

    #: a fixed acceptance threshold (ROWL's binary decision, SPEC section 1); None = 95 % TPR on in-dist
    fixed_threshold: ClassVar[float | None] = None
    #: the float32 range of the deployed score (lowest = most OOD), e.g. (-1, 0) for -P(OOD); None: unbounded.
    #: The attack diagnostics report the share of OOD scores stuck at a bound (saturated: no gradient signal)
    score_bounds: ClassVar[tuple[float, float] | None] = None
    name: ClassVar[str] = ""
    num_classes: int
    extra_outputs: ClassVar[int] = 0

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The score of a detector whose score is a function of the logits."""
        raise NotImplementedError(f"{self.name}: implement score_logits or score")

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Class prediction: argmax over the first K outputs (paper eq. 3)."""
        return logits[:, : self.num_classes].argmax(dim=1)

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Deployed score [B], higher = more in-distribution."""
        with torch.no_grad():
            return self.score_logits(model(x))

    def score_and_predict(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deployed score and class prediction of a batch (one forward pass where possible)."""
        with torch.no_grad():
            logits = model(x)
            return self.score_logits(logits), self.predict_logits(logits)

    def search_score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Continuous score for the black-box corruption search (default: the deployed score)."""
        return self.score(model, x)

    def attack_objective(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Differentiable objective [B] that white-box attacks maximise (paper eqs. 68-71)."""
        raise NotImplementedError(f"{self.name}: implement attack_objective")

    def adaptive_objective(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The deployed score made differentiable end to end (`strong` protocol); default: attack_objective."""
        return self.attack_objective(model, x)

    def margin_objective(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A second, margin-style objective for the `strong` protocol: the largest in-dist logit minus the
        largest other logit (the method's extra outputs for K+R heads; the runner-up class for K-way heads,
        whose growth raises the max softmax, unlike the mean-logit gap of eq. 68)."""
        logits = model(x)
        if self.extra_outputs:
            return logits[:, : self.num_classes].max(dim=1).values - logits[:, self.num_classes :].max(dim=1).values
        top2 = logits[:, : self.num_classes].topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]


class Detector(ScoringRule, PostHocFit, TrainingRecipe):
    """Base class: a scoring rule, its post-hoc fit and its training recipe, with one Config. Subclasses set the
    class attributes and override what differs (see module docstring)."""

    #: set by `@register_detector(name)` (never written by hand)
    name: ClassVar[str] = ""
    #: position in tables and in `--methods all` (the paper's Table 1); unset: after the paper's, by file name
    order: ClassVar[float] = 1000.0
    #: hyper-parameters with the paper's defaults; `--set name.field=value` overrides them
    Config: ClassVar[type] = dataclass(type("Config", (), {}))

    def __init__(self, num_classes: int, config: Any = None):
        self.num_classes = num_classes
        self.config = config if config is not None else self.Config()

    @classmethod
    def make_config(cls, ctx: BuildContext | None = None, overrides: dict[str, Any] | None = None) -> Any:
        """The method's Config: its defaults, then the protocol's presets for it (`Protocol.method_settings`),
        then `overrides` (`--set`), then the data-set-dependent defaults still unset (`resolve_defaults`)."""
        config = cls.Config()
        fields = {f.name: f for f in dataclasses.fields(config)}
        presets = ctx.protocol.settings_for(cls.name) if ctx is not None and ctx.protocol is not None else {}
        for key, value in [*presets.items(), *(overrides or {}).items()]:
            if key not in fields:
                from oodbench.errors import ConfigError

                raise ConfigError(f"{cls.name} has no setting '{key}' (settings: {', '.join(fields) or 'none'})")
            try:
                coerced = _coerce(value, fields[key].type)
            except ValueError:
                from oodbench.errors import ConfigError

                raise ConfigError(
                    f"--set {cls.name}.{key}={value}: not a value of type {fields[key].type} (the setting's default: "
                    f"{getattr(cls.Config(), key)!r})"
                ) from None
            config = dataclasses.replace(config, **{key: coerced})
        if ctx is not None:
            config = cls.resolve_defaults(config, ctx)
        return config

    @classmethod
    def resolve_defaults(cls, config: Any, ctx: BuildContext) -> Any:
        """Fill data-set- or protocol-dependent defaults (e.g. ATOM's q per data set)."""
        return config

    @property
    def head_size(self) -> int:
        return self.num_classes + self.extra_outputs


# ----- losses shared by several detectors --------------------------------------------------------------
def vanilla_loss(model: nn.Module, x_in: torch.Tensor, y_in: torch.Tensor, x_out: torch.Tensor | None) -> torch.Tensor:
    """Plain cross-entropy on in-distribution data."""
    return F.cross_entropy(model(x_in), y_in)


def oe_loss(logits: torch.Tensor) -> torch.Tensor:
    """Outlier Exposure loss per sample: cross-entropy to the uniform distribution,
    mean_i -log softmax_i = logsumexp(z) - mean(z) (Hendrycks et al. 2019). This is also the paper's eq. 68."""
    return torch.logsumexp(logits, dim=1) - logits.mean(dim=1)


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability over the first K outputs' softmax (float32)."""
    return F.softmax(logits.float(), dim=1).max(dim=1).values


def _coerce(value: Any, annotation: Any) -> Any:
    """Convert a command-line string to the field's type (int, float, bool, str, tuple of numbers or of names,
    comma-separated: `--set mahalanobis.layers=layer1,layer2`; "none" for an optional field)."""
    if not isinstance(value, str):
        return value
    text = str(annotation)
    if "bool" in text:
        return value.lower() in ("1", "true", "yes", "on")
    if "tuple[str" in text:
        if "None" in text and value.lower() == "none":
            return None
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if "tuple" in text:
        return tuple(float(v) if "." in v else int(v) for v in value.split(",") if v)
    if text.startswith("int") or text == "<class 'int'>":
        return int(value)
    if "float" in text:
        return None if value.lower() == "none" else float(value)
    if "int" in text:
        return None if value.lower() == "none" else int(value)
    return value
