"""Bad inputs a user can hit: each is one clear message (exit status 2) and no result is written
(issue "trustworthy runs", item 5). Loader-level format errors are tested in test_data.py."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch

from oodbench.cli import main

TINY = [
    "--profile",
    "smoke",
    "--epochs",
    "1",
    "--max-ood",
    "16",
    "--pgd-steps",
    "2",
    "--no-progress",
    "--ood",
    "tiles",
    "--threats",
    "natural,linf",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OODBENCH_CACHE", str(tmp_path / "cache"))


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny vanilla checkpoint of the built-in benchmark."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["run", "--methods", "msp", "--train-only", "--out", str(out), *TINY]) == 0
    (final,) = out.glob("checkpoints/*/final.pt")
    return final


def test_truncated_cifar_file_in_the_data_root(tmp_path, capsys):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = np.zeros((4, 3072), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": rows, b"labels": [0, 1, 2, 3]}, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"a"] * 10}, handle, protocol=2)
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 3])
    code, err = run(
        capsys,
        "run",
        "--methods",
        "msp",
        "--in",
        "cifar10",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and "data_batch_3" in err
    assert not (tmp_path / "run").exists()


def test_image_folder_with_an_unreadable_file(tmp_path, capsys):
    folder = tmp_path / "ood"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    code, err = run(
        capsys,
        "run",
        "--methods",
        "msp",
        "--ood",
        f"folder:{folder}",
        "--out",
        str(tmp_path / "run"),
        *TINY[:-4],
        "--threats",
        "natural",
    )
    assert code == 2 and "broken.jpg" in err
    assert not (tmp_path / "run").exists()


def test_truncated_checkpoint(tmp_path, capsys, trained):
    broken = tmp_path / "broken.pt"
    blob = trained.read_bytes()
    broken.write_bytes(blob[: len(blob) // 2])
    code, err = run(
        capsys, "run", "--methods", "msp", "--checkpoint", f"msp={broken}", "--out", str(tmp_path / "run"), *TINY
    )
    assert code == 2 and "truncated" in err and str(broken) in err
    assert not (tmp_path / "run").exists()
    broken.write_bytes(blob[:1000])  # cut inside the pickle: an error without a message
    code, err = run(
        capsys, "run", "--methods", "msp", "--checkpoint", f"msp={broken}", "--out", str(tmp_path / "run"), *TINY
    )
    assert code == 2 and "truncated" in err


def test_checkpoint_of_another_method_or_head(tmp_path, capsys, trained):
    code, err = run(
        capsys, "run", "--methods", "atom", "--checkpoint", f"atom={trained}", "--out", str(tmp_path / "run"), *TINY
    )
    assert code == 2 and "does not fit this run" in err and "head_size" in err and "recipe" in err
    assert not (tmp_path / "run").exists()


def test_foreign_pickle_is_not_loaded(tmp_path, capsys):
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": "oodbench-checkpoint-v1", "x": Payload()}, evil)
    code, err = run(
        capsys, "run", "--methods", "msp", "--checkpoint", f"msp={evil}", "--out", str(tmp_path / "run"), *TINY
    )
    assert code == 2 and "cannot be read" in err and "executed" not in err


def test_model_with_nan_scores_writes_no_result(tmp_path, capsys, trained):
    payload = torch.load(trained, weights_only=True)
    for key, value in payload["model"].items():
        if key.endswith("fc.weight"):
            value.fill_(float("nan"))
    nan_ckpt = tmp_path / "nan.pt"
    torch.save(payload, nan_ckpt)
    out = tmp_path / "run"
    code, err = run(capsys, "run", "--methods", "msp", "--checkpoint", f"msp={nan_ckpt}", "--out", str(out), *TINY)
    assert code == 2 and "not finite" in err
    assert not list(out.glob("cells/*.json")) and not list(out.glob("id/*.json"))


def test_unknown_option_and_bad_values(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--methodz", "msp"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    code, err = run(capsys, "run", "--methods", "msp", "--device", "tpu", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown device" in err
    code, err = run(capsys, "run", "--methods", "msp", "--switch", "corruption_suit=x", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown protocol switch" in err
    code, err = run(capsys, "run", "--methods", "msp", "--ood", "lsun_cc", "--out", str(tmp_path / "r"))
    assert code == 2 and "did you mean 'lsun_c'" in err


def test_run_directory_of_another_protocol_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"protocol": {"name": "atom-code"}, "profile": {"name": "smoke"}}))
    before = (out / "run.json").read_text()
    code, err = run(capsys, "run", "--methods", "msp", "--out", str(out), *TINY)
    assert code == 2 and "belongs to another run" in err
    assert (out / "run.json").read_text() == before and not (out / "cells").exists()


def test_run_directory_with_other_switches_names_them(tmp_path, capsys):
    """Same protocol name, other switches (e.g. written by an older oodbench without a newer switch): the message
    names the switch that differs instead of 'protocol paper (this run: paper)'."""
    from oodbench.config import PROTOCOLS

    recorded = {k: v for k, v in dataclasses.asdict(PROTOCOLS["paper"]).items() if k != "tune_split"}
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"protocol": recorded, "profile": {"name": "smoke"}}))
    code, err = run(capsys, "run", "--methods", "msp", "--out", str(out), *TINY)
    assert code == 2 and "belongs to another run" in err
    assert "tune_split='(absent)' (this run: 'test')" in err


def test_run_json_with_method_switches_as_protocol_fields_still_matches(tmp_path, capsys):
    """A run.json written when `rowl_train_attack` etc. were protocol fields (no `method_settings`) has the same
    switches as today's paper protocol: only the other identity fields may differ, never the protocol."""
    from oodbench.config import PROTOCOLS

    recorded = {k: v for k, v in dataclasses.asdict(PROTOCOLS["paper"]).items() if k != "method_settings"}
    recorded.update(rowl_train_attack="pgd", mahalanobis_regression="converged", ccu_out_fit="uniform")
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"protocol": recorded, "profile": {"name": "smoke"}}))
    code, err = run(capsys, "run", "--methods", "msp", "--out", str(out), *TINY)
    assert code == 2 and "belongs to another run" in err and "protocol" not in err.split("another run:")[1]
    recorded["rowl_train_attack"] = "released"  # an atom-code switch under the paper's name: refused, named
    (out / "run.json").write_text(json.dumps({"protocol": recorded, "profile": {"name": "smoke"}}))
    code, err = run(capsys, "run", "--methods", "msp", "--out", str(out), *TINY)
    assert code == 2 and "rowl_train_attack='released' (this run: 'pgd')" in err
