"""The layout of a run directory: the one place that names its files (the runner writes them, `launch` watches
them, `results` reads them).

    run.json                      resolved configuration and provenance (DESIGN, issue "trustworthy runs")
    checkpoints/<recipe>-<key>/   training checkpoints (final.pt, last.pt for resume, periodic ones, mining log)
    detectors/<method>-<key>.pt   fitted post-hoc state (ODIN magnitude, Mahalanobis statistics)
    id/<method>-<key>.npz|json    clean in-distribution scores, predictions and Table 11 metrics (once per detector)
    cells/<key>.npz               per-sample OOD scores of one cell
    cells/<key>.json              the cell's metrics row (written last: its presence marks the cell finished)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodbench.io import read_json, write_json
from oodbench.locks import file_lock

#: where runs go without `--out`, and where `oodbench table` looks without arguments
DEFAULT_RUNS = Path("oodbench-runs")
#: files of a checkpoint directory (written by `oodbench.training`)
FINAL_CHECKPOINT = "final.pt"
RESUME_CHECKPOINT = "last.pt"
MINING_LOG = "mining.json"
MINING_PLOT = "mining.png"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    @property
    def id_dir(self) -> Path:
        return self.root / "id"

    def is_run(self) -> bool:
        """Whether this looks like a run directory (it has run.json or cells/)."""
        return self.cells.is_dir() or self.run_json.is_file()

    def checkpoint_dir(self, recipe: str, train_key: str) -> Path:
        """Where the network of one training recipe and key is trained and checkpointed."""
        return self.root / "checkpoints" / f"{recipe}-{train_key}"

    def fitted_state(self, method: str, fit_key: str) -> Path:
        """The fitted post-hoc state of a detector (`.pt`; its facts beside it as `.json`)."""
        return self.root / "detectors" / f"{method}-{fit_key}.pt"

    def id_scores(self, method: str, fit_key: str, test_fingerprint: str) -> Path:
        """Base path (no suffix) of a detector's clean in-dist scores (`.npz`) and metrics (`.json`)."""
        return self.id_dir / f"{method}-{fit_key}-{test_fingerprint[:12]}"

    def cell_scores(self, key: str) -> Path:
        return self.cells / f"{key}.npz"

    def cell_row(self, key: str) -> Path:
        return self.cells / f"{key}.json"

    def cell_finished(self, key: str) -> bool:
        """A cell is finished once its metrics row exists (it is written last)."""
        return self.cell_row(key).exists()

    def cell_rows(self) -> list[Path]:
        """The metrics rows of every finished cell, sorted."""
        return sorted(self.cells.glob("*.json"))

    def id_rows(self) -> list[Path]:
        """The in-distribution metrics of every scored detector, sorted."""
        return sorted(self.id_dir.glob("*.json"))


def find_runs(root: Path = DEFAULT_RUNS) -> list[Path]:
    """Every run directory directly under `root`."""
    return sorted(path.parent for path in Path(root).glob("*/run.json"))


def merge_run_json(
    root: Path,
    record: dict[str, Any],
    device: str,
    timings: dict[str, float] | None = None,
    method_facts: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Merge one process's `record` (a planned run's, `RunPlan.record`) into run.json, adding this machine's
    environment when the file is new; locked, since several workers may share a run directory."""
    from oodbench.provenance import environment

    layout = RunDir(root)
    with file_lock(layout.root / ".run.json.lock"):
        path = layout.run_json
        merged = read_json(path) if path.exists() else {**record, "environment": environment(device)}
        methods = merged.setdefault("methods", {})
        for name, entry in record["methods"].items():
            methods[name] = {**methods.get(name, {}), **entry}
        for name, facts in (method_facts or {}).items():
            methods.setdefault(name, {}).update(facts)
        merged.setdefault("data", {}).setdefault("ood", {}).update(record["data"]["ood"])
        if timings:
            merged.setdefault("timings", {}).update(timings)
        write_json(path, merged)
