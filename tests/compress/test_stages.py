"""Every stage kind on a small model: masks survive fine-tuning, codebooks stay small, the
encode stage's size is the file's, and the linear stage quantizes per tensor or per channel."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from slimtorch.compress.job import run_pipeline
from slimtorch.compress.recipe import parse_recipe
from slimtorch.compress.stages import STAGES
from slimtorch.compress.state import dense_model
from slimtorch.errors import ConfigError
from slimtorch.models import build_model, make_spec
from slimtorch.quantize import PerChannel, PerTensor, QuantSpec, fake_quantize


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


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_linear_stage_writes_each_layers_fake_quantized_weight(granularity: str) -> None:
    """Oracle: ``fake_quantize`` of each layer's weight at its bits and granularity; the
    excluded layer keeps its float weight."""
    spec = make_spec("lenet300", image_size=4)
    torch.manual_seed(0)
    model = build_model(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = parse_recipe(
        f'[[stage]]\nkind = "linear"\nbits = 5\ngranularity = "{granularity}"\n'
        'layer_bits = { "fc2.*" = 3 }\nexclude = ["classifier"]\n'
    )
    data = _data()
    result = run_pipeline(model, spec, recipe, (data, data, data), progress=False)
    gran = PerTensor() if granularity == "tensor" else PerChannel(0)
    after = result.model.state_dict()
    for name, bits in (("fc1.0", 5), ("fc2.0", 3)):
        want = fake_quantize(before[f"{name}.weight"], QuantSpec(bits=bits, granularity=gran))
        assert torch.equal(after[f"{name}.weight"], want), name
    assert torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert result.qbits == {"fc1.0.weight": 5, "fc2.0.weight": 3}


def test_every_kind_is_registered_with_its_config_and_runner(tmp_path) -> None:
    assert set(STAGES) == {
        "netadapt", "amc", "prune", "finetune", "kmeans", "linear", "finetune_centroids",
        "bias_kmeans", "encode",
    }  # fmt: skip
    spec = make_spec("lenet300", image_size=4)
    recipe = parse_recipe('[[stage]]\nkind = "encode"\n')
    data = _data()
    with pytest.raises(ConfigError, match="encode stage: give an output file"):
        run_pipeline(build_model(spec), spec, recipe, (data, data, data), progress=False)
    result = run_pipeline(
        build_model(spec), spec, recipe, (data, data, data), tmp_path / "m.slim", progress=False
    )
    assert result.file.path == tmp_path / "m.slim" and result.records[-1].exact_file


def _macs(model: torch.nn.Module, size: int) -> int:
    from slimtorch.core.trace import trace_model

    return trace_model(model.eval(), torch.zeros(1, 1, size, size)).total_macs


@pytest.mark.parametrize(
    "stage",
    [
        'kind = "netadapt"\ncost = "macs"\nbudget_ratio = 0.6\ninit_reduction = 0.15\n'
        "short_term_batches = 1\nlong_term_epochs = 0",
        'kind = "amc"\nbudget_ratio = 0.5\nepisodes = 4\nwarmup = 2',
    ],
)
def test_search_stages_replace_the_model_within_the_mac_budget(tmp_path, stage: str) -> None:
    spec = make_spec("vgg", image_size=8)
    torch.manual_seed(0)
    model = build_model(spec)
    original = _macs(model, 8)
    text = f'[[stage]]\n{stage}\n[[stage]]\nkind = "kmeans"\nbits = 4\n'
    text += '[[stage]]\nkind = "encode"\n'
    x = torch.cat([b[0] for b in _data(size=8)])
    y = torch.cat([b[1] for b in _data(size=8)])
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # the searches take DataLoaders
    recipe = parse_recipe(text, "s.toml")
    loaders = (loader, loader, loader)
    result = run_pipeline(model, spec, recipe, loaders, tmp_path / "m.slim", progress=False)
    budget = 0.6 if "netadapt" in stage else 0.5
    assert _macs(dense_model(result.model, result.spec), 8) <= budget * original
    assert result.spec.name == "slimtorch.prune.surgery:build_pruned"


def test_a_search_stage_after_pruning_is_refused() -> None:
    text = '[[stage]]\nkind = "prune"\n[[stage]]\nkind = "amc"\n'
    with pytest.raises(ConfigError, match="search stage comes before pruning"):
        parse_recipe(text, "s.toml")
