"""`oodbench bench`: images/s of every stage of the suite and its efficiency against the model's raw throughput
(DESIGN "Performance principles"), a reference-style baseline, and CIFAR-10 projections.

What is measured, for one architecture on one device, on built-in data (the `tiles` / `scenes_*` OOD sets and the
`digits` in-dist set, 32x32x3 = CIFAR scale, repeated and shifted to the sizes asked for) and a randomly initialised
network (throughput does not depend on the weights):

- **raw**: forward and forward + input-gradient images/s in eval mode over a sweep of batch sizes (the best one is
  the reference), and train-mode forward + backward + SGD step images/s at each training batch size.
- **stages**, each through the suite's own code path: clean scoring (`attacks.natural.batched_scores`), PGD
  (`attacks.linf.pgd_scores`), corruption generation (`attacks.corruptions.variants_for` into an empty cache) and
  search over cached variants (`attacks.corruption.corruption_search`), mining (`sample_positions` ->
  `AuxPool.get` -> `oodbench.training.augment_in_chunks` -> `score_candidates` -> `mine_outliers`), and one epoch of
  `oodbench.training.run_epoch` per method family (vanilla, OE, ACET, ATOM-like = the AT ablation: ATOM's loss on
  uniformly drawn outliers, mining measured separately, ROWL, CCU, SOFL stage 2).
- **efficiency** = ideal time / measured time, the ideal time being the stage's work at the raw throughput
  (each stage states its formula). The raw throughput is re-measured next to every repetition of a stage, so
  the ratio holds on a shared, noisy machine.
- **reference**: the four-threat evaluation (natural, corruption, linf, comp) of MSP done the way the released ATOM
  code does it (`eval_ood_detection.py`: batches of 50, PNG bytes decoded with PIL per batch, corruption variants
  regenerated for every image in the evaluating process, clean in-dist scores recomputed per threat model) against
  the suite (uint8 sets resident on the device, cached variants, in-dist scores once, the corruption search shared
  by `corruption` and `comp`), on the same images with the same attack settings; the scores are compared.
- **memory**: peak memory of a corruption search with 75 vs 95 variants.
- **projection** (`--project-cifar10`): the paper-scale costs from the measured rates (`project_cifar10`).

The jobs live in one module each: `raw`, `stages` (the suite's stages and training epochs), `reference`, `memory`,
`projection`; `report` runs them and prints the summary; this module is the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from oodbench.commands import add_command

# the public surface of `oodbench bench`, re-exported from the modules of its jobs
from oodbench.tools.bench.common import (  # noqa: F401
    CIFAR10_OOD_SIZES,
    CIFAR10_TEST,
    CIFAR10_TRAIN,
    SCHEMA,
    THREATS4,
    TRAIN_FAMILIES,
    BenchConfig,
    bench_id_images,
    bench_ood_images,
    rate,
    timed,
)
from oodbench.tools.bench.memory import measure_search_memory  # noqa: F401
from oodbench.tools.bench.projection import project_cifar10, rates_for_projection  # noqa: F401
from oodbench.tools.bench.raw import raw_rate, raw_sweep  # noqa: F401
from oodbench.tools.bench.reference import (  # noqa: F401
    _reference_corrupt,
    decode_batch,
    encode_png,
    measure_reference,
    reference_style_evaluation,
)
from oodbench.tools.bench.report import projection_text, run_bench, summary_table  # noqa: F401
from oodbench.tools.bench.stages import _size, measure_eval_stages, measure_training  # noqa: F401

if TYPE_CHECKING:
    import argparse


# ---------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `oodbench bench` to the command line."""
    p = subparsers.add_parser(
        "bench",
        help="images/s and efficiency of every stage, a reference-style baseline, CIFAR-10 projections",
        description=__doc__.split("\n\n")[0],
    )
    d = BenchConfig()
    p.add_argument("--arch", default=d.arch, help="architecture (small_cnn, densenet100, wrn40_4, resnet20, ...)")
    p.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N | auto")
    p.add_argument("--json", dest="json_path", default=None, help="write every number to this JSON file")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="raw sweep, e.g. 32,64,128 (default by device)")
    sized = {
        "--eval-batch": (int, "the suite's evaluation batch"),
        "--n-ood": (int, "OOD images available to the throughput stages"),
        "--stage-seconds": (float, "target seconds per stage repetition (sizes each stage)"),
        "--repeats": (int, "repetitions per stage (median)"),
        "--min-time": (float, "seconds per raw measurement"),
        "--pgd-steps": (int, "PGD iterations in the throughput stage"),
        "--mining-candidates": (int, "max candidates of the mining stage"),
        "--train-steps": (int, "SGD steps per timed training epoch"),
        "--ref-ood": (int, "N OOD images of the reference comparison"),
        "--ref-id": (int, "M in-dist images of the reference comparison"),
        "--ref-pgd-steps": (int, "PGD iterations of the reference comparison (paper: 40)"),
        "--memory-images": (int, "images of the memory measurement"),
    }
    for flag, (kind, text) in sized.items():
        default = getattr(d, flag[2:].replace("-", "_"))
        shown = {"--eval-batch": "500 on GPU, 32 on CPU", "--ref-id": "N x 10,000 / 54,565"}.get(flag, default)
        p.add_argument(flag, type=kind, default=None, help=f"{text} (default {shown}; --quick: smaller)")
    p.add_argument("--suite", default=d.suite, help="corruption suite: cifar-c-15 (75 variants) | cifar-c-19 (95)")
    p.add_argument("--workers", type=int, default=None, help="corruption generation processes (default: all cores)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--cache-dir", default=None, help="folder for the temporary variant caches (fresh, deleted at the end)"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the reference-style comparison")
    p.add_argument("--no-training", action="store_true", help="skip the training steps")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--project-cifar10", action="store_true", help="project paper-scale costs from the measured rates")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; smoke test of the benchmark itself)")
    p.set_defaults(func=cmd_bench)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """BenchConfig from parsed arguments: `--quick` starts from the quick preset; options given override."""
    given = {
        "arch": args.arch,
        "device": args.device,
        "batch_sizes": args.batch_sizes,
        "threads": args.threads,
        "cache_dir": args.cache_dir,
        "workers": args.workers,
        "reference": not args.no_reference,
        "training": not args.no_training,
        "memory": not args.no_memory,
        "project": args.project_cifar10,
        "suite": args.suite,
    }
    for name in (
        "eval_batch",
        "n_ood",
        "stage_seconds",
        "repeats",
        "min_time",
        "pgd_steps",
        "mining_candidates",
        "train_steps",
        "ref_ood",
        "ref_id",
        "ref_pgd_steps",
        "memory_images",
    ):
        given[name] = getattr(args, name)
    given = {k: v for k, v in given.items() if v is not None}
    return BenchConfig.quick_preset(**given) if args.quick else BenchConfig(**given)


def cmd_bench(args: argparse.Namespace) -> int:
    """`oodbench bench`."""
    cfg = config_from_args(args)
    run_bench(cfg, Path(args.json_path) if args.json_path else None)
    if args.json_path:
        print(f"wrote {args.json_path}")
    return 0


add_command(register)
