"""Scale-out of a run (DESIGN "Scale-out"): the cells of one run on several worker processes of one machine
(`oodbench run --gpus 0,1,2,3`), or as SLURM job arrays through submitit (`oodbench run --launcher slurm`),
every worker writing into the same run directory.

The submitting process plans the whole run first (`plan_run`: every name, data set, checkpoint and option is
checked before anything is started) and writes `run.json`. Then two phases:

1. **train**: one job per network that is not trained yet (one per distinct `train_key`: methods that share a
   recipe share the network), `train_only=True`, restricted to the methods of that network;
2. **evaluate**: the unfinished cells, split into groups (`group_cells`); each job runs the runner with
   `only_cells` on its group and the run's full options, so every cell key is the one the submitting process
   planned. Cells of one method stay in one job where the balance allows it: a detector's fit and clean in-dist
   scores are cached in the run directory, so a method split over jobs is fitted once (under a file lock) and
   reused.

Phase 2 starts only when every phase-1 job succeeded: an evaluation job must never train (it would duplicate
the training), and a failed training blocks every cell of its network. Workers re-plan their share and refuse
to run when their plan differs from the submitting process's (other code, data or options on a node).

On one machine (`--gpus`) the jobs are subprocesses (`python -m oodbench.launch JOB.json`: a fresh
interpreter, like the multiprocessing `spawn` context, so CUDA_VISIBLE_DEVICES is set before CUDA starts and
nothing is inherited from a forked parent), one at a time per listed device; their specs and logs are kept in
`RUN_DIR/launch/<time>/`. `cpu` entries (or `--device cpu`) make CPU workers.

On SLURM the submitting process waits for phase 1 before it submits phase 2 (rather than an `afterok`
dependency): it runs on the login node and holds no GPU, it never submits evaluation jobs that a failed
training would leave pending forever, and the same code runs under submitit's local executor in the tests.
If it is stopped, the submitted jobs keep running; rerunning the same command reuses every trained network
and finished cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodbench.cachedir import cache_env
from oodbench.errors import ConfigError, OodbenchError
from oodbench.registry import threat_cost
from oodbench.rundir import FINAL_CHECKPOINT, RunDir, merge_run_json

if TYPE_CHECKING:
    from oodbench.runner import CellPlan, RunOptions, RunPlan

Log = Callable[[str], None]
JobHook = Callable[["Job"], None]

#: rough relative cost of a cell per threat model (PGD steps dominate), used only to balance the groups
#: threats that reuse another threat's work on the same (method, OOD set) through the runner's memo: kept together
SHARES_WORK_WITH = {"comp": "corruption"}
POLL_SECONDS = 0.2


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Job:
    """One worker's share of a launched run, as plain data (JSON for processes, pickled for submitit)."""

    name: str  # train-0, cells-3: also the name of its spec and log files
    phase: str  # "train" or "evaluate"
    options: dict[str, Any]  # RunOptions as a dict
    cells: list[str] = field(default_factory=list)  # cell keys it evaluates
    labels: list[str] = field(default_factory=list)  # method/ood_set/threat of those cells, for messages
    train_keys: list[str] = field(default_factory=list)  # networks it trains (phase 1)
    env: dict[str, str] = field(default_factory=dict)  # set in the worker before planning
    threads: int | None = None  # torch CPU threads of the worker (None: torch's default)

    def describe(self) -> str:
        """What the job does, in words."""
        if self.phase == "train":
            return f"trains {', '.join(self.options['methods'])} (network {', '.join(self.train_keys)})"
        return f"evaluates {len(self.cells)} cell(s): {', '.join(self.labels)}"


@dataclass
class JobOutcome:
    """How one job ended."""

    job: Job
    ok: bool
    detail: str  # exit status or the job's error
    log: str  # where its output is


# ----------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------
def launch(
    options: RunOptions,
    args: argparse.Namespace,
    *,
    cluster: str = "slurm",
    job_hook: JobHook | None = None,
    log: Log = _stderr,
) -> int:
    """Run `options` scaled out as `args` asks (`--gpus` or `--launcher slurm`); returns the exit status.

    `cluster` is the submitit executor used by `--launcher slurm` ("slurm"; "local" runs the jobs as local
    processes through the same code, for tests). `job_hook` is called with every job before it starts (tests
    use it to break one job). User errors raise `OodbenchError` before anything is started.
    """
    from oodbench.runner import plan_run

    use_slurm = getattr(args, "launcher", "local") == "slurm"
    gpus = list(getattr(args, "gpus", None) or [])
    if use_slurm and gpus:
        raise ConfigError("--gpus is for one machine; with --launcher slurm use --slurm-gpus-per-job")
    if not use_slurm and not gpus:
        raise ConfigError("scale-out needs --gpus 0,1,... (one machine) or --launcher slurm")
    # cheap checks of the launcher itself come before the (possibly long) planning
    executor_module = _import_submitit(cluster) if use_slurm else None
    devices = None if use_slurm else worker_devices(gpus, options.device)

    started = time.time()
    # the submitting process plans on the CPU: it needs no GPU (a SLURM login node has none) and holds none
    plan = plan_run(dataclasses.replace(options, device="cpu", progress=False), log)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.record["command"] = dataclasses.asdict(options)
    plan.record["launch"] = (
        {"launcher": "slurm", "cluster": cluster} if use_slurm else {"launcher": "processes", "gpus": gpus}
    )
    merge_run_json(plan.run_dir, plan.record, str(plan.device))

    base = job_options(options, plan)
    pending = [c for c in plan.cells if not RunDir(plan.run_dir).cell_finished(c.key)]
    if not pending and not options.train_only:
        log(f"all {len(plan.cells)} cells of {plan.run_dir} are finished; nothing to do")
        return 0
    train = train_jobs(plan, base)
    if options.train_only:
        evaluate: list[Job] = []
    elif use_slurm:
        evaluate = evaluation_jobs(_by_method_and_ood(pending), base)
    else:
        evaluate = evaluation_jobs(group_cells(pending, len(devices)), base)
    log(
        f"{plan.run_dir}: {len(train)} network(s) to train, {len(pending) if evaluate else 0} cell(s) to evaluate "
        f"in {len(evaluate)} job(s)"
    )

    if use_slurm:
        status = _launch_submitit(executor_module, cluster, plan, args, train, evaluate, log, job_hook)
    else:
        status = _launch_processes(plan, devices, train, evaluate, log, job_hook)
    if status == 0 and not options.train_only:
        from oodbench.results import load_cells, summary_table

        print(f"\nrun directory: {plan.run_dir}  (wall time {time.time() - started:.1f} s)")
        print(summary_table(load_cells([plan.run_dir])))
    return status


# ----------------------------------------------------------------------------------------------------
# jobs
# ----------------------------------------------------------------------------------------------------
def job_options(options: RunOptions, plan: RunPlan) -> dict[str, Any]:
    """The run's options as a dict for the workers: absolute paths (a job may start in another directory),
    the run directory as planned, no progress bars (the output goes to log files)."""

    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else path

    out = dataclasses.asdict(options)
    out.update(
        out=str(plan.run_dir.resolve()),
        data_root=absolute(options.data_root),
        cache_dir=absolute(options.cache_dir),
        init=absolute(options.init),
        checkpoints={m: absolute(p) for m, p in options.checkpoints.items()},
        progress=False,
        only_cells=None,
        train_only=False,
    )
    return out


def _job_env() -> dict[str, str]:
    # the cache of decoded data sets and corruption variants must be the submitting process's, also on a node
    # that starts in another directory
    return cache_env()


def train_jobs(plan: RunPlan, base: dict[str, Any]) -> list[Job]:
    """Phase 1: one job per network that is neither given (--checkpoint) nor trained in the run directory.

    Every network of the run is trained, not only those of unfinished cells, because an evaluation job loads
    all of the run's networks (the runner's `execute` walks every method) and must never train one itself.
    """
    by_key: dict[str, list[str]] = {}
    for method in plan.methods:
        if method.checkpoint is None and not (method.checkpoint_dir / FINAL_CHECKPOINT).exists():
            by_key.setdefault(method.train_key, []).append(method.name)
    jobs = []
    for index, (key, methods) in enumerate(by_key.items()):
        # only this network's methods: a worker trains exactly one network (train_key does not depend on the
        # other methods of the run; the worker checks that)
        options = {
            **base,
            "methods": methods,
            "overrides": {m: v for m, v in base["overrides"].items() if m in methods},
            "checkpoints": {},
            "train_only": True,
        }
        jobs.append(Job(f"train-{index}", "train", options, train_keys=[key], env=_job_env()))
    return jobs


def evaluation_jobs(groups: Sequence[Sequence[CellPlan]], base: dict[str, Any]) -> list[Job]:
    """Phase 2: one job per group of cells, with the run's full options restricted by `only_cells`."""
    jobs = []
    for index, cells in enumerate(groups):
        keys = [c.key for c in cells]
        jobs.append(
            Job(
                f"cells-{index}",
                "evaluate",
                {**base, "only_cells": keys},
                cells=keys,
                labels=[f"{c.method}/{c.ood_set}/{c.threat}" for c in cells],
                env=_job_env(),
            )
        )
    return jobs


def _cost(cells: Sequence[CellPlan]) -> float:
    return sum(threat_cost(c.threat) for c in cells)


def _flat(unit: Sequence[Sequence[CellPlan]]) -> list[CellPlan]:
    return [cell for atom in unit for cell in atom]


def _balance(items: list[Any], bins: int, cost: Callable[[Any], float]) -> list[list[Any]]:
    """Longest-processing-time-first: each item, largest first, to the least loaded bin (stable, deterministic)."""
    out: list[list[Any]] = [[] for _ in range(min(bins, len(items)))]
    loads = [0.0] * len(out)
    for item in sorted(items, key=cost, reverse=True):
        i = loads.index(min(loads))
        out[i].append(item)
        loads[i] += cost(item)
    return out


def group_cells(cells: Sequence[CellPlan], n_groups: int) -> list[list[CellPlan]]:
    """Split cells into at most `n_groups` groups of balanced estimated cost, keeping a method's cells together.

    Starts from one unit per method; the most expensive unit is halved (by OOD set, else by threat; comp stays
    with corruption, whose search it reuses) while there are fewer units than groups or it alone exceeds a fair
    share; the units are then assigned largest first to the least loaded group.
    """
    if not cells or n_groups < 1:
        return []
    atoms: dict[tuple[str, str, str], list[CellPlan]] = {}
    for cell in cells:
        atoms.setdefault((cell.method, cell.ood_set, SHARES_WORK_WITH.get(cell.threat, cell.threat)), []).append(cell)
    units: dict[str, list[list[CellPlan]]] = {}
    for (method, _, _), atom in atoms.items():
        units.setdefault(method, []).append(atom)
    pool = list(units.values())
    fair_share = _cost(cells) / n_groups

    def unit_cost(unit: list[list[CellPlan]]) -> float:
        return _cost(_flat(unit))

    while True:
        splittable = [u for u in pool if len(u) > 1]
        if not splittable:
            break
        largest = max(splittable, key=unit_cost)
        if len(pool) >= n_groups and unit_cost(largest) <= fair_share:
            break
        pool.remove(largest)
        by_ood: dict[str, list[list[CellPlan]]] = {}
        for atom in largest:
            by_ood.setdefault(atom[0].ood_set, []).append(atom)
        if len(by_ood) > 1:  # split between OOD sets first: each half keeps whole OOD sets
            halves = [[a for group in half for a in group] for half in _balance(list(by_ood.values()), 2, unit_cost)]
        else:
            halves = _balance(largest, 2, _cost)
        pool += halves
    return [[c for unit in group for c in _flat(unit)] for group in _balance(pool, n_groups, unit_cost)]


def _by_method_and_ood(cells: Sequence[CellPlan]) -> list[list[CellPlan]]:
    """SLURM phase 2: one job per (method, OOD set); a method's jobs share its cached fit and in-dist scores."""
    groups: dict[tuple[str, str], list[CellPlan]] = {}
    for cell in cells:
        groups.setdefault((cell.method, cell.ood_set), []).append(cell)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------------
# the worker side
# ----------------------------------------------------------------------------------------------------
def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job of a launched run: re-plan with its options, check the plan, execute. Module-level and plain
    data in and out, so that submitit can pickle it; raises when the job did not do all of its work."""
    job = Job(**spec)
    os.environ.update(job.env)
    from oodbench.runner import RunOptions, execute, plan_run

    def log(message: str) -> None:
        print(message, flush=True)

    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    started = time.time()
    plan = plan_run(RunOptions(**job.options), log)
    log(f"[launch] {job.name} on {plan.device}: {job.describe()}")
    _check_job_plan(job, plan)
    execute(plan, log)
    if job.phase == "train":
        untrained = [m.name for m in plan.methods if not (m.checkpoint_dir / FINAL_CHECKPOINT).exists()]
        if untrained:
            raise OodbenchError(f"{job.name}: no final checkpoint for {', '.join(untrained)} after training")
    else:
        missing = [k for k in job.cells if not RunDir(plan.run_dir).cell_finished(k)]
        if missing:
            raise OodbenchError(f"{job.name}: cells {', '.join(missing)} were not written")
    seconds = time.time() - started
    log(f"[launch] {job.name} done in {seconds:.1f} s")
    return {"name": job.name, "cells": job.cells, "train_keys": job.train_keys, "seconds": seconds}


def _check_job_plan(job: Job, plan: RunPlan) -> None:
    """A worker whose plan differs from the submitting process's would silently do nothing (`only_cells` drops
    unknown keys) or train inside phase 2: refuse instead."""
    hint = "the job sees other code, data or options than the submitting process (same install on every node?)"
    if job.phase == "train":
        keys = sorted({m.train_key for m in plan.methods})
        if keys != sorted(job.train_keys):
            raise OodbenchError(f"{job.name}: planned networks {keys}, expected {job.train_keys}: {hint}")
        return
    found = {c.key for c in plan.cells}
    lost = [label for key, label in zip(job.cells, job.labels) if key not in found]
    if lost:
        raise OodbenchError(f"{job.name}: cells {', '.join(lost)} are not in this job's plan: {hint}")
    untrained = [
        m.name for m in plan.methods if m.checkpoint is None and not (m.checkpoint_dir / FINAL_CHECKPOINT).exists()
    ]
    if untrained:
        raise OodbenchError(
            f"{job.name}: the network of {', '.join(untrained)} is not trained; an evaluation job does not train "
            "(rerun the launch: its first phase trains it)"
        )


def _worker_main(argv: list[str]) -> int:
    """`python -m oodbench.launch JOB.json`: a worker process of `--gpus`."""
    spec = json.loads(Path(argv[0]).read_text())
    try:
        run_job(spec)
    except OodbenchError as error:
        print(f"oodbench: error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


# ----------------------------------------------------------------------------------------------------
# one machine: worker processes
# ----------------------------------------------------------------------------------------------------
def worker_devices(gpus: Sequence[str], device: str) -> list[tuple[str, str]]:
    """(torch device, CUDA_VISIBLE_DEVICES) per worker slot from `--gpus` and `--device`.

    `cpu` entries, or every entry with `--device cpu`, are CPU workers (no GPU visible). A GPU entry is an index
    (into the parent's CUDA_VISIBLE_DEVICES when that is set) or a GPU-/MIG- UUID; the worker sees that one GPU
    as `cuda`.
    """
    if not gpus:
        raise ConfigError("--gpus needs at least one entry, e.g. --gpus 0,1 or --gpus cpu,cpu")
    if device == "cpu":
        return [("cpu", "")] * len(gpus)
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    out: list[tuple[str, str]] = []
    for entry in gpus:
        if entry == "cpu":
            out.append(("cpu", ""))
        elif entry.isdigit() or entry.startswith(("GPU-", "MIG-")):
            out.append(("cuda", visible[int(entry)] if entry.isdigit() and int(entry) < len(visible) else entry))
        else:
            raise ConfigError(f"--gpus entry '{entry}' is not a GPU index, a GPU-/MIG- UUID or 'cpu'")
    indices = [int(e) for e in gpus if e.isdigit()]
    if any(d == "cuda" for d, _ in out):
        import torch

        count = torch.cuda.device_count()  # does not initialise CUDA in this process
        if count == 0 or (indices and max(indices) >= count):
            raise ConfigError(
                f"--gpus {','.join(gpus)}: torch sees {count} GPU(s); without GPUs use --gpus cpu,cpu or --device cpu"
            )
    return out


def _launch_processes(
    plan: RunPlan,
    devices: list[tuple[str, str]],
    train: list[Job],
    evaluate: list[Job],
    log: Log,
    job_hook: JobHook | None,
) -> int:
    folder = plan.run_dir / "launch" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    log(f"workers: {', '.join(_device_name(d) for d in devices)}; job specs and logs in {folder}")
    if train:
        log(f"phase 1: training {len(train)} network(s)")
        outcomes = run_processes(train, devices, folder, log, job_hook)
        # a train job plans only its methods: put the full run's method records back into run.json
        merge_run_json(plan.run_dir, plan.record, str(plan.device))
        if not all(o.ok for o in outcomes):
            return _report_failures(outcomes, plan, log, blocked=evaluate)
    if not evaluate:
        return 0
    log(f"phase 2: evaluating {sum(len(j.cells) for j in evaluate)} cell(s) in {len(evaluate)} job(s)")
    return _report_failures(run_processes(evaluate, devices, folder, log, job_hook), plan, log)


def _device_name(device: tuple[str, str]) -> str:
    return "cpu" if device[0] == "cpu" else f"GPU {device[1]}"


def run_processes(
    jobs: Sequence[Job],
    devices: Sequence[tuple[str, str]],
    folder: Path,
    log: Log = _stderr,
    job_hook: JobHook | None = None,
) -> list[JobOutcome]:
    """Run `jobs` as worker processes, at most one at a time per device slot; returns their outcomes in order.

    Each worker is a fresh interpreter (`python -m oodbench.launch SPEC`) with CUDA_VISIBLE_DEVICES set to its
    device, the cores divided between the slots (OMP_NUM_THREADS, unless the user set it) and its output in
    `folder/<job>.log`. An interrupt stops the workers this function started.
    """
    folder.mkdir(parents=True, exist_ok=True)
    queue = list(jobs)
    free = list(range(len(devices)))
    running: dict[int, tuple[Job, subprocess.Popen, Any, float]] = {}
    outcomes: dict[str, JobOutcome] = {}
    package_root = str(Path(__file__).resolve().parents[1])  # workers import this very oodbench
    # the workers share the cores: without a limit each would start one thread per core (oversubscription);
    # the user's OMP_NUM_THREADS wins
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // len(devices)))
    try:
        while queue or running:
            while queue and free:
                slot, job = free.pop(0), queue.pop(0)
                torch_device, visible = devices[slot]
                job.options["device"] = torch_device
                job.threads = threads
                if job_hook is not None:
                    job_hook(job)
                spec, log_path = folder / f"{job.name}.json", folder / f"{job.name}.log"
                spec.write_text(json.dumps(dataclasses.asdict(job), indent=2))
                env = {
                    **os.environ,
                    "OMP_NUM_THREADS": str(threads),
                    **job.env,
                    "CUDA_VISIBLE_DEVICES": visible,
                    "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
                }
                handle = open(log_path, "w")  # closed when the worker ends
                process = subprocess.Popen(
                    [sys.executable, "-m", "oodbench.launch", str(spec)],
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                running[slot] = (job, process, handle, time.time())
                log(f"  {job.name} started on {_device_name(devices[slot])} (pid {process.pid}): {job.describe()}")
            time.sleep(POLL_SECONDS)
            for slot, (job, process, handle, started) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                handle.close()
                del running[slot]
                free.append(slot)
                free.sort()
                log_path = str(folder / f"{job.name}.log")
                detail = "ok" if code == 0 else f"exit status {code}: {_last_error_line(Path(log_path))}"
                outcomes[job.name] = JobOutcome(job, code == 0, detail, log_path)
                log(f"  {job.name} {'finished' if code == 0 else 'FAILED'} after {time.time() - started:.1f} s")
    except BaseException:
        for _, process, _, _ in running.values():
            process.terminate()
        for _, process, handle, _ in running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            handle.close()
        raise
    return [outcomes[job.name] for job in jobs]


def _last_error_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def _report_failures(outcomes: Sequence[JobOutcome], plan: RunPlan, log: Log, blocked: Sequence[Job] = ()) -> int:
    """Name the failed jobs, their unfinished cells and logs; 0 when every job succeeded and wrote its cells."""
    failed = [o for o in outcomes if not o.ok]
    # a job that claims success but left cells unwritten is a failure too
    for outcome in outcomes:
        if outcome.ok and outcome.job.phase == "evaluate":
            missing = [k for k in outcome.job.cells if not RunDir(plan.run_dir).cell_finished(k)]
            if missing:
                failed.append(dataclasses.replace(outcome, ok=False, detail=f"cells {', '.join(missing)} not written"))
    if not failed:
        return 0
    log(f"\noodbench: {len(failed)} of {len(outcomes)} job(s) failed:")
    for outcome in failed:
        job = outcome.job
        if job.phase == "train":
            what = f"training of {', '.join(job.options['methods'])} (network {', '.join(job.train_keys)})"
        else:
            unfinished = [
                label for key, label in zip(job.cells, job.labels) if not RunDir(plan.run_dir).cell_finished(key)
            ]
            what = f"cells {', '.join(unfinished) or '(all written)'}"
        log(f"  {job.name}: {what}\n    {outcome.detail}\n    log: {outcome.log}")
    if blocked:
        labels = [label for job in blocked for label in job.labels]
        shown = ", ".join(labels[:20]) + (f" and {len(labels) - 20} more" if len(labels) > 20 else "")
        log(f"  not started, as their networks are not trained: {len(labels)} cell(s): {shown}")
    log("rerun the same command to retry: trained networks and finished cells are kept")
    return 1


# ----------------------------------------------------------------------------------------------------
# a cluster: SLURM job arrays through submitit
# ----------------------------------------------------------------------------------------------------
def _import_submitit(cluster: str) -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit: pip install 'oodbench[slurm]'") from None
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--launcher slurm: no `sbatch` on this machine; submit from a SLURM login node, "
            "or use --gpus 0,1,... to use the GPUs of one machine"
        )
    return submitit


def _launch_submitit(
    submitit: Any,
    cluster: str,
    plan: RunPlan,
    args: argparse.Namespace,
    train: list[Job],
    evaluate: list[Job],
    log: Log,
    job_hook: JobHook | None,
) -> int:
    folder = Path(args.slurm_folder) if getattr(args, "slurm_folder", None) else plan.run_dir / "slurm"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    on_gpu = plan.record["command"]["device"] != "cpu"  # the user's device (the plan itself was made on the CPU)
    gpus = max(0, int(getattr(args, "slurm_gpus_per_job", 1) or 0)) if on_gpu else 0
    for job in train + evaluate:
        job.options["device"] = "cuda" if gpus else "cpu"
    if train:
        log(f"phase 1: training {len(train)} network(s)")
        outcomes = _submit_and_wait(submitit, executor, train, args, gpus, "train", log, job_hook)
        # a train job plans only its methods: restore the full run's method records
        merge_run_json(plan.run_dir, plan.record, str(plan.device))
        if not all(o.ok for o in outcomes):
            return _report_failures(outcomes, plan, log, blocked=evaluate)
    if not evaluate:
        return 0
    log(f"phase 2: evaluating {sum(len(j.cells) for j in evaluate)} cell(s) in {len(evaluate)} job(s)")
    return _report_failures(
        _submit_and_wait(submitit, executor, evaluate, args, gpus, "eval", log, job_hook), plan, log
    )


def _submit_and_wait(
    submitit: Any,
    executor: Any,
    jobs: list[Job],
    args: argparse.Namespace,
    gpus: int,
    phase: str,
    log: Log,
    job_hook: JobHook | None,
) -> list[JobOutcome]:
    """Submit `jobs` as one job array, print how to watch them, wait, and collect their outcomes."""
    for job in jobs:
        if executor.cluster == "local":  # the jobs share this machine's cores (SLURM gives each its own)
            job.threads = max(1, (os.cpu_count() or 1) // len(jobs))
        if job_hook is not None:
            job_hook(job)
    parameters = {
        "name": f"oodbench-{phase}",
        "timeout_min": int(getattr(args, "slurm_time", 24 * 60)),
        "gpus_per_node": gpus,
        "slurm_partition": getattr(args, "slurm_partition", None),
        "slurm_array_parallelism": len(jobs),
    }
    if getattr(args, "slurm_cpus_per_job", None):  # corruption variants are generated on the job's CPUs
        parameters["cpus_per_task"] = int(args.slurm_cpus_per_job)
    if getattr(args, "slurm_mem_gb", None):
        parameters["mem_gb"] = int(args.slurm_mem_gb)
    executor.update_parameters(**parameters)
    submitted = executor.map_array(run_job, [dataclasses.asdict(job) for job in jobs])
    array = str(submitted[0].job_id).split("_")[0]
    log(f"  submitted {len(submitted)} job(s) ({executor.cluster}): {', '.join(str(s.job_id) for s in submitted)}")
    for job, handle in zip(jobs, submitted):
        log(f"    {handle.job_id} {job.name}: {job.describe()}\n      log: {handle.paths.stdout}")
    if executor.cluster == "slurm":
        log(f"  watch: squeue -j {array}; sacct -j {array}; tail -f {handle.paths.stdout}")
    log(
        "  waiting (this process holds no GPU; if it is stopped the jobs keep running, "
        "and rerunning the same command reuses what they finished)"
    )
    outcomes = []
    for job, handle in zip(jobs, submitted):
        try:
            handle.result()
            outcomes.append(JobOutcome(job, True, "ok", str(handle.paths.stdout)))
        except Exception as error:  # FailedJobError, UncompletedJobError (killed, timed out, cancelled)
            detail = f"job {handle.job_id}: {_error_summary(str(error))}"
            outcomes.append(JobOutcome(job, False, detail, f"{handle.paths.stdout} / {handle.paths.stderr}"))
        log(f"  {job.name} ({handle.job_id}) {'finished' if outcomes[-1].ok else 'FAILED'}")
    return outcomes


def _error_summary(message: str) -> str:
    """The last line of a job's traceback in submitit's error message (the exception itself)."""
    lines = [line.strip() for line in message.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    trace_end = next((i for i, line in enumerate(lines) if line.startswith("You can check full logs")), len(lines))
    return lines[trace_end - 1] if trace_end > 0 else message.strip()[:200]


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
