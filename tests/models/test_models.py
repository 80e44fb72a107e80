"""Architectures: sizes and shapes of the paper's networks (SPEC section 3), Mahalanobis layers (SPEC section 4),
normalisation inside the model, the atom-code init quirk, timm round trips and pretrained-weight loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from oodbench.errors import CheckpointError, ConfigError, UnknownNameError
from oodbench.models import (
    IMAGENET_NORMALIZATION,
    OODNet,
    TimmOODNet,
    create_model,
    load_pretrained_resnet,
)
from oodbench.models.timm_compat import TIMM_NAMES
from oodbench.registry import ARCHS

CIFAR_NORM = ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255))
IMAGE_ARCHS = ["densenet100", "wrn40_4", "resnet20", "resnet32", "resnet44", "resnet56", "small_cnn"]

# (arch, shapes of the forward_features maps for a [2, 3, 32, 32] input)
FEATURE_SHAPES = {
    "densenet100": [(2, 24, 32, 32), (2, 108, 16, 16), (2, 150, 8, 8), (2, 342, 8, 8)],
    "wrn40_4": [(2, 16, 32, 32), (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8)],
    "resnet20": [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)],
    "resnet56": [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)],
    "small_cnn": [(2, 32, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8), (2, 128, 4, 4)],
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def akamaster_checkpoint(path: Path, depth: int = 32, seed: int = 0) -> OODNet:
    """Write a fresh CIFAR ResNet in akamaster's legacy layout ({'state_dict' with 'module.' keys, 'best_prec1'})."""
    torch.manual_seed(seed)
    model = create_model(f"resnet{depth}", 10)
    state = {
        f"module.{k}": v
        for k, v in model.state_dict().items()
        if not k.startswith("normalize.") and not k.endswith("num_batches_tracked")
    }
    torch.save({"state_dict": state, "best_prec1": 91.5}, path, _use_new_zipfile_serialization=False)
    return model


# ---------------------------------------------------------------------------------------------- sizes and shapes


@pytest.mark.parametrize(
    "arch, expected, rel",
    [
        ("densenet100", 0.769e6, 0.01),  # DenseNet-BC-100-12 (SPEC: ~0.8 M)
        ("wrn40_4", 8.95e6, 0.01),  # WRN-40-4 (Zagoruyko & Komodakis: 8.9 M)
        ("resnet20", 269_722, 0.0),  # akamaster README: 0.27 M
        ("resnet32", 464_154, 0.0),  # 0.46 M
        ("resnet44", 658_586, 0.0),  # 0.66 M
        ("resnet56", 853_018, 0.0),  # 0.85 M
    ],
)
def test_parameter_counts(arch: str, expected: float, rel: float) -> None:
    assert n_params(create_model(arch, 10)) == pytest.approx(expected, rel=rel)


def test_small_models_are_small() -> None:
    assert 0.1e6 <= n_params(create_model("small_cnn", 10)) <= 0.3e6
    assert n_params(create_model("mlp2d", 3)) == 2 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3


def test_densenet_channel_sequence() -> None:
    """24 -> 216 -> 108 -> 300 -> 150 -> 342 (SPEC section 3)."""
    m = create_model("densenet100", 10)
    assert m.conv1.out_channels == 24
    assert (m.trans1.conv1.in_channels, m.trans1.conv1.out_channels) == (216, 108)
    assert (m.trans2.conv1.in_channels, m.trans2.conv1.out_channels) == (300, 150)
    assert m.bn1.num_features == m.fc.in_features == 342
    assert len(m.block1.layer) == len(m.block2.layer) == len(m.block3.layer) == 16


@pytest.mark.parametrize("arch", sorted(FEATURE_SHAPES))
def test_forward_features_shapes(arch: str) -> None:
    m = create_model(arch, 11, normalization=CIFAR_NORM).eval()
    x = images()
    with torch.no_grad():
        logits, feats = m.forward_features(x)
        assert logits.shape == (2, 11)
        assert [tuple(f.shape) for f in feats] == FEATURE_SHAPES[arch]
        assert torch.equal(m(x), logits)


@pytest.mark.parametrize("arch", IMAGE_ARCHS + ["mlp2d"])
@pytest.mark.parametrize("num_outputs", [10, 11, 105])
def test_head_size(arch: str, num_outputs: int) -> None:
    m = create_model(arch, num_outputs).eval()
    x = torch.randn(3, 2) if arch == "mlp2d" else images(3)
    with torch.no_grad():
        assert m(x).shape == (3, num_outputs)
    assert m.num_outputs == num_outputs


def test_returned_features_are_not_modified_in_place() -> None:
    """In-place ReLUs must not touch a returned map: the Mahalanobis detector reads them after the forward pass."""
    torch.manual_seed(0)
    dn = create_model("densenet100", 10, normalization=CIFAR_NORM).eval()
    wrn = create_model("wrn", 10, depth=10, widen=1, normalization=CIFAR_NORM).eval()
    x = images()
    with torch.no_grad():
        _, feats = dn.forward_features(x)
        assert torch.equal(feats[0], dn.conv1(dn.normalize(x)))
        assert (feats[3] >= 0).all()  # after the final BN-ReLU
        _, feats = wrn.forward_features(x)
        assert torch.equal(feats[0], wrn.conv1(wrn.normalize(x)))
        assert (feats[3] < 0).any()  # block3 output, before the final BN-ReLU (SPEC section 4)
        assert torch.equal(feats[3], wrn.block3(wrn.block2(wrn.block1(feats[0]))))


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_input_gradient_in_train_and_eval_mode(arch: str) -> None:
    if arch in ("wrn40_4", "resnet44", "resnet56"):
        arch = {"wrn40_4": "wrn", "resnet44": "resnet20", "resnet56": "resnet20"}[arch]  # same blocks, faster
    m = create_model(arch, 4, normalization=CIFAR_NORM, **({"depth": 10, "widen": 2} if arch == "wrn" else {}))
    for train in (True, False):
        m.train(train)
        x = images().requires_grad_(True)
        logits, feats = m.forward_features(x)
        (logits.sum() + sum(f.mean() for f in feats)).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("arch", ["densenet100", "wrn40_4", "resnet20", "small_cnn"])
def test_normalisation_is_inside_the_model(arch: str) -> None:
    torch.manual_seed(0)
    with_norm = create_model(arch, 10, normalization=CIFAR_NORM).eval()
    plain = create_model(arch, 10).eval()
    state = {k: v for k, v in with_norm.state_dict().items() if not k.startswith("normalize.")}
    plain.load_state_dict(state, strict=False)
    mean = torch.tensor(CIFAR_NORM[0]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_NORM[1]).view(1, 3, 1, 1)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(with_norm(x), plain((x - mean) / std), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(with_norm(x), plain(x), atol=1e-3)
    assert torch.equal(plain.normalize.std, torch.ones(1, 3, 1, 1))  # None is the identity (SVHN)


def test_mlp2d_on_points() -> None:
    m = create_model("mlp2d", 3).eval()
    x = torch.randn(5, 2) * 4  # coordinates, not pixels
    logits, feats = m.forward_features(x)
    assert logits.shape == (5, 3)
    assert [tuple(f.shape) for f in feats] == [(5, 64), (5, 64)]
    normed = create_model("mlp2d", 3, normalization=((1.0, -2.0), (2.0, 0.5))).eval()
    normed.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("normalize.")}, strict=False)
    torch.testing.assert_close(normed(x), m((x - torch.tensor([1.0, -2.0])) / torch.tensor([2.0, 0.5])))
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        m(images())


# ---------------------------------------------------------------------------------------------- initialisation


def test_densenet_atom_code_init_quirk() -> None:
    """The released code's init gives every conv std sqrt(2/16); standard He init depends on the conv."""
    torch.manual_seed(0)
    quirk = create_model("densenet100", 10, init="atom-code")
    convs = [mod for mod in quirk.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 16 * 2 + 2
    for conv in convs:
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 16), rel=0.1)

    torch.manual_seed(0)
    std = create_model("densenet100", 10)
    for conv in (std.conv1, std.block2.layer[3].conv1, std.block3.layer[15].conv2, std.trans2.conv1):
        k = conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (k * conv.out_channels)), rel=0.1)
    for m in (quirk, std):
        assert torch.equal(m.fc.bias, torch.zeros(10))
        assert torch.equal(m.bn1.weight, torch.ones(342)) and torch.equal(m.bn1.bias, torch.zeros(342))
    with pytest.raises(ValueError, match="init"):
        create_model("densenet100", 10, init="xavier")


def test_wrn_he_init() -> None:
    torch.manual_seed(0)
    m = create_model("wrn40_4", 10)
    conv = m.block3.layer[2].conv1
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.05)
    assert torch.equal(m.fc.bias, torch.zeros(10))


# ---------------------------------------------------------------------------------------------- registry and timm


def test_registry_names_and_unknown_name() -> None:
    for name in IMAGE_ARCHS + ["mlp2d", "densenet", "wrn"]:
        assert name in ARCHS
    with pytest.raises(UnknownNameError, match="densenet100"):
        create_model("densenet10", 10)


@pytest.mark.parametrize("timm_name", sorted(TIMM_NAMES))
def test_timm_create_model_round_trip(timm_name: str) -> None:
    m = timm.create_model(timm_name, num_classes=11)
    arch = TIMM_NAMES[timm_name][0]
    assert isinstance(m, OODNet) and type(m) is type(create_model(arch, 11))
    assert m.num_outputs == 11
    x = torch.randn(2, 2) if arch == "mlp2d" else images()
    m.eval()
    with torch.no_grad():
        assert m(x).shape == (2, 11)
    with pytest.raises(ConfigError, match="pretrained"):
        timm.create_model(timm_name, pretrained=True)


def test_timm_create_model_details() -> None:
    assert set(TIMM_NAMES) <= set(timm.list_models())
    m = timm.create_model("densenet_bc_100", num_classes=11, normalization=CIFAR_NORM, init="atom-code")
    assert m.init_scheme == "atom-code"
    assert torch.allclose(m.normalize.mean.flatten(), torch.tensor(CIFAR_NORM[0]))
    assert n_params(timm.create_model("wrn_40_4", num_classes=10)) == n_params(create_model("wrn40_4", 10))
    assert timm.create_model("cifar_resnet20", num_classes=10).depth == 20
    assert timm.create_model("cifar_resnet20", drop_rate=None).num_outputs == 10  # timm drops None options
    with pytest.raises(ConfigError, match="dropout"):
        timm.create_model("cifar_resnet20", drop_rate=0.2)
    with pytest.raises(ConfigError, match="in_chans"):
        timm.create_model("oodbench_small_cnn", in_chans=1)


def test_create_model_wraps_any_timm_model() -> None:
    torch.manual_seed(0)
    m = create_model("timm/resnet10t", 11, normalization=CIFAR_NORM).eval()
    assert isinstance(m, TimmOODNet)
    x = images()
    with torch.no_grad():
        logits, feats = m.forward_features(x)
        assert logits.shape == (2, 11) and len(feats) == 1 and feats[0].shape[:2] == (2, 512)
        mean = torch.tensor(CIFAR_NORM[0]).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR_NORM[1]).view(1, 3, 1, 1)
        torch.testing.assert_close(logits, m.model((x - mean) / std))
    assert type(create_model("timm/densenet_bc_100", 11)).__name__ == "DenseNet3"  # not wrapped twice
    with pytest.raises(UnknownNameError, match="resnet10t"):
        create_model("timm/resnet10x", 11)


# ---------------------------------------------------------------------------------------------- pretrained weights


def test_load_akamaster_layout_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "resnet32-test.th"
    reference = akamaster_checkpoint(path, depth=32).eval()
    loaded = load_pretrained_resnet(path)  # depth inferred from the state dict
    assert loaded.depth == 32 and loaded.num_outputs == 10 and not loaded.training
    assert torch.allclose(loaded.normalize.std.flatten(), torch.tensor(IMAGENET_NORMALIZATION[1]))
    x = images()
    mean = torch.tensor(IMAGENET_NORMALIZATION[0]).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZATION[1]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference((x - mean) / std))
    with pytest.raises(CheckpointError, match="expected resnet20, found a ResNet-32"):
        load_pretrained_resnet(path, arch="resnet20")
    with pytest.raises(CheckpointError, match="smaller head"):
        load_pretrained_resnet(path, num_outputs=9)


def test_broken_checkpoints_raise_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet20.th"
    akamaster_checkpoint(path, depth=20)
    truncated = tmp_path / "truncated.th"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_pretrained_resnet(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained_resnet(tmp_path / "missing.th")
    wrong = tmp_path / "densenet.th"
    torch.save({"state_dict": create_model("densenet", 10, depth=10).state_dict()}, wrong)
    with pytest.raises(CheckpointError, match="expected a CIFAR ResNet state dict"):
        load_pretrained_resnet(wrong)
    bad_shape = tmp_path / "bad_shape.th"
    state = torch.load(path, weights_only=True)
    state["state_dict"]["module.layer2.0.conv1.weight"] = torch.zeros(32, 8, 3, 3)
    torch.save(state, bad_shape)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_pretrained_resnet(bad_shape)


def test_load_shipped_resnet20_weights(shared_dir: Path, tmp_path: Path) -> None:
    path = shared_dir / "weights" / "resnet20-12fca82f.th"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model = load_pretrained_resnet(path)
    expected = {k for k in model.state_dict() if not k.startswith("normalize.") and "num_batches_tracked" not in k}
    assert {k.removeprefix("module.") for k in raw} == expected  # no missing, no unexpected keys
    assert torch.equal(model.linear.weight, raw["module.linear.weight"])

    x = images(8)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (8, 10) and torch.isfinite(logits).all()
        k1 = load_pretrained_resnet(path, arch="resnet20", num_outputs=11)
        logits11 = k1(x)
    assert logits11.shape == (8, 11)
    torch.testing.assert_close(logits11[:, :10], logits, rtol=0, atol=1e-5)
    assert torch.isfinite(logits11[:, 10]).all()

    truncated = tmp_path / "resnet20-truncated.th"
    truncated.write_bytes(path.read_bytes()[:300_000])
    with pytest.raises(CheckpointError, match=str(truncated)):
        load_pretrained_resnet(truncated)


def test_init_state_reads_akamaster_weights(tmp_path: Path) -> None:
    """`--init FILE.th` (a `{'state_dict': module.*}` file, which the released-checkpoint reader also claims)
    gives the ResNet's own keys, so every tensor is copied into the network to fine-tune. Regression: the file
    was taken as a released ATOM checkpoint with `module.` keys and `--init` refused it (0 of 99 tensors fit)."""
    from oodbench.checkpoint import transfer_weights
    from oodbench.training import init_state

    path = tmp_path / "resnet20.th"
    akamaster_checkpoint(path, depth=20)
    state = init_state(path)
    assert not any(k.startswith("module.") for k in state)
    target = create_model("resnet20", 11)
    report = transfer_weights(target, state, str(path))
    assert report["missing"] == [] and report["partial"] == ["linear.weight", "linear.bias"]
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(target.linear.weight[:10], raw["module.linear.weight"])
