"""``slimtorch prune`` and ``slimtorch profile`` build their configs from generated options.

The oracle is the config class: given only its required arguments a command builds exactly the
default config, and every option value lands in the field of the same meaning (compared with
the config constructed directly through the Python API).
"""

from __future__ import annotations

import dataclasses

import pytest

from slimtorch.cli import profile as profile_cli
from slimtorch.cli import prune as prune_cli
from slimtorch.cli.fields import generated_actions
from slimtorch.cli.main import build_parser
from slimtorch.core.size import WeightFormat
from slimtorch.errors import ConfigError
from slimtorch.profile.report import ProfileConfig
from slimtorch.prune.config import PruneConfig
from slimtorch.prune.physical import SurgeryConfig

PRUNE = ["prune", "ckpt", "--out", "o"]
WEIGHTS = r".*\.weight"


def _parse(argv: list[str]):
    return build_parser().parse_args(argv)


def _offered(command: str, cls: type) -> set[str]:
    return {
        name
        for path, action in generated_actions(build_parser())
        if path == command
        for c, name in action.config_fields
        if c is cls
    }


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_prune_without_options_builds_the_default_configs() -> None:
    args = _parse(PRUNE)
    assert prune_cli.PRUNE_OPTIONS.build(args) == PruneConfig()
    assert prune_cli.config_from_args(args, seed=0) == PruneConfig()
    assert prune_cli.surgery_config_from_args(args, seed=0) == SurgeryConfig()


def test_prune_offers_every_config_field_but_its_own_options() -> None:
    # --layer NAME=S (repeatable) and --seed (default: the checkpoint's) are plain options
    assert _offered("prune", PruneConfig) == _fields(PruneConfig) - {"layers", "seed"}
    assert _offered("prune", SurgeryConfig) == _fields(SurgeryConfig) - {"seed", "version"}


def test_prune_options_reach_the_config() -> None:
    argv = [*PRUNE, "--granularity", "2:4", "--criterion", "l2", "--sparsity", "0.3",
            "--exclude", "fc1.*", "--exclude", "classifier", "--schedule", "gradual",
            "--iterations", "2", "--finetune-epochs", "2", "--lr", "0.01",
            "--scheduler", "cosine", "--calib-batches", "4", "--layer", "fc2.0=0.6"]  # fmt: skip
    expected = PruneConfig(
        granularity="2:4", criterion="l2", sparsity=0.3, exclude=("fc1.*", "classifier"),
        schedule="gradual", iterations=2, finetune_epochs=2, lr=0.01, scheduler="cosine",
        calib_batches=4, layers={"fc2.0": 0.6}, seed=7,
    )  # fmt: skip
    assert prune_cli.config_from_args(_parse(argv), seed=7) == expected
    global_args = _parse([*PRUNE, "--allocation", "global", "--granularity", "input-channel"])
    cfg = prune_cli.config_from_args(global_args, seed=0)
    assert cfg == PruneConfig(allocation="global", granularity="input-channel")


def test_prune_sensitivity_leaves_sparsity_to_the_scan() -> None:
    args = _parse([*PRUNE, "--sensitivity", "--sparsity", "0.6"])
    assert args.sparsity == 0.6  # the overall target the scan's proposal reaches
    assert prune_cli.config_from_args(args, seed=0) == PruneConfig(sparsity=0.0)


def test_surgery_options_reach_the_config() -> None:
    argv = [*PRUNE, "--surgery", "--sparsity", "0.3", "--importance", "bn", "--round-to", "8",
            "--finetune-epochs", "2", "--lr", "0.01"]  # fmt: skip
    assert prune_cli.surgery_config_from_args(_parse(argv), seed=3) == SurgeryConfig(
        ratio=0.3, importance="bn", round_to=8, finetune_epochs=2, lr=0.01, seed=3
    )


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--criterion", "nope", "criterion"),
        ("--granularity", "bogus", "bogus"),
        ("--schedule", "sometimes", "schedule"),
        ("--importance", "l3", "--importance"),
    ],
)
def test_prune_names_are_checked_by_the_config(option: str, value: str, needle: str) -> None:
    args = _parse([*PRUNE, option, value])  # no argparse usage error: one line from main
    with pytest.raises(ConfigError, match=needle):
        if option == "--importance":
            prune_cli.surgery_config_from_args(args, seed=0)
        else:
            prune_cli.config_from_args(args, seed=0)


def test_profile_without_options_builds_the_default_config() -> None:
    args = _parse(["profile", "lenet5"])
    assert profile_cli.PROFILE_OPTIONS.build(args) == ProfileConfig()
    assert profile_cli.profile_config(args) == ProfileConfig()


def test_profile_offers_every_config_field_but_its_own_options() -> None:
    # formats come from --weight-bits / --sparse-layout; --threads is the shared option
    expected = _fields(ProfileConfig) - {"formats", "threads", "version"}
    assert _offered("profile", ProfileConfig) == expected
    assert _offered("profile", WeightFormat) == {"sparse"}


def test_profile_options_reach_the_config() -> None:
    argv = ["profile", "lenet5", "--no-latency", "--warmup", "1", "--runs", "2",
            "--no-layer-latency", "--batch-sizes", "", "--no-roofline", "--optimizer", "sgd",
            "--act-bits", "8", "--threads", "2", "--weight-bits", "4"]  # fmt: skip
    expected = ProfileConfig(
        latency=False, warmup=1, runs=2, layer_latency=False, throughput_batch_sizes=(),
        roofline=False, optimizer="sgd", act_bits=8, threads=2,
        formats={WEIGHTS: WeightFormat(bits=4)},
    )  # fmt: skip
    assert profile_cli.profile_config(_parse(argv)) == expected
    sweep = _parse(["profile", "lenet5", "--batch-sizes", "2,16"])
    assert profile_cli.profile_config(sweep).throughput_batch_sizes == (2, 16)


@pytest.mark.parametrize(
    ("extra", "formats"),
    [
        ([], {}),
        (["--sparse-layout", "auto"], {}),
        (["--sparse-layout", "dense"], {WEIGHTS: WeightFormat(sparse="dense")}),
        (["--weight-bits", "32"], {WEIGHTS: WeightFormat(bits=32)}),
        (
            ["--weight-bits", "4", "--sparse-layout", "csr"],
            {WEIGHTS: WeightFormat(bits=4, sparse="csr")},
        ),
    ],
)
def test_profile_weight_format(extra: list[str], formats: dict) -> None:
    assert profile_cli.profile_config(_parse(["profile", "m", *extra])).formats == formats


def test_profile_bad_values_name_their_option() -> None:
    with pytest.raises(ConfigError, match="--weight-bits"):
        profile_cli.profile_config(_parse(["profile", "m", "--weight-bits", "0"]))
    with pytest.raises(ConfigError, match="--threads"):
        profile_cli.profile_config(_parse(["profile", "m", "--threads", "0"]))
    with pytest.raises(ConfigError, match="optimizer"):
        profile_cli.profile_config(_parse(["profile", "m", "--optimizer", "rmsprop"]))
