"""A user's own network (DESIGN "Bring your own model and detector"): any `nn.Module` that maps [0, 1] RGB pixels
[B, 3, H, W] to logits [B, K] (or K + the detector's extra outputs), normalisation inside (SPEC section 1).

- `load_user_model(spec, weights, ...)`: `--model MODULE:CALLABLE` (a factory imported from the user's code,
  called with `num_classes=K` when it takes that argument) and/or `--weights PATH`: a state dict (loaded into the
  factory's module or a registered `--arch`), a TorchScript file, or a whole pickled module (only with
  `trust_pickle`, since unpickling runs code).
- `model_fingerprint(model)`: sha256 of the parameters and buffers: the identity of a given network in the run's
  keys, so resume and the fit cache work as for a trained one.
- `check_head(model, x, head_size)`: the model's output width against the detector's head, with a clear error.
- `looks_unnormalised(...)`: near-chance accuracy on in-dist test images, the symptom of a model that expects
  normalised inputs; the message names `oodbench.models.Normalize(model, mean, std)`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from oodbench.errors import CheckpointError, ConfigError

INPUT_CONVENTION = (
    "oodbench feeds [0, 1] RGB pixels [B, 3, H, W] and expects logits [B, K]; a model trained on normalised "
    "inputs must normalise inside: wrap it as oodbench.models.Normalize(model, mean, std)"
)


def import_factory(spec: str):
    """The callable named by 'MODULE:CALLABLE' (MODULE importable from the current folder or sys.path)."""
    if ":" not in spec:
        raise ConfigError(f"--model '{spec}' must look like MODULE:CALLABLE (e.g. mypackage.nets:build_net)")
    module_name, attribute = spec.split(":", 1)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the user's own folder, as `python -m` would
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"--model '{spec}': cannot import module '{module_name}' ({error}); run from the folder that holds it "
            "or install it (pip install -e .)"
        ) from None
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"--model '{spec}': module '{module_name}' has no '{attribute}'")
    if not callable(factory):
        raise ConfigError(f"--model '{spec}': '{attribute}' is not callable (give a function or class)")
    return factory


def build_from_factory(spec: str, num_classes: int) -> nn.Module:
    """Call the factory of `spec` (with `num_classes=K` when it accepts it) and check it returns an nn.Module."""
    factory = import_factory(spec)
    try:
        takes_classes = "num_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_classes = False
    model = factory(num_classes=num_classes) if takes_classes else factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model '{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _strip_wrappers(state: dict, expected: set[str]) -> dict:
    """Keys of a DataParallel / DDP / Lightning save ('module.', 'model.', 'net.') mapped onto the model's."""
    for prefix in ("module.", "model.", "net."):
        if all(k.startswith(prefix) for k in state) and not set(state) & expected:
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) & expected:
                return stripped
    return state


def load_state(model: nn.Module, state: dict, path: Path) -> nn.Module:
    """`state` loaded strictly into `model`, or a CheckpointError listing the keys that do not fit."""
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict) and "format" in state:
        state = state["model"]  # an oodbench checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"--weights '{path}' is not a state dict (a mapping of parameter names to tensors)")
    expected = set(model.state_dict())
    state = _strip_wrappers(state, expected)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in model.state_dict().items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing in the file: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in the model: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("other shapes: " + "; ".join(shapes[:3]))
        raise CheckpointError(
            f"--weights '{path}' does not fit {type(model).__name__} ({'; '.join(parts)}); pass the factory or "
            "--arch that built these weights"
        )
    model.load_state_dict(state)
    return model


def load_user_model(
    spec: str | None, weights: str | Path | None, num_classes: int, trust_pickle: bool = False, base=None
) -> nn.Module:
    """The user's network in eval mode on the CPU (see module docstring). `base` builds the module for a state
    dict when no factory is given (a registered `--arch`)."""
    if weights is None:
        if spec is None:
            raise ConfigError("give --model MODULE:CALLABLE, --weights PATH, or both")
        return build_from_factory(spec, num_classes).eval()
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"--weights '{path}' not found")
    if _is_torchscript(path):
        if spec is not None:
            raise ConfigError(f"--weights '{path}' is a TorchScript module (code and weights): drop --model")
        return torch.jit.load(str(path), map_location="cpu").eval()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickled module (disallowed globals), a truncated file, not a torch file
        if "weights_only" not in str(error) and "Unsupported global" not in str(error):
            raise CheckpointError(
                f"--weights '{path}' cannot be read ({type(error).__name__}); it is truncated or not a torch file"
            ) from None
        if not trust_pickle:
            raise CheckpointError(
                f"--weights '{path}' is a pickled Python object (a whole module): loading it runs code from the "
                "file. If you trust it, add --trust-pickle (Python: trust_pickle=True); or save a state dict "
                "(torch.save(model.state_dict(), path)) and pass --model MODULE:CALLABLE"
            ) from None
        payload = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(payload, nn.Module):
        if spec is not None:
            raise ConfigError(f"--weights '{path}' holds a whole module: drop --model")
        return payload.eval()
    if spec is not None:
        model = build_from_factory(spec, num_classes)
    elif base is not None:
        model = base()
    else:
        raise ConfigError(
            f"--weights '{path}' is a state dict: say which network it belongs to with --model MODULE:CALLABLE "
            "or a registered --arch"
        )
    return load_state(model, payload, path).eval()


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes and bytes of the parameters and buffers (identity of a given network)."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (BatchNorm counts) too
        digest.update(f"{name}:{tuple(tensor.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def check_head(model: nn.Module, x: torch.Tensor, head_size: int, num_classes: int, method: str) -> None:
    """One forward pass on `x` ([0, 1] pixels): logits [B, head_size], or a ConfigError that says what to do."""
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as error:
        raise ConfigError(
            f"the given model fails on a batch of in-dist images {tuple(x.shape)} ({type(error).__name__}: "
            f"{str(error)[:200]}); {INPUT_CONVENTION}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"the given model returns {shape}, not logits [B, outputs]; {INPUT_CONVENTION}")
    if out.shape[1] != head_size:
        extra = head_size - num_classes
        need = f"{num_classes} + {extra} extra output(s) = {head_size}" if extra else f"{num_classes}, one per class"
        raise ConfigError(
            f"the given model has {out.shape[1]} outputs; detector '{method}' needs {need} on this in-distribution "
            f"set ({num_classes} classes)"
        )


def looks_unnormalised(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> str | None:
    """A warning when accuracy on in-dist test images is at chance level (<= 1.5 / K), else None."""
    with torch.no_grad():
        accuracy = (model(x)[:, :num_classes].argmax(1) == labels).float().mean().item()
    if accuracy > 1.5 / num_classes:
        return None
    return (
        f"the given model classifies {accuracy:.0%} of {len(x)} in-dist test images correctly (chance: "
        f"{1 / num_classes:.0%}): is it trained on this set, with this input convention? {INPUT_CONVENTION}"
    )
