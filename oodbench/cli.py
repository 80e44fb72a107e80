"""The `oodbench` command line: list, data, run, table (and the commands added by later modules).

Every user-facing error (unknown name, missing data, bad checkpoint, bad option) is printed as one clear
message with exit status 2; nothing already finished is lost, and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

from oodbench.errors import ConfigError, OodbenchError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _pixels(text: str) -> float:
    """A pixel-space magnitude: '8/255', '0.0314' or '8' (read as 8/255 when > 1)."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or fraction such as 8/255") from None
    return value / 255.0 if value > 1 else value


def _assignments(items: list[str] | None, what: str, dotted: bool) -> dict:
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} '{item}' must look like {'METHOD.FIELD=VALUE' if dotted else 'KEY=VALUE'}")
        key, value = item.split("=", 1)
        if dotted:
            if "." not in key:
                raise ConfigError(f"{what} '{item}' must look like METHOD.FIELD=VALUE (e.g. atom.q=0.25)")
            method, field = key.split(".", 1)
            out.setdefault(method.strip(), {})[field.strip()] = value.strip()
        else:
            out[key.strip()] = value.strip()
    return out


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run` and the commands that plan a run (sanity, launch)."""
    parser.add_argument(
        "--methods",
        type=_csv,
        default=["all"],
        help="comma-separated detectors, 'all' (the paper's ten), 'posthoc' (seven beyond the paper); `oodbench list`",
    )
    parser.add_argument(
        "--in",
        dest="in_dist",
        default="shapes",
        help="in-distribution data set (default: the built-in 'shapes' benchmark; the older built-in: 'digits')",
    )
    parser.add_argument("--ood", type=_csv, default=None, help="OOD test sets (default: the in-dist set's six)")
    parser.add_argument(
        "--threats", type=_csv, default=None, help="threat models (default: natural,corruption,linf,comp)"
    )
    parser.add_argument("--arch", default=None, help="architecture (default: the profile's: densenet100 / small_cnn)")
    parser.add_argument("--aux", default=None, help="auxiliary outlier pool (default: the in-dist set's)")
    parser.add_argument("--data-root", default=None, help="folder holding the data sets (see `oodbench data`)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="before any compute, download and verify every data set the run reads that is missing "
        "(see `oodbench data --help`)",
    )
    parser.add_argument(
        "--out", default=None, help="run directory (default: oodbench-runs/<in>-<protocol>-<profile>-seed<S>)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", default="paper", help="paper | atom-code | strong (SPEC preamble)")
    parser.add_argument("--profile", default="paper", help="paper (full scale) | smoke (tiny, CPU minutes)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        metavar="METHOD.FIELD=VALUE",
        help="override a method's hyper-parameter, e.g. --set atom.q=0.25 (repeatable)",
    )
    parser.add_argument(
        "--switch",
        dest="switches",
        action="append",
        metavar="KEY=VALUE",
        help="override one protocol switch, e.g. --switch corruption_suite=cifar-c-19",
    )
    parser.add_argument(
        "--tune-split",
        choices=["test", "heldout"],
        default=None,
        help="ODIN/Mahalanobis tuning images: in-dist test (paper, code) or held-out training",
    )
    parser.add_argument(
        "--checkpoint",
        dest="checkpoints",
        action="append",
        metavar="METHOD=PATH",
        help="evaluate this trained checkpoint instead of training (repeatable)",
    )
    parser.add_argument("--init", default=None, help="fine-tune every trained network from this checkpoint")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="base learning rate of every training stage (paper: 0.1; lower it to fine-tune with --init)",
    )
    parser.add_argument("--pgd-steps", type=int, default=None, help="PGD iterations (paper: 40)")
    parser.add_argument("--pgd-restarts", type=int, default=None, help="PGD random restarts (paper: 1)")
    parser.add_argument("--pgd-step", type=_pixels, default=None, help="PGD step size (paper: 1/255)")
    parser.add_argument("--pgd-eps", type=_pixels, default=None, help="L-inf radius (paper: 8/255)")
    parser.add_argument(
        "--square-queries",
        type=int,
        default=None,
        help="strong protocol: Square attack queries per image (profile paper: 5000, smoke: 300; 0: no Square)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation / attack batch size")
    parser.add_argument(
        "--epochs", type=int, default=None, help="override the profile's epochs (lr steps at 50/75/90%%)"
    )
    parser.add_argument("--max-ood", type=int, default=None, help="override the profile's images per OOD set")
    parser.add_argument("--max-train", type=int, default=None, help="override the profile's in-dist training images")
    parser.add_argument("--cache-dir", default=None, help="cache of corruption variants (default: ~/.cache/oodbench)")
    parser.add_argument(
        "--attack-id",
        action="store_true",
        help="also attack in-dist test images towards OOD and report the FNR under attack",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "tf32", "bf16"],
        default="fp32",
        help="precision of the attacks' passes (scores are always IEEE fp32); fp32 is the default "
        "because bf16 measurably weakened PGD (oodbench.accel)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model inside the attacks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_options(args: argparse.Namespace):
    """RunOptions from parsed arguments."""
    from oodbench.runner import RunOptions

    switches = _assignments(args.switches, "--switch", dotted=False)
    if args.tune_split:
        switches["tune_split"] = args.tune_split
    options = RunOptions(
        methods=args.methods,
        in_dist=args.in_dist,
        ood=args.ood,
        threats=args.threats or default_threats(),
        arch=args.arch,
        aux=args.aux,
        protocol=args.protocol,
        profile=args.profile,
        seed=args.seed,
        data_root=args.data_root,
        out=args.out,
        device=args.device,
        download=args.download,
        overrides=_assignments(args.settings, "--set", dotted=True),
        protocol_overrides=switches,
        checkpoints=_assignments(args.checkpoints, "--checkpoint", dotted=False),
        init=args.init,
        train_only=getattr(args, "train_only", False),
        pgd_steps=args.pgd_steps,
        pgd_restarts=args.pgd_restarts,
        pgd_step_size=args.pgd_step,
        pgd_eps=args.pgd_eps,
        square_queries=args.square_queries,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        epochs=args.epochs,
        max_ood=args.max_ood,
        max_train=args.max_train,
        attack_id=args.attack_id,
        precision=args.precision,
        lr=args.lr,
        compile=args.compile,
    )
    return options


def default_threats() -> list[str]:
    from oodbench.registry import THREATS

    return [t for t in ("natural", "corruption", "linf", "comp") if t in THREATS]


# ----------------------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    import dataclasses

    from oodbench.config import PROFILES, PROTOCOLS
    from oodbench.registry import ARCHS, DATASETS, DETECTORS, THREATS

    def section(title, entries, extra=lambda e: ""):
        print(f"{title}:")
        for entry in entries:
            print(f"  {entry.name:<16s} {extra(entry)}{entry.summary}")
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
    paper = dataclasses.asdict(PROTOCOLS["paper"])
    for name, protocol in PROTOCOLS.items():
        changed = {k: v for k, v in dataclasses.asdict(protocol).items() if k != "name" and v != paper[k]}
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
        from oodbench.flags import with_flags

        with_flags(tidy(cells), cells).to_csv(args.output or sys.stdout, index=False, float_format="%.4f")
        return 0
    if args.flags:
        from oodbench.flags import flags_report

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

    sub.add_parser("list", help="registered detectors, threat models, data sets, architectures").set_defaults(
        func=cmd_list
    )

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
    run.add_argument("--train-only", action="store_true", help="train the networks, evaluate nothing")
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

    for register in _extra_commands():
        register(sub)
    return parser


#: later modules append functions that add their subcommands (check, bench, sanity, plot, launch)
_EXTRA_COMMANDS: list = []


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


def _extra_commands() -> list:
    """The registered extra subcommands. Under `python -m oodbench.cli` this file runs as `__main__`, a second
    copy of the module: the extra modules register into the importable `oodbench.cli`, so read its list."""
    import importlib

    _load_extra_commands()
    return importlib.import_module("oodbench.cli")._EXTRA_COMMANDS


def _load_extra_commands() -> None:
    import importlib

    for module in ("oodbench.check", "oodbench.bench", "oodbench.sanity", "oodbench.plots", "oodbench.launch"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


if __name__ == "__main__":
    sys.exit(main())
