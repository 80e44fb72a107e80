"""Attack sanity checks: `oodbench sanity` (Carlini et al. 2019, "On evaluating adversarial robustness", sec. 5;
SPEC section 6; DESIGN reliability principles).

Five properties any correct white-box evaluation has, measured as FPR at 95 % TPR (`oodbench.metrics.fpr_at_tpr`)
on one detector, one network and one OOD set:

(a) the FPR does not fall as eps grows over 0, 2, 4, 8, 16 /255 (the paper's PGD, the same seed);
(b) with eps = 1 (the whole pixel range) the attack reaches FPR 100 %: any image, an in-distribution one
    included, is then reachable (meaningful for MSP, whose scores do not saturate below the threshold);
(c) more iterations never give a lower FPR (10, 40, 100 steps from the same random start): PGD keeps per sample
    the best point among every iterate, and the first 10 iterates of a longer run are the 10-step run, so the
    attack objective can only grow, sample by sample: checked exactly on the objective, and on the FPR;
(d) every attacked input lies within eps of its source (L-inf), in [0, 1] and on the 8-bit grid (every attack
    run by these checks, APGD included);
(e) the `strong` protocol (PGD + APGD on several objectives, worst case per sample) gives an FPR >= the paper's
    PGD on the same model, and a deployed score >= PGD's for every sample.

(a) and (c) are stated on the FPR, but PGD climbs the attack objective, not the deployed score, and for MSP the
two are not monotone in each other (eq. 68, mean_i -log F_i, also grows when the mean logit falls while two top
logits stay close). A sample can therefore end below the threshold after a stronger attack that reached a higher
objective. Such a fall is reported as WARN (exit status 0); FAIL (exit status 1) means the attack itself went
wrong: an objective fell in (c), or in (a) the FPR fell through a sample whose objective did not rise.

Default subject (a fresh install, no data): a vanilla `small_cnn` trained for a few epochs on the built-in `digits`
set (or `--checkpoint PATH` of a vanilla network), the MSP detector, a fixed random subset of the built-in `tiles`
OOD set, the threshold from MSP's clean scores on the digits test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attacks.base import AttackContext, start_noise_for_set, to_unit
from attacks.pgd import PGDConfig, pgd_linf
from attacks.strong import strong_scores
from oodbench.commands import add_command
from oodbench.detector import Detector
from oodbench.metrics import auroc, fpr_at_tpr, threshold_at_tpr
from oodbench.seeding import numpy_rng

EPS_GRID = (0, 2, 4, 8, 16)  # in 1/255 units
STEPS_GRID = (10, 40, 100)


@dataclass
class Measurement:
    """One attack run of the checks: its FPR and AUROC (fractions) on the OOD set."""

    check: str
    attack: str
    eps: float
    steps: str
    fpr: float
    auroc: float


@dataclass
class CheckResult:
    """The verdict of one check, with the numbers behind it: PASS, WARN (the FPR fell only because the attack
    objective is not the deployed score, see `_monotone_verdict`) or FAIL."""

    name: str
    what: str
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        """False only for FAIL: a WARN is a property of the detector's objective, not a broken attack."""
        return self.status != "FAIL"


@dataclass
class PointAudit:
    """Check (d): accumulates, over every attacked batch, how far points stray from the eps-ball, [0, 1] and the
    8-bit grid (the `inspect` hook of `attacks.strong.strong_scores`)."""

    points: int = 0
    attacks: set = field(default_factory=set)
    worst_excess: float = 0.0  # max over points of |x_adv - x|_inf - eps (in pixel units, [0, 1] scale)
    out_of_range: int = 0
    off_grid: int = 0

    def hook(self, eps: float) -> Callable[[str, int, torch.Tensor, torch.Tensor], None]:
        """An inspect callback for attacks of radius `eps`."""

        def inspect(attack: str, start: int, source: torch.Tensor, adv: torch.Tensor) -> None:
            adv, source = adv.detach(), source.detach()
            self.points += len(adv)
            self.attacks.add(f"{attack}@{round(eps * 255)}/255")
            if len(adv):
                distance = (adv - source).flatten(1).abs().max(dim=1).values
                self.worst_excess = max(self.worst_excess, float((distance - eps).max()))
            self.out_of_range += int(((adv < 0) | (adv > 1)).flatten(1).any(dim=1).sum())
            self.off_grid += int(((adv * 255 - torch.round(adv * 255)).abs() > 1e-3).flatten(1).any(dim=1).sum())

        return inspect

    @property
    def passed(self) -> bool:
        return self.points > 0 and self.worst_excess <= 1e-6 and self.out_of_range == 0 and self.off_grid == 0


def _pgd_run(
    detector: Detector,
    model: nn.Module,
    images: torch.Tensor,
    ctx: AttackContext,
    config: PGDConfig,
    inspect: Callable | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's PGD as `attacks.linf.pgd_scores` runs it (random starts of the whole set from ctx.seed), also
    returning each sample's final attack objective: (deployed scores [N], objectives [N])."""
    model.eval()
    noises = start_noise_for_set(len(images), tuple(images.shape[1:]), config, ctx.seed, images.device)
    scores, objectives = [], []
    for start in range(0, len(images), ctx.batch_size):
        stop = start + ctx.batch_size
        x = to_unit(images[start:stop])
        x_adv, obj = pgd_linf(
            lambda z: detector.attack_objective(model, z),
            x,
            config,
            model=model,
            start_noise=[n[start:stop] for n in noises],
        )
        if inspect is not None:
            inspect("pgd", start, x, x_adv)
        scores.append(detector.score(model, x_adv).detach().float())
        objectives.append(obj)
    return torch.cat(scores), torch.cat(objectives)


def _monotone_verdict(
    runs: list[tuple[torch.Tensor, torch.Tensor]], fprs: list[float], threshold: float, exact_objective: bool
) -> tuple[str, str]:
    """(status, diagnosis) of "the FPR does not fall along `runs`" ((deployed scores, objectives) per run, each
    attack at least as strong as the one before).

    PASS: the FPR never falls (and, with `exact_objective`, no sample's objective falls either: check (c), where
    the longer run contains the shorter one). FAIL: the FPR falls and some sample that crossed back below the
    threshold did so with an objective no higher than before (the attack found a worse point), or, with
    `exact_objective`, some objective fell. WARN: the FPR falls only through samples whose objective rose: the
    attack did its job on its objective, which is not monotone in the deployed score (eq. 68, mean_i -log F_i,
    also grows when the mean logit falls while two top logits stay close, which keeps MSP low)."""
    objective_fell = sum(int((b[1] < a[1]).sum()) for a, b in zip(runs, runs[1:]))
    crossed = worse = 0
    fpr_fell = False
    for (s0, o0), (s1, o1), f0, f1 in zip(runs, runs[1:], fprs, fprs[1:]):
        down = (s0 > threshold) & (s1 <= threshold)
        crossed += int(down.sum())
        if f1 < f0:
            fpr_fell = True
            worse += int((down & (o1 <= o0)).sum())
    detail = f"; crossed back below the threshold: {crossed}" + (
        f" ({crossed - worse} with a higher objective)" if crossed else ""
    )
    if exact_objective:
        detail = f"; samples whose objective fell: {objective_fell}" + detail
    if (exact_objective and objective_fell) or (fpr_fell and worse):
        return "FAIL", detail
    return ("WARN" if fpr_fell else "PASS"), detail


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def run_sanity(
    detector: Detector,
    model: nn.Module,
    ood_images: torch.Tensor,
    id_scores: np.ndarray | torch.Tensor,
    ctx: AttackContext,
    eps_grid: Sequence[int] = EPS_GRID,
    steps_grid: Sequence[int] = STEPS_GRID,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[list[Measurement], list[CheckResult]]:
    """Run the five checks of the module docstring on `detector` + `model` and the OOD `ood_images` (uint8
    [N, 3, H, W] on ctx.device); `id_scores` are the clean in-distribution scores that set the threshold.

    `ctx.pgd` is the reference PGD (the paper's: 8/255, 40 x 1/255); `eps_grid` in 1/255 units, `steps_grid`
    iteration counts; the `strong` runs use `ctx.apgd_steps` x `ctx.apgd_restarts`. Returns the measurements
    and one verdict per check."""
    id_scores = np.asarray(id_scores.detach().cpu() if hasattr(id_scores, "detach") else id_scores)
    threshold = threshold_at_tpr(id_scores)
    audit = PointAudit()
    rows: list[Measurement] = []
    runs: dict[PGDConfig, tuple[torch.Tensor, torch.Tensor]] = {}
    base = dataclasses.replace(ctx, adaptive=False)

    def pgd(config: PGDConfig) -> tuple[torch.Tensor, torch.Tensor]:
        if config not in runs:  # the reference run serves (a), (c) and (e)
            started = time.time()
            runs[config] = _pgd_run(detector, model, ood_images, base, config, audit.hook(config.eps))
            log(f"sanity: PGD eps {config.eps * 255:g}/255, {config.steps} steps ({time.time() - started:.1f} s)")
        return runs[config]

    def measure(check: str, attack: str, eps: float, steps: str, scores: torch.Tensor) -> float:
        fpr = fpr_at_tpr(id_scores, scores.cpu())
        rows.append(Measurement(check, attack, eps, steps, fpr, auroc(id_scores, scores.cpu())))
        return fpr

    pgd_name = f"PGD x{ctx.pgd.step_size * 255:g}/255"
    strong_steps = f"{ctx.pgd.steps} + APGD {ctx.apgd_steps}x{ctx.apgd_restarts}"
    checks: list[CheckResult] = []

    # (a) FPR non-decreasing in eps
    fprs, runs_a = [], []
    for eps in eps_grid:
        config = dataclasses.replace(ctx.pgd, eps=eps / 255)
        runs_a.append(pgd(config))
        fprs.append(measure("a", pgd_name, eps, str(config.steps), runs_a[-1][0]))
    status, detail = _monotone_verdict(runs_a, fprs, threshold, exact_objective=False)
    checks.append(
        CheckResult(
            "a",
            f"FPR does not fall as eps grows ({', '.join(map(str, eps_grid))} /255)",
            status,
            " -> ".join(f"{100 * f:.2f}" for f in fprs) + detail,
        )
    )

    # (b) eps = 1 reaches FPR 100 % (the strong attack: PGD and APGD, worst case)
    started = time.time()
    whole = dataclasses.replace(ctx, adaptive=True, pgd=dataclasses.replace(ctx.pgd, eps=1.0))
    scores = strong_scores(detector, model, ood_images, whole, "sanity eps=1", inspect=audit.hook(1.0))
    log(f"sanity: strong attack, eps 1 ({time.time() - started:.1f} s)")
    fpr = measure("b", "strong (PGD + APGD)", 255, strong_steps, scores)
    checks.append(
        CheckResult("b", "eps = 1 (the whole pixel range) reaches FPR 100 %", _verdict(fpr == 1.0), f"{100 * fpr:.2f}")
    )

    # (c) more iterations never lower (same random start)
    fprs, runs_c = [], []
    for steps in steps_grid:
        runs_c.append(pgd(dataclasses.replace(ctx.pgd, steps=steps)))
        fprs.append(measure("c", pgd_name, ctx.pgd.eps * 255, str(steps), runs_c[-1][0]))
    status, detail = _monotone_verdict(runs_c, fprs, threshold, exact_objective=True)
    checks.append(
        CheckResult(
            "c",
            f"more iterations never give a lower FPR ({', '.join(map(str, steps_grid))} steps)",
            status,
            " -> ".join(f"{100 * f:.2f}" for f in fprs) + detail,
        )
    )

    # (e) strong >= paper PGD (run before (d)'s verdict so that its APGD points are audited too)
    reference_scores, _ = pgd(ctx.pgd)
    reference = measure("e", pgd_name + " (paper)", ctx.pgd.eps * 255, str(ctx.pgd.steps), reference_scores)
    started = time.time()
    strong = dataclasses.replace(ctx, adaptive=True)
    strong_ood = strong_scores(detector, model, ood_images, strong, "sanity strong", inspect=audit.hook(ctx.pgd.eps))
    log(f"sanity: strong attack, eps {ctx.pgd.eps * 255:g}/255 ({time.time() - started:.1f} s)")
    fpr = measure("e", "strong (PGD + APGD)", ctx.pgd.eps * 255, strong_steps, strong_ood)
    below = int((strong_ood < reference_scores).sum())
    checks.append(
        CheckResult(
            "e",
            "strong protocol FPR >= paper PGD FPR (same model)",
            _verdict(fpr >= reference and below == 0),
            f"{100 * fpr:.2f} >= {100 * reference:.2f}; samples with a lower score than PGD's: {below}",
        )
    )

    # (d) every attacked point: eps-ball, [0, 1], 8-bit grid
    checks.insert(
        3,
        CheckResult(
            "d",
            "attacked inputs within eps (L-inf), in [0, 1], on the 8-bit grid",
            _verdict(audit.passed),
            f"{audit.points} points from {len(audit.attacks)} attacks; max excess over eps "
            f"{max(audit.worst_excess, 0.0) * 255:.2g}/255; outside [0, 1]: {audit.out_of_range}; "
            f"off the grid: {audit.off_grid}",
        ),
    )
    return rows, checks


def format_report(rows: list[Measurement], checks: list[CheckResult]) -> str:
    """The measured FPRs and the PASS / WARN / FAIL table."""
    from tabulate import tabulate

    measured = tabulate(
        [[r.check, r.attack, f"{r.eps:g}/255", r.steps, f"{100 * r.fpr:.2f}", f"{100 * r.auroc:.2f}"] for r in rows],
        headers=["check", "attack", "eps", "steps", "FPR %", "AUROC %"],
        tablefmt="simple",
    )
    verdicts = tabulate(
        [[c.name, c.what, c.status, c.detail] for c in checks],
        headers=["check", "property", "result", "measured"],
        tablefmt="simple",
    )
    return measured + "\n\n" + verdicts


# ----------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------
def _subject(args: argparse.Namespace, log: Callable[[str], None]):
    """(detector, model, OOD images, in-dist scores, device) of the command's options."""
    from oodbench.checkpoint import check_meta, load_checkpoint
    from oodbench.config import get_profile, get_protocol
    from oodbench.data import load_in_distribution, load_ood
    from oodbench.detector import BuildContext
    from oodbench.models import create_model
    from oodbench.registry import DETECTORS, load_plugins
    from oodbench.runner import resolve_device

    load_plugins()
    device = resolve_device(args.device)
    in_dist = load_in_distribution(args.in_dist, args.data_root)
    detector = DETECTORS.get("msp")(in_dist.num_classes)
    if args.checkpoint:
        payload = load_checkpoint(args.checkpoint)
        meta = payload["meta"]
        arch = meta.get("arch", args.arch)
        check_meta(
            args.checkpoint,
            meta,
            {"recipe": "vanilla", "num_classes": in_dist.num_classes, "head_size": detector.head_size},
        )
        model = create_model(arch, detector.head_size, in_dist.normalization)
        model.load_state_dict(payload["model"])
        log(f"sanity: loaded {args.checkpoint} ({arch})")
    ood = load_ood(args.ood, args.data_root)  # a DataError before any training
    if not args.checkpoint:
        from oodbench.training import TrainingJob, train

        profile = get_profile("smoke").with_epochs(args.epochs)
        build = BuildContext(in_dist, args.arch, get_protocol("paper"), profile, None, device)
        meta = {"method": "vanilla", "recipe": "vanilla", "arch": args.arch, "in_dist": in_dist.name}
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="oodbench-sanity-") as directory:
            job = TrainingJob(
                detector, build, in_dist.train, None, Path(directory), args.seed, meta, progress=args.progress, log=log
            )
            model = train(job)
        log(f"sanity: trained {args.arch} on {in_dist.name}, {args.epochs} epochs ({time.time() - started:.1f} s)")
    model = model.to(device).eval()
    if len(ood) > args.n_ood:  # a fixed subset, the same for every seed
        rng = numpy_rng("sanity-subset", args.ood)
        ood = ood.subset(np.sort(rng.permutation(len(ood))[: args.n_ood]))
    test = in_dist.test.images.to(device)
    id_scores = torch.cat(
        [
            detector.score(model, to_unit(test[s : s + args.batch_size])).float()
            for s in range(0, len(test), args.batch_size)
        ]
    )
    return detector, model, ood.images.to(device), id_scores.cpu().numpy(), device


def cmd_sanity(args: argparse.Namespace) -> int:
    """`oodbench sanity`: exit 0 when every check passes, 1 when one fails."""
    started = time.time()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    detector, model, ood, id_scores, device = _subject(args, log)
    ctx = AttackContext(
        device=device,
        batch_size=args.batch_size,
        seed=args.seed,
        pgd=PGDConfig(),
        apgd_steps=args.apgd_steps,
        apgd_restarts=args.apgd_restarts,
        progress=args.progress,
        label="sanity",
    )
    rows, checks = run_sanity(detector, model, ood, id_scores, ctx, log=log)
    print(
        f"attack sanity checks: MSP on {args.in_dist} ({len(id_scores)} test images) vs {args.ood} "
        f"({len(ood)} images), seed {args.seed}\n"
    )
    print(format_report(rows, checks))
    failed = [c.name for c in checks if not c.passed]
    warned = [c.name for c in checks if c.status == "WARN"]
    print(
        f"\n{len(checks) - len(failed)}/{len(checks)} checks passed"
        + (f" (failed: {', '.join(failed)})" if failed else "")
        + (f" (warnings: {', '.join(warned)}: the FPR fell only where the objective rose)" if warned else "")
        + f"; wall time {time.time() - started:.1f} s"
    )
    return 1 if failed else 0


def register(subparsers) -> None:
    """Add the `sanity` subcommand to the `oodbench` parser (appended to `oodbench.cli._EXTRA_COMMANDS`)."""
    parser = subparsers.add_parser(
        "sanity",
        help="attack sanity checks (eps monotone, eps=1 reaches FPR 100%%, more steps never lower, grid, strong)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--checkpoint", default=None, help="a vanilla network to check (default: train one now)")
    parser.add_argument("--in", dest="in_dist", default="digits", help="in-distribution set (default: digits)")
    parser.add_argument("--ood", default="tiles", help="OOD set (default: the built-in tiles)")
    parser.add_argument("--arch", default="small_cnn", help="architecture of the network trained (default small_cnn)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs when no --checkpoint (default 4)")
    parser.add_argument("--n-ood", type=int, default=200, help="OOD images attacked (default 200)")
    parser.add_argument("--apgd-steps", type=int, default=25, help="APGD iterations of the strong runs (default 25)")
    parser.add_argument("--apgd-restarts", type=int, default=1, help="APGD restarts of the strong runs (default 1)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--data-root", default=None, help="folder holding the data sets (see `oodbench data`)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=cmd_sanity)


add_command(register)
