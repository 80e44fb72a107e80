"""The `oodbench` command line: list, data, run, table (and the commands added by later modules).

Every user-facing error (unknown name, missing data, bad checkpoint, bad option) is printed as one clear
message with exit status 2; nothing already finished is lost, and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from oodbench.commands import registered_commands
from oodbench.errors import OodbenchError
from oodbench.options import RunOptions, add_run_arguments, from_args, parse_csv


def _csv(text: str) -> list[str]:
    return parse_csv(text)


def run_options(args: argparse.Namespace) -> RunOptions:
    """RunOptions from parsed `run` arguments (the options are generated from its fields: `oodbench.options`)."""
    return from_args(args)


def default_threats() -> list[str]:
    """The registered threat models that declare themselves part of the default grid (the paper's four)."""
    from oodbench.registry import default_threats as declared_defaults

    return declared_defaults()


# ----------------------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    from oodbench.config import PROFILES, PROTOCOLS
    from oodbench.registry import ARCHS, DATASETS, DETECTORS, THREATS

    def section(title, entries, extra=lambda e: ""):
        print(f"{title}:")
        for entry in entries:
            print(f"  {entry.name:<16s} {extra(entry)}{entry.summary}")
        print()

    section("detectors", DETECTORS.entries(), lambda e: "[ablation] " if e.meta.get("ablation") else "")
    section("threat models", THREATS.entries())
    section("data sets", DATASETS.entries(), lambda e: f"[{','.join(sorted(_roles(e)))}] ")
    section("architectures", ARCHS.entries())
    print("protocols: " + ", ".join(PROTOCOLS))
    print("profiles:  " + ", ".join(PROFILES))
    return 0


def _roles(entry) -> set[str]:
    spec = entry.obj
    roles = getattr(spec, "roles", None)
    if roles:
        return set(roles)
    role = getattr(spec, "role", None)
    return {role} if role else set()


def cmd_data(args) -> int:
    from tabulate import tabulate

    from oodbench.data import dataset_status

    rows = dataset_status(args.data_root)
    print(
        tabulate(
            [[r["name"], r["role"], "yes" if r["present"] else "MISSING", r["path"]] for r in rows],
            headers=["data set", "role", "present", "path"],
            tablefmt="simple",
        )
    )
    missing = [r for r in rows if not r["present"]]
    if missing:
        print("\nHow to obtain the missing sets (expected layout under the data root):")
        for r in missing:
            print(f"\n{r['name']} ({r['role']}):\n  layout: {r['layout']}\n  obtain: {r['obtain']}")
    return 0


def cmd_run(args) -> int:
    from oodbench.results import load_cells, summary_table
    from oodbench.runner import run

    options = run_options(args)
    if args.launcher != "local" or args.gpus:
        from oodbench.launch import launch

        return launch(options, args)
    started = time.time()
    run_dir = run(options, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"\nrun directory: {run_dir}  (wall time {time.time() - started:.1f} s)")
    if not options.train_only:
        print(summary_table(load_cells([run_dir])))
    return 0


def cmd_table(args) -> int:
    from oodbench.results import id_summary, load_cells, show_provenance, summary_table, tidy, vs_paper

    if args.show:
        print(show_provenance(args.run_dirs, args.show))
        return 0
    cells = load_cells(args.run_dirs)
    metrics = args.metrics
    if args.format == "csv":
        tidy(cells).to_csv(args.output or sys.stdout, index=False, float_format="%.4f")
        return 0
    if args.id:
        from tabulate import tabulate

        frame = id_summary(args.run_dirs)
        text = tabulate(
            frame,
            headers="keys",
            tablefmt="latex" if args.format == "latex" else "pipe",
            showindex=False,
            floatfmt=".2f",
        )
    elif args.vs_paper:
        text = vs_paper(cells, args.format, metrics)
    else:
        text = summary_table(cells, args.format, metrics, per_ood=args.per_ood)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oodbench", description="Benchmark robust OOD detectors (ATOM protocol).")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered detectors, threat models, data sets, architectures").set_defaults(
        func=cmd_list
    )

    data = sub.add_parser("data", help="which data sets are present, their layout and how to obtain them")
    data.add_argument("--data-root", default=None)
    data.set_defaults(func=cmd_data)

    run = sub.add_parser("run", help="train what is missing and evaluate a grid of cells")
    add_run_arguments(run)
    scale = run.add_argument_group("scale-out (see oodbench.launch)")
    scale.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local: this process; slurm: the cells as a SLURM job array through submitit",
    )
    scale.add_argument(
        "--gpus", type=_csv, default=None, help="run cells in parallel, one process per GPU, e.g. 0,1,2,3"
    )
    scale.add_argument("--slurm-partition", default=None)
    scale.add_argument("--slurm-time", type=int, default=24 * 60, help="minutes per job")
    scale.add_argument("--slurm-gpus-per-job", type=int, default=1)
    scale.add_argument("--slurm-cpus-per-job", type=int, default=None, help="CPU cores per job (corruption generation)")
    scale.add_argument("--slurm-mem-gb", type=int, default=None, help="memory per job in GB")
    scale.add_argument("--slurm-folder", default=None, help="submitit logs (default: RUN_DIR/slurm)")
    run.set_defaults(func=cmd_run)

    table = sub.add_parser("table", help="render results of run directories")
    table.add_argument("run_dirs", nargs="*", help="run directories (default: every run under ./oodbench-runs)")
    table.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    table.add_argument("--per-ood", action="store_true", help="one row per OOD set instead of the average")
    table.add_argument("--vs-paper", action="store_true", help="measured next to the paper's numbers")
    table.add_argument("--id", action="store_true", help="in-distribution accuracy / FNR / end-to-end (Table 11)")
    table.add_argument(
        "--metrics", type=_csv, default=["fpr", "auroc"], help="fpr, auroc, aupr_in, aupr_out, detection_error"
    )
    table.add_argument(
        "--show",
        type=_csv,
        default=None,
        metavar="KEY,...",
        help="print provenance fields of run.json (dotted keys, or 'all')",
    )
    table.add_argument("--output", "-o", default=None, help="write to a file instead of stdout")
    table.set_defaults(func=cmd_table)

    _load_extra_commands()
    for register in registered_commands():
        register(sub)
    return parser


def _configure_logging() -> None:
    """Library messages worth a user's eye (e.g. corruption variants generated or reused from the cache) on
    stderr, once."""
    import logging

    logger = logging.getLogger("attacks")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `oodbench` console script; returns the exit status."""
    _configure_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OodbenchError as error:
        print(f"oodbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\noodbench: interrupted; finished cells and epochs are saved - rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


def _load_extra_commands() -> None:
    """Import the modules that add subcommands: `check` and every module of `oodbench.tools`."""
    import importlib

    from oodbench.registry import import_submodules

    importlib.import_module("oodbench.check")
    import_submodules("oodbench.tools")


if __name__ == "__main__":
    sys.exit(main())
