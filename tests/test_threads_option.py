"""``--threads`` on every command that times something, mirrored by the Python API, and
recorded in the JSON next to each figure with its noise verdict (never asserted quiet: the
machine running the tests may be busy)."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch

from slimtorch.bench.harness import benchmark, benchmark_llm
from slimtorch.bench.sut import (
    BenchTarget,
    SUTAdapter,
    register_sut_adapter,
    unregister_sut_adapter,
)
from slimtorch.cli.main import main
from slimtorch.compress.job import compress, run_pipeline
from slimtorch.llm.generate import GenerateConfig, generate
from slimtorch.llm.model import Llama, LlamaConfig
from slimtorch.profile import ProfileConfig
from slimtorch.profile.noise import judge_noise
from slimtorch.profile.timing import layer_latencies, measure_latency, throughput_sweep

TIMING_COMMANDS = (
    ["profile"],
    ["bench"],
    ["compress"],
    ["prune"],
    ["quantize"],
    ["llm", "generate"],
    ["llm", "chat"],
)
FAST_BENCH = ["--min-queries", "5", "--min-duration", "0", "--warmup", "1", "--quiet"]


@pytest.mark.parametrize("command", TIMING_COMMANDS, ids=" ".join)
def test_threads_in_every_timing_commands_help(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "--threads N" in capsys.readouterr().out


def test_python_api_mirrors_the_option() -> None:
    for fn in (
        measure_latency, throughput_sweep, layer_latencies, benchmark, benchmark_llm,
        compress, run_pipeline,
    ):  # fmt: skip
        assert inspect.signature(fn).parameters["threads"].default is None, fn.__name__
    for config in (ProfileConfig, GenerateConfig):
        fields = {f.name: f.default for f in dataclasses.fields(config)}
        assert fields["threads"] is None, config.__name__


def test_bad_thread_count_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "lenet5", "--threads", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--threads" in err and "\n" not in err


def _assert_noise(figure: dict, threads: int) -> None:
    assert figure["threads"] == threads
    assert isinstance(figure["noisy"], bool)
    noise = figure["noise"]
    assert noise["threads"] == threads and noise["noisy"] == figure["noisy"]
    assert isinstance(noise["reasons"], list) and noise["noisy"] == bool(noise["reasons"])


def test_profile_json_records_threads_and_noise(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    args = ["profile", "lenet5", "--threads", "1", "--no-roofline", "--batch-sizes", "1,2"]
    assert main([*args, "--runs", "5", "--warmup", "1", "--json", str(out), "--quiet"]) == 0
    d = json.loads(out.read_text())
    assert d["threads"] == 1
    _assert_noise(d["latency"], 1)
    assert d["latency"]["noise"]["samples"] == 5
    assert d["latency"]["cv"] == d["latency"]["noise"]["cv"] >= 0
    p50, p90 = d["latency"]["noise"]["p50_s"], d["latency"]["noise"]["p90_s"]
    assert p50 == d["latency"]["median_s"] and p90 == d["latency"]["p90_s"]
    for point in d["throughput"]:
        assert point["threads"] == 1 and point["noisy"] == point["latency"]["noisy"]
        _assert_noise(point["latency"], 1)


@pytest.mark.parametrize(
    ("scenario", "spread_judged"), [("singlestream", True), ("offline", False)]
)
def test_bench_json_records_threads_and_noise(
    tmp_path: Path, scenario: str, spread_judged: bool
) -> None:
    out = tmp_path / "b.json"
    args = ["bench", "lenet5", "--scenario", scenario, "--threads", "1", "--json", str(out)]
    assert main([*args, "--offline-samples", "64", *FAST_BENCH]) == 0
    (record,) = json.loads(out.read_text())["records"]
    _assert_noise(record, 1)
    assert (record["noise"]["cv"] is not None) is spread_judged  # offline: completion times


def test_bench_llm_json_records_threads_and_noise(tmp_path: Path) -> None:
    def generate_words(prompt: str):
        yield from prompt.split()

    def load(source: str, options: object) -> BenchTarget:
        return BenchTarget(source, generate_words, kind="generator", prompts=["a b c", "d e"])

    register_sut_adapter(SUTAdapter("toy-llm-threads", lambda s: s.startswith("llm:"), load))
    out = tmp_path / "llm.json"
    try:
        args = ["bench", "llm:x", "--min-queries", "4", "--threads", "1", "--json", str(out)]
        assert main([*args, "--quiet"]) == 0
    finally:
        unregister_sut_adapter("toy-llm-threads")
    (result,) = json.loads(out.read_text())
    _assert_noise(result, 1)


def test_compress_report_records_threads_and_noise(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[model]\nname = "lenet300"\nepochs = 1\n\n[[stage]]\nkind = "kmeans"\nbits = 2\n'
    )
    out = tmp_path / "out"
    assert (
        main(["compress", "--recipe", str(recipe), "--out", str(out), "--threads", "1", "--quiet"])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["threads"] == 1
    assert [s["stage"] for s in report["stages"]] == ["original", "kmeans"]
    for stage in report["stages"]:
        _assert_noise(stage, 1)
    noisy = [s["stage"] for s in report["stages"] if s["noisy"]]
    assert report["summary"]["noisy_latency_stages"] == noisy
    assert "with 1 thread." in (out / "report.md").read_text()


def test_generate_records_threads_and_decode_noise() -> None:
    cfg = LlamaConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, n_kv_heads=1,
                      hidden_dim=32, max_seq_len=32)  # fmt: skip
    before = torch.get_num_threads()
    out = generate(Llama(cfg).eval(), [1, 2, 3], GenerateConfig(max_new_tokens=6, threads=1))
    assert torch.get_num_threads() == before
    assert (out.threads, out.decode_threads) == (1, 1)
    assert out.noise is not None and out.noise.samples == 5  # decode steps after the first
    assert out.noisy == out.noise.noisy
    with pytest.raises(Exception, match="threads"):
        GenerateConfig(threads=0)


def test_noisy_figures_are_marked_in_tables() -> None:
    from rich.console import Console

    from slimtorch.compress.measure import StageRecord
    from slimtorch.compress.report import stage_table

    noisy = judge_noise(None, threads=8, cores=2)  # oversubscribed: noisy by rule
    record = StageRecord(-1, "original", 0.9, 0.9, 10, 10, 12, 48, 32.0, 1.0, 10, 10, 0.1, 0.0)
    marked = dataclasses.replace(record, threads=8, noisy=True, noise=noisy)
    console = Console(width=200, record=True)
    console.print(stage_table([marked]))
    assert "0.100 noisy" in console.export_text()
    console.print(stage_table([record]))
    assert console.export_text().count("noisy") == 0


def test_prune_and_quantize_record_their_threads(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    assert main(["train", "--model", "lenet300", "--epochs", "1", "--out", str(ck), "--quiet"]) == 0
    before = torch.get_num_threads()
    pruned = tmp_path / "p"
    argv = ["prune", str(ck), "--sparsity", "0.5", "--threads", "1", "--quiet", "--out"]
    assert main([*argv, str(pruned)]) == 0
    assert json.loads((pruned / "prune_report.json").read_text())["threads"] == 1
    quant = tmp_path / "q"
    assert main(["quantize", str(ck), "--bits", "8", "--threads", "1", "--out", str(quant)]) == 0
    assert '"threads": 1' in (quant / "report.json").read_text()
    assert torch.get_num_threads() == before  # restored afterwards
