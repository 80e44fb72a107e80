"""Released ATOM-code checkpoints (DenseNet3 / WideResNet / CCU names, `module.` prefix) in our models."""

from __future__ import annotations

import pytest
import torch

from baselines.ccu import CCUNet
from oodbench.checkpoint import load_checkpoint
from oodbench.errors import CheckpointError
from oodbench.models import create_model
from oodbench.models.released import convert_released_state

CIFAR = ((0.491, 0.482, 0.447), (0.247, 0.244, 0.262))


def _released_state(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The released state-dict names of one of our models: ours without the `normalize.*` buffers (the released
    `normalizer` is not a module), BN statistics randomised so that the comparison sees them."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(("normalize.mean", "normalize.std")):
            continue
        if value.is_floating_point():
            value = torch.randn_like(value) * 0.1 + (1.0 if key.endswith("running_var") else 0.0)
            value = value.abs() if key.endswith("running_var") else value
        state[prefix + key] = value
    return state


@pytest.mark.parametrize("arch,kwargs", [("densenet", {"depth": 40}), ("wrn", {"depth": 10, "widen": 2})])
def test_a_converted_released_checkpoint_gives_the_logits_of_our_model(tmp_path, arch, kwargs):
    ours = create_model(arch, 11, CIFAR, **kwargs).eval()
    released = _released_state(ours, prefix="module.")  # DataParallel's prefix
    path = tmp_path / "checkpoint_100.pth.tar"
    torch.save({"epoch": 100, "state_dict": released}, path)
    payload = load_checkpoint(path)
    assert payload["released"]
    reference = create_model(arch, 11, CIFAR, **kwargs).eval()
    reference.load_state_dict({**reference.state_dict(), **{k[len("module.") :]: v for k, v in released.items()}})
    target = create_model(arch, 11, CIFAR, **kwargs).eval()
    target.load_state_dict(convert_released_state(payload["model"], target))
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(target(x), reference(x))
    with pytest.raises(CheckpointError, match="shape"):  # another head size
        convert_released_state(payload["model"], create_model(arch, 10, CIFAR, **kwargs))


def test_a_released_ccu_checkpoint_maps_its_mixtures():
    torch.manual_seed(0)
    base = create_model("small_cnn", 10, CIFAR)
    ours = CCUNet(base, components=2)
    with torch.no_grad():  # random whitening and mixtures (an EM fit at 3,072 dimensions is too slow for a test)
        ours.whiten.components.copy_(torch.linalg.qr(torch.randn(3072, 64))[0].repeat(1, 48))
        ours.whiten.scale.uniform_(0.5, 2.0)
        for mixture in (ours.gmm_in, ours.gmm_out):
            mixture.means.uniform_(0, 1)
            mixture.log_var.fill_(3.0)
    vectors, scale = ours.whiten.components.T.clone(), ours.whiten.scale.clone()
    released = {"base_model." + k: v for k, v in _released_state(base).items()}
    for theirs, mixture in (("mm", ours.gmm_in), ("mm_out", ours.gmm_out)):
        released |= {
            f"{theirs}.mu": mixture.means.detach().clone(),
            f"{theirs}.logvar": mixture.log_var.detach().clone(),
            f"{theirs}.alpha": torch.full((2,), -torch.log(torch.tensor(2.0)).item()),
            f"{theirs}.norm_const": torch.tensor(1.0),
            f"{theirs}.metric.comp_vecs": vectors,
            f"{theirs}.metric.singular_values": scale**2,
            f"{theirs}.metric.singular_values_sqrt": scale,
        }
    released |= {"loglam": torch.tensor(0.0), "log_K": -torch.log(torch.tensor(10.0))}
    ours.base.load_state_dict(
        {
            **ours.base.state_dict(),
            **{k[len("base_model.") :]: v for k, v in released.items() if k.startswith("base_model.")},
        }
    )
    target = CCUNet(create_model("small_cnn", 10, CIFAR), components=2)
    state = convert_released_state({"state_dict": released}, target, "ccu.pth")
    state = {k: v for k, v in state.items() if k not in ("log_K", "loglam")}
    target.load_state_dict(state)
    images = torch.rand(3, 3, 32, 32)
    assert torch.allclose(target.eval()(images), ours.eval()(images), atol=1e-5)
    bad = dict(released, **{"mm.alpha": torch.tensor([-0.1, -2.4])})
    with pytest.raises(CheckpointError, match="non-uniform"):
        convert_released_state({"state_dict": bad}, target)
