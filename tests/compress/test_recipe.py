"""Recipes: validation errors name the file, stage and field; the shipped recipes carry the
papers' settings."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from slimtorch.compress.configs import HuffmanConfig, LinearQuantConfig
from slimtorch.compress.recipe import SHIPPED, load_recipe, parse_recipe, shipped_recipes
from slimtorch.errors import ConfigError

HAN_2015_LENET300 = {"fc1.0": 0.92, "fc2.0": 0.91, "classifier": 0.74}  # Table 2
HAN_2015_LENET5 = {"conv1.0": 0.34, "conv2.0": 0.88, "fc1.0": 0.92, "fc2.0": 0.81}  # Table 3

GOOD = """
[model]
name = "lenet300"
[[stage]]
kind = "prune"
sparsity = 0.5
[[stage]]
kind = "kmeans"
bits = 4
[[stage]]
kind = "encode"
"""


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_recipe(text, "my.toml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("my.toml")
    return message


def test_recipe_errors_name_file_stage_and_field() -> None:
    bad_value = GOOD.replace("sparsity = 0.5", "sparsity = 1.5")
    assert "stage 0 (prune)" in _error(bad_value) and "sparsity" in _error(bad_value)
    unknown = GOOD.replace("bits = 4", "bitz = 4")
    assert "stage 1 (kmeans)" in _error(unknown) and "'bitz'" in _error(unknown)
    kind = GOOD.replace('kind = "kmeans"', 'kind = "kmean"')
    assert "stage 1" in _error(kind) and "kind" in _error(kind)
    bits = GOOD.replace("bits = 4", "bits = 40")
    assert "stage 1 (kmeans)" in _error(bits) and "bits" in _error(bits)
    enc = GOOD + '[[stage]]\nkind = "finetune"\n'
    assert "encode must be the last" in _error(enc)
    assert "needs a kmeans stage" in _error('[[stage]]\nkind = "finetune_centroids"\n')
    assert "[distill]" in _error('[[stage]]\nkind = "finetune"\ndistill = true\n')
    assert "not valid TOML" in _error("[[stage]\n")
    assert "no [[stage]]" in _error('[model]\nname = "lenet5"\n')
    assert "[model]" in _error(GOOD.replace('name = "lenet300"', "epochs = 0"))
    wrong_type = GOOD.replace("sparsity = 0.5", 'sparsity = "half"')
    assert "stage 0 (prune)" in _error(wrong_type)


def test_recipe_parses_into_the_packages_configs() -> None:
    recipe = parse_recipe(GOOD, "my.toml")
    assert [s.kind for s in recipe.stages] == ["prune", "kmeans", "encode"]
    assert type(recipe.stages[0].config).__name__ == "PruneConfig"
    assert recipe.stages[1].config.bits == 4 and recipe.stages[2].config == HuffmanConfig()


def test_shipped_recipes_carry_the_papers_settings() -> None:
    assert {"default", "lenet300-paper", "lenet5-paper"} <= set(shipped_recipes())
    for name in shipped_recipes():
        load_recipe(name)  # every shipped recipe validates
    p300 = load_recipe("lenet300-paper")
    assert p300.stages[0].config.layers == HAN_2015_LENET300
    assert p300.stages[1].config.bits == 6 and p300.stages[-1].config.index_bits == 5
    p5 = load_recipe("lenet5-paper")
    assert {k: v for k, v in p5.stages[0].config.layers.items() if k != "classifier"} == (
        HAN_2015_LENET5
    )
    assert (
        p5.stages[1].config.bits_for("conv1.0") == 8 and p5.stages[1].config.bits_for("fc1.0") == 6
    )
    assert p5.stages[-1].config.conv_index_bits == 8
    raw = tomllib.loads(resources.files(SHIPPED).joinpath("default.toml").read_text())
    assert raw["model"]["name"] == "lenet300" and raw["model"]["data"] == "digits"


def test_load_recipe_unknown_name_or_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file or shipped recipe"):
        load_recipe("nope")
    with pytest.raises(ConfigError, match="cannot read"):
        load_recipe("missing/recipe.toml")


def test_linear_stage_config_matches_layers_and_refuses_a_bad_pattern() -> None:
    cfg = LinearQuantConfig(bits=6, layer_bits={"fc1.0": 4, "fc.*": 3})
    assert [cfg.bits_for(n) for n in ("fc1.0", "fc2.0", "classifier")] == [4, 3, 6]
    with pytest.raises(ConfigError, match="not a valid regex"):
        LinearQuantConfig(exclude=("fc[",))
