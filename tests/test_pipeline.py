"""Recipes and the pipeline: validation errors, closed-form sizes, stages on a small model."""

from __future__ import annotations

import math
import tomllib
from importlib import resources

import pytest
import torch
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.models import build_model, make_spec
from slimtorch.pipeline import dense_model, estimate_bytes, run_pipeline
from slimtorch.recipe import HuffmanConfig, load_recipe, parse_recipe, shipped_recipes

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
    raw = tomllib.loads(resources.files("slimtorch.recipes").joinpath("default.toml").read_text())
    assert raw["model"]["name"] == "lenet300" and raw["model"]["data"] == "digits"


def test_load_recipe_unknown_name_or_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file or shipped recipe"):
        load_recipe("nope")
    with pytest.raises(ConfigError, match="cannot read"):
        load_recipe("missing/recipe.toml")


def _entries_ref(positions: list[int], bits: int) -> int:
    """Relative-index entries, fillers included, by walking the positions one by one."""
    entries, prev, span = 0, -1, 2**bits
    for p in positions:
        zeros = p - prev - 1
        while zeros >= span:  # a filler skips span - 1 zeros and takes one slot itself
            entries, zeros = entries + 1, zeros - span
        entries, prev = entries + 1, p
    return entries


def test_estimate_bytes_matches_closed_form() -> None:
    model = nn.Sequential(nn.Linear(100, 3, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
        kept = [0, 1, 70, 150, 299]
        model[0].weight.view(-1)[kept] = 1.0
    masks = {"0.weight": model[0].weight != 0}
    n = _entries_ref(kept, 5)
    assert n > len(kept)  # the long gaps need fillers
    huff = HuffmanConfig(index_bits=5)
    assert estimate_bytes(model, masks, {}, huff) == math.ceil(n * (32 + 5) / 8)
    qbits = {"0.weight": 4}
    assert estimate_bytes(model, masks, qbits, huff) == math.ceil((n * (4 + 5) + 16 * 32) / 8)
    assert estimate_bytes(model, {}, {}, huff) == 300 * 4


def _data(n: int = 64, size: int = 4) -> list:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, size, size, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def test_pipeline_stages_keep_masks_and_codebooks(tmp_path) -> None:
    spec = make_spec("lenet300", image_size=4)
    torch.manual_seed(0)
    model = build_model(spec)
    recipe = parse_recipe(
        """
[distill]
temperature = 2.0
[[stage]]
kind = "prune"
sparsity = 0.8
[[stage]]
kind = "finetune"
epochs = 1
distill = true
[[stage]]
kind = "kmeans"
bits = 3
[[stage]]
kind = "finetune_centroids"
epochs = 1
distill = true
[[stage]]
kind = "bias_kmeans"
bits = 2
[[stage]]
kind = "encode"
codebook_dtype = "float16"
""",
        "t.toml",
    )
    data = _data()
    result = run_pipeline(
        model, spec, recipe, (data, data, data), tmp_path / "m.slim", progress=False
    )
    state = result.model.state_dict()
    for name, layer in (("fc1.0", 300 * 16), ("fc2.0", 100 * 300), ("classifier", 10 * 100)):
        w = state[f"{name}.weight"]
        assert int((w != 0).sum()) == layer - round(0.8 * layer)  # masks survived fine-tuning
        values = w[w != 0].unique()
        assert len(values) <= 2**3 - 1  # one entry reserved for the pruned zeros
        assert torch.equal(values.half().float(), values)  # fp16 codebook
    assert len(state["fc1.0.bias"].unique()) <= 4  # 2-bit shared biases
    assert [r.stage for r in result.records][-1] == "encode"
    assert result.records[-1].size_bytes == (tmp_path / "m.slim").stat().st_size


def test_linear_stage_and_dense_model() -> None:
    spec = make_spec("lenet300", image_size=4)
    model = build_model(spec)
    recipe = parse_recipe('[[stage]]\nkind = "linear"\nbits = 3\ngranularity = "channel"\n')
    data = _data()
    result = run_pipeline(model, spec, recipe, (data, data, data), progress=False)
    w = result.model.state_dict()["fc2.0.weight"]
    for row in w:  # symmetric signed 3-bit per channel: at most 8 levels, on a grid
        assert len(row.unique()) <= 8
    assert result.records[-1].ratio > 1
    assert dense_model(result.model, spec).state_dict().keys() == model.state_dict().keys()
