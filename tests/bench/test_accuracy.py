"""Accuracy mode and the divisions: counts known by construction, MLPerf's 99% / 99.9% rules."""

from __future__ import annotations

import pytest
import torch

from slimtorch.bench.accuracy import (
    DivisionConfig,
    QualityResult,
    accuracy_mode,
    check_division,
    perplexity_quality,
)
from slimtorch.bench.samples import TensorSamples
from slimtorch.errors import ConfigError

N, CLASSES = 1000, 10
LABELS = torch.arange(N) % CLASSES
SAMPLES = TensorSamples(torch.arange(N).float().unsqueeze(1))  # sample i is the number i


def _sut_with_errors(wrong: int):
    """Logits that are right except for samples 0..wrong-1 (predicted one class off)."""

    def sut(batch: torch.Tensor) -> torch.Tensor:
        idx = batch[:, 0].long()
        pred = (idx % CLASSES + (idx < wrong).long()) % CLASSES
        return torch.nn.functional.one_hot(pred, CLASSES).float()

    return sut


def test_accuracy_mode_scores_every_sample_once() -> None:
    calls: list[int] = []

    def sut(batch: torch.Tensor) -> torch.Tensor:
        calls.extend(batch[:, 0].long().tolist())
        return _sut_with_errors(37)(batch)

    q = accuracy_mode(sut, SAMPLES, LABELS, batch_size=64)
    assert sorted(calls) == list(range(N))
    assert (q.metric, q.n, q.value) == ("top1", N, (N - 37) / N)


@pytest.mark.parametrize(
    ("wrong", "target", "verdict"),
    [
        (15, 0.99, "FAIL"),  # 98.5% of the reference
        (5, 0.99, "PASS"),  # 99.5%
        (10, 0.99, "PASS"),  # exactly 99%
        (5, 0.999, "FAIL"),  # 99.5% < 99.9%
        (1, 0.999, "PASS"),  # 99.9%
    ],
)
def test_closed_division_against_the_reference(wrong: int, target: float, verdict: str) -> None:
    reference = accuracy_mode(_sut_with_errors(0), SAMPLES, LABELS)
    candidate = accuracy_mode(_sut_with_errors(wrong), SAMPLES, LABELS)
    v = check_division(candidate, reference, DivisionConfig("closed", target))
    assert reference.value == 1.0
    assert v.verdict == verdict
    assert v.ratio == pytest.approx((N - wrong) / N)


def test_open_division_reports_without_judging() -> None:
    reference = accuracy_mode(_sut_with_errors(0), SAMPLES, LABELS)
    poor = accuracy_mode(_sut_with_errors(500), SAMPLES, LABELS)
    v = check_division(poor, reference, DivisionConfig("open"))
    assert (v.verdict, v.ratio) == ("REPORTED", 0.5)


def test_perplexity_is_lower_is_better() -> None:
    ref = perplexity_quality(lambda: 10.0)
    assert check_division(perplexity_quality(lambda: 10.05), ref, DivisionConfig()).verdict == (
        "PASS"  # 10 / 10.05 = 0.995
    )
    worse = check_division(perplexity_quality(lambda: 10.2), ref, DivisionConfig())
    assert (worse.verdict, worse.ratio) == ("FAIL", pytest.approx(10 / 10.2))
    with pytest.raises(ConfigError, match="perplexity"):
        perplexity_quality(lambda: float("nan"))


def test_division_errors() -> None:
    with pytest.raises(ConfigError, match="division"):
        DivisionConfig("semi-open")
    with pytest.raises(ConfigError, match="target"):
        DivisionConfig("closed", 1.5)
    top1 = QualityResult("top1", 0.9, True, 10)
    with pytest.raises(ConfigError, match="same scorer"):
        check_division(top1, perplexity_quality(lambda: 3.0), DivisionConfig())
    with pytest.raises(ConfigError, match="labels"):
        accuracy_mode(_sut_with_errors(0), SAMPLES, LABELS[:10])
