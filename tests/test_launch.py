"""Scale-out (oodbench.launch): CPU worker processes and submitit's local executor on the built-in benchmark at
a tiny scale. One module-scoped launched run trains the only network once; the other tests seed their run
directories with its checkpoint, so they evaluate the very same network and can demand identical numbers."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from oodbench.cli import build_parser, main, run_options
from oodbench.launch import evaluation_jobs, group_cells, job_options, launch, run_processes

# like tests/test_cli.py, smaller still: 256 training images, and ODIN's magnitude fixed instead of tuned on
# the 21-point grid (the fit is still written and shared through the run directory)
TINY = [
    "--profile",
    "smoke",
    "--epochs",
    "1",
    "--max-ood",
    "24",
    "--max-train",
    "256",
    "--pgd-steps",
    "2",
    "--no-progress",
    "--ood",
    "tiles",
    "--threats",
    "natural,linf",
    "--methods",
    "msp,odin",
    "--set",
    "odin.magnitude=0.0014",
    "--device",
    "cpu",
]
CPU_WORKERS = ["--gpus", "cpu,cpu"]
VOLATILE = ("seconds", "device")  # what may differ between two runs of the same cell


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OODBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def launched(tmp_path_factory, cache_env) -> Path:
    """A run launched on two CPU worker processes (phase 1 trains, phase 2 evaluates)."""
    out = tmp_path_factory.mktemp("launched") / "run"
    assert main(["run", *TINY, *CPU_WORKERS, "--out", str(out)]) == 0
    return out


def _parse(*argv: str):
    args = build_parser().parse_args(["run", *argv])
    return run_options(args), args


def _seed(source: Path, target: Path) -> None:
    """A fresh run directory holding `source`'s trained networks (nothing else)."""
    shutil.copytree(source / "checkpoints", target / "checkpoints")


def _cells(run_dir: Path) -> dict[str, dict]:
    """Cell key -> its metrics row without the volatile fields, plus its per-sample OOD scores."""
    out = {}
    for path in sorted((run_dir / "cells").glob("*.json")):
        row = {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
        with np.load(path.with_suffix(".npz")) as data:
            row["ood_scores"] = data["ood_scores"].tolist()
        out[path.stem] = row
    return out


def test_cpu_workers_give_the_cells_of_a_local_run_and_train_once(launched, tmp_path, capsys):
    finals = list((launched / "checkpoints").glob("*/final.pt"))
    assert len(finals) == 1 and finals[0].parent.name.startswith("vanilla-")  # msp and odin share the network
    logs = sorted((launched / "launch").glob("*/*.log"))
    assert [p.name for p in logs] == ["cells-0.log", "cells-1.log", "train-0.log"]
    assert sum(p.read_text().count("epoch 1/1") for p in logs) == 1  # trained once, in phase 1
    launched_cells = _cells(launched)
    assert len(launched_cells) == 4

    local = tmp_path / "local"
    _seed(launched, local)
    assert main(["run", *TINY, "--out", str(local)]) == 0
    assert _cells(local) == launched_cells  # same keys, identical metrics and scores
    # run.json records the full run's methods (a phase-1 job plans only the methods of its network)
    record, local_record = (json.loads((d / "run.json").read_text()) for d in (launched, local))
    assert record["methods"] == local_record["methods"]
    assert record["launch"] == {"launcher": "processes", "gpus": ["cpu", "cpu"]}


def test_submitit_local_executor_gives_the_same_cells(launched, tmp_path, capsys):
    out = tmp_path / "submitit"
    _seed(launched, out)
    options, args = _parse(*TINY, "--launcher", "slurm", "--out", str(out))
    code = launch(options, args, cluster="local")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "submitted 2 job(s) (local)" in err  # one job per (method, OOD set)
    assert _cells(out) == _cells(launched)
    assert list((out / "slurm").glob("*_log.out"))  # submitit's logs under RUN_DIR/slurm


def test_two_processes_evaluating_into_one_directory_do_not_corrupt_it(launched, tmp_path, capsys):
    from oodbench.runner import plan_run

    out = tmp_path / "shared"
    _seed(launched, out)
    options, _ = _parse(*TINY, "--out", str(out))
    plan = plan_run(options, log=lambda m: None)
    by_threat = sorted(plan.cells, key=lambda c: (c.threat, c.method))
    # each process gets one threat of both detectors: both fit ODIN, score the clean in-dist set and update
    # run.json at the same time
    jobs = evaluation_jobs([by_threat[:2], by_threat[2:]], job_options(options, plan))
    outcomes = run_processes(jobs, [("cpu", "")] * 2, tmp_path / "logs")
    assert all(o.ok for o in outcomes), [o.detail for o in outcomes]

    for path in (out / "cells").glob("*.json"):
        json.loads(path.read_text())
    json.loads((out / "run.json").read_text())
    assert not list(out.rglob("*.tmp"))  # no temp file of an atomic write left behind
    assert _cells(out) == _cells(launched)
    fits = sum(p.read_text().count("[odin] fitted") for p in (tmp_path / "logs").glob("*.log"))
    assert fits == 1  # the other process waited for the lock and loaded the fit
    capsys.readouterr()
    assert main(["table", str(out)]) == 0
    assert "odin" in capsys.readouterr().out


def test_a_failing_worker_fails_the_launch_and_names_its_cells(launched, tmp_path, capsys):
    out = tmp_path / "failing"
    _seed(launched, out)
    broken = []

    def break_one(job):
        if job.name == "cells-1":
            job.options["threats"] = ["no-such-threat"]
            broken.append(job)

    options, args = _parse(*TINY, *CPU_WORKERS, "--out", str(out))
    code = launch(options, args, job_hook=break_one)
    err = capsys.readouterr().err
    assert code == 1
    (job,) = broken
    assert "cells-1" in err and all(label in err for label in job.labels)
    (log,) = (out / "launch").glob("*/cells-1.log")
    assert str(log) in err and "no-such-threat" in log.read_text()
    finished = {p.stem for p in (out / "cells").glob("*.json")}
    assert finished and finished.isdisjoint(job.cells)  # the other worker's cells are done


def test_a_failing_submitit_training_job_stops_before_evaluation(tmp_path, capsys, cache_env):
    out = tmp_path / "failing-train"

    def break_training(job):
        if job.phase == "train":
            job.options["threats"] = ["no-such-threat"]

    options, args = _parse(*TINY, "--launcher", "slurm", "--out", str(out))
    code = launch(options, args, cluster="local", job_hook=break_training)
    err = capsys.readouterr().err
    assert code == 1
    assert "train-0: training of msp, odin" in err and "no-such-threat" in err
    assert "not started, as their networks are not trained: 4 cell(s)" in err and "odin/tiles/linf" in err
    assert not (out / "cells").exists() and not list((out / "checkpoints").glob("*/final.pt"))


# ----------------------------------------------------------------------------------------------------
# checks before anything starts (no compute)
# ----------------------------------------------------------------------------------------------------
def test_a_bad_option_fails_in_the_submitting_process_before_any_worker_starts(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", *TINY, *CPU_WORKERS, "--methods", "mps", "--out", str(out)])
    assert code == 2 and "did you mean 'msp'" in capsys.readouterr().err
    assert not (out / "launch").exists()


def test_gpu_workers_without_a_gpu_are_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU")
    argv = [a for a in TINY if a not in ("--device", "cpu")]
    code = main(["run", *argv, "--gpus", "0,1", "--out", str(tmp_path / "run")])
    assert code == 2 and "--gpus cpu,cpu" in capsys.readouterr().err


def test_slurm_without_submitit_or_sbatch_is_a_clear_error(tmp_path, capsys, monkeypatch):
    if shutil.which("sbatch") is None and importlib.util.find_spec("submitit") is not None:
        code = main(["run", *TINY, "--launcher", "slurm", "--out", str(tmp_path / "run")])
        assert code == 2 and "sbatch" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    code = main(["run", *TINY, "--launcher", "slurm", "--out", str(tmp_path / "run")])
    assert code == 2 and "pip install 'oodbench[slurm]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cells_are_grouped_by_method_and_balanced():
    def cell(method, ood, threat):
        return SimpleNamespace(key=f"{method}-{ood}-{threat}", method=method, ood_set=ood, threat=threat)

    grid = [cell(m, o, t) for m in ("msp", "odin", "atom") for o in ("svhn", "lsun") for t in ("natural", "linf")]
    groups = group_cells(grid, 3)
    assert [{c.method for c in g} for g in groups] == [{"msp"}, {"odin"}, {"atom"}]  # one method per worker
    assert sorted(c.key for g in groups for c in g) == sorted(c.key for c in grid)
    # more workers than methods: a method is split between OOD sets, the rest stays whole
    groups = group_cells(grid[:8], 4)
    assert len(groups) == 4 and all({c.ood_set for c in g} == {g[0].ood_set} for g in groups)
    # comp reuses the corruption search of its (method, OOD set): never split apart
    grid = [cell("atom", "svhn", t) for t in ("natural", "corruption", "linf", "comp")]
    for group in group_cells(grid, 4):
        threats = {c.threat for c in group}
        assert ("comp" in threats) == ("corruption" in threats)
    assert group_cells([], 2) == []
