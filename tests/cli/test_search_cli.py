"""``slimtorch search netadapt|amc``: configs from their options, a real search end to end.

Oracles: the config classes (no options -> the default config), the budget (the written model's
MACs, counted by slimtorch's tracer, are within the MAC budget the search was given), and the
checkpoint loader (the written model reloads and scores what the search recorded).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimtorch.checkpoint import load_checkpoint
from slimtorch.cli import search as search_cli
from slimtorch.cli.main import build_parser, main
from slimtorch.core.trace import trace_model
from slimtorch.search.amc_config import AMCConfig
from slimtorch.search.netadapt_config import NetAdaptConfig

EXAMPLE = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vgg")
    assert main(["train", "--model", "vgg", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out


def test_no_options_build_the_default_configs() -> None:
    net = build_parser().parse_args(["search", "netadapt", "c", "--out", "o"])
    assert search_cli.NETADAPT_OPTIONS.build(net, seed=net.search_seed) == NetAdaptConfig()
    amc = build_parser().parse_args(["search", "amc", "c", "--out", "o"])
    assert search_cli.AMC_OPTIONS.build(amc, seed=amc.search_seed) == AMCConfig()


def test_options_reach_the_configs() -> None:
    argv = ["search", "amc", "c", "--out", "o", "--episodes", "7", "--warmup", "2",
            "--budget-ratio", "0.3", "--reconstruct", "--importance", "l2"]  # fmt: skip
    cfg = search_cli.AMC_OPTIONS.build(build_parser().parse_args(argv), seed=0)
    assert (cfg.episodes, cfg.budget_ratio, cfg.reconstruct, cfg.importance) == (7, 0.3, True, "l2")


def _macs(model: torch.nn.Module) -> int:
    return trace_model(model.eval(), EXAMPLE).total_macs


def test_netadapt_writes_a_smaller_checkpoint_within_the_mac_budget(trained, tmp_path) -> None:
    out = tmp_path / "na"
    argv = ["search", "netadapt", str(trained), "--out", str(out), "--cost", "macs",
            "--budget-ratio", "0.7", "--init-reduction", "0.1", "--short-term-batches", "2",
            "--long-term-epochs", "0", "--val-samples", "64"]  # fmt: skip
    assert main(argv) == 0
    original, _, _ = load_checkpoint(trained)
    small, _, metrics = load_checkpoint(out)
    assert _macs(small) <= 0.7 * _macs(original)
    record = json.loads((out / "netadapt.json").read_text())
    assert metrics["stop_reason"] == record["stop_reason"] == "budget met"
    assert (out / "netadapt.png").stat().st_size > 0


def test_amc_writes_a_checkpoint_within_the_mac_budget(trained, tmp_path) -> None:
    out = tmp_path / "amc"
    argv = ["search", "amc", str(trained), "--out", str(out), "--episodes", "6",
            "--warmup", "3", "--budget-ratio", "0.5", "--val-samples", "64"]  # fmt: skip
    assert main(argv) == 0
    original, _, _ = load_checkpoint(trained)
    small, _, metrics = load_checkpoint(out)
    assert _macs(small) <= 0.5 * _macs(original)
    assert metrics["method"] == "amc" and (out / "amc_rewards.png").exists()


def test_existing_output_is_refused_in_one_line(trained, tmp_path, capsys) -> None:
    argv = ["search", "netadapt", str(trained), "--out", str(trained), "--cost", "macs"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
