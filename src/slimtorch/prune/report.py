"""The pruning report: per layer sparsity, parameters and MACs before/after; accuracies.

MACs after pruning are the profiler's *effective* MACs (those that multiply a nonzero weight,
:mod:`slimtorch.core.counting`); parameters after are the nonzero ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from torch import Tensor, nn

from slimtorch.core.trace import trace_model
from slimtorch.io import atomic_write_text


@dataclass(frozen=True)
class LayerRow:
    """One pruned layer: weight sparsity, parameters (nonzero after) and MACs before/after."""

    name: str
    kind: str
    sparsity: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass(frozen=True)
class PruneReport:
    """Everything a pruning run did; ``to_dict`` is what the JSON report holds."""

    config: dict[str, Any]
    layers: tuple[LayerRow, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    accuracy_before: float | None
    accuracy_pruned: float | None
    accuracy_finetuned: float | None

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned layers' weights that are zero."""
        before = sum(r.params_before for r in self.layers)
        after = sum(r.params_after for r in self.layers)
        return 1.0 - after / max(1, before)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (layers as a list of dicts; overall sparsity included)."""
        d = asdict(self)
        d["layers"] = [asdict(r) for r in self.layers]
        d["sparsity"] = self.sparsity
        return d


def build_report(
    before: dict[str, Any],
    model: nn.Module,
    example: Tensor,
    masks: dict[str, Tensor],
    config: Any,
    acc_pruned: float | None,
    acc_finetuned: float | None,
) -> PruneReport:
    """Compare the traced model ``before`` (``{"trace", "accuracy"}``) with ``model`` now."""
    after = trace_model(model, example)
    counts_before = {lc.name: lc for lc in before["trace"].layers}
    counts_after = {lc.name: lc for lc in after.layers}
    modules = dict(model.named_modules())
    rows = []
    for key in masks:
        name, _, pname = key.rpartition(".")
        if pname != "weight":
            continue
        layer = modules[name]
        params = [p for p in (layer.weight, getattr(layer, "bias", None)) if p is not None]
        rows.append(
            LayerRow(
                name=name,
                kind=type(layer).__name__,
                sparsity=float((layer.weight == 0).sum()) / layer.weight.numel(),
                params_before=sum(p.numel() for p in params),
                params_after=sum(int((p != 0).sum()) for p in params),
                macs_before=counts_before[name].macs if name in counts_before else 0,
                macs_after=counts_after[name].effective_macs if name in counts_after else 0,
            )
        )
    total_after = sum(int((p != 0).sum()) for p in model.parameters())
    return PruneReport(
        config=config.to_dict(),
        layers=tuple(rows),
        params_before=before["trace"].total_params,
        params_after=total_after,
        macs_before=before["trace"].total_macs,
        macs_after=after.total_effective_macs,
        accuracy_before=before["accuracy"],
        accuracy_pruned=acc_pruned,
        accuracy_finetuned=acc_finetuned,
    )


def write_report_json(
    report: PruneReport, path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write the report as JSON (atomically), with ``extra`` keys (e.g. ``warnings``)."""
    atomic_write_text(path, json.dumps({**report.to_dict(), **(extra or {})}, indent=2) + "\n")
    return Path(path)


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def report_table(report: PruneReport) -> Any:
    """A rich table: one row per pruned layer, then the totals and accuracies."""
    table = Table(title="Pruning report")
    for col in ("layer", "kind", "sparsity", "params", "params after", "MACs", "MACs after"):
        table.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    for r in report.layers:
        table.add_row(
            r.name, r.kind, f"{r.sparsity:.1%}", f"{r.params_before:,}", f"{r.params_after:,}",
            f"{r.macs_before:,}", f"{r.macs_after:,}",
        )  # fmt: skip
    table.add_row(
        "total", "", f"{report.sparsity:.1%}", f"{report.params_before:,}",
        f"{report.params_after:,}", f"{report.macs_before:,}", f"{report.macs_after:,}",
        style="bold",
    )  # fmt: skip
    table.caption = (
        f"test accuracy: before {_acc(report.accuracy_before)}, after pruning "
        f"{_acc(report.accuracy_pruned)}, after fine-tuning {_acc(report.accuracy_finetuned)}"
    )
    return table
