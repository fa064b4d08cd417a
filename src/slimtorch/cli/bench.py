"""``slimtorch bench``: MLPerf-style scenarios, accuracy mode and speedup tables on the CLI.

Builds the same ``TestSettings`` and ``DivisionConfig`` the Python API
(``slimtorch.bench.harness.benchmark``) takes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from slimtorch.bench.accuracy import DIVISIONS, DivisionConfig
from slimtorch.bench.harness import benchmark, benchmark_llm, eval_data_for, load_targets
from slimtorch.bench.llm import LLMSettings, llm_markdown
from slimtorch.bench.report import (
    compare_markdown,
    compare_table,
    format_summary,
    plot_latency_cdf,
    records_hint,
    write_json,
    write_summary,
)
from slimtorch.bench.settings import TestSettings
from slimtorch.bench.sut import LoadOptions
from slimtorch.cli.fields import ConfigOptions, Custom
from slimtorch.cli.options import add_split_option, add_threads_option, threads_from_args
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_text
from slimtorch.profile.noise import noise_hint

PERCENT = 100.0
MS_PER_S = 1e3
PRESET_SET = "set by the scenario and preset"


def _preset_set(parse: type) -> Custom:
    """A TestSettings field whose None means "the scenario's and preset's value"."""
    return Custom(parse=parse, text=lambda v: PRESET_SET if v is None else str(v))


# TestSettings fields offered after --scenario and --preset, and their flags.
SETTINGS_FLAGS = {
    "min_query_count": "--min-queries",
    "min_duration_s": "--min-duration",
    "max_duration_s": "--max-duration",
    "samples_per_query": "--samples-per-query",
    "offline_min_samples": "--offline-samples",
    "offline_batch_size": "--batch-size",
    "warmup_queries": "--warmup",
    "server_target_qps": "--target-qps",
    "server_target_latency_s": "--latency-bound-ms",
    "server_max_batch": "--max-batch",
    "peak_rel_tol": "--peak-tolerance",
}
SETTINGS_OPTIONS = ConfigOptions(
    TestSettings,
    only=("scenario", "preset", *SETTINGS_FLAGS),
    flags=SETTINGS_FLAGS,
    custom={
        "min_query_count": _preset_set(int),
        "min_duration_s": _preset_set(float),
        "max_duration_s": _preset_set(float),
        "samples_per_query": _preset_set(int),
        "offline_min_samples": _preset_set(int),
        "server_target_latency_s": Custom(
            parse=lambda t: float(t) / MS_PER_S, text=lambda v: f"{v * MS_PER_S:g}", metavar="MS"
        ),
    },
    group="run settings (TestSettings)",
)
# Token generators take LLMSettings through the same flags (each config keeps its default).
LLM_SHARED = ("scenario", "min_query_count", "min_duration_s", "server_target_qps")
LLM_OPTIONS = ConfigOptions(
    LLMSettings, only=LLM_SHARED, flags={k: SETTINGS_OPTIONS.flag(k) for k in LLM_SHARED}
)
DIVISION_OPTIONS = ConfigOptions(
    DivisionConfig,
    only=("target",),
    flags={"target": "--quality-target"},
    custom={
        "target": Custom(
            parse=lambda t: float(t) / PERCENT, text=lambda v: f"{v * PERCENT:g}", metavar="PERCENT"
        )
    },
    group="accuracy mode and division (DivisionConfig)",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand.

    Args:
        subparsers: the ``slimtorch`` subparsers object.
    """
    p = subparsers.add_parser(
        "bench",
        help="MLPerf-style benchmark: LoadGen scenarios, accuracy, closed/open division",
        description="Benchmark one or more models the way MLPerf Inference does and compare "
        "them side by side (speedup over the first, the baseline). MODEL is a zoo name, a "
        "checkpoint folder, package.module:factory, or any source a registered adapter "
        "understands. Zoo names are built for the data's shape and classes (untrained).",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="models to benchmark")
    SETTINGS_OPTIONS.add(p)
    LLM_OPTIONS.add(p)  # the same flags; where defaults differ, each config's own
    p.add_argument(
        "--no-peak-search",
        action="store_true",
        help="server: run once at --target-qps instead of searching the peak VALID rate",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sample order, arrivals, split (default: the seed the models' artefacts record, "
        "else 0)",
    )
    add_threads_option(p, "the runs (and the native LLM decode engine)")
    _accuracy_options(p)
    _output_options(p)
    p.set_defaults(func=_cmd_bench)


def _accuracy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(DIVISION_OPTIONS.group)  # DIVISION_OPTIONS.add adds to it
    g.add_argument(
        "--accuracy",
        action="store_true",
        help="also run accuracy mode: the whole split through the same path, top-1",
    )
    g.add_argument(
        "--division",
        choices=DIVISIONS,
        default=None,
        help="judge quality against the baseline: closed needs --quality-target of it "
        "(PASS/FAIL), open only reports it (implies --accuracy; default closed with --accuracy)",
    )
    DIVISION_OPTIONS.add(p)
    p.add_argument(
        "--baseline",
        type=int,
        default=0,
        help="index of the reference model among MODEL... (default 0, the first)",
    )
    _data_options(p)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="evaluation data: digits, digits:32, a .npz, a folder or idx:IMAGES,LABELS, split "
        "with --seed (default: the data the models were made with, as their checkpoint, int8 "
        "or .slim file records it; else digits)",
    )
    add_split_option(p, "which split to draw samples from")
    p.add_argument("--norm", default=None, help="zoo models: normalization layer")
    p.add_argument("--act", default=None, help="zoo models: activation")


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="write every result (and latencies) as JSON here")
    p.add_argument("--summary", type=Path, help="write mlperf_log_summary-style text here")
    p.add_argument("--plot", type=Path, help="write a PNG of the latency CDF of each model")
    p.add_argument("--markdown", type=Path, help="write the comparison table as Markdown here")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _given_seed(args: argparse.Namespace) -> dict[str, int]:
    """``{"seed": --seed}`` when given (else the config's default until the data's is known)."""
    return {} if args.seed is None else {"seed": args.seed}


def settings_from_args(args: argparse.Namespace) -> TestSettings:
    """The ``TestSettings`` the options describe (validated: bad values raise ConfigError)."""
    bound = args.latency_bound_ms  # seconds, converted from the option's milliseconds
    if bound <= 0:
        raise ConfigError(f"--latency-bound-ms: expected > 0, got {bound * MS_PER_S:g}")
    return SETTINGS_OPTIONS.build(args, **_given_seed(args))


def _division(args: argparse.Namespace) -> DivisionConfig | None:
    if not (args.accuracy or args.division):
        return None
    chosen = {"division": args.division} if args.division else {}  # else the config's
    return DIVISION_OPTIONS.build(args, **chosen)


def _cmd_bench(args: argparse.Namespace) -> int:

    settings = settings_from_args(args)
    division = _division(args)
    threads = threads_from_args(args)
    kwargs = {k: v for k, v in (("norm", args.norm), ("act", args.act)) if v is not None}
    ev = eval_data_for(args.models, args.data, args.split, args.seed, args.baseline)
    if args.seed is None:  # the split's seed (recorded) also orders the samples
        settings = replace(settings, seed=ev.seed)
    options = LoadOptions(tuple(ev.x.shape[1:]), ev.num_classes, kwargs)
    targets = load_targets(args.models, options)
    if all(t.kind == "generator" for t in targets):
        return _bench_generators(args, targets)
    records = benchmark(
        targets,
        settings,
        data=ev,
        division=division,
        find_peak=not args.no_peak_search,
        baseline=args.baseline,
        progress=not args.quiet,
        threads=threads,
    )
    if not args.quiet:
        console = Console(width=120)
        d = _data_info(ev, args.split)
        console.print(
            f"data: {d['data']} [{d['split']}, seed {d['seed']}], {d['samples']} samples of "
            f"{'x'.join(map(str, d['input_shape']))}",
            markup=False,
            highlight=False,
        )
        for r in records:
            console.print(format_summary(r), markup=False, highlight=False)
        console.print(compare_table(records, args.baseline))
        hint = records_hint(records)
        if hint:
            console.print(f"hint: {hint}", markup=False, highlight=False)
    _write_outputs(args, records, compare_markdown, _data_info(ev, args.split))
    return 0


def _data_info(ev: object, split: str) -> dict:
    """What the classifiers were scored on, for the JSON and the printed line."""
    shape = list(ev.x.shape[1:])
    return {"data": ev.name, "split": split, "seed": ev.seed, "input_shape": shape,
            "num_classes": ev.num_classes, "samples": int(ev.x.shape[0])}  # fmt: skip


def _write_outputs(
    args: argparse.Namespace, records: list, compare_markdown: object, data: dict | None = None
) -> None:

    if args.json:
        write_json(records, args.json, args.baseline, data)
    if args.summary:
        write_summary(records, args.summary)
    if args.plot:
        plot_latency_cdf(records, args.plot)
    if args.markdown:
        atomic_write_text(args.markdown, compare_markdown(records, args.baseline))


def _bench_generators(args: argparse.Namespace, targets: list) -> int:
    """Token generators (from an LLM adapter): TTFT, TPOT and tokens/s."""

    if args.scenario == "multistream":
        raise ConfigError("--scenario multistream: not defined for token generators")
    settings = LLM_OPTIONS.build(args, **_given_seed(args))
    results = benchmark_llm(
        targets, settings, progress=not args.quiet, threads=threads_from_args(args)
    )
    table = llm_markdown(results, args.baseline)
    if not args.quiet:
        print(table)
        hint = noise_hint([r.noise for r in results])
        if hint:
            print(f"hint: {hint}")
    if args.json:
        payload = [r.to_dict() for r in results]
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    return 0
