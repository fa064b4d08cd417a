"""Issue 13's evidence: uniform width, sensitivity proposal, NetAdapt, AMC at equal latency.

For each model of ``--models`` (zoo VGG, MobileNetV2, ResNet) on ``--data``:

1. the baseline is trained (seeded, Adam, cosine) or reused from ``--work`` (a checkpoint);
2. this machine's latency lookup table (:class:`slimtorch.search.latency.LatencyTable`, one
   file, ``--threads`` torch threads) at batch 1 and at batch 64 is calibrated on the baseline,
   whose measured latency sets the budget: ``--budget`` x its latency at ``--budget-batch``
   (``--both-batches``: the whole comparison once per batch);
3. four methods meet that budget (by the calibrated table's prediction) and get the same
   fine-tuning budget (``--finetune-epochs`` of Adam, cosine):

   - ``uniform``: one pruned fraction for every prunable channel group (channel surgery,
     ``prune_channels(ratio=r)``), the smallest meeting the budget (bisection on r);
   - ``sensitivity``: every channel group pruned alone at a sweep of ratios with channel
     surgery and scored on the validation split (the per-layer scan of
     :mod:`slimtorch.prune.sensitivity`, here per channel group with real surgery: that
     module's ``sensitivity_scan`` masks weights); its allocator ``propose_ratios`` gives the
     per-group ratios removing a fraction of the MACs with the least summed accuracy drop.
     ``--sensitivity-scaling target`` (default) bisects that fraction until the latency budget
     is met; ``factor`` takes the proposal at ``1 - budget`` of the MACs and bisects one factor
     multiplying its ratios (what the scan alone would suggest, stretched to the budget);
   - ``netadapt``: :func:`slimtorch.search.netadapt` with the table as its latency and the
     fine-tuning budget as its long-term fine-tune (its short-term fine-tunes come on top:
     they are part of the method, and their minibatches are recorded);
   - ``amc``: :func:`slimtorch.search.amc_search` in resource-constrained mode with
     ``resource="latency"`` (the table), then the same fine-tune; when the budget is out of
     reach with every group at ``--amc-lbound``, the bound is halved (down to 0.05);

   A budget that even every group cut by 95% does not meet is reported infeasible and not
   searched (on ``digits:16`` at batch 1 this is every zoo model: fixed per-layer costs
   dominate; on ``digits:32`` at batch 1, MobileNetV2);

4. every final model and the baseline are measured at batch 1 and 64 by the table's timer
   (``table.measure``, page faults excluded as in the table), in ``--measure-rounds``
   interleaved rounds (median per model), so speedups are same-run ratios;
5. plots per model: accuracy against measured latency (+ NetAdapt's trajectory) and AMC's
   reward curve; AMC's per-group preserve ratios next to the sensitivity proposal's;
6. Ray: NetAdapt on VGG with ``Workers(count=1)`` (in-process) and ``Workers(count=2)`` (a
   local Ray): wall time of each, and whether channel counts and weights are identical.

Writes ``--out`` (JSON, atomically) with the PNGs next to it, and prints a Markdown summary
with the issue's goals judged from the numbers (met / not met).

Usage (on a quiet machine; about 1-1.5 hours on 2 cores, most of it NetAdapt's 6-25 iterations of
short-term fine-tunes and AMC's 400 episodes; the baselines and the latency table in --work
are reused by a rerun):
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_search.py \
        --data digits:32 --both-batches
Smoke check (a few minutes; results under runs/bench_search_quick/):
    .venv/bin/python benchmarks/bench_search.py --quick
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.core.trace import trace_model
from slimtorch.data import Splits, load_data, make_loaders
from slimtorch.errors import ConfigError, ModelError
from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.models import ModelSpec, build_model, make_spec
from slimtorch.prune.graph import trace_channels
from slimtorch.prune.sensitivity import propose_ratios
from slimtorch.prune.surgery import prune_channels
from slimtorch.search.amc import amc_search, plot_rewards
from slimtorch.search.amc_config import AMCConfig
from slimtorch.search.amc_env import AMCEnv
from slimtorch.search.latency import LatencyTable
from slimtorch.search.latency_timer import MedianTimer, machine_fingerprint
from slimtorch.search.netadapt import netadapt
from slimtorch.search.netadapt_config import NetAdaptConfig, NetAdaptResult
from slimtorch.search.parallel import Workers, shutdown
from slimtorch.train import FitConfig, evaluate, fit

GOAL_SPEEDUP = 1.8  # issue 13: ">= 1.8x measured speedup at <= 0.5 points lost on VGG"
GOAL_DROP_POINTS = 0.5
BATCHES = (1, 64)  # issue 13: "0.5x of the original at batch 1 and at 64"
METHODS = ("uniform", "sensitivity", "netadapt", "amc")
MAX_RATIO = 0.95  # the largest pruned fraction uniform / sensitivity scaling may give a group
MAX_TARGET = 0.99  # the largest MAC fraction the sensitivity allocator is asked to remove
MIN_LBOUND = 0.05  # AMC's lbound is halved (from --amc-lbound) down to this for a tight budget
SIZING_RATIO = 0.5  # a group's MACs per unit ratio: measured by pruning it alone this much
ISA_FEATURES = frozenset(  # the /proc/cpuinfo flags recorded with the results
    {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
     "amx_int8", "amx_bf16", "neon", "asimd"}
)  # fmt: skip

# Settings left unset on the command line: (full run, --quick).
PRESETS: dict[str, tuple[Any, Any]] = {
    "models": ("vgg,mobilenetv2,resnet", "vgg"),
    "epochs": (30, 2),
    "finetune_epochs": (10, 1),
    "scan_ratios": ("0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "0.25,0.5,0.75"),
    "bisect_steps": (14, 6),
    "netadapt_init_reduction": (0.025, 0.1),
    "netadapt_decay": (0.96, 1.0),
    "netadapt_short_term_batches": (40, 4),
    "netadapt_max_iterations": (100, 3),
    "amc_episodes": (400, 6),
    "amc_warmup": (100, 3),
    "measure_rounds": (5, 1),
    "budget_batch": (1, 64),  # --quick: batch 1 of digits:16 cannot reach 0.5x (see --help)
    "work": ("runs/bench_search", "runs/bench_search_quick"),
    "out": ("benchmarks/results/search.json", "runs/bench_search_quick/search.json"),
}

START = time.perf_counter()


def say(line: str) -> None:
    """A progress line with the seconds since the start."""
    print(f"[{time.perf_counter() - START:8.1f}s] {line}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; presets left unset are filled from :data:`PRESETS`."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Options marked 'preset' default to the full run's value, or to the smaller "
        "one with --quick; giving them explicitly wins over --quick.",
    )
    _add_run_options(ap)
    _add_method_options(ap)
    args = ap.parse_args(argv)
    for name, (full, quick) in PRESETS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if not 0 < args.budget < 1:
        ap.error(f"--budget: expected a number in (0, 1), got {args.budget}")
    return args


def _preset(ap: argparse.ArgumentParser, name: str, kind: type, text: str) -> None:
    full, quick = PRESETS[name]
    help_text = f"{text} (preset: {full}; --quick: {quick})".replace("%", "%%")
    ap.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=help_text)


def _add_run_options(ap: argparse.ArgumentParser) -> None:
    add = ap.add_argument
    add(
        "--quick",
        action="store_true",
        help="smoke check: the --quick presets (VGG only, tiny "
        "training and searches), a fast latency timer, results under runs/",
    )
    _preset(ap, "models", str, "comma-separated zoo models to compare")
    add(
        "--data",
        default="digits:16",
        help="data set, a slimtorch.data.load_data name (default %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=0,
        help="seeds the data split, the baseline's training, "
        "every fine-tune and every search (default %(default)s)",
    )
    _preset(ap, "epochs", int, "training epochs of each baseline (Adam, cosine)")
    add("--lr", type=float, default=3e-3, help="baseline learning rate (default %(default)s)")
    _preset(
        ap,
        "finetune_epochs",
        int,
        "fine-tuning epochs every method gets (Adam, cosine; NetAdapt's long-term fine-tune)",
    )
    add(
        "--finetune-lr",
        type=float,
        default=1e-3,
        help="fine-tuning learning rate (default %(default)s)",
    )
    add(
        "--batch-size",
        type=int,
        default=64,
        help="minibatch size of training, fine-tuning "
        "and NetAdapt's short-term fine-tunes (default %(default)s)",
    )
    add(
        "--threads",
        type=int,
        default=1,
        help="torch threads for everything; the latency "
        "table times and predicts with this many (default %(default)s)",
    )
    add(
        "--budget",
        type=float,
        default=0.5,
        help="latency budget as a fraction of the "
        "baseline's measured latency, in (0, 1) (default %(default)s)",
    )
    add(
        "--budget-batch",
        type=int,
        default=None,
        choices=BATCHES,
        help="the batch size whose latency the budget limits (preset: 1; --quick: 64). On "
        "digits:16 no zoo model reaches 0.5x at batch 1 even with every group cut by 95%% "
        "(fixed per-layer costs dominate); such a budget is reported infeasible, not searched",
    )
    add(
        "--both-batches",
        action="store_true",
        help="run the whole comparison twice: budget "
        "at batch 1, then at batch 64 (overrides --budget-batch)",
    )
    _preset(
        ap,
        "measure_rounds",
        int,
        "interleaved rounds measuring the baseline and every "
        "final model at batch 1 and 64 (the median is reported)",
    )
    add(
        "--no-ray",
        action="store_true",
        help="skip the NetAdapt run on VGG with 1 worker vs --ray-workers workers on a local Ray",
    )
    add(
        "--ray-workers",
        type=int,
        default=2,
        help="Ray workers of that comparison (default %(default)s)",
    )
    _preset(ap, "work", str, "folder for cached baselines (checkpoints) and the latency table")
    add(
        "--table",
        type=Path,
        default=None,
        help="latency table file to use and extend (default WORK/latency.json)",
    )
    _preset(ap, "out", str, "result JSON, written atomically; the PNGs go next to it")


def _add_method_options(ap: argparse.ArgumentParser) -> None:
    add = ap.add_argument
    add(
        "--round-to",
        type=int,
        default=1,
        help="every method keeps channel counts that are multiples of this (default %(default)s)",
    )
    add(
        "--importance",
        default="l1",
        choices=("l1", "l2", "bn"),
        help="which channels a cut keeps, for every method (default %(default)s)",
    )
    _preset(
        ap,
        "scan_ratios",
        str,
        "sensitivity scan: the pruned fractions each channel group is tried at, alone",
    )
    _preset(
        ap,
        "bisect_steps",
        int,
        "bisection steps of the uniform ratio and of the sensitivity proposal's scale "
        "(MAC target or factor)",
    )
    _preset(
        ap,
        "netadapt_init_reduction",
        float,
        "NetAdapt: the first iteration's latency reduction, a fraction of the original latency",
    )
    _preset(ap, "netadapt_decay", float, "NetAdapt: factor of the reduction per iteration")
    _preset(
        ap,
        "netadapt_short_term_batches",
        int,
        "NetAdapt: minibatches of each proposal's short-term fine-tune",
    )
    _preset(ap, "netadapt_max_iterations", int, "NetAdapt: stop after this many iterations")
    _preset(ap, "amc_episodes", int, "AMC: episodes in all, warm-up included")
    _preset(ap, "amc_warmup", int, "AMC: first episodes with random actions, no learning")
    add(
        "--amc-lbound",
        type=float,
        default=0.2,
        help="AMC: the smallest preserve ratio of a group (default %(default)s, the paper's); "
        "halved, down to 0.05, while the budget is out of reach with every group at it",
    )
    add(
        "--sensitivity-scaling",
        choices=("target", "factor"),
        default="target",
        help="how the sensitivity proposal is made to meet the latency budget: 'target' "
        "bisects the MAC fraction the allocator (propose_ratios) removes; 'factor' bisects one "
        "factor multiplying the proposal's ratios at 1 - budget of the MACs (groups it leaves "
        "whole stay whole; the others are clipped at 95%%) (default %(default)s)",
    )
    add(
        "--amc-reconstruct",
        action="store_true",
        help="AMC: refit the layers after a cut "
        "by least squares before scoring (the reference's channel reconstruction)",
    )
    add(
        "--amc-bn-samples",
        type=int,
        default=256,
        help="AMC: training samples re-estimating BatchNorm before each episode is scored "
        "(0: none, the paper's setup) (default %(default)s)",
    )


# ----------------------------------------------------------------------------- machine


def machine(args: argparse.Namespace, timer: MedianTimer) -> dict[str, Any]:
    """The CPU (lscpu's model name, torch's capability, ISA features), torch threads, load."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "lscpu_model_name": _lscpu_model(),
        "isa_features": sorted(ISA_FEATURES & flags),
        "fingerprint": machine_fingerprint(args.threads, timer),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "load_average_start": os.getloadavg(),
    }


def _lscpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


# ----------------------------------------------------------------------------- baseline


@dataclass
class Case:
    """One model's fixed parts: trained baseline, data, tables, measured baseline latency."""

    name: str
    spec: ModelSpec
    model: nn.Module
    splits: Splits
    x: Tensor  # [1, C, H, W]
    tables: dict[int, LatencyTable]
    base_s: dict[int, float] = field(default_factory=dict)
    test_accuracy: float = 0.0
    val_accuracy: float = 0.0
    train: dict[str, Any] = field(default_factory=dict)

    def latency(self, batch: int) -> Callable[[nn.Module], float]:
        """``model -> predicted seconds`` at ``batch`` (calibrated on the baseline)."""
        return functools.partial(_predict, self.tables[batch], self.x)

    def loaders(self, args: argparse.Namespace) -> tuple[Any, Any, Any]:
        return make_loaders(self.splits, batch_size=args.batch_size, seed=args.seed)


def _predict(table: LatencyTable, x: Tensor, model: nn.Module) -> float:
    return table.predict(model, x)


def baseline(
    name: str, splits: Splits, args: argparse.Namespace
) -> tuple[nn.Module, ModelSpec, dict]:
    """The trained baseline, from ``--work`` when a checkpoint of the same settings is there."""
    c, size = splits.input_shape[0], splits.input_shape[-1]
    spec = make_spec(name, num_classes=splits.num_classes, in_channels=c, image_size=size)
    settings = {
        "data": args.data,
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "threads": args.threads,
    }
    folder = Path(args.work) / f"baseline_{name}_{args.data.replace(':', '')}_e{args.epochs}"
    if (folder / "model.json").exists():
        model, spec_on_disk, metrics = load_checkpoint(folder)
        if metrics.get("settings") == settings and spec_on_disk == spec:
            say(f"{name}: baseline reused from {folder}")
            return model, spec, metrics
    say(f"{name}: training the baseline ({args.epochs} epochs)")
    torch.manual_seed(args.seed)
    model = build_model(spec)
    train, val, _ = make_loaders(splits, batch_size=args.batch_size, seed=args.seed)
    start = time.perf_counter()
    cfg = FitConfig(epochs=args.epochs, lr=args.lr, scheduler="cosine", seed=args.seed)
    fit(model, train, val, cfg, label=f"{name} baseline")
    metrics = {"settings": settings, "train_s": time.perf_counter() - start}
    save_checkpoint(folder, model.eval(), spec, metrics, overwrite=True)
    return model.eval(), spec, metrics


def latency_tables(args: argparse.Namespace, timer: MedianTimer) -> dict[int, LatencyTable]:
    """One table file, a view per batch size sharing the machine's overhead constants."""
    path = args.table or Path(args.work) / "latency.json"
    first = LatencyTable(path, batch=BATCHES[0], threads=args.threads, timer=timer, progress=True)
    tables = {BATCHES[0]: first}
    for b in BATCHES[1:]:
        tables[b] = LatencyTable(
            path, batch=b, threads=args.threads, timer=timer, progress=True, overhead=first.overhead
        )
    return tables


def prepare(
    name: str, splits: Splits, args: argparse.Namespace, tables: dict[int, LatencyTable]
) -> Case:
    """Baseline, tables at batch 1 and 64 calibrated on it, its measured latency (the median
    of ``--measure-rounds`` measurements: the budget's reference)."""
    model, spec, metrics = baseline(name, splits, args)
    x = splits.test.tensors[0][:1]
    case = Case(name, spec, model, splits, x, tables, train=metrics)
    _, val, test = case.loaders(args)
    case.test_accuracy = evaluate(model, test).accuracy
    case.val_accuracy = evaluate(model, val).accuracy
    for b, table in tables.items():
        say(f"{name}: timing the baseline's layers and the whole model at batch {b}")
        case.base_s[b] = statistics.median(
            table.measure(model, x) for _ in range(args.measure_rounds)
        )
        rho = table.calibrate(model, x, measured_s=case.base_s[b])
        say(
            f"{name}: batch {b}: measured {case.base_s[b] * 1e3:.3f} ms, calibration rho {rho:+.3f}"
        )
    return case


# ----------------------------------------------------------------------------- methods


@dataclass
class Outcome:
    """One method's final model and what it took."""

    method: str
    model: nn.Module
    search_s: float
    finetune_s: float
    accuracy_before_finetune: float | None  # None: NetAdapt (fine-tuned inside the search)
    details: dict[str, Any]
    netadapt: NetAdaptResult | None = None


def macs_params(model: nn.Module, x: Tensor) -> tuple[int, int]:
    t = trace_model(model, x)
    return t.total_macs, t.total_params


def group_sizes(model: nn.Module, x: Tensor) -> dict[str, int]:
    """Channels of every channel group by group name."""
    return {g.name: g.size for g in trace_channels(model, x).groups}


def finetune(case: Case, model: nn.Module, args: argparse.Namespace, label: str) -> float:
    """The fine-tuning budget every method gets; returns its seconds."""
    train, val, _ = case.loaders(args)
    cfg = FitConfig(
        epochs=args.finetune_epochs,
        lr=args.finetune_lr,
        optimizer="adam",
        scheduler="cosine",
        seed=args.seed,
    )
    start = time.perf_counter()
    fit(model, train, val, cfg, label=f"{case.name} {label} fine-tune")
    model.eval()
    return time.perf_counter() - start


def smallest_meeting(
    build: Callable[[float], nn.Module],
    latency: Callable[[nn.Module], float],
    budget: float,
    high: float,
    steps: int,
) -> tuple[float, nn.Module, bool]:
    """The smallest ``t`` in ``[0, high]`` (bisection) whose ``build(t)`` meets ``budget``;
    ``(high, build(high), False)`` when even ``high`` does not."""
    best = build(high)
    if latency(best) > budget:
        return high, best, False
    low, top = 0.0, high
    for _ in range(steps):
        mid = (low + top) / 2
        candidate = build(mid)
        if latency(candidate) <= budget:
            top, best = mid, candidate
        else:
            low = mid
    return top, best, True


def run_uniform(case: Case, budget: float, batch: int, args: argparse.Namespace) -> Outcome:
    graph = trace_channels(case.model, case.x)
    start = time.perf_counter()

    def build(r: float) -> nn.Module:
        return prune_channels(
            case.model,
            case.x,
            ratio=r,
            importance=args.importance,
            round_to=args.round_to,
            graph=graph,
        )

    ratio, model, met = smallest_meeting(
        build, case.latency(batch), budget, MAX_RATIO, args.bisect_steps
    )
    search_s = time.perf_counter() - start
    before = _test_accuracy(case, model, args)
    ft = finetune(case, model, args, "uniform")
    details = {"ratio": ratio, "keep_ratio": 1 - ratio, "met_by_search": met}
    return Outcome("uniform", model, search_s, ft, before, details)


def sensitivity_scan_groups(case: Case, ratios: list[float], args: argparse.Namespace) -> dict:
    """Validation accuracy with each channel group alone pruned at each ratio (surgery)."""
    graph = trace_channels(case.model, case.x)
    _, val, _ = case.loaders(args)
    curves: dict[str, list[tuple[float, float]]] = {}
    for group in graph.prunable():
        curves[group.name] = []
        for r in ratios:
            pruned = prune_channels(
                case.model, case.x, ratio={group.name: r}, importance=args.importance, graph=graph
            )
            curves[group.name].append((r, evaluate(pruned, val).accuracy))
        say(
            f"{case.name}: sensitivity of {group.name}: "
            + " ".join(f"{r:.2f}:{a:.3f}" for r, a in curves[group.name])
        )
    return curves


def mac_sizes(case: Case, groups: list[str]) -> dict[str, int]:
    """MACs a group removes per unit of pruned fraction (measured at :data:`SIZING_RATIO`)."""
    base, _ = macs_params(case.model, case.x)
    sizes = {}
    for name in groups:
        pruned = prune_channels(case.model, case.x, ratio={name: SIZING_RATIO})
        removed = 1 - group_sizes(pruned, case.x)[name] / group_sizes(case.model, case.x)[name]
        sizes[name] = round((base - macs_params(pruned, case.x)[0]) / max(removed, 1e-9))
    return sizes


def run_sensitivity(case: Case, budget: float, batch: int, args: argparse.Namespace) -> Outcome:
    start = time.perf_counter()
    scan = [float(r) for r in args.scan_ratios.split(",")]
    curves = sensitivity_scan_groups(case, scan, args)
    sizes = mac_sizes(case, list(curves))
    total, _ = macs_params(case.model, case.x)

    def propose(target: float) -> dict[str, float]:
        return propose_ratios(curves, sizes, total, target, case.val_accuracy)

    proposal = propose(1 - args.budget)  # the scan's own answer: 1 - budget of the MACs
    if args.sensitivity_scaling == "target":
        top = min(MAX_TARGET, max(scan) * sum(sizes.values()) / total * (1 - 1e-3))
        build = _sensitivity_by_target(case, propose, args)
    else:
        nonzero = {g: r for g, r in proposal.items() if r > 0}
        if not nonzero:
            raise ConfigError("the sensitivity proposal prunes nothing")
        top = MAX_RATIO / min(nonzero.values())
        build = _sensitivity_by_factor(case, nonzero, args)
    t, model, met = smallest_meeting(build, case.latency(batch), budget, top, args.bisect_steps)
    search_s = time.perf_counter() - start
    before = _test_accuracy(case, model, args)
    ft = finetune(case, model, args, "sensitivity")
    final = (
        propose(t)
        if args.sensitivity_scaling == "target"
        else {g: min(MAX_RATIO, t * r) for g, r in proposal.items()}
    )
    details = {
        "curves": curves,
        "mac_sizes": sizes,
        "proposal": proposal,
        "scaling": args.sensitivity_scaling,
        "scale": t,
        "final_ratios": final,
        "met_by_search": met,
    }
    return Outcome("sensitivity", model, search_s, ft, before, details)


def _sensitivity_by_target(
    case: Case, propose: Callable[[float], dict[str, float]], args: argparse.Namespace
) -> Callable[[float], nn.Module]:
    """``t -> model`` pruned to the allocator's answer for removing ``t`` of the MACs."""

    def build(target: float) -> nn.Module:
        ratios = {g: r for g, r in propose(target).items() if r > 0}
        return prune_channels(
            case.model, case.x, ratio=ratios, importance=args.importance, round_to=args.round_to
        )

    return build


def _sensitivity_by_factor(
    case: Case, nonzero: dict[str, float], args: argparse.Namespace
) -> Callable[[float], nn.Module]:
    """``f -> model`` pruned to ``f x`` the proposal's ratios (at most :data:`MAX_RATIO`)."""

    def build(factor: float) -> nn.Module:
        ratios = {g: min(MAX_RATIO, factor * r) for g, r in nonzero.items()}
        return prune_channels(
            case.model, case.x, ratio=ratios, importance=args.importance, round_to=args.round_to
        )

    return build


def netadapt_config(args: argparse.Namespace, budget: float, batch: int) -> NetAdaptConfig:
    return NetAdaptConfig(
        budget_seconds=budget,
        init_reduction=args.netadapt_init_reduction,
        reduction_decay=args.netadapt_decay,
        short_term_batches=args.netadapt_short_term_batches,
        long_term_epochs=args.finetune_epochs,
        long_term_lr=args.finetune_lr,
        optimizer="adam",
        batch_size=args.batch_size,
        importance=args.importance,
        round_to=args.round_to,
        seed=args.seed,
        max_iterations=args.netadapt_max_iterations,
        latency_batch=batch,
    )


def run_netadapt(case: Case, budget: float, batch: int, args: argparse.Namespace) -> Outcome:
    cfg = netadapt_config(args, budget, batch)
    start = time.perf_counter()
    result = netadapt(
        case.model,
        case.splits,
        case.x,
        cfg,
        latency=case.latency(batch),
        workers=Workers(threads_per_task=args.threads),
    )
    wall = time.perf_counter() - start
    iterations = len(result.trajectory) - 1
    details = {
        "stop_reason": result.stop_reason,
        "iterations": iterations,
        "short_term_minibatches": sum(len(r.proposals) for r in result.trajectory)
        * cfg.short_term_batches,
        "trajectory": [
            {
                "iteration": r.iteration,
                "latency_s": r.latency,
                "val_accuracy": r.accuracy,
                "group": r.group,
                "channels": r.channels,
            }
            for r in result.trajectory
        ],
        "config": cfg.to_dict(),
    }
    # The long-term fine-tune is inside the search's wall time; no separate figure.
    return Outcome("netadapt", result.model, wall, 0.0, None, details, result)


def amc_config(args: argparse.Namespace, ratio: float, lbound: float, batch: int) -> AMCConfig:
    return AMCConfig(
        resource="latency",
        budget_ratio=ratio,
        episodes=args.amc_episodes,
        warmup=args.amc_warmup,
        lbound=lbound,
        round_to=args.round_to,
        importance=args.importance,
        reconstruct=args.amc_reconstruct,
        bn_samples=args.amc_bn_samples,
        seed=args.seed,
        latency_batch=batch,
    )


def run_amc(case: Case, budget: float, batch: int, args: argparse.Namespace) -> Outcome:
    latency = case.latency(batch)
    ratio = min(1.0, budget / latency(case.model))
    lbound, start = args.amc_lbound, time.perf_counter()
    while True:
        cfg = amc_config(args, ratio, lbound, batch)
        try:
            result = amc_search(
                case.model,
                case.splits,
                case.x,
                cfg,
                Workers(threads_per_task=args.threads),
                latency,
            )
            break
        except ConfigError as exc:  # the budget is out of reach with every group at lbound
            if "lbound=" not in str(exc) or lbound / 2 < MIN_LBOUND:
                raise
            lbound /= 2
            say(f"{case.name}: AMC: {exc}; retrying with lbound {lbound:g}")
    search_s = time.perf_counter() - start
    model = result.model
    before = _test_accuracy(case, model, args)
    ft = finetune(case, model, args, "amc")
    png = Path(args.out).with_name(f"search_amc_rewards_{case.name}_b{batch}.png")
    plot_rewards(result, png)
    details = {
        "budget_ratio": ratio,
        "lbound": lbound,
        "best": result.best.to_dict(),
        "ratios": result.ratios,
        "rewards": [r.reward for r in result.history],
        "reward_png": str(png),
        "config": cfg.to_dict(),
    }
    return Outcome("amc", model, search_s, ft, before, details)


RUNNERS = {
    "uniform": run_uniform,
    "sensitivity": run_sensitivity,
    "netadapt": run_netadapt,
    "amc": run_amc,
}


def _test_accuracy(case: Case, model: nn.Module, args: argparse.Namespace) -> float:
    return evaluate(model, case.loaders(args)[2]).accuracy


# ----------------------------------------------------------------------------- measuring


def measure_all(case: Case, models: dict[str, nn.Module], rounds: int) -> dict[str, dict]:
    """Per model and batch: the median over interleaved rounds of the measured seconds without
    page faults (what the table predicts), and of the raw seconds with the faults per call;
    how many measurements were flagged noisy."""
    keys = ("samples_s", "raw_s", "faults")
    got = {k: {key: {b: [] for b in BATCHES} for key in keys} for k in models}
    noisy = {k: 0 for k in models}
    for r in range(rounds):
        say(f"{case.name}: measuring round {r + 1}/{rounds} ({len(models)} models, batch 1 and 64)")
        for b, table in case.tables.items():
            for name, model in models.items():
                timing = table.measure_timing(model, case.x)
                got[name]["samples_s"][b].append(timing.without_faults(table.overhead.fault_s))
                got[name]["raw_s"][b].append(timing.seconds)
                got[name]["faults"][b].append(timing.faults)
                noisy[name] += timing.noisy
    out = {}
    for name, series in got.items():
        med = {key: {b: statistics.median(v) for b, v in s.items()} for key, s in series.items()}
        out[name] = {
            "median_s": med["samples_s"],
            "median_raw_s": med["raw_s"],
            "median_faults": med["faults"],
            **series,
            "noisy": noisy[name],
        }
    return out


def row(
    case: Case,
    outcome: Outcome,
    measured: dict,
    base: dict,
    budget: float,
    batch: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One method's line of the results."""
    model = outcome.model
    macs, params = macs_params(model, case.x)
    predicted = {b: case.tables[b].predict(model, case.x) for b in BATCHES}
    acc = _test_accuracy(case, model, args)
    meas = measured["median_s"]
    return {
        "method": outcome.method,
        "budget_batch": batch,
        "budget_s": budget,
        "met_budget_predicted": predicted[batch] <= budget * (1 + 1e-9),
        "predicted_s": predicted,
        "measured_s": meas,
        "measured_noisy": measured["noisy"],
        "measured_raw_s": measured["median_raw_s"],
        "measured_faults_per_call": measured["median_faults"],
        "speedup_raw": {b: base["median_raw_s"][b] / measured["median_raw_s"][b] for b in BATCHES},
        "prediction_error_pct": {b: 100 * (predicted[b] / meas[b] - 1) for b in BATCHES},
        "latency_ratio": {b: meas[b] / base["median_s"][b] for b in BATCHES},
        "speedup": {b: base["median_s"][b] / meas[b] for b in BATCHES},
        "macs": macs,
        "params": params,
        "group_channels": group_sizes(model, case.x),
        "test_accuracy": acc,
        "accuracy_before_finetune": outcome.accuracy_before_finetune,
        "drop_points": 100 * (case.test_accuracy - acc),
        "search_s": outcome.search_s,
        "finetune_s": outcome.finetune_s,
        "wall_s": outcome.search_s + outcome.finetune_s,
        "details": outcome.details,
    }


# ----------------------------------------------------------------------------- one model


def compare(case: Case, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """The four methods at ``budget x`` the baseline's measured latency at ``batch``."""
    budget = args.budget * case.base_s[batch]
    floor = case.latency(batch)(cut_everything(case, args))
    say(
        f"{case.name}: budget {budget * 1e3:.3f} ms at batch {batch} "
        f"({args.budget:g} x {case.base_s[batch] * 1e3:.3f} ms); every group cut by "
        f"{MAX_RATIO:.0%}: {floor * 1e3:.3f} ms predicted"
    )
    comp: dict[str, Any] = {
        "budget_batch": batch,
        "budget_s": budget,
        "floor_s": floor,
        "feasible": floor <= budget,
        "rows": [],
        "errors": {},
        "group_ratios": [],
    }
    if floor > budget:
        comp["errors"]["all"] = (
            f"budget infeasible: every group cut by {MAX_RATIO:.0%} still takes "
            f"{floor / case.base_s[batch]:.2f}x of the baseline's latency (predicted)"
        )
        say(f"{case.name}: skipped: {comp['errors']['all']}")
        return comp
    outcomes = run_methods(case, budget, batch, args, comp["errors"])
    models = {"baseline": case.model, **{k: o.model for k, o in outcomes.items()}}
    measured = measure_all(case, models, args.measure_rounds)
    comp["baseline_measured"] = measured["baseline"]
    comp["baseline_predicted_s"] = {b: case.tables[b].predict(case.model, case.x) for b in BATCHES}
    comp["rows"] = [
        row(case, o, measured[k], measured["baseline"], budget, batch, args)
        for k, o in outcomes.items()
    ]
    png = Path(args.out).with_name(f"search_{case.name}_b{batch}.png")
    trajectory = outcomes["netadapt"].netadapt if "netadapt" in outcomes else None
    plot_points(case, comp["rows"], measured["baseline"], batch, budget, trajectory, png)
    comp["plot"] = str(png)
    comp["group_ratios"] = group_ratio_table(case, comp["rows"])
    comp["paper_observation"] = paper_observation(comp["group_ratios"])
    return comp


def cut_everything(case: Case, args: argparse.Namespace) -> nn.Module:
    """Every prunable group cut by :data:`MAX_RATIO`: the fastest uniform model."""
    return prune_channels(case.model, case.x, ratio=MAX_RATIO, round_to=args.round_to)


def run_methods(
    case: Case, budget: float, batch: int, args: argparse.Namespace, errors: dict[str, str]
) -> dict[str, Outcome]:
    """Each method in turn; one that cannot run (e.g. AMC's budget unreachable at its
    ``lbound``) is recorded in ``errors`` and the others go on."""
    outcomes: dict[str, Outcome] = {}
    for method in METHODS:
        say(f"{case.name}: {method} (budget batch {batch})")
        start = time.perf_counter()
        try:
            outcomes[method] = RUNNERS[method](case, budget, batch, args)
        except (ConfigError, ModelError) as exc:
            errors[method] = f"{type(exc).__name__}: {exc}"
            say(f"{case.name}: {method} failed: {errors[method]}")
            continue
        say(f"{case.name}: {method} done in {time.perf_counter() - start:.1f} s")
    return outcomes


def group_ratio_table(case: Case, rows: list[dict]) -> list[dict[str, Any]]:
    """Per prunable group: kind, kernel, size and every method's preserve ratio (final
    channels / original)."""
    env = AMCEnv.build(case.model, case.x, lbound=1.0)
    table = []
    for layer in env.layers:
        entry = {
            "group": layer.name,
            "kind": layer.kind,
            "kernel": layer.kernel,
            "channels": layer.c_out,
        }
        for r in rows:
            entry[r["method"]] = r["group_channels"].get(layer.name, 0) / layer.c_out
        sens = next((r for r in rows if r["method"] == "sensitivity"), None)
        if sens is not None:
            entry["sensitivity_proposal"] = 1 - sens["details"]["proposal"][layer.name]
        table.append(entry)
    return table


def kind_means(table: list[dict[str, Any]], method: str) -> dict[str, float]:
    """Mean preserve ratio of ``method`` per group kind: ``depthwise`` (a group tied to a
    depthwise conv: MobileNet's expansion 1x1 outputs and its 3x3 depthwise), ``conv KxK``
    (by the producer's kernel), ``linear``."""
    by_kind: dict[str, list[float]] = {}
    for e in table:
        if method in e:
            kind = f"conv {e['kernel']}x{e['kernel']}" if e["kind"] == "conv" else e["kind"]
            by_kind.setdefault(kind, []).append(e[method])
    return {k: sum(v) / len(v) for k, v in by_kind.items()}


def paper_observation(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    """He et al. 2018 on MobileNet: AMC keeps more of the 3x3 depthwise and prunes the 1x1
    harder. Here: AMC's mean preserve ratio of depthwise-tied groups vs 1x1 conv groups
    (None without both kinds or without AMC), next to the sensitivity proposal's."""
    out: dict[str, Any] = {}
    for method in ("amc", "sensitivity_proposal", "sensitivity", "netadapt", "uniform"):
        means = kind_means(table, method)
        if "depthwise" in means and "conv 1x1" in means:
            out[method] = {"depthwise": means["depthwise"], "conv 1x1": means["conv 1x1"]}
    if "amc" not in out:
        return None
    amc = out["amc"]
    return {"seen": amc["depthwise"] > amc["conv 1x1"], "means": out}


# ----------------------------------------------------------------------------- Ray


def ray_comparison(case: Case, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """NetAdapt with 1 worker (in-process) and ``--ray-workers`` (local Ray), same config."""
    budget = args.budget * case.base_s[batch]
    cfg = netadapt_config(args, budget, batch)
    results, walls = {}, {}
    start = time.perf_counter()
    Workers(count=args.ray_workers).map(abs, list(range(-args.ray_workers, 0)))
    ray_start_s = time.perf_counter() - start
    say(f"{case.name}: local Ray with {args.ray_workers} workers started in {ray_start_s:.1f} s")
    for count in (1, args.ray_workers):
        say(f"{case.name}: NetAdapt with Workers(count={count})")
        start = time.perf_counter()
        results[count] = netadapt(
            case.model,
            case.splits,
            case.x,
            cfg,
            latency=case.latency(batch),
            workers=Workers(count=count, threads_per_task=args.threads),
        )
        walls[count] = time.perf_counter() - start
    shutdown()
    one, many = results[1], results[args.ray_workers]
    same_channels = group_sizes(one.model, case.x) == group_sizes(many.model, case.x)
    s1, s2 = one.model.state_dict(), many.model.state_dict()
    same_weights = (
        same_channels
        and s1.keys() == s2.keys()
        and all(s1[k].shape == s2[k].shape and torch.equal(s1[k], s2[k]) for k in s1)
    )
    same_trajectory = [r.to_dict() for r in one.trajectory] == [
        r.to_dict() for r in many.trajectory
    ]
    return {
        "model": case.name,
        "budget_batch": batch,
        "workers": [1, args.ray_workers],
        "wall_s": {str(k): v for k, v in walls.items()},
        "ray_start_s": ray_start_s,
        "speedup": walls[1] / walls[args.ray_workers],
        "identical_channels": same_channels,
        "identical_weights": same_weights,
        "identical_trajectory": same_trajectory,
        "iterations": len(one.trajectory) - 1,
        "config": cfg.to_dict(),
    }


# ----------------------------------------------------------------------------- plots


def plot_points(
    case: Case,
    rows: list[dict],
    base: dict,
    batch: int,
    budget: float,
    trajectory: NetAdaptResult | None,
    path: Path,
) -> None:
    """Test accuracy against measured latency at batch 1 and 64 (+ NetAdapt's trajectory at
    the budget batch: predicted latency, validation-subset accuracy after short-term FT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCHES), figsize=(12, 4.5))
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}
    for ax, b in zip(axes, BATCHES, strict=True):
        ax.plot([1.0], [100 * case.test_accuracy], "k*", markersize=12, label="baseline")
        for r in rows:
            ax.plot(
                [r["latency_ratio"][b]],
                [100 * r["test_accuracy"]],
                "o",
                color=colors[r["method"]],
                label=r["method"],
            )
        if b == batch:
            ax.axvline(budget / case.base_s[b], color="gray", ls="--", label="budget")
            if trajectory is not None:
                l0 = trajectory.original_latency
                ax.plot(
                    [t.latency / l0 for t in trajectory.trajectory],
                    [100 * t.accuracy for t in trajectory.trajectory],
                    ".-",
                    color=colors["netadapt"],
                    alpha=0.4,
                    label="NetAdapt trajectory (predicted latency, val accuracy after "
                    "short-term fine-tunes)",
                )
        ax.set_xlabel(f"latency relative to the baseline, batch {b} (measured)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{case.name}: budget {budget / case.base_s[batch]:g}x at batch {batch}")
        ax.grid(alpha=0.3)
    handles, labels = axes[BATCHES.index(batch)].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=4, fontsize="small", bbox_to_anchor=(0.5, -0.12)
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- summary


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, judged from the rows (never assumed): per model and budget batch,
    NetAdapt and AMC each beat uniform (higher test accuracy, all three meeting the budget);
    on VGG, each reaches >= 1.8x measured speedup at <= 0.5 points lost."""
    verdicts = []
    for name, model in result["models"].items():
        for comp in model["comparisons"]:
            for method in ("netadapt", "amc"):
                verdicts += _verdicts(name, comp, method)
    return verdicts


def _verdicts(name: str, comp: dict[str, Any], method: str) -> list[dict[str, Any]]:
    b = comp["budget_batch"]
    by = {r["method"]: r for r in comp["rows"]}
    goals_here = [f"{method} beats uniform"]
    if name == "vgg":
        goals_here.append(f"{method} >= {GOAL_SPEEDUP}x at <= {GOAL_DROP_POINTS} points lost")
    base = {"model": name, "batch": b}
    missing = [k for k in (method, "uniform") if k not in by]
    if missing:
        why = comp["errors"].get("all") or "; ".join(
            f"{k}: {comp['errors'].get(k, 'not run')}" for k in missing
        )
        return [{**base, "goal": g, "met": None, "why": why} for g in goals_here]
    m, u = by[method], by["uniform"]
    beats = m["test_accuracy"] > u["test_accuracy"]
    within = m["met_budget_predicted"] and u["met_budget_predicted"]
    out = [
        {
            **base,
            "goal": goals_here[0],
            "met": beats and within,
            "why": f"{100 * m['test_accuracy']:.2f}% vs {100 * u['test_accuracy']:.2f}%; "
            f"measured latency {m['latency_ratio'][b]:.2f}x vs {u['latency_ratio'][b]:.2f}x "
            f"of the baseline{'' if within else '; a budget was not met'}",
        }
    ]
    if name == "vgg":
        ok = m["speedup"][b] >= GOAL_SPEEDUP and m["drop_points"] <= GOAL_DROP_POINTS
        why = f"{m['speedup'][b]:.2f}x measured at batch {b}, {m['drop_points']:+.2f} points"
        out.append({**base, "goal": goals_here[1], "met": ok, "why": why})
    return out


def markdown(result: dict[str, Any]) -> str:
    """What the lead pastes into BENCHMARKS.md."""
    m = result["machine"]
    lines = [
        f"### Search at equal latency ({result['date']})",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {m['lscpu_model_name']} ({', '.join(m['isa_features'])}; torch "
        f"{m['torch']}, capability {m['fingerprint']['capability']}), "
        f"{m['torch_threads']} torch thread(s), load average {m['load_average_start'][0]:.1f}"
        f" at the start; run took {result['seconds'] / 60:.1f} min.",
        "",
    ]
    for name, model in result["models"].items():
        for comp in model["comparisons"]:
            lines += _comparison_md(name, model, comp)
    lines += _ratios_md(result) + _ray_md(result) + ["", "Goals:", ""]
    for v in result["goals"]:
        verdict = "n/a" if v["met"] is None else "met" if v["met"] else "NOT met"
        lines.append(
            f"- {v['model']} (budget at batch {v['batch']}): {v['goal']}: **{verdict}** "
            f"({v['why']})"
        )
    return "\n".join(lines) + "\n"


def _comparison_md(name: str, model: dict, comp: dict) -> list[str]:
    b = comp["budget_batch"]
    base = model["baseline_measured_s"]
    lines = [
        "",
        f"**{name}**: baseline test accuracy {100 * model['test_accuracy']:.2f}%, measured "
        f"{base[1] * 1e3:.3f} ms (batch 1), {base[64] * 1e3:.3f} ms (batch 64) when calibrating; "
        f"budget {comp['budget_s'] * 1e3:.3f} ms at batch {b}; every group cut by "
        f"{MAX_RATIO:.0%}: {comp['floor_s'] * 1e3:.3f} ms predicted.",
    ]
    if not comp["rows"]:
        return [*lines, "", f"No comparison: {comp['errors'].get('all', 'every method failed')}."]
    lines += [
        "",
        "| method | pred b1 ms | meas b1 ms | speedup b1 | pred b64 ms | meas b64 ms | "
        "speedup b64 | MACs | params | test acc | drop (pts) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines.append(_baseline_md(model, comp))
    for r in comp["rows"]:
        p, s, sp = r["predicted_s"], r["measured_s"], r["speedup"]
        lines.append(
            f"| {r['method']}{'' if r['met_budget_predicted'] else ' (budget not met)'} | "
            f"{p[1] * 1e3:.3f} | {s[1] * 1e3:.3f} | {sp[1]:.2f}x | {p[64] * 1e3:.3f} | "
            f"{s[64] * 1e3:.3f} | {sp[64]:.2f}x | {r['macs']:,} | {r['params']:,} | "
            f"{100 * r['test_accuracy']:.2f}% | {r['drop_points']:+.2f} | {r['wall_s']:.0f} |"
        )
    for method, err in comp["errors"].items():
        lines.append(f"| {method} | failed: {err} | | | | | | | | | | |")
    return [*lines, "", _notes_md(comp)]


def _baseline_md(model: dict, comp: dict) -> str:
    p, s = comp["baseline_predicted_s"], comp["baseline_measured"]["median_s"]
    return (
        f"| baseline | {p[1] * 1e3:.3f} | {s[1] * 1e3:.3f} | 1.00x | {p[64] * 1e3:.3f} | "
        f"{s[64] * 1e3:.3f} | 1.00x | {model['macs']:,} | {model['params']:,} | "
        f"{100 * model['test_accuracy']:.2f}% | 0 | {model['train'].get('train_s', 0):.0f} |"
    )


def _notes_md(comp: dict) -> str:
    """What each method's row came from (one line)."""
    notes = []
    for r in comp["rows"]:
        d = r["details"]
        if r["method"] == "uniform":
            notes.append(f"uniform cut {d['ratio']:.3f} of every group")
        elif r["method"] == "sensitivity":
            notes.append(f"sensitivity scaled by {d['scaling']} = {d['scale']:.3f}")
        elif r["method"] == "netadapt":
            notes.append(
                f"NetAdapt: {d['iterations']} iterations, {d['stop_reason']}, "
                f"{d['short_term_minibatches']} short-term minibatches on top"
            )
        elif r["method"] == "amc":
            notes.append(
                f"AMC: lbound {d['lbound']:g}, best episode {d['best']['episode']} "
                f"(reward {d['best']['reward']:.4f}), {len(d['rewards'])} episodes"
            )
    return (
        "Measured: median of the rounds, page faults excluded (the JSON has the raw figures); "
        "wall s: search + fine-tune (baseline: training). " + "; ".join(notes) + "."
    )


def _ratios_md(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, model in result["models"].items():
        for comp in model["comparisons"]:
            table = comp["group_ratios"]
            if not table:
                continue
            methods = [k for k in ("sensitivity_proposal", *METHODS) if k in table[0]]
            lines += [
                "",
                f"Preserve ratios per channel group, {name} (budget at batch "
                f"{comp['budget_batch']}):",
                "",
                "| group | kind | kernel | channels | " + " | ".join(methods) + " |",
                "|---" * (4 + len(methods)) + "|",
            ]
            for e in table:
                cells = " | ".join(f"{e[k]:.2f}" for k in methods)
                lines.append(
                    f"| {e['group']} | {e['kind']} | {e['kernel']} | {e['channels']} | {cells} |"
                )
            for k in methods:
                means = kind_means(table, k)
                text = ", ".join(f"{kind} {v:.2f}" for kind, v in sorted(means.items()))
                lines.append(f"- mean preserve ratio of {k} by kind: {text}")
            lines += _observation_md(paper_observation(table))
    return lines


def _observation_md(obs: dict[str, Any] | None) -> list[str]:
    if obs is None:
        return []
    m = obs["means"]
    others = "; ".join(
        f"{k}: {v['depthwise']:.2f} vs {v['conv 1x1']:.2f}" for k, v in m.items() if k != "amc"
    )
    return [
        f"- the paper's MobileNet observation (AMC keeps more of the 3x3 depthwise, prunes 1x1 "
        f"harder): **{'seen' if obs['seen'] else 'not seen'}**: AMC keeps "
        f"{m['amc']['depthwise']:.2f} of the depthwise-tied groups vs {m['amc']['conv 1x1']:.2f}"
        f" of the 1x1 conv groups ({others}). A depthwise-tied group's channels are also the "
        "outputs of the 1x1 expansion conv before it."
    ]


def _ray_md(result: dict[str, Any]) -> list[str]:
    ray = result.get("ray")
    if not ray:
        return []
    w = ray["wall_s"]
    one, many = ray["workers"]
    return [
        "",
        f"Ray: NetAdapt on {ray['model']} ({ray['iterations']} iterations): "
        f"{w[str(one)]:.1f} s with Workers(count={one}) (in-process), {w[str(many)]:.1f} s "
        f"with Workers(count={many}) (local Ray, started beforehand in {ray['ray_start_s']:.1f} "
        f"s), {ray['speedup']:.2f}x; identical channel "
        f"counts: {ray['identical_channels']}, weights: {ray['identical_weights']}, "
        f"trajectory: {ray['identical_trajectory']}.",
    ]


# ----------------------------------------------------------------------------- main


def write(result: dict[str, Any], out: Path) -> None:
    result["seconds"] = time.perf_counter() - START
    atomic_write_text(out, json.dumps(result, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    timer = MedianTimer(warmup=1, repeats=3, min_seconds=0.0) if args.quick else MedianTimer()
    out = Path(args.out)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/bench_search.py", *given]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(args, timer),
        "args": vars(args),
        "models": {},
        "goal": {"speedup": GOAL_SPEEDUP, "drop_points": GOAL_DROP_POINTS},
    }
    splits = load_data(args.data, seed=args.seed)
    tables = latency_tables(args, timer)
    batches = list(BATCHES) if args.both_batches else [args.budget_batch]
    for name in args.models.split(","):
        case = prepare(name, splits, args, tables)
        entry = result["models"][name] = model_entry(case)
        for batch in batches:
            entry["comparisons"].append(compare(case, batch, args))
            write(result, out)
        if name == "vgg" and not args.no_ray:
            feasible = [c["budget_batch"] for c in entry["comparisons"] if c["feasible"]]
            result["ray"] = ray_comparison(case, (feasible or batches)[0], args)
            write(result, out)
    result["goals"] = goals(result)
    result["machine"]["load_average_end"] = os.getloadavg()
    result["markdown"] = markdown(result)
    write(result, out)
    print(result["markdown"])
    say(f"wrote {out} and the PNGs next to it")


def model_entry(case: Case) -> dict[str, Any]:
    """A model's part of the results, before its comparisons."""
    macs, params = macs_params(case.model, case.x)
    return {
        "macs": macs,
        "params": params,
        "test_accuracy": case.test_accuracy,
        "val_accuracy": case.val_accuracy,
        "baseline_measured_s": case.base_s,
        "train": case.train,
        "comparisons": [],
    }


if __name__ == "__main__":
    main()
