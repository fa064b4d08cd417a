"""The ``slimtorch bench`` pipeline as one function: load targets, run a scenario, score, judge.

:func:`benchmark` is what the CLI runs: every model goes through the same sample library, the
same scenario settings and, in accuracy mode, the same scorer; the baseline (the first model
by default) is the fp32 reference of the closed division and the denominator of the speedups.

Example:
    >>> s = TestSettings("singlestream", min_query_count=20, min_duration_s=0.0)
    >>> records = benchmark(["lenet5"], s, accuracy=True, progress=False)
    >>> records[0].result.query_count, records[0].quality.metric
    (20, 'top1')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from rich.progress import Progress

from slimtorch.bench.accuracy import DivisionConfig, accuracy_mode, check_division
from slimtorch.bench.clock import Clock
from slimtorch.bench.llm import LLMResult, LLMSettings, run_llm, with_llm_noise
from slimtorch.bench.loadgen import run_scenario
from slimtorch.bench.report import BenchRecord
from slimtorch.bench.results import with_noise
from slimtorch.bench.samples import TensorSamples
from slimtorch.bench.settings import TestSettings
from slimtorch.bench.sut import BenchTarget, LoadOptions, load_target, recorded_data
from slimtorch.data import load_data
from slimtorch.data.record import check_data_fits
from slimtorch.errors import ConfigError, DataError
from slimtorch.profile.noise import NoiseWatch, torch_threads

SPLITS = ("train", "val", "test")
DEFAULT_DATA = "digits"  # when neither the user nor any artefact names data


@dataclass(frozen=True)
class EvalData:
    """The evaluation samples every model sees: stacked inputs and labels."""

    x: torch.Tensor
    y: torch.Tensor
    name: str
    num_classes: int
    seed: int = 0  # the split's seed


def load_eval_data(data: str = "digits", split: str = "test", seed: int = 0) -> EvalData:
    """Stack one split of a data set (see ``slimtorch.data.load_data``) for benchmarking.

    Args:
        data: data source (``digits``, ``digits:32``, ``.npz``, folder, ``idx:IMG,LBL``).
        split: ``train``, ``val`` or ``test``.
        seed: the split's seed (use the one the model was trained with).

    Returns:
        ``EvalData``.
    """

    if split not in SPLITS:
        raise ConfigError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
    splits = load_data(data, seed=seed)
    ds = getattr(splits, split)
    if len(ds) == 0:
        raise ConfigError(f"--data {data}: the {split} split is empty")
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return EvalData(torch.stack(xs), torch.stack(ys), splits.name, splits.num_classes, seed)


def eval_data_for(
    sources: Sequence[str | BenchTarget],
    data: str | None = None,
    split: str = "test",
    seed: int | None = None,
    baseline: int = 0,
) -> EvalData:
    """The evaluation data for ``sources``: ``data`` split with ``seed`` when given, else the
    data and seed their artefacts record (the baseline's first; ``digits`` and 0 when none
    records any), so a model trained on ``digits:16`` is benchmarked on 16x16 samples.

    Args:
        sources: what ``benchmark`` takes.
        data: the user's data source, or None.
        split: which split.
        seed: the user's split seed, or None.
        baseline: index of the baseline among ``sources``.

    Returns:
        The ``EvalData``.

    Raises:
        DataError: (one line) given data whose samples do not fit an artefact, or, with no
            data given, artefacts made on samples of different shapes.
    """

    named = [str(s) for s in sources if not isinstance(s, BenchTarget)]
    first = [str(sources[baseline])] if 0 <= baseline < len(sources) else []
    records = [(s, r) for s in dict.fromkeys(first + named) if (r := recorded_data(s))]
    chosen = records[0][1] if records else None
    source = data or (chosen.data if chosen else DEFAULT_DATA)
    if seed is None:
        seed = chosen.seed if chosen is not None else 0
    ev = load_eval_data(source, split, seed)
    shape = tuple(ev.x.shape[1:])
    for name, record in records:
        if data is not None:
            check_data_fits(record, data, shape, name)
        elif record.input_shape is not None and tuple(record.input_shape) != shape:
            raise DataError(
                f"{name} was made on {record.describe()} but {records[0][0]} on "
                f"{chosen.describe()}: benchmark them separately, or give --data"
            )
    return ev


def _judge(records: list[BenchRecord], division: DivisionConfig, baseline: int) -> list:
    reference = records[baseline].quality
    return [
        BenchRecord(r.result, r.quality, check_division(r.quality, reference, division))
        for r in records
    ]


def load_targets(
    sources: Sequence[str | BenchTarget], options: LoadOptions | None = None
) -> list[BenchTarget]:
    """Load each source with its adapter (``BenchTarget`` objects pass through)."""
    return [s if isinstance(s, BenchTarget) else load_target(s, options) for s in sources]


def benchmark(
    sources: Sequence[str | BenchTarget],
    settings: TestSettings,
    *,
    data: str | EvalData | None = None,
    split: str = "test",
    accuracy: bool = False,
    division: DivisionConfig | None = None,
    find_peak: bool = True,
    baseline: int = 0,
    model_kwargs: dict | None = None,
    clock: Clock | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> list[BenchRecord]:
    """Benchmark classifiers side by side (what ``slimtorch bench`` runs).

    Args:
        sources: models (zoo names, checkpoint folders, factories, sources registered
            adapters understand, or already loaded ``BenchTarget`` objects).
        settings: the scenario and its settings.
        data: data source or already loaded ``EvalData``; performance and accuracy runs use
            its ``split`` (seeded with ``settings.seed``). None: the data and seed the
            sources' artefacts record (:func:`eval_data_for`).
        split: which split.
        accuracy: also run accuracy mode (implied by ``division``).
        division: judge each model against ``sources[baseline]`` (closed: PASS/FAIL).
        find_peak: Server: search the peak VALID rate (else run at the target rate).
        baseline: index of the reference / speedup baseline.
        model_kwargs: construction arguments for zoo models (``norm``, ``act``).
        clock: real (default) or virtual time.
        progress: show a progress bar.
        threads: torch threads for the runs (restored after); None keeps the current
            setting. Each result records it, with its noise verdict.

    Returns:
        One ``BenchRecord`` per source, in order.
    """
    if not sources:
        raise ConfigError("bench: give at least one model")
    if not 0 <= baseline < len(sources):
        raise ConfigError(f"--baseline: expected 0..{len(sources) - 1}, got {baseline}")
    ev = _eval_data(sources, data, split, settings.seed, baseline)
    options = LoadOptions(tuple(ev.x.shape[1:]), ev.num_classes, dict(model_kwargs or {}))
    targets = load_targets(sources, options)
    _check_classifiers(targets)
    qsl, records = TensorSamples(ev.x), []
    with torch_threads(threads) as used, _progress(progress, len(targets)) as advance:
        for t in targets:
            with NoiseWatch(used) as watch:
                result = run_scenario(
                    t.sut, qsl, settings, clock=clock, label=t.label, find_peak=find_peak
                )
            result = with_noise(result, watch)
            quality = accuracy_mode(t.sut, qsl, ev.y) if accuracy or division else None
            records.append(BenchRecord(result, quality))
            advance(t.label)
    return _judge(records, division, baseline) if division else records


def _eval_data(
    sources: Sequence[str | BenchTarget],
    data: str | EvalData | None,
    split: str,
    seed: int,
    baseline: int,
) -> EvalData:
    """The given data, a data source loaded at ``seed``, or (None) what the sources record."""
    if isinstance(data, EvalData):
        return data
    if data is None:
        return eval_data_for(sources, None, split, None, baseline)
    return load_eval_data(data, split, seed)


def _check_classifiers(targets: Sequence[BenchTarget]) -> None:
    others = [t.label for t in targets if t.kind != "classifier"]
    if others:
        raise ConfigError(
            f"{', '.join(others)}: token generators are benchmarked with benchmark_llm "
            "(do not mix them with classifiers)"
        )


def benchmark_llm(
    sources: Sequence[str | BenchTarget],
    settings: LLMSettings,
    *,
    progress: bool = True,
    threads: int | None = None,
) -> list[LLMResult]:
    """TTFT, TPOT and tokens/s of generator targets (from adapters that yield ``generator``).

    Args:
        sources: sources a registered adapter loads as ``kind="generator"``.
        settings: LLM scenario and bounds.
        progress: show a progress bar.
        threads: torch threads (and native decode engine threads) for the runs; None keeps
            the current setting. Each result records it, with its noise verdict.

    Returns:
        One ``LLMResult`` per source.
    """
    targets = load_targets(sources)
    bad = [t.label for t in targets if t.kind != "generator" or not t.prompts]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: not a token generator with prompts")
    results = []
    with torch_threads(threads) as used, _progress(progress, len(targets)) as advance:
        for t in targets:
            with NoiseWatch(used) as watch:
                result = run_llm(t.sut, t.prompts, settings, label=t.label)
            results.append(with_llm_noise(result, watch))
            advance(t.label)
    return results


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar over models; yields ``advance(label)`` (a no-op when disabled)."""
    if not enabled:
        yield lambda _label: None
        return

    with Progress(transient=True) as bar:
        task = bar.add_task("benchmarking", total=total)
        yield lambda label: bar.update(task, advance=1, description=f"done {label}")
