"""``slimtorch bench`` end to end: real models, closed division against ``evaluate``, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimtorch.bench.sut import (
    BenchTarget,
    SUTAdapter,
    register_sut_adapter,
    unregister_sut_adapter,
)
from slimtorch.checkpoint import save_checkpoint
from slimtorch.cli.main import main
from slimtorch.data import load_digits, make_loaders
from slimtorch.models import ModelSpec, build_model
from slimtorch.train import FitConfig, evaluate, fit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--min-duration", "0", "--warmup", "1", "--quiet"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained LeNet-300-100 and a copy with most of its first layer zeroed."""
    root = tmp_path_factory.mktemp("ckpt")
    splits = load_digits(seed=0)
    train, val, _ = make_loaders(splits, batch_size=64, seed=0)
    spec = ModelSpec("lenet300", {"num_classes": 10, "in_channels": 1, "image_size": 8})
    torch.manual_seed(0)
    model = build_model(spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is faster on a shared machine
    try:
        fit(model, train, val, FitConfig(epochs=4, seed=0), progress=False)
    finally:
        torch.set_num_threads(threads)
    good = save_checkpoint(root / "good", model, spec, {"data": "digits"})
    with torch.no_grad():
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        first.weight[:, : first.weight.shape[1] * 3 // 4] = 0
    damaged = save_checkpoint(root / "damaged", model, spec, {"data": "digits"})
    return {
        "good": good.parent if good.is_file() else good,
        "damaged": damaged.parent if damaged.is_file() else damaged,
    }


def _test_accuracy(path: Path) -> float:
    from slimtorch.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(path)
    _, _, test = make_loaders(load_digits(seed=0), batch_size=256, seed=0)
    return evaluate(model, test).accuracy


def test_closed_division_passes_the_reference_and_fails_a_damaged_copy(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    good, damaged = str(checkpoints["good"]), str(checkpoints["damaged"])
    rc = main(
        [
            "bench",
            good,
            damaged,
            good,
            "--scenario",
            "singlestream",
            "--min-queries",
            "20",
            "--division",
            "closed",
            "--json",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    records = json.loads(out.read_text())["records"]
    acc_good, acc_damaged = (
        _test_accuracy(checkpoints["good"]),
        _test_accuracy(checkpoints["damaged"]),
    )
    assert acc_damaged < 0.99 * acc_good  # the damage is real, by an independent evaluator
    assert [r["quality"]["value"] for r in records] == pytest.approx(
        [acc_good, acc_damaged, acc_good]
    )
    assert [r["division"]["verdict"] for r in records] == ["PASS", "FAIL", "PASS"]
    assert records[0]["quality"]["n"] == 269


def test_offline_writes_summary_json_plot_markdown(tmp_path: Path) -> None:
    paths = {k: tmp_path / f"out.{k}" for k in ("json", "summary", "plot", "markdown")}
    args = [
        "bench",
        "lenet5",
        "lenet300",
        "--scenario",
        "offline",
        "--offline-samples",
        "256",
        "--batch-size",
        "32",
        "--accuracy",
        "--division",
        "open",
        "--threads",
        "1",
        *FAST,
    ]
    for k, p in paths.items():
        args += [f"--{k}", str(p)]
    assert main(args) == 0
    data = json.loads(paths["json"].read_text())
    assert [r["label"] for r in data["records"]] == ["lenet5", "lenet300"]
    assert all(r["sample_count"] >= 256 and r["metric"] == "samples/s" for r in data["records"])
    assert data["records"][1]["division"]["verdict"] == "REPORTED"
    text = paths["summary"].read_text()
    assert text.count("Scenario : Offline") == 2 and "Division : open" in text
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
    assert paths["markdown"].read_text().startswith("| model | samples/s |")


def test_server_peak_search_on_a_real_model(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    rc = main(
        [
            "bench",
            "lenet300",
            "--scenario",
            "server",
            "--min-queries",
            "50",
            "--min-duration",
            "0.2",
            "--target-qps",
            "200",
            "--latency-bound-ms",
            "50",
            "--peak-tolerance",
            "0.5",
            "--json",
            str(out),
            "--quiet",
            "--warmup",
            "1",
        ]
    )
    assert rc == 0
    r = json.loads(out.read_text())["records"][0]
    assert r["metric"] == "peak queries/s" and len(r["trials"]) >= 2
    valid = [t["target_qps"] for t in r["trials"] if t["valid"]]
    assert (r["metric_value"] == max(valid)) if valid else r["metric_value"] == 0.0


def test_registered_adapter_plugs_in(tmp_path: Path) -> None:
    calls: list[int] = []

    def load(source: str, options: object) -> BenchTarget:
        def sut(batch: torch.Tensor) -> torch.Tensor:
            calls.append(len(batch))
            return torch.zeros(len(batch), 10)

        return BenchTarget(source, sut)

    register_sut_adapter(SUTAdapter("toy", lambda s: s.startswith("toy:"), load))
    try:
        rc = main(["bench", "toy:a", "--scenario", "multistream", "--min-queries", "5", *FAST])
    finally:
        unregister_sut_adapter("toy")
    assert rc == 0 and calls[-5:] == [8] * 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "server", "--target-qps", "0"], "server_target_qps"),
        (["--scenario", "server", "--target-qps", "-5"], "server_target_qps"),
        (["--scenario", "server", "--latency-bound-ms", "0"], "--latency-bound-ms"),
        (["--min-queries", "0"], "min_query_count"),
        (["--quality-target", "150", "--accuracy"], "quality target"),
        (["--baseline", "3"], "--baseline"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "lenet5", *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_unknown_scenario_and_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "lenet5", "--scenario", "streaming"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert main(["bench", "nosuchmodel", "--quiet"]) == 2
    assert "nosuchmodel" in capsys.readouterr().err


def test_generator_adapter_gets_llm_metrics(tmp_path: Path) -> None:
    def generate(prompt: str):
        yield from prompt.split()

    def load(source: str, options: object) -> BenchTarget:
        return BenchTarget(source, generate, kind="generator", prompts=["a b c", "d e"])

    register_sut_adapter(SUTAdapter("toy-llm", lambda s: s.startswith("llm:"), load))
    out = tmp_path / "llm.json"
    try:
        rc = main(["bench", "llm:x", "--min-queries", "4", "--json", str(out), "--quiet"])
    finally:
        unregister_sut_adapter("toy-llm")
    assert rc == 0
    (r,) = json.loads(out.read_text())
    assert r["output_tokens"] == 10  # two passes over prompts of 3 and 2 tokens
    assert [req["tokens"] for req in r["requests"]].count(3) == 2
