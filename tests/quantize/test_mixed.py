"""Mixed precision: exact bit choice against brute force; the scan against direct evaluation."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

from slimtorch.core.size import tensor_size_bits
from slimtorch.data import load_digits, make_loaders
from slimtorch.errors import ConfigError
from slimtorch.models import create_model
from slimtorch.quantize.kmeans import codebook_format
from slimtorch.quantize.mixed import (
    MixedPrecisionConfig,
    SensitivityResult,
    choose_bits,
    quantize_mixed,
    sensitivity_scan,
)
from slimtorch.train import FitConfig, evaluate, fit


def random_result(rng: random.Random, n_layers: int, bits: tuple[int, ...]) -> SensitivityResult:
    layers = tuple(f"l{i}" for i in range(n_layers))
    acc, loss, size = {}, {}, {}
    for name in layers:
        numel = rng.randint(10, 500)
        acc[name] = {b: round(rng.uniform(0.5, 1.0), 3) for b in bits}
        loss[name] = {b: rng.uniform(0.1, 2.0) for b in bits}
        size[name] = {b: numel * b + 2**b * 32 for b in bits}
    fp32 = {n: 32 * (size[n][bits[0]] - 2 ** bits[0] * 32) // bits[0] for n in layers}
    return SensitivityResult("kmeans", 1.0, 0.1, layers, bits, acc, loss, size, fp32)


def brute_force(result: SensitivityResult, budget: int) -> float:
    best = None
    for combo in itertools.product(result.bits, repeat=len(result.layers)):
        size = sum(result.size_bits[n][b] for n, b in zip(result.layers, combo, strict=True))
        if size <= budget:
            drop = sum(
                1.0 - result.accuracy[n][b] for n, b in zip(result.layers, combo, strict=True)
            )
            best = drop if best is None else min(best, drop)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_choose_bits_is_optimal_against_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    result = random_result(rng, rng.randint(1, 5), (2, 3, 4, 8))
    low = sum(min(r.values()) for r in result.size_bits.values())
    high = sum(max(r.values()) for r in result.size_bits.values())
    budget = rng.randint(low, high)
    choice = choose_bits(result, budget)
    size = sum(result.size_bits[n][b] for n, b in choice.items())
    drop = sum(1.0 - result.accuracy[n][b] for n, b in choice.items())
    assert size <= budget
    assert drop == pytest.approx(brute_force(result, budget), abs=1e-9)


def test_choose_bits_budget_errors_and_config() -> None:
    result = random_result(random.Random(0), 3, (2, 4))
    smallest = sum(min(r.values()) for r in result.size_bits.values())
    with pytest.raises(ConfigError):
        choose_bits(result, smallest - 1)
    assert set(choose_bits(result, smallest).values()) == {2}
    only4 = MixedPrecisionConfig(size_budget_bits=10**9, candidate_bits=(4,))
    assert set(choose_bits(result, only4).values()) == {4}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"size_budget_bits": 100, "ratio": 4.0},
        {"size_budget_bits": 0},
        {"ratio": 0.5},
        {"ratio": 4.0, "candidate_bits": (0, 4)},
        {"ratio": 4.0, "candidate_bits": (17,)},
        {"ratio": 4.0, "candidate_bits": (1,), "method": "linear"},
        {"ratio": 4.0, "method": "huffman"},
    ],
)
def test_config_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        MixedPrecisionConfig(**kwargs)


@pytest.fixture(scope="module")
def trained_vgg() -> tuple[nn.Module, object]:
    splits = load_digits(seed=0)
    train, val, _ = make_loaders(splits, batch_size=128, seed=0)
    torch.manual_seed(0)
    model = create_model("vgg")
    fit(model, train, None, FitConfig(epochs=1, seed=0), progress=False)
    return model, val


@pytest.mark.parametrize("method", ["kmeans", "linear"])
def test_scan_matches_quantizing_one_layer(trained_vgg, method, tmp_path) -> None:
    model, val = trained_vgg
    result = sensitivity_scan(model, val, bits=(2, 8), method=method, progress=False)
    assert result.layers == (
        "features.0.0",
        "features.1.0",
        "features.3.0",
        "features.4.0",
        "classifier",
    )
    assert result.baseline_accuracy == evaluate(model, val).accuracy
    for name in ("features.0.0", "classifier"):  # oracle: the model with that layer quantized
        q, report = quantize_mixed(model, {name: 2}, method)
        assert result.accuracy[name][2] == evaluate(q, val).accuracy
        assert result.size_bits[name][2] == report.layers[0].size_bits
    w = model.classifier.weight
    assert result.size_bits["classifier"][8] == (
        tensor_size_bits(w, codebook_format(8)).total_bits
        if method == "kmeans"
        else w.numel() * 8 + w.shape[0] * 32
    )
    path = result.plot(tmp_path / "sens.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    budget = MixedPrecisionConfig(ratio=8.0, candidate_bits=(2, 8), method=method)
    choice = choose_bits(result, budget)
    assert sum(result.size_bits[n][b] for n, b in choice.items()) <= budget.budget_bits(
        sum(result.fp32_bits.values())
    )
