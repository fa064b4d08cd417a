"""``slimtorch bench``: MLPerf-style scenarios, accuracy mode and speedup tables on the CLI.

Builds the same ``TestSettings`` and ``DivisionConfig`` the Python API
(``slimtorch.bench.harness.benchmark``) takes.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from slimtorch.cli.options import add_threads_option, threads_from_args
from slimtorch.errors import ConfigError

SCENARIO_CHOICES = ("singlestream", "multistream", "server", "offline")
PERCENT = 100.0


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
    p.add_argument(
        "--scenario",
        default="singlestream",
        choices=SCENARIO_CHOICES,
        help="singlestream (p90 latency, 1 sample/query), multistream (p99 latency, 8 "
        "samples/query), server (Poisson arrivals; peak rate whose p99 latency meets the "
        "bound), offline (samples/s) (default singlestream)",
    )
    p.add_argument(
        "--preset",
        default="laptop",
        choices=("laptop", "mlperf"),
        help="laptop: runs of seconds; mlperf: MLPerf's minimum query counts and 600 s "
        "(default laptop)",
    )
    _run_options(p)
    _server_options(p)
    _accuracy_options(p)
    _output_options(p)
    p.set_defaults(func=_cmd_bench)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-queries", type=int, help="minimum queries per run (default: preset)")
    p.add_argument("--min-duration", type=float, help="minimum seconds per run (default: preset)")
    p.add_argument(
        "--max-duration",
        type=float,
        help="stop a run after this many seconds (default: laptop 30 s or 10x the minimum)",
    )
    p.add_argument(
        "--samples-per-query", type=int, help="samples per query (default 1; multistream 8)"
    )
    p.add_argument(
        "--offline-samples", type=int, help="minimum samples in an offline run (default: preset)"
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="offline: samples per model call (default 64)"
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up queries (default 10)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sample order, arrivals, split (default: the seed the models' artefacts record, "
        "else 0)",
    )
    add_threads_option(p, "the runs (and the native LLM decode engine)")


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target-qps",
        type=float,
        default=100.0,
        help="server: arrival rate, and where the peak search starts (default 100)",
    )
    p.add_argument(
        "--latency-bound-ms",
        type=float,
        default=15.0,
        help="server: bound on the p99 latency, ms (default 15, MLPerf's ResNet-50 bound)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="server: the worker batches up to this many waiting queries (default 1)",
    )
    p.add_argument(
        "--no-peak-search",
        action="store_true",
        help="server: run once at --target-qps instead of searching the peak VALID rate",
    )
    p.add_argument(
        "--peak-tolerance",
        type=float,
        default=0.05,
        help="server: stop the search when upper/lower - 1 is below this (default 0.05)",
    )


def _accuracy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accuracy",
        action="store_true",
        help="also run accuracy mode: the whole split through the same path, top-1",
    )
    p.add_argument(
        "--division",
        choices=("closed", "open"),
        default=None,
        help="judge quality against the baseline: closed needs --quality-target of it "
        "(PASS/FAIL), open only reports it (implies --accuracy; default closed with --accuracy)",
    )
    p.add_argument(
        "--quality-target",
        type=float,
        default=99.0,
        help="closed division: percent of the baseline's quality required, 99 or 99.9 (default 99)",
    )
    p.add_argument(
        "--baseline",
        type=int,
        default=0,
        help="index of the reference model among MODEL... (default 0, the first)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="evaluation data: digits, digits:32, a .npz, a folder or idx:IMAGES,LABELS, split "
        "with --seed (default: the data the models were made with, as their checkpoint, int8 "
        "or .slim file records it; else digits)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="which split to draw samples from (default test)",
    )
    p.add_argument("--norm", default=None, help="zoo models: normalization layer")
    p.add_argument("--act", default=None, help="zoo models: activation")


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="write every result (and latencies) as JSON here")
    p.add_argument("--summary", type=Path, help="write mlperf_log_summary-style text here")
    p.add_argument("--plot", type=Path, help="write a PNG of the latency CDF of each model")
    p.add_argument("--markdown", type=Path, help="write the comparison table as Markdown here")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def settings_from_args(args: argparse.Namespace) -> object:
    """The ``TestSettings`` the options describe (validated: bad values raise ConfigError)."""
    from slimtorch.bench.settings import TestSettings

    if args.latency_bound_ms <= 0:
        raise ConfigError(f"--latency-bound-ms: expected > 0, got {args.latency_bound_ms}")
    return TestSettings(
        scenario=args.scenario,
        preset=args.preset,
        min_query_count=args.min_queries,
        min_duration_s=args.min_duration,
        max_duration_s=args.max_duration,
        samples_per_query=args.samples_per_query,
        server_target_qps=args.target_qps,
        server_target_latency_s=args.latency_bound_ms / 1e3,
        server_max_batch=args.max_batch,
        offline_min_samples=args.offline_samples,
        offline_batch_size=args.batch_size,
        peak_rel_tol=args.peak_tolerance,
        warmup_queries=args.warmup,
        seed=args.seed or 0,
    )


def _division(args: argparse.Namespace) -> object:
    from slimtorch.bench.accuracy import DivisionConfig

    if not (args.accuracy or args.division):
        return None
    return DivisionConfig(args.division or "closed", args.quality_target / PERCENT)


def _cmd_bench(args: argparse.Namespace) -> int:
    from slimtorch.bench.harness import benchmark, eval_data_for, load_targets
    from slimtorch.bench.report import compare_markdown, compare_table, format_summary
    from slimtorch.bench.sut import LoadOptions

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
        from rich.console import Console

        from slimtorch.bench.report import records_hint

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
    from slimtorch.bench.report import plot_latency_cdf, write_json, write_summary
    from slimtorch.io import atomic_write_text

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
    import json

    from slimtorch.bench.harness import benchmark_llm
    from slimtorch.bench.llm import LLMSettings, llm_markdown
    from slimtorch.io import atomic_write_text

    if args.scenario == "multistream":
        raise ConfigError("--scenario multistream: not defined for token generators")
    settings = LLMSettings(
        scenario=args.scenario,
        min_query_count=args.min_queries or LLMSettings.min_query_count,
        min_duration_s=args.min_duration or 0.0,
        server_target_qps=args.target_qps,
        seed=args.seed or 0,
    )
    results = benchmark_llm(
        targets, settings, progress=not args.quiet, threads=threads_from_args(args)
    )
    table = llm_markdown(results, args.baseline)
    if not args.quiet:
        from slimtorch.profile.noise import noise_hint

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
