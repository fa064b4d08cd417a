"""Every option generated from a config has the config's default, in every subcommand.

The oracle is the config class itself: each generated action names the ``(class, field)`` it
stands for, and its default must equal that field's default (or be ``CONFIG_DEFAULT`` where
two configs with different defaults share one flag). Then, end to end, a subcommand given only
its required arguments builds exactly the default config.
"""

from __future__ import annotations

import dataclasses

import pytest

from slimtorch.cli import quantize as quantize_cli
from slimtorch.cli.fields import CONFIG_DEFAULT, ConfigOptions, field_default, generated_actions
from slimtorch.cli.main import build_parser
from slimtorch.prune.config import PruneConfig
from slimtorch.quantize.kmeans import KMeansConfig
from slimtorch.quantize.ptq import PTQConfig

# Subcommands whose options come from configs (each must have at least one generated option).
CONFIGURED_COMMANDS = ("quantize", "train", "distill", "bench", "llm", "prune", "profile", "search")


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _as_config_value(default: object) -> object:
    return tuple(default) if isinstance(default, list) else default


def test_every_generated_default_is_the_config_default() -> None:
    actions = generated_actions(build_parser())
    assert actions, "no generated options found"
    wrong = []
    for command, action in actions:
        for cls, name in action.config_fields:
            expected = field_default(_field(cls, name))
            if action.default is CONFIG_DEFAULT:
                continue
            if _as_config_value(action.default) != expected:
                wrong.append(f"{command} {action.option_strings[0]}: {action.default!r} != "
                             f"{cls.__name__}.{name} = {expected!r}")  # fmt: skip
    assert wrong == []


def test_shared_flags_defer_only_where_defaults_differ() -> None:
    for command, action in generated_actions(build_parser()):
        defaults = {repr(field_default(_field(c, n))) for c, n in action.config_fields}
        assert (action.default is CONFIG_DEFAULT) == (len(defaults) > 1), (command, action)


@pytest.mark.parametrize("command", CONFIGURED_COMMANDS)
def test_configured_commands_have_generated_options(command: str) -> None:
    assert any(c.split()[0] == command for c, _ in generated_actions(build_parser()))


def test_quantize_without_options_builds_the_default_configs() -> None:
    args = build_parser().parse_args(["quantize", "ckpt", "--out", "o"])
    assert quantize_cli.PTQ_OPTIONS.build(args) == PTQConfig()
    assert quantize_cli.KMEANS_OPTIONS.build(args) == KMeansConfig()
    assert quantize_cli.QAT_OPTIONS.build(args, ptq=PTQConfig()) == quantize_cli.QATConfig()


def test_options_reach_the_config() -> None:
    argv = ["quantize", "c", "--out", "o", "--bits", "4", "--granularity", "group:16",
            "--activation-bits", "0", "--exclude", "fc.*", "--exclude", "conv1",
            "--reduce-range", "off"]  # fmt: skip
    cfg = quantize_cli.PTQ_OPTIONS.build(build_parser().parse_args(argv))
    assert (cfg.weight_bits, cfg.activation_bits, cfg.exclude, cfg.reduce_range) == (
        4, None, ("fc.*", "conv1"), False)  # fmt: skip
    assert cfg.weight_granularity == PTQConfig(weight_granularity="group:16").weight_granularity


def test_help_comes_from_the_docstring() -> None:
    p = build_parser()
    found = generated_actions(p)
    (action,) = [a for c, a in found if c == "quantize" and a.option_strings == ["--calib-batches"]]
    assert action.help.startswith("calibration batches to run (default 32)")


def test_a_config_value_error_names_the_option(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["quantize", "c", "--out", "o", "--granularity", "2:4"])
    assert "--granularity: expected tensor, channel or group:SIZE" in capsys.readouterr().err


def test_unknown_field_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no field"):
        ConfigOptions(PruneConfig, only=("nope",)).fields()
