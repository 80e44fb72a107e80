"""Bring your own model and detector (README "Evaluate your own detector"): the README's snippets run as written
from a folder outside the repository, a user package loaded by entry point and by `--plugin` goes through all four
threat models, and every error on this path is a clear message before compute."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _env(tmp_path: Path, cache: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
        OODBENCH_CACHE=str(cache),
        OMP_NUM_THREADS="2",
        OODBENCH_PROGRESS="0",
        MPLBACKEND="Agg",
    )
    env.update(extra)
    return env


def _readme_blocks() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Evaluate your own detector", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(language, []).append(body)
    return blocks


def _oodbench(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "oodbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_readme_example_runs_as_written(tmp_path, shared_cache):
    """mynet.py, the Python snippet and the CLI snippet of the README, run as written (the CLI's `oodbench` is
    `python -m oodbench`); the two paths give the same numbers on the same weights."""
    blocks = _readme_blocks()
    module, script = blocks["python"][:2]
    (tmp_path / "mynet.py").write_text(module)
    (tmp_path / "example.py").write_text(script)
    env = _env(tmp_path, shared_cache)
    done = subprocess.run([PY, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "neg-entropy" in done.stdout and "L-inf FPR" in done.stdout
    python_run = json.loads((tmp_path / "runs/mine/run.json").read_text())
    assert python_run["model"]["class"] == "mynet.TinyNet"
    assert python_run["methods"]["neg-entropy"]["recipe"] == "vanilla"
    lines = [" ".join(c.split()) for c in blocks["bash"][0].replace("\\\n", " ").splitlines() if c.strip()]
    for line in lines:
        for part in line.split(" && "):
            words = part.split()
            assert words[0] == "oodbench"
            redirect = words.index(">") if ">" in words else None
            args = words[1:redirect] if redirect else words[1:]
            result = _oodbench(args, tmp_path, env)
            assert result.returncode == 0, (part, result.stderr[-3000:])
            if redirect:
                (tmp_path / words[redirect + 1]).write_text(result.stdout)
    from oodbench.results import load_cells

    by_python = load_cells([tmp_path / "runs/mine"]).set_index(["ood_set", "threat"])["fpr"].sort_index()
    by_cli = load_cells([tmp_path / "runs/mine-cli"]).set_index(["ood_set", "threat"])["fpr"].sort_index()
    assert len(by_python) == 6 and by_python.equals(by_cli)


PLUGIN = """
import torch
from torch import nn

import oodbench


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def build(num_classes):
    torch.manual_seed(0)
    return Net(num_classes)


@oodbench.register_detector("margin", summary="top-1 minus top-2 logit")
class Margin(oodbench.Detector):
    def score_logits(self, logits):
        top = logits.float().topk(2, dim=1).values
        return top[:, 0] - top[:, 1]

    def attack_objective(self, model, x):
        return self.score_logits(model(x))


oodbench.detector_from_score(lambda logits: logits.float().logsumexp(dim=1), name="neg-free-energy")
"""


def _user_package(root: Path, entry_point: bool) -> None:
    package = root / "userpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(PLUGIN)
    if entry_point:  # what `pip install` of a package declaring the entry point writes
        info = root / "userpkg-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[oodbench.plugins]\nuserpkg = userpkg.plugin\n")


TINY_CLI = ["--profile", "smoke", "--max-ood", "8", "--pgd-steps", "2", "--ood", "tiles", "--no-progress"]


def test_user_package_by_entry_point_and_by_plugin_under_all_four_threats(tmp_path, shared_cache):
    """From a folder outside the repository: the entry point registers the package's detectors (listed with their
    origin), one command evaluates the user's factory under the four threat models, table and check work;
    `--plugin` loads the same module without the entry point."""
    with_entry = tmp_path / "site"
    _user_package(with_entry, entry_point=True)
    env = _env(with_entry, shared_cache)
    listing = _oodbench(["list"], tmp_path, env)
    assert listing.returncode == 0 and "[from entry point userpkg (userpkg)]" in listing.stdout
    out = tmp_path / "runs/entry"
    threats = "natural,corruption,linf,comp"
    run = _oodbench(
        [
            "run",
            "--model",
            "userpkg.plugin:build",
            "--methods",
            "margin,neg-free-energy",
            "--threats",
            threats,
            "--out",
            str(out),
            *TINY_CLI,
        ],
        tmp_path,
        env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "warning: the given model classifies" in run.stderr  # untrained: at chance, the convention is named
    table = _oodbench(["table", str(out), "--format", "csv"], tmp_path, env)
    assert table.returncode == 0
    assert {"margin", "neg-free-energy"} <= set(re.findall(r"^\w+,([\w-]+),", table.stdout, re.M))
    (tmp_path / "base.csv").write_text(table.stdout)
    check = _oodbench(["check", str(out), "--against", str(tmp_path / "base.csv")], tmp_path, env)
    assert check.returncode == 0, check.stdout + check.stderr
    cells = json.loads((out / "run.json").read_text())
    assert cells["model"]["factory"] == "userpkg.plugin:build"
    assert len(list((out / "cells").glob("*.json"))) == 8  # 2 detectors x 1 OOD set x 4 threat models

    plain = tmp_path / "plain"
    _user_package(plain, entry_point=False)
    env = _env(plain, shared_cache)
    missing = _oodbench(["run", "--model", "userpkg.plugin:build", "--methods", "margin", *TINY_CLI], tmp_path, env)
    assert missing.returncode == 2 and "unknown detector 'margin'" in missing.stderr and "--plugin" in missing.stderr
    assert "entry point" in missing.stderr
    again = _oodbench(
        [
            "run",
            "--plugin",
            "userpkg.plugin",
            "--model",
            "userpkg.plugin:build",
            "--methods",
            "margin",
            "--threats",
            "natural",
            "--out",
            str(tmp_path / "runs/plugin"),
            *TINY_CLI,
        ],
        tmp_path,
        env,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    listing = _oodbench(["list"], tmp_path, {**env, "OODBENCH_PLUGINS": "userpkg.plugin"}).stdout
    assert listing.count("[from plugin") == 2


# --- errors on this path: each a message that says what to do, before compute, nothing written ------------------


class Wrapped(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    def forward(self, x):
        return self.net(x)


def seven_outputs():
    return Wrapped(7)


def not_a_module():
    return "a string"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module's runs: the built-in sets are generated once, not per case."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def user_files(tmp_path, monkeypatch, shared_cache):
    """A user module on sys.path and weight files of each kind."""
    (tmp_path / "usernets.py").write_text(
        "from tests.test_bring_your_own import Wrapped, not_a_module, seven_outputs  # noqa: F401\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OODBENCH_CACHE", str(shared_cache))
    net = Wrapped()
    torch.save(net.state_dict(), tmp_path / "state.pt")
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dataparallel.pt")
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save(net, tmp_path / "whole.pt")
    torch.jit.script(net).save(str(tmp_path / "scripted.pt"))
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "state.pt").read_bytes()[:100])
    return tmp_path


def _cli(capsys, *args):
    from oodbench.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


BASE = ["run", "--methods", "msp", "--threats", "natural", *TINY_CLI]

ERROR_CASES = [
    (["--model", "usernets"], "must look like MODULE:CALLABLE"),
    (["--model", "no_such_module:build"], "cannot import module 'no_such_module'"),
    (["--model", "usernets:absent"], "has no 'absent'"),
    (["--model", "usernets:not_a_module"], "not a torch.nn.Module"),
    (["--model", "usernets:seven_outputs"], "has 7 outputs; detector 'msp' needs 10, one per class"),
    (["--model", "usernets:Wrapped", "--weights", "{d}/absent.pt"], "not found"),
    (["--model", "usernets:Wrapped", "--weights", "{d}/foreign.pt"], "missing in the file: net.1.bias"),
    (["--model", "usernets:Wrapped", "--weights", "{d}/truncated.pt"], "cannot be read"),
    (["--weights", "{d}/whole.pt"], "--trust-pickle"),
    (["--weights", "{d}/state.pt"], "say which network it belongs to"),
    (["--weights", "{d}/scripted.pt", "--model", "usernets:Wrapped"], "TorchScript module (code and weights)"),
    (["--model", "usernets:Wrapped", "--checkpoint", "msp=x.pt"], "nothing is trained"),
    (["--model", "usernets:Wrapped", "--methods", "rowl"], "needs 10 + 1 extra output(s) = 11"),
    (["--plugin", "no_such_plugin"], "plugin 'no_such_plugin' cannot be imported"),
]


@pytest.mark.parametrize("extra, message", ERROR_CASES, ids=[m[:40] for _, m in ERROR_CASES])
def test_bad_model_inputs_exit_2_with_a_message_and_write_nothing(user_files, capsys, extra, message):
    out = user_files / "run"
    args = [*BASE, "--out", str(out), *[a.replace("{d}", str(user_files)) for a in extra]]
    code, err = _cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "weights, extra",
    [
        ("state.pt", ["--model", "usernets:Wrapped"]),
        ("dataparallel.pt", ["--model", "usernets:Wrapped"]),
        ("scripted.pt", []),
        ("whole.pt", ["--trust-pickle"]),
    ],
)
def test_every_weights_format_loads_the_same_network(user_files, capsys, weights, extra):
    from oodbench.options import RunOptions
    from oodbench.runner import plan_run

    options = RunOptions(
        methods=["msp"],
        threats=["natural"],
        profile="smoke",
        max_ood=16,
        ood=["tiles"],
        weights=str(user_files / weights),
        model=extra[1] if extra[:1] == ["--model"] else None,
        trust_pickle="--trust-pickle" in extra,
        out=str(user_files / "run"),
        progress=False,
    )
    plan = plan_run(options, log=lambda m: None)
    x = torch.rand(2, 3, 32, 32)
    reference = Wrapped()
    reference.load_state_dict(torch.load(user_files / "state.pt", weights_only=True))
    assert torch.allclose(plan.given_model(x), reference(x))


def test_python_api_errors_and_normalize_wrapper():
    import oodbench
    from oodbench.errors import ConfigError
    from oodbench.models import Normalize

    with pytest.raises(ConfigError, match="unknown setting.*no_such_option"):
        oodbench.evaluate(Wrapped(), "msp", no_such_option=1)
    with pytest.raises(ConfigError, match="detector must be a registered name"):
        oodbench.evaluate(Wrapped(), 42)
    with pytest.raises(ConfigError, match="pass weights=PATH"):
        oodbench.evaluate("small_cnn", "msp")
    with pytest.raises(ConfigError, match="fn must take"):
        oodbench.detector_from_score(lambda a, b, c: a, name="three-args")
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    wrapped = Normalize(net, (0.5, 0.4, 0.3), (0.2, 0.2, 0.25))
    x = torch.rand(3, 3, 4, 4)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.2, 0.25]).view(1, 3, 1, 1)
    assert torch.allclose(wrapped(x), net((x - mean) / std))
    assert torch.equal(Normalize(None)(x), x)  # the layer form is unchanged


def test_score_only_detector_attacks_its_own_score():
    """detector_from_score: fn(logits) and fn(model, x) forms; score == objective, and the objective has a
    gradient (the attack is adaptive by construction)."""
    import oodbench

    by_logits = oodbench.detector_from_score(lambda z: -z.float().pow(2).sum(1), name="neg-square-norm")
    by_model = oodbench.detector_from_score(lambda model, x: model(x).float().max(1).values, name="max-logit-fn")
    net, x = Wrapped(), torch.rand(4, 3, 32, 32, requires_grad=True)
    for cls in (by_logits, by_model):
        det = cls(10)
        assert cls.recipe_name() == "vanilla" and det.score(net, x).shape == (4,)
        objective = det.attack_objective(net, x)
        assert torch.allclose(objective.detach(), det.score(net, x))
        (grad,) = torch.autograd.grad(objective.sum(), x)
        assert grad.abs().sum() > 0


# --- the matrix: each `oodbench run` option with each class of bad value exits 2, says why, writes nothing -------

MATRIX = {
    "missing path": [
        ["--data-root", "{d}/absent", "--in", "cifar10"],
        ["--init", "{d}/absent.pt"],
        ["--checkpoint", "msp={d}/absent.pt"],
        ["--weights", "{d}/absent.pt"],
        ["--in", "folder:{d}/absent"],
        ["--ood", "npy:{d}/absent.npy"],
    ],
    "wrong type": [
        ["--seed", "one"],
        ["--epochs", "2.5"],
        ["--max-ood", "many"],
        ["--pgd-steps", "x"],
        ["--pgd-eps", "eight"],
        ["--lr", "fast"],
        ["--square-queries", "1e3"],
        ["--batch-size", "big"],
        ["--set", "atom.q=high", "--methods", "atom"],
        ["--set", "odin"],
        ["--switch", "adaptive"],
    ],
    "unknown name": [
        ["--methods", "mps"],
        ["--in", "cifar11"],
        ["--ood", "tiles,nowhere"],
        ["--threats", "linf2"],
        ["--arch", "resnet1000"],
        ["--aux", "nothing", "--methods", "oe"],
        ["--protocol", "papr"],
        ["--profile", "huge"],
        ["--device", "tpu"],
        ["--precision", "fp8"],
        ["--tune-split", "train"],
        ["--set", "msp.no_such_field=1"],
        ["--switch", "no_such_switch=1"],
        ["--model", "usernets:absent"],
        ["--plugin", "no_such_plugin"],
    ],
    "out of range": [
        ["--seed", "-1"],
        ["--epochs", "0"],
        ["--max-ood", "0"],
        ["--max-train", "-5"],
        ["--pgd-steps", "0"],
        ["--pgd-restarts", "0"],
        ["--pgd-eps", "0"],
        ["--pgd-step=-1/255"],
        ["--lr", "0"],
        ["--batch-size", "0"],
        ["--square-queries", "-1"],
        ["--switch", "corruption_suite=cifar-c-99"],
    ],
    "incompatible": [
        ["--set", "atom.q=0.5"],  # atom not in --methods
        ["--checkpoint", "oe={d}/state.pt"],  # oe not in --methods
        ["--model", "usernets:Wrapped", "--init", "{d}/state.pt"],
        ["--model", "usernets:Wrapped", "--train-only"],
        ["--weights", "{d}/scripted.pt", "--model", "usernets:Wrapped"],
        ["--in", "folder:{d}/images"],  # a user's folder set without --ood: no built-in OOD sets taken silently
        ["--features", "net.0"],  # msp takes no layers
    ],
}
CASES = [(kind, args) for kind, cases in MATRIX.items() for args in cases]


@pytest.mark.parametrize("kind, extra", CASES, ids=[f"{k}:{' '.join(a)[:40]}" for k, a in CASES])
def test_run_option_error_matrix(user_files, capsys, kind, extra):
    from PIL import Image

    from oodbench.cli import main

    for split in ("train", "test"):  # a valid user folder set: two classes, two images each
        for label in ("a", "b"):
            folder = user_files / "images" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 * i, 100, 200 if label == "a" else 0)).save(folder / f"{i}.png")
    out = user_files / "run"
    base = BASE
    if extra == ["--in", "folder:{d}/images"]:  # this case is about the missing --ood
        base = [a for a in BASE if a not in ("--ood", "tiles")]
    args = [*base, "--out", str(out), *[a.replace("{d}", str(user_files)) for a in extra]]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse: usage and the message on stderr
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, (kind, extra, err[-2000:])
    assert "Traceback" not in err and len(err.strip()) > 20, err
    assert not out.exists()


def test_switch_choices_name_every_corruption_suite():
    from attacks.corruptions import SUITES
    from oodbench.config import SWITCH_CHOICES

    assert set(SWITCH_CHOICES["corruption_suite"]) == set(SUITES)


def test_mahalanobis_on_a_model_without_forward_features_by_layer_name(tmp_path, monkeypatch, shared_cache):
    """`features=` (`--features`) names the layers Mahalanobis scores on a user's module (issue 10, point 3)."""
    import oodbench

    monkeypatch.setenv("OODBENCH_CACHE", str(shared_cache))
    torch.manual_seed(0)
    result = oodbench.evaluate(
        Wrapped(),
        "mahalanobis",
        threats="natural",
        ood="tiles",
        profile="smoke",
        max_ood=16,
        features=["net.1"],
        out=tmp_path / "run",
        progress=False,
        log=lambda m: None,
    )
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["methods"]["mahalanobis"]["settings"]["layers"] == ["net.1"]
    fpr = result.frame.query("metric == 'fpr' and ood_set == 'tiles'")["value"]
    assert len(fpr) == 1 and 0 <= float(fpr.iloc[0]) <= 100


def test_train_returns_the_network_and_checkpoint_that_evaluate_takes(tmp_path, monkeypatch, shared_cache):
    """oodbench.train: the method's network by its recipe and its checkpoint; a second call finds it (no
    training), and evaluate(model, ...) scores the returned network."""
    import oodbench
    from oodbench.checkpoint import load_checkpoint

    monkeypatch.setenv("OODBENCH_CACHE", str(shared_cache))
    settings = dict(in_dist="digits", profile="smoke", epochs=1, max_train=64, out=tmp_path / "run", progress=False)
    model, checkpoint = oodbench.train("msp", arch="small_cnn", **settings)
    assert checkpoint.is_file() and load_checkpoint(checkpoint)["meta"]["recipe"] == "vanilla"
    logs: list[str] = []
    again, same = oodbench.train("msp", arch="small_cnn", log=logs.append, **settings)
    assert same == checkpoint and not any("epoch" in line for line in logs)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(again(x), model(x))
    result = oodbench.evaluate(
        model,
        "msp",
        in_dist="digits",
        ood="tiles",
        threats="natural",
        profile="smoke",
        max_ood=8,
        out=tmp_path / "eval",
        progress=False,
        log=lambda m: None,
    )
    assert set(result.frame["method"]) == {"msp"} and result.run_dir == tmp_path / "eval"
