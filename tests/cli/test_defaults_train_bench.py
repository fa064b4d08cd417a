"""train, distill and bench build their configs from generated options: given only the
required arguments they build exactly the default configs, and a value given on the command
line reaches its field. The oracle is each config class itself (``FitConfig()``,
``TestSettings(min_query_count=5)``, ...). evaluate, decode and distill share one option block
each for their data and output (``cli/options.py``); the test checks they are one block.
"""

from __future__ import annotations

import pytest

from slimtorch.bench.accuracy import DivisionConfig
from slimtorch.bench.llm import LLMSettings
from slimtorch.bench.settings import TestSettings
from slimtorch.cli import bench as bench_cli
from slimtorch.cli import distill as distill_cli
from slimtorch.cli import train as train_cli
from slimtorch.cli.fields import generated_actions
from slimtorch.cli.main import build_parser
from slimtorch.distill.distill import DistillConfig
from slimtorch.train import FitConfig

TRAIN = ["train", "--out", "o"]
DISTILL = ["distill", "--teacher", "t", "--student", "lenet300", "--out", "o"]
BENCH = ["bench", "lenet5"]


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("command", ["train", "distill", "bench"])
def test_command_has_generated_options(command: str) -> None:
    assert any(c == command for c, _ in generated_actions(build_parser()))


def test_train_without_options_builds_the_default_fit_config() -> None:
    assert train_cli.FIT_OPTIONS.build(parse(TRAIN)) == FitConfig()


def test_train_options_reach_the_fit_config() -> None:
    argv = [*TRAIN, "--epochs", "3", "--lr", "0.1", "--optimizer", "sgd", "--momentum", "0.5",
            "--weight-decay", "1e-4", "--scheduler", "cosine", "--seed", "7",
            "--label-smoothing", "0.1"]  # fmt: skip
    assert train_cli.FIT_OPTIONS.build(parse(argv)) == FitConfig(
        epochs=3, lr=0.1, optimizer="sgd", momentum=0.5, weight_decay=1e-4,
        scheduler="cosine", seed=7, label_smoothing=0.1)  # fmt: skip


def test_distill_without_options_builds_the_default_configs() -> None:
    # the seed comes from the teacher's record: 0 is FitConfig's default
    assert distill_cli._configs(parse(DISTILL), seed=0) == (FitConfig(), DistillConfig())


def test_distill_options_reach_the_configs() -> None:
    argv = [*DISTILL, "--epochs", "2", "--scheduler", "cosine", "--temperature", "2",
            "--alpha", "0.5", "--hint", "fc1:fc1", "--hint", "fc2.0:fc2.0",
            "--attention", "c1:conv1", "--attention-weight", "10",
            "--adapter-lr", "0.01"]  # fmt: skip
    fit_config, config = distill_cli._configs(parse(argv), seed=3)
    assert fit_config == FitConfig(epochs=2, scheduler="cosine", seed=3)
    assert config == DistillConfig(
        temperature=2.0, alpha=0.5, hints=(("fc1", "fc1"), ("fc2.0", "fc2.0")),
        attention=(("c1", "conv1"),), attention_weight=10.0, adapter_lr=0.01)  # fmt: skip


def test_bench_without_options_builds_the_default_settings() -> None:
    args = parse(BENCH)
    assert bench_cli.settings_from_args(args) == TestSettings()
    assert bench_cli.LLM_OPTIONS.build(args) == LLMSettings()
    assert bench_cli._division(args) is None  # no accuracy mode unless asked
    assert bench_cli._division(parse([*BENCH, "--accuracy"])) == DivisionConfig()


def test_bench_options_reach_the_settings() -> None:
    argv = [*BENCH, "--scenario", "server", "--preset", "mlperf", "--min-queries", "5",
            "--min-duration", "0.5", "--max-duration", "9", "--samples-per-query", "2",
            "--offline-samples", "100", "--batch-size", "8", "--warmup", "3",
            "--target-qps", "50", "--latency-bound-ms", "50", "--max-batch", "4",
            "--peak-tolerance", "0.2", "--seed", "11"]  # fmt: skip
    args = parse(argv)
    assert bench_cli.settings_from_args(args) == TestSettings(
        "server", preset="mlperf", min_query_count=5, min_duration_s=0.5, max_duration_s=9.0,
        samples_per_query=2, offline_min_samples=100, offline_batch_size=8, warmup_queries=3,
        server_target_qps=50.0, server_target_latency_s=0.05, server_max_batch=4,
        peak_rel_tol=0.2, seed=11)  # fmt: skip
    assert bench_cli.LLM_OPTIONS.build(args, seed=11) == LLMSettings(
        "server", min_query_count=5, min_duration_s=0.5, server_target_qps=50.0, seed=11
    )


def test_bench_quality_target_is_a_percent_and_division_implies_accuracy() -> None:
    division = bench_cli._division(
        parse([*BENCH, "--division", "open", "--quality-target", "99.9"])
    )
    assert division.division == "open"
    assert division.target == pytest.approx(0.999)


def test_bench_shared_flags_keep_each_configs_default() -> None:
    """--target-qps: 100 queries/s for classifiers, 1 request/s for token generators."""
    args = parse(BENCH)
    assert bench_cli.settings_from_args(args).server_target_qps == TestSettings.server_target_qps
    assert bench_cli.LLM_OPTIONS.build(args).server_target_qps == LLMSettings.server_target_qps


def _option(command: list[str], flag: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command[0]]
    return next(a for a in sub._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag", ["--out", "--overwrite"])
def test_checkpoint_output_options_are_one_block(flag: str) -> None:
    actions = [_option([c], flag) for c in ("train", "distill", "decode")]
    assert len({(a.help, a.required, a.type, a.default) for a in actions}) == 1


def test_recorded_data_options_default_to_the_record() -> None:
    evaluate = parse(["evaluate", "ck"])
    distill = parse(DISTILL)
    assert (evaluate.data, evaluate.seed, evaluate.batch_size) == (None, None, 256)
    assert (distill.data, distill.seed, distill.batch_size) == (None, None, 64)
