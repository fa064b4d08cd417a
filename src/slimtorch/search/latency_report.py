"""How well the latency table predicts: predicted vs measured whole-model latency, per model.

For every model and batch size :func:`prediction_errors` gives

- a **base** row: the uncalibrated prediction (``rho = 0``: layers + module calls) against
  the model timed whole by the same timer; and, with ``prune_ratio``,
- a **pruned** row: the model with ``prune_ratio`` of every prunable channel group removed
  (:func:`~slimtorch.prune.surgery.prune_channels`), predicted uncalibrated and calibrated
  from the base model's measurement (the way a search uses the table: measure the model it
  starts from once, predict its pruned candidates), against its own measurement.

``error_pct = 100 * (predicted - measured) / measured`` with the measurement, like the
prediction, without its page faults (see :mod:`slimtorch.search.latency`); ``raw_error_pct``
compares with the raw median, faults and all, and ``measured_faults`` says how many there
were per forward pass. Timings are as trustworthy as the machine is quiet: every row carries
the noise flags of the figures it was computed from.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> def cost(fn, args):  # stand-in timer: 1 us per input element, 2x for a whole model
    ...     n = sum(a.numel() for a in args if isinstance(a, torch.Tensor))
    ...     return 1e-6 * n * (2 if not isinstance(fn, nn.Module) else 1)
    >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    >>> rows = prediction_errors({"mlp": (m, torch.zeros(1, 4))}, batches=(1,),
    ...                          path=tempfile.mkdtemp() + "/t.json", timer=cost, prune_ratio=None)
    >>> rows[0].predicted_s * 1e6, rows[0].measured_s * 1e6, rows[0].error_pct
    (8.0, 8.0, 0.0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.progress import Progress
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.prune.surgery import prune_channels
from slimtorch.search.latency import LatencyTable, Prediction
from slimtorch.search.latency_timer import Timer, Timing

DEFAULT_BATCHES = (1, 64)
DEFAULT_PRUNE_RATIO = 0.5


@dataclass(frozen=True)
class ErrorRow:
    """One model (or its pruned copy) at one batch size; seconds, errors in percent.

    Attributes:
        model: the model's name.
        variant: ``"base"`` or ``"pruned <ratio>"``.
        batch: batch size.
        predicted_s: uncalibrated prediction.
        measured_s: the whole model timed, without its page faults.
        error_pct: ``100 * (predicted - measured) / measured``.
        calibrated_s: pruned rows: the prediction calibrated on the base model (else None).
        calibrated_error_pct: its error (else None).
        raw_measured_s: the whole model's raw median, page faults included.
        raw_error_pct: the uncalibrated prediction against it.
        measured_faults: minor page faults per forward pass while it was timed.
        layers_s, calls_s: the parts of the uncalibrated prediction.
        noisy: a figure used was flagged noisy.
    """

    model: str
    variant: str
    batch: int
    predicted_s: float
    measured_s: float
    error_pct: float
    calibrated_s: float | None
    calibrated_error_pct: float | None
    raw_measured_s: float
    raw_error_pct: float
    measured_faults: float
    layers_s: float
    calls_s: float
    noisy: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _error(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured if measured > 0 else float("inf")


def _row(
    name: str, variant: str, table: LatencyTable, p: Prediction, m: Timing, calibrated: bool
) -> ErrorRow:
    clean = m.without_faults(table.overhead.fault_s)
    cal = p.seconds if calibrated else None
    return ErrorRow(
        name, variant, table.batch, p.raw_s, clean, _error(p.raw_s, clean), cal,
        None if cal is None else _error(cal, clean), m.seconds, _error(p.raw_s, m.seconds),
        m.faults, p.layers_s, p.calls_s, p.noisy or m.noisy,
    )  # fmt: skip


def _model_rows(
    table: LatencyTable, name: str, model: nn.Module, x: Any, prune_ratio: float | None
) -> list[ErrorRow]:
    base_p, base_m = table.breakdown(model, x), table.measure_timing(model, x)
    rows = [_row(name, "base", table, base_p, base_m, calibrated=False)]
    if prune_ratio is not None:
        pruned = prune_channels(model, x, ratio=prune_ratio)
        table.calibrate(model, x, measured_s=base_m.without_faults(table.overhead.fault_s))
        p, m = table.breakdown(pruned, x), table.measure_timing(pruned, x)
        rows.append(_row(name, f"pruned {prune_ratio:g}", table, p, m, calibrated=True))
    return rows


def prediction_errors(
    cases: Mapping[str, tuple[nn.Module, Any]],
    *,
    batches: Sequence[int] = DEFAULT_BATCHES,
    path: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    timer: Timer | None = None,
    prune_ratio: float | None = DEFAULT_PRUNE_RATIO,
    progress: bool = False,
) -> list[ErrorRow]:
    """Predicted vs measured whole-model latency for every case and batch size.

    Args:
        cases: name -> ``(model, example input of batch 1)``.
        batches: batch sizes (one table each, sharing the file at ``path``).
        path: the table's file; None: this machine's default.
        threads: torch threads (None: the current setting).
        timer: as for :class:`~slimtorch.search.latency.LatencyTable`.
        prune_ratio: also score a channel-pruned copy with this ratio (None: base rows only).
        progress: show a progress bar.

    Returns:
        Rows in ``batches`` x ``cases`` order (base, then pruned, per model).
    """
    if not cases or not batches:
        raise ConfigError("prediction_errors: need at least one case and one batch size")
    if prune_ratio is not None and not 0 < prune_ratio < 1:
        raise ConfigError(f"prune_ratio: expected a value in (0, 1), got {prune_ratio}")
    rows: list[ErrorRow] = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("latency table vs measured", total=len(cases) * len(batches))
        for batch in batches:
            table = LatencyTable(path, batch=batch, threads=threads, timer=timer)
            for name, (model, x) in cases.items():
                rows += _model_rows(table, name, model, x, prune_ratio)
                bar.advance(task)
    return rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"


def errors_markdown(rows: Sequence[ErrorRow]) -> str:
    """The rows as a Markdown table (microseconds; ``*`` marks a noisy row).

    Example:
        >>> row = ErrorRow("m", "base", 1, 2e-6, 2e-6, 0.0, None, None, 3e-6, -33.3, 1.0,
        ...                2e-6, 0.0, False)
        >>> errors_markdown([row]).splitlines()[2]
        '| m | base | 1 | 2.0 | 2.0 | +0.0% |  |  | 3.0 | -33.3% | 1 |  |'
    """
    lines = [
        "| model | variant | batch | predicted us | measured us | error | calibrated us "
        "| calibrated error | raw measured us | raw error | faults | noisy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cal = "" if r.calibrated_s is None else f"{r.calibrated_s * 1e6:.1f}"
        lines.append(
            f"| {r.model} | {r.variant} | {r.batch} | {r.predicted_s * 1e6:.1f} | "
            f"{r.measured_s * 1e6:.1f} | {_pct(r.error_pct)} | {cal} | "
            f"{_pct(r.calibrated_error_pct)} | {r.raw_measured_s * 1e6:.1f} | "
            f"{_pct(r.raw_error_pct)} | {r.measured_faults:.0f} | {'*' if r.noisy else ''} |"
        )
    return "\n".join(lines)
