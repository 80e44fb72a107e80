"""The `oodbench` command line: list, data, run, table (and the commands added by later modules).

Every user-facing error (unknown name, missing data, bad checkpoint, bad option) is printed as one clear
message with exit status 2; nothing already finished is lost, and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import os
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
    import dataclasses

    from oodbench.config import PROFILES, PROTOCOLS, switch_values
    from oodbench.registry import ARCHS, DATASETS, DETECTORS, THREATS, load_plugins

    load_plugins(args.plugins)

    def section(title, entries, extra=lambda e: ""):
        print(f"{title}:")
        for entry in entries:
            origin = f"  [from {entry.origin}]" if entry.origin != "oodbench" else ""
            print(f"  {entry.name:<16s} {extra(entry)}{entry.summary}{origin}")
        print()

    def tag(entry) -> str:
        if entry.meta.get("ablation"):
            return "[ablation] "
        return f"[{entry.meta['group']}] " if entry.meta.get("group") else ""

    section("detectors", DETECTORS.entries(), tag)
    section("threat models", THREATS.entries())
    section("data sets", DATASETS.entries(), lambda e: f"[{','.join(sorted(_roles(e)))}] ")
    section("architectures", ARCHS.entries())
    print("protocols (switches that differ from paper):")
    paper = switch_values(dataclasses.asdict(PROTOCOLS["paper"]))
    for name, protocol in PROTOCOLS.items():
        switches = switch_values(dataclasses.asdict(protocol))
        changed = {k: v for k, v in switches.items() if k != "name" and v != paper[k]}
        print(f"  {name:<16s} {', '.join(f'{k}={v}' for k, v in changed.items()) or '(the paper as written)'}")
    print("profiles:  " + ", ".join(PROFILES))
    return 0


def _roles(entry) -> set[str]:
    spec = entry.obj
    roles = getattr(spec, "roles", None)
    if roles:
        return set(roles)
    role = getattr(spec, "role", None)
    return {role} if role else set()


_STATE_WORDS = {"missing": "MISSING", "incomplete": "INCOMPLETE", "checksum mismatch": "CHECKSUM MISMATCH"}


def cmd_data(args) -> int:
    from tabulate import tabulate

    from oodbench.data import default_root
    from oodbench.data.download import data_status, download
    from oodbench.data.sources import downloadable_names

    root = Path(args.data_root).expanduser() if args.data_root else default_root()
    show = not args.no_progress
    if args.download:
        names = _csv(args.download)
        download(downloadable_names() if names == ["all"] else names, root, show=show)
        print()
    rows = data_status(root, verify=args.verify, show=show)
    print(
        tabulate(
            [[r["name"], r["role"], _STATE_WORDS.get(r["state"], r["state"]), r["path"]] for r in rows],
            headers=["data set", "role", "state", "path"],
            tablefmt="simple",
        )
    )
    checked = [r for r in rows if r["state"] != "built-in" and r["state"] != "missing" and r["detail"]]
    if checked:
        print("\nChecks:")
        for r in checked:
            print(f"  {r['name']} ({r['role']}): {_STATE_WORDS.get(r['state'], r['state'])}: {r['detail']}")
    missing = {r["name"]: r for r in rows if r["state"] not in ("present", "built-in")}  # once per set
    if missing:
        print("\nHow to obtain the sets that are not complete (expected layout under the data root):")
        for r in missing.values():
            print(f"\n{r['name']}:\n  layout: {r['layout']}\n  source: {r['obtain']}")
            if r["download"]:
                print(f"  download: oodbench data --download {r['name']} --data-root {root}")
                print(f"  verified by: {r['verification']}")
            elif r["unavailable"]:
                print(f"  no download: {r['unavailable']}")
    bad = [r for r in rows if r["state"] in ("incomplete", "checksum mismatch")]
    return 1 if args.verify and bad else 0


def _data_help() -> str:
    """The epilog of `oodbench data --help`: for every set of the paper, how it is obtained and verified."""
    from oodbench.data.sources import SOURCES

    lines = ["data sets of the paper (how each is obtained; how it is verified):", ""]
    for source in SOURCES.values():
        how = "--download " + source.name if source.downloadable else "no download: " + source.unavailable
        lines += [f"  {source.name}: {how}", f"      {source.verification}", f"      from {source.home}"]
    lines += [
        "",
        "Downloads resume after an interruption (rerun the same command), are checked against the published",
        "checksum, then extracted and moved into place whole; sets already present are never downloaded again.",
        "State: present / MISSING / INCOMPLETE / CHECKSUM MISMATCH; --verify recomputes every checksum (and",
        "exits with status 1 when a set fails).",
    ]
    return "\n".join(lines)


def cmd_run(args) -> int:
    from oodbench.results import load_cells, summary_table
    from oodbench.runner import run

    options = run_options(args)
    if options.download:  # every file the run reads, fetched and verified before any compute
        from oodbench.data.download import download_for_run

        download_for_run(
            options.in_dist,
            options.ood,
            options.aux,
            options.methods,
            options.data_root,
            show=options.progress,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    if args.launcher != "local" or args.gpus:
        from oodbench.launch import launch

        return launch(options, args)
    started = time.time()
    run_dir = run(options, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"\nrun directory: {run_dir}  (wall time {time.time() - started:.1f} s)")
    if not options.train_only:
        print(summary_table(load_cells([run_dir])))
        from oodbench.figures import RUN_FIGURE, plot_run

        figure = plot_run([run_dir], run_dir / RUN_FIGURE)
        print(f"\nfigure (FPR per detector, natural vs attacked): {figure}  (redraw: oodbench plot run {run_dir})")
    return 0


def cmd_table(args) -> int:
    from oodbench.results import id_summary, load_cells, show_provenance, summary_table, tidy, vs_paper

    if args.show:
        print(show_provenance(args.run_dirs, args.show))
        return 0
    cells = load_cells(args.run_dirs)
    metrics = args.metrics
    if args.format == "csv":
        from oodbench.results import with_flags

        with_flags(tidy(cells), cells).to_csv(args.output or sys.stdout, index=False, float_format="%.4f")
        return 0
    if args.flags:
        from oodbench.results import flags_report

        text = flags_report(cells, args.format)
    elif args.id:
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

    listing = sub.add_parser("list", help="registered detectors, threat models, data sets, architectures")
    listing.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="also list what this module registers (repeatable; also $OODBENCH_PLUGINS)",
    )
    listing.set_defaults(func=cmd_list)

    data = sub.add_parser(
        "data",
        help="which data sets are present, their layout and how to obtain them; --download fetches them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data.add_argument(
        "--data-root", default=None, help="folder holding the data sets (default: $OODBENCH_DATA or ./data)"
    )
    data.add_argument(
        "--download",
        default=None,
        metavar="NAME[,NAME]",
        help="download, verify and install these sets (or 'all' that have a public download), then show the state",
    )
    data.add_argument("--verify", action="store_true", help="recompute the checksums of every set that is present")
    data.add_argument("--no-progress", action="store_true", help="no progress bars")
    data.set_defaults(func=cmd_data)
    _plain_format_help = data.format_help

    def _format_data_help() -> str:  # the epilog reads the source registry, so only `data --help` imports it
        data.epilog = _data_help()
        return _plain_format_help()

    data.format_help = _format_data_help

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
        "--flags",
        action="store_true",
        help="per-cell attack diagnostics (zero gradients, saturation, Square vs white-box, eps sweep) and their flags",
    )
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
    except Exception as error:  # never a raw traceback: say where it came from and how to see it
        if os.environ.get("OODBENCH_DEBUG"):
            raise
        where = _failing_frame(error)
        print(
            f"oodbench: error: {type(error).__name__}: {error}\n  raised in {where}. Finished cells and epochs are "
            "saved (rerun the same command to resume); set OODBENCH_DEBUG=1 to see the traceback, and report it "
            "if the code is oodbench's",
            file=sys.stderr,
        )
        return 1


def _failing_frame(error: BaseException) -> str:
    """'FILE:LINE in FUNCTION' of the innermost frame of `error` (a user's plugin or model, or oodbench)."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "(unknown)"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}"


def _load_extra_commands() -> None:
    """Import the modules that add subcommands: `check` and every module of `oodbench.tools`."""
    import importlib

    from oodbench.registry import import_submodules

    importlib.import_module("oodbench.check")
    import_submodules("oodbench.tools")


if __name__ == "__main__":
    sys.exit(main())
