"""Accuracy mode and the MLPerf divisions: score the whole evaluation set, compare to fp32.

Accuracy mode runs every sample of the evaluation set once, in order, through the same system
under test and sample library as the performance run, then scores the outputs (top-1 accuracy
for classifiers). Language models plug in a callable that returns a perplexity.

The **closed division** requires the candidate to reach a fraction of the fp32 reference's
quality, MLPerf's 99% or 99.9% targets, with the reference's pre- and post-processing (here:
the same sample library and scorer): PASS or FAIL. For lower-is-better metrics such as
perplexity, quality is compared as ``reference / candidate``. The **open division** reports the
quality and requires nothing.

Example:
    >>> import torch
    >>> from slimtorch.bench.samples import TensorSamples
    >>> x, y = torch.eye(4), torch.tensor([0, 1, 2, 3])
    >>> ref = accuracy_mode(lambda b: b, TensorSamples(x), y)
    >>> bad = accuracy_mode(lambda b: b.roll(1, dims=1), TensorSamples(x), y)
    >>> (ref.value, bad.value)
    (1.0, 0.0)
    >>> check_division(bad, ref, DivisionConfig("closed")).verdict
    'FAIL'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from slimtorch.bench.samples import QuerySampleLibrary
from slimtorch.errors import ConfigError

DIVISION_VERSION = 1
DIVISIONS = ("closed", "open")
# MLPerf Inference closed-division accuracy targets: 99% and 99.9% of the fp32 reference.
MLPERF_QUALITY_TARGETS = (0.99, 0.999)
DEFAULT_ACCURACY_BATCH = 256


@dataclass(frozen=True)
class QualityResult:
    """A quality figure from accuracy mode.

    Attributes:
        metric: ``top1`` or ``perplexity`` (or any name a scorer gives).
        value: the figure.
        higher_is_better: True for accuracy, False for perplexity.
        n: samples scored.
    """

    metric: str
    value: float
    higher_is_better: bool
    n: int


def top1_from_outputs(outputs: torch.Tensor, labels: torch.Tensor) -> QualityResult:
    """Top-1 accuracy of logits ``[N, C]`` against labels ``[N]`` (the reference post-processing).

    Example:
        >>> top1_from_outputs(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])).value
        0.5
    """
    if outputs.dim() != 2 or len(outputs) != len(labels):
        raise ConfigError(
            f"accuracy: expected outputs [N, C] for N={len(labels)} labels, "
            f"got {tuple(outputs.shape)}"
        )
    correct = int((outputs.argmax(dim=1) == labels).sum())
    return QualityResult("top1", correct / len(labels), True, len(labels))


def accuracy_mode(
    sut: Callable[[Any], Any],
    qsl: QuerySampleLibrary,
    labels: torch.Tensor,
    batch_size: int = DEFAULT_ACCURACY_BATCH,
    score: Callable[[torch.Tensor, torch.Tensor], QualityResult] = top1_from_outputs,
) -> QualityResult:
    """Run every sample once, in order, through ``sut`` and score the outputs.

    Args:
        sut: the same system under test as the performance run (returns logits ``[n, C]``).
        qsl: the same sample library.
        labels: ``[len(qsl)]`` ground truth.
        batch_size: samples per call.
        score: post-processing and metric (default top-1).

    Returns:
        The ``QualityResult``.
    """
    if len(labels) != len(qsl):
        raise ConfigError(f"accuracy: {len(labels)} labels for {len(qsl)} samples")
    if batch_size < 1:
        raise ConfigError(f"accuracy batch_size: expected >= 1, got {batch_size}")
    chunks = []
    for lo in range(0, len(qsl), batch_size):
        out = sut(qsl.load(range(lo, min(lo + batch_size, len(qsl)))))
        chunks.append(torch.as_tensor(out).detach().float().cpu())
    return score(torch.cat(chunks), torch.as_tensor(labels))


def perplexity_quality(perplexity_fn: Callable[[], float], n: int = 0) -> QualityResult:
    """Quality of a language model from a callable returning its perplexity (lower is better).

    Args:
        perplexity_fn: computes the perplexity over the evaluation text (e.g. the LLM issue's
            evaluator, run through the same model path as generation).
        n: tokens (or windows) scored, for the report.

    Returns:
        ``QualityResult("perplexity", value, higher_is_better=False, n)``.

    Example:
        >>> perplexity_quality(lambda: 12.5, n=1000).value
        12.5
    """
    value = float(perplexity_fn())
    if not (math.isfinite(value) and value >= 1.0):
        raise ConfigError(f"perplexity: expected a finite value >= 1, got {value}")
    return QualityResult("perplexity", value, False, n)


@dataclass(frozen=True)
class DivisionConfig:
    """Which division a submission is judged under.

    Attributes:
        division: ``closed`` (quality target enforced) or ``open`` (reported only).
        target: the share of the reference's quality the closed division requires (MLPerf:
            99% or 99.9%).
        version: format version.
    """

    division: str = "closed"
    target: float = MLPERF_QUALITY_TARGETS[0]
    version: int = DIVISION_VERSION

    def __post_init__(self) -> None:
        if self.division not in DIVISIONS:
            raise ConfigError(
                f"division: expected one of {', '.join(DIVISIONS)}, got {self.division!r}"
            )
        if not 0 < self.target <= 1:
            raise ConfigError(f"quality target: expected a fraction in (0, 1], got {self.target}")


@dataclass(frozen=True)
class DivisionVerdict:
    """The division check of one candidate against the reference.

    Attributes:
        division: ``closed`` or ``open``.
        verdict: ``PASS`` / ``FAIL`` (closed) or ``REPORTED`` (open).
        ratio: candidate quality relative to the reference (1.0 = equal; > 1 = better).
        target: the required ratio (closed) .
        candidate: the candidate's quality.
        reference: the reference's quality.
    """

    division: str
    verdict: str
    ratio: float
    target: float
    candidate: QualityResult
    reference: QualityResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def quality_ratio(candidate: QualityResult, reference: QualityResult) -> float:
    """Candidate quality over reference quality, oriented so that larger is better.

    Example:
        >>> quality_ratio(QualityResult("perplexity", 10.0, False, 0),
        ...               QualityResult("perplexity", 9.9, False, 0))
        0.99
    """
    if candidate.metric != reference.metric:
        raise ConfigError(
            f"division: candidate metric {candidate.metric!r} differs from the reference's "
            f"{reference.metric!r}; closed division needs the same scorer"
        )
    num, den = (
        (candidate.value, reference.value)
        if candidate.higher_is_better
        else (reference.value, candidate.value)
    )
    if den == 0:
        return math.inf if num > 0 else 1.0
    return num / den


def check_division(
    candidate: QualityResult, reference: QualityResult, config: DivisionConfig
) -> DivisionVerdict:
    """PASS when ``quality_ratio >= target`` (closed); REPORTED (open).

    Args:
        candidate: the compressed model's quality.
        reference: the fp32 reference's quality, from the same scorer and samples.
        config: division and target.

    Returns:
        The ``DivisionVerdict``.
    """
    ratio = quality_ratio(candidate, reference)
    if config.division == "open":
        verdict = "REPORTED"
    else:
        # a tiny tolerance so that, e.g., 0.99 * reference exactly is a PASS despite rounding
        verdict = "PASS" if ratio >= config.target - 1e-12 else "FAIL"
    return DivisionVerdict(config.division, verdict, ratio, config.target, candidate, reference)
