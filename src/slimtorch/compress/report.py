"""Reports of a compression run: the stage table (terminal, Markdown, JSON) and PNG plots.

- :func:`stage_table`: one rich table row per stage (accuracy, nonzeros, bits per weight,
  size, ratio, MACs, latency);
- :func:`paper_rows`: the paper's summary form, pruning / + quantization / + Huffman;
- :func:`write_report`: ``report.json``, ``report.md``, ``size_per_stage.png`` and
  ``weights_<layer>.png`` (one layer's weights before and after quantization, as in Han et
  al. 2016, Fig. 7).

Example:
    >>> from slimtorch.compress.measure import StageRecord
    >>> r = StageRecord(-1, "original", 0.97, 0.95, 10, 10, 12, 48, 32.0, 1.0, 10, 10, 0.1, 0.0)
    >>> paper_rows([r])[0]["ratio"]
    1.0
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich.table import Table
from rich.text import Text

from slimtorch.compress.measure import PipelineResult, StageRecord, stage_labels
from slimtorch.compress.stages import QUANTIZE_KINDS
from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.profile.noise import noisy_mark, threads_text

PAPER = {  # Han, Mao & Dally 2016, Table 1 (MNIST): compression rate of P+Q+H
    "lenet300": {"weights_kept": 0.08, "ratio": 40.0, "top1_error_change": 0.0},
    "lenet5": {"weights_kept": 0.08, "ratio": 39.0, "top1_error_change": 0.0},
}


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def stage_table(
    records: Sequence[StageRecord],
    title: str = "compression stages",
    warnings: Sequence[dict[str, Any]] = (),
) -> Table:
    """A rich table with one row per stage; a stage that destroyed accuracy is marked ``(!)``
    and its warning (``AccuracyWarning.to_dict()``: what happened, what to change) is printed
    under the table."""
    table = Table(title=title)
    flagged = {w["stage"] for w in warnings}
    cols = (
        "stage",
        "test acc",
        "val acc",
        "nonzero",
        "bits/weight",
        "size (B)",
        "ratio",
        "MACs (eff.)",
        "latency ms",
        "time s",
    )
    for c in cols:
        table.add_column(c, justify="left" if c == "stage" else "right")
    for label, r in zip(stage_labels(records), records, strict=True):
        table.add_row(
            label + (" (file)" if r.exact_file else ""),
            f"{r.test_accuracy:.4f}" + (" (!)" if label in flagged else ""),
            f"{r.val_accuracy:.4f}",
            f"{r.nonzero_weights:,} ({r.nonzero_weights / r.weights:.1%})",
            f"{r.bits_per_weight:.2f}",
            f"{r.size_bytes:,}",
            f"{r.ratio:.1f}x",
            _human(r.effective_macs),
            f"{r.latency_ms:.3f}{noisy_mark(r.noise)}",
            f"{r.seconds:.1f}",
        )
    if warnings:
        lines = "\n".join(f"(!) warning: {w['message']}" for w in warnings)
        table.caption = Text(lines, style="bold yellow")  # Text: no markup parsing
        table.caption_justify = "left"
    return table


def paper_rows(records: Sequence[StageRecord]) -> list[dict[str, Any]]:
    """The paper's cumulative stages: original, pruning (last stage before quantization),
    + quantization (last stage before encoding), + Huffman (the file)."""
    rows = [("original", records[0])]
    kinds = [r.stage for r in records]
    first_q = next((i for i, k in enumerate(kinds) if k in QUANTIZE_KINDS), len(records))
    if first_q > 1:
        rows.append(("pruning", records[first_q - 1]))
    enc = next((i for i, k in enumerate(kinds) if k == "encode"), len(records))
    if first_q < len(records):
        rows.append(("+ quantization", records[min(enc, len(records)) - 1]))
    if enc < len(records):
        rows.append(("+ Huffman (file)", records[enc]))
    return [
        {
            "stage": name,
            "test_accuracy": r.test_accuracy,
            "weights_kept": r.nonzero_weights / r.weights,
            "size_bytes": r.size_bytes,
            "ratio": r.ratio,
        }
        for name, r in rows
    ]


def markdown(result: PipelineResult, summary: dict[str, Any]) -> str:
    """The report as Markdown: summary, the stage table and the paper-form table."""
    lines = [f"# Compression report: {summary.get('model', '')} ({summary.get('recipe', '')})", ""]
    for key in (
        "data",
        "original_bytes",
        "file_bytes",
        "ratio",
        "baseline_test_accuracy",
        "decoded_test_accuracy",
        "accuracy_change_points",
        "bit_exact",
    ):
        if key in summary:
            lines.append(f"- {key.replace('_', ' ')}: {summary[key]}")
    if summary.get("warnings"):
        lines += ["", "## Warnings", ""]
        lines += [f"- **(!) {w['message']}**" for w in summary["warnings"]]
    flagged = {w["stage"] for w in summary.get("warnings", [])}
    lines += [
        "",
        "| stage | test acc | val acc | nonzero weights | bits/weight | size (B) | ratio "
        "| MACs | effective MACs | latency (ms) | time (s) |",
        "|---" + "|---:" * 10 + "|",
    ]
    for label, r in zip(stage_labels(result.records), result.records, strict=True):
        lines.append(
            f"| {label}{' (file)' if r.exact_file else ''} | {r.test_accuracy:.4f}"
            f"{' (!)' if label in flagged else ''} | "
            f"{r.val_accuracy:.4f} | {r.nonzero_weights:,} / {r.weights:,} | "
            f"{r.bits_per_weight:.3f} | {r.size_bytes:,} | {r.ratio:.1f}x | {r.macs:,} | "
            f"{r.effective_macs:,} | {r.latency_ms:.3f}{noisy_mark(r.noise)} | {r.seconds:.1f} |"
        )
    threads = result.records[0].threads
    if threads is not None:
        lines += ["", f"Latency: median of timed calls with {threads_text(threads)}."]
    lines += [
        "",
        "Paper form (Han, Mao & Dally 2016):",
        "",
        "| stage | test acc | weights kept | size (B) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in paper_rows(result.records):
        lines.append(
            f"| {row['stage']} | {row['test_accuracy']:.4f} | {row['weights_kept']:.1%} "
            f"| {row['size_bytes']:,} | {row['ratio']:.1f}x |"
        )
    codebook = {"float32": "fp32", "float16": "fp16"}[result.codebook_dtype]
    lines += [
        "",
        "Sizes before the file are closed forms (kept values at their bit width, "
        f"fixed-width relative indices with fillers, {codebook} codebooks, as the encode "
        "stage stores them); the file row is the real file, every byte counted.",
        "",
    ]
    return "\n".join(lines)


def plot_sizes(records: Sequence[StageRecord], path: Path) -> Path:
    """Bar chart of the size after each stage (log scale), ratios on the bars."""
    labels = stage_labels(records)
    sizes = [r.size_bytes for r in records]
    fig = Figure(figsize=(1.2 * len(labels) + 2, 4))
    ax = fig.subplots()
    bars = ax.bar(labels, sizes, color=["#888"] + ["#3a7"] * (len(labels) - 1))
    for bar, r in zip(bars, records, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"{r.ratio:.1f}x",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_yscale("log")
    ax.set_ylabel("bytes (log scale)")
    ax.set_title("model size after each stage")
    for tick in ax.get_xticklabels():
        tick.set(rotation=30, ha="right")
    fig.tight_layout()
    return _save(fig, path)


def plot_weights(histogram: dict[str, Any], path: Path) -> Path | None:
    """Histogram of one layer's nonzero weights before and after quantization."""
    if "before" not in histogram or "after" not in histogram:
        return None
    before, after = histogram["before"].numpy(), histogram["after"].numpy()
    fig = Figure(figsize=(10, 3.5))
    axes = fig.subplots(1, 2, sharex=True)
    axes[0].hist(before, bins=100, color="#37a")
    axes[0].set_title(f"{histogram['layer']}: before quantization ({before.size:,} nonzero)")
    values, counts = _unique(after)
    axes[1].bar(values, counts, width=(before.max() - before.min()) / 200, color="#a53")
    axes[1].set_title(f"after quantization + fine-tuning ({len(values)} shared values)")
    for ax in axes:
        ax.set_xlabel("weight value")
        ax.set_ylabel("count")
    fig.tight_layout()
    return _save(fig, path)


def _unique(x: Any) -> tuple[Any, Any]:
    return np.unique(x, return_counts=True)


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write_bytes(path, buf.getvalue())


def write_report(out_dir: Path, result: PipelineResult, summary: dict[str, Any]) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the PNG plots into ``out_dir``."""
    payload = {
        "summary": {k: v for k, v in summary.items() if k != "warnings"},
        "warnings": summary.get("warnings", []),  # stages that destroyed accuracy
        "stages": [dataclasses.asdict(r) for r in result.records],
        "paper_form": paper_rows(result.records),
        "paper": PAPER,
    }
    paths = [
        atomic_write_text(out_dir / "report.json", json.dumps(payload, indent=2) + "\n"),
        atomic_write_text(out_dir / "report.md", markdown(result, summary)),
        plot_sizes(result.records, out_dir / "size_per_stage.png"),
    ]
    layer = str(result.histogram.get("layer", "layer")).removesuffix(".weight")
    weights = plot_weights(result.histogram, out_dir / f"weights_{layer}.png")
    return paths + ([weights] if weights else [])
