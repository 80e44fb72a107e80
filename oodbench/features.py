"""Penultimate features of any `nn.Module` with a final linear head, and the outputs of any named submodules,
captured by forward hooks (DESIGN "Bring your own model": feature-based detectors never require a model method).

The post-hoc detectors beyond the paper (SPEC section 4: KNN, ViM, ReAct, ASH) score the input of the network's
final `nn.Linear`, the penultimate feature vector h(x), and some re-apply the head to modified features
(ReAct's clipped, ASH's pruned activations): `head(h')` gives their logits. The head is found, not named: the
last `nn.Linear` registered in the module tree, checked to produce the model's output on every forward pass
(so a linear layer that is not the classifier is never silently taken for it).

`FeatureDetector` is the detector base for scores that are a function of (logits, features, head); its deployed
score and its attack objective are one function, with and without the autograd graph, so a white-box attack on
it is adaptive (it attacks exactly what is deployed).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from oodbench.detector import Detector
from oodbench.errors import FeatureError

if TYPE_CHECKING:
    from oodbench.detector import FitData


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """(qualified name, module) of the model's final linear classifier: the last `nn.Linear` in registration
    order (DenseNet/WRN/small_cnn `fc`, ResNet `linear`, timm's classifier inside its wrapper)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise FeatureError(
            f"{type(model).__name__} has no nn.Linear layer: the feature-based detectors (KNN, ViM, ReAct, ASH) "
            "score the input of the model's final linear classifier; use a model whose logits come from an "
            "nn.Linear head, or a logit-based detector (msp, energy, maxlogit, gen)"
        )
    return found[-1]


@contextmanager
def _capture(head: nn.Linear) -> Iterator[dict]:
    """Record the head's input and output of the next forward pass (hook removed on exit)."""
    seen: dict = {}

    def hook(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["features"], seen["logits"] = inputs[0], output

    handle = head.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def penultimate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    """(logits [B, C], penultimate features [B, D], head) of one forward pass of `model` on `x`.

    The features keep the autograd graph of the caller's mode (under `torch.no_grad` they have none), so
    `head(f(features))` is differentiable in `x`. A `FeatureError` when the head does not produce the output."""
    # a torch.compile'd model (--compile) runs uncompiled here: its compiled graph would not see a hook added
    # after compilation (dynamo skips hook guards by default)
    model = getattr(model, "_orig_mod", model)
    name, head = find_head(model)
    with _capture(head) as seen:
        logits = model(x)
    if "features" not in seen:
        raise FeatureError(f"the last nn.Linear of {type(model).__name__} ('{name}') was not called in its forward")
    features = seen["features"]
    if seen["logits"] is not logits and (
        seen["logits"].shape != logits.shape or not torch.equal(seen["logits"], logits)
    ):
        raise FeatureError(
            f"the last nn.Linear of {type(model).__name__} ('{name}') does not produce the model's output, so it is "
            "not the classifier head the feature-based detectors need (its input would not be the penultimate "
            "feature); register the classifier as the model's last nn.Linear"
        )
    if features.ndim != 2:
        raise FeatureError(
            f"the head '{name}' of {type(model).__name__} takes {features.ndim}-d input {tuple(features.shape)}; "
            "the feature-based detectors need [B, D] pooled features"
        )
    return logits, features, head


def find_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The submodules of `model` called `names` (qualified names as in `model.named_modules()`, e.g. "layer1" or
    "stages.2"), in that order; a `FeatureError` naming close matches and some of the available names otherwise."""
    model = getattr(model, "_orig_mod", model)
    modules = {name: module for name, module in model.named_modules() if name}
    unknown = [name for name in names if name not in modules]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(modules), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(list(modules)[:12]) or "none"
        if len(modules) > 12:
            shown += f", ... and {len(modules) - 12} more (all: [name for name, _ in model.named_modules()])"
        raise FeatureError(
            f"{type(model).__name__} has no submodule {', '.join(repr(n) for n in unknown)}{hint} "
            f"(its modules: {shown})"
        )
    return [modules[name] for name in names]


def named_outputs(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    """The outputs of the submodules `names` (see `find_modules`) in one forward pass of `model` on `x`.

    Each output is cloned in its hook, so it is the module's own output even when a later in-place operation
    (`ReLU(inplace=True)`) rewrites that tensor, and it keeps the autograd graph of the caller's mode (gradients
    flow to `x` outside `torch.no_grad`). Hooks are removed on exit, also on errors. A `FeatureError` for a module
    that is not called exactly once per forward, or whose output is not a tensor."""
    model = getattr(model, "_orig_mod", model)  # as in `penultimate`: a compiled graph would not see the hooks
    modules = find_modules(model, names)
    seen: dict[int, list] = {i: [] for i in range(len(names))}
    handles = []
    try:
        for i, module in enumerate(modules):

            def hook(_module: nn.Module, _inputs: tuple, output, i: int = i) -> None:
                seen[i].append(output.clone() if isinstance(output, torch.Tensor) else output)

            handles.append(module.register_forward_hook(hook))
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    outputs = []
    for i, name in enumerate(names):
        if len(seen[i]) != 1:
            raise FeatureError(
                f"the submodule '{name}' of {type(model).__name__} ran {len(seen[i])} times in one forward pass; "
                "name a module that runs exactly once (a module reused in several places, such as one shared "
                "ReLU, has no single output: name its parent block instead)"
            )
        if not isinstance(seen[i][0], torch.Tensor):
            raise FeatureError(
                f"the submodule '{name}' of {type(model).__name__} returns {type(seen[i][0]).__name__}, not a "
                "tensor; name a module whose output is one tensor"
            )
        outputs.append(seen[i][0])
    return outputs


def training_features(
    model: nn.Module, data: FitData, max_images: int | None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features [N, D], logits [N, C]) float32 on the CPU of the in-dist training images (no augmentation), and
    the size of the training set. At most `max_images` (a fixed random subset, the same for every detector of a
    run) keeps memory bounded: N x D x 4 bytes."""
    images = data.train.images
    total = len(images)
    index = None
    if max_images is not None and total > max_images:
        rng = np.random.default_rng(seed)
        index = torch.as_tensor(np.sort(rng.permutation(total)[:max_images]), dtype=torch.long)
    count = total if index is None else len(index)
    feats, logits = [], []
    with torch.no_grad():
        for start in range(0, count, data.batch_size):
            batch = (
                images[start : start + data.batch_size]
                if index is None
                else images[index[start : start + data.batch_size]]
            )
            z, f, _ = penultimate(model, batch.to(data.device).float() / 255.0)
            feats.append(f.float().cpu())
            logits.append(z.float().cpu())
    return torch.cat(feats), torch.cat(logits), total


class FeatureDetector(Detector):
    """A post-hoc detector on the vanilla network whose score is `score_features(logits, features, head)`.

    Subclasses implement `score_features` (differentiable almost everywhere) and, where they fit something, `fit`
    (and `is_fitted` read off their state); the deployed `score` and the `attack_objective` are the same function,
    so the paper's L-inf attack on it is adaptive. Class predictions are the unmodified network's (argmax of its
    logits)."""

    recipe = "vanilla"

    def score_features(self, logits: torch.Tensor, features: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        """[B] score, higher = more in-distribution."""
        raise NotImplementedError(f"{self.name}: implement score_features")

    def _scores_and_logits(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # a detector that fits (KNN, ViM, ReAct) refuses to score unfitted: `PostHocFit` wraps the public members
        logits, features, head = penultimate(model, x)
        return self.score_features(logits, features, head).float(), logits

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._scores_and_logits(model, x)[0]

    def score_and_predict(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            scores, logits = self._scores_and_logits(model, x)
            return scores, self.predict_logits(logits)

    def attack_objective(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The deployed score itself, with its graph (an adaptive white-box objective)."""
        return self._scores_and_logits(model, x)[0]
