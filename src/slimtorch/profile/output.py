"""Render a ``ModelProfile``: terminal table, JSON, CSV, PNG chart, side-by-side comparison.

All file outputs are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.profile.noise import Noise, noise_hint, noisy_mark, threads_text
from slimtorch.profile.report import LayerProfile, ModelProfile

CSV_FIELDS = (
    "name",
    "kind",
    "input_shape",
    "output_shape",
    "params",
    "nonzero_params",
    "size_bits",
    "macs",
    "effective_macs",
    "flops",
    "ops",
    "energy_pj",
    "intensity",
    "bound",
    "latency_s",
)


def human(n: float | None, unit: str = "") -> str:
    """Format a count with an SI prefix: 1234567 -> '1.23M'."""
    if n is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{prefix}{unit}"
    return f"{n:.3g}{unit}" if isinstance(n, float) else f"{n}{unit}"


def human_bytes(n: float | None) -> str:
    """Format bytes with binary prefixes: 1536 -> '1.5 KiB'."""
    if n is None:
        return "-"
    for factor, prefix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {prefix}"
    return f"{n:.0f} B"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _shape(shape: Sequence[int] | None) -> str:
    return "-" if shape is None else "x".join(str(d) for d in shape)


LAYER_COLUMNS = (
    "layer",
    "kind",
    "output",
    "params",
    "size",
    "MACs",
    "eff. MACs",
    "energy",
    "FLOP/B",
    "bound",
    "ms",
)
TABLE_MIN_WIDTH = 150


def human_energy(pj: float | None) -> str:
    """Format an energy given in picojoules: 1.5e6 -> '1.5 uJ'."""
    if pj is None:
        return "-"
    for factor, unit in ((1e12, "J"), (1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(pj) >= factor:
            return f"{pj / factor:.3g} {unit}"
    return f"{pj:.3g} pJ"


def layer_table(profile: ModelProfile) -> Table:
    """Per-layer rich table with a total row (full figures are in the JSON/CSV)."""
    title = f"{profile.name}: input {_shape(profile.input_shape)}{_threads_note(profile)}"
    t = Table(title=title, box=box.SIMPLE_HEAD)
    for col in LAYER_COLUMNS:
        left = col in ("layer", "kind", "bound")
        t.add_column(col, justify="left" if left else "right", no_wrap=True)
    for lp in profile.layers:
        t.add_row(*_layer_cells(lp))
    t.add_section()
    t.add_row(
        "TOTAL",
        "",
        _shape(profile.output_shape),
        human(profile.params),
        human_bytes(profile.size_bytes),
        human(profile.macs),
        human(profile.effective_macs),
        human_energy(profile.energy.total_pj),
        "",
        "",
        _ms(profile.latency.median_s if profile.latency else None)
        + noisy_mark(profile.latency.noise if profile.latency else None),
    )
    return t


def _threads_note(profile: ModelProfile) -> str:
    return "" if profile.threads is None else f", timed with {threads_text(profile.threads)}"


def _layer_cells(lp: LayerProfile) -> list[str]:
    return [
        lp.name or "(root)",
        lp.kind,
        _shape(lp.output_shape),
        human(lp.params),
        human_bytes(lp.size_bits / 8),
        human(lp.macs),
        human(lp.effective_macs),
        human_energy(lp.energy_pj),
        "-" if lp.intensity is None else f"{lp.intensity:.2f}",
        lp.bound or "-",
        _ms(lp.latency_s),
    ]


def summary_table(profile: ModelProfile) -> Table:
    """Whole-model figures: size, compute, memory, energy, latency, throughput."""
    t = Table(title=f"{profile.name}: summary{_threads_note(profile)}", show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    for key, value in summary_rows(profile):
        t.add_row(key, value)
    return t


def summary_rows(p: ModelProfile) -> list[tuple[str, str]]:
    """(label, formatted value) pairs shown in the summary table."""
    rows = [
        ("parameters", f"{p.params:,}"),
        ("nonzero parameters", f"{p.nonzero_params:,}"),
        ("model size", f"{human_bytes(p.size_bytes)} ({p.size_bits:,} bits)"),
        ("MACs", f"{p.macs:,}"),
        ("effective MACs (skipping zero weights)", f"{p.effective_macs:,}"),
        ("FLOPs", f"{p.flops:,}"),
        ("OPs", f"{p.ops:,}"),
        ("peak activation memory (inference)", human_bytes(p.activation.peak_bytes)),
        ("  at layer", p.activation.peak_module or "(root)"),
        (
            "training memory (weights+grads+optimizer+saved act.)",
            human_bytes(p.training.total_bytes),
        ),
        ("energy estimate (45 nm table)", human_energy(p.energy.total_pj)),
        (
            "  compute / memory",
            f"{human_energy(p.energy.compute_pj)} / {human_energy(p.energy.memory_pj)}",
        ),
    ]
    if p.latency:
        lat = p.latency
        rows.append(
            (
                "latency median / p90 / p99 (ms)",
                f"{_ms(lat.median_s)} / {_ms(lat.p90_s)} / {_ms(lat.p99_s)}{noisy_mark(lat.noise)}",
            )
        )
        rows.append(("timing: threads, spread (CV), verdict", _verdict(lat.threads, lat.noise)))
    for tp in p.throughput:
        rows.append(
            (
                f"throughput @ batch {tp.batch_size}",
                f"{tp.samples_per_s:,.0f} samples/s{noisy_mark(tp.latency.noise)}",
            )
        )
    if p.machine:
        m = p.machine
        rows.append(
            (
                "machine: bandwidth / peak",
                f"{m.bandwidth_bytes_per_s / 1e9:.1f} GB/s / {m.peak_flops_per_s / 1e9:.1f} "
                f"GFLOP/s ({threads_text(m.threads)}{', noisy: not cached' if m.noisy else ''})",
            )
        )
    return rows


def _verdict(threads: int | None, noise: Noise | None) -> str:
    if noise is None:
        return threads_text(threads)
    cv = "-" if noise.cv is None else f"{noise.cv:.2f}"
    verdict = f"noisy ({'; '.join(noise.reasons)})" if noise.noisy else "quiet"
    return f"{threads_text(threads)}, CV {cv}, {verdict}"


def profile_noise_hint(profiles: Sequence[ModelProfile]) -> str | None:
    """One hint line when any figure of ``profiles`` is noisy (None otherwise)."""
    noises: list[Noise | None] = []
    for p in profiles:
        noises.append(p.latency.noise if p.latency else None)
        noises += [tp.latency.noise for tp in p.throughput]
        noises.append(p.machine.noise if p.machine else None)
    return noise_hint(noises)


def wide_console() -> Console:
    """A console at least ``TABLE_MIN_WIDTH`` columns wide (tables never truncate cells)."""
    return Console(width=max(Console().width, TABLE_MIN_WIDTH))


def print_profile(profile: ModelProfile, console: Console | None = None) -> None:
    """Print the per-layer table and the summary to the terminal."""
    con = console or wide_console()
    con.print(layer_table(profile))
    con.print(summary_table(profile))


def to_json(profile: ModelProfile | Sequence[ModelProfile]) -> str:
    """JSON text of one profile (an object) or several (a list)."""
    if isinstance(profile, ModelProfile):
        return json.dumps(profile.to_dict(), indent=2)
    return json.dumps([p.to_dict() for p in profile], indent=2)


def to_csv(profile: ModelProfile) -> str:
    """CSV text: one row per layer, then a TOTAL row."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=("model", *CSV_FIELDS))
    w.writeheader()
    for lp in profile.layers:
        row = {k: getattr(lp, k) for k in CSV_FIELDS}
        row["input_shape"] = _shape(lp.input_shape)
        row["output_shape"] = _shape(lp.output_shape)
        w.writerow({"model": profile.name, **row})
    w.writerow(
        {
            "model": profile.name,
            "name": "TOTAL",
            "output_shape": _shape(profile.output_shape),
            "params": profile.params,
            "nonzero_params": profile.nonzero_params,
            "size_bits": profile.size_bits,
            "macs": profile.macs,
            "effective_macs": profile.effective_macs,
            "flops": profile.flops,
            "ops": profile.ops,
            "energy_pj": profile.energy.total_pj,
            "latency_s": profile.latency.median_s if profile.latency else None,
        }
    )
    return buf.getvalue()


def write_json(profiles: ModelProfile | Sequence[ModelProfile], path: str | Path) -> None:
    """Write JSON atomically."""
    atomic_write_text(Path(path), to_json(profiles) + "\n")


def write_csv(profiles: ModelProfile | Sequence[ModelProfile], path: str | Path) -> None:
    """Write CSV atomically (several profiles are concatenated under one header)."""
    items = [profiles] if isinstance(profiles, ModelProfile) else list(profiles)
    texts = [to_csv(p) for p in items]
    body = texts[0] + "".join(t.split("\n", 1)[1] for t in texts[1:])
    atomic_write_text(Path(path), body)


def plot_profile(profiles: ModelProfile | Sequence[ModelProfile], path: str | Path) -> None:
    """PNG chart: per-layer MACs, parameters and latency (one column of panels per model)."""
    items = [profiles] if isinstance(profiles, ModelProfile) else list(profiles)
    n_layers = max(len(p.layers) for p in items)
    fig = Figure(figsize=(13 * len(items), max(4, 0.28 * n_layers + 1.5)))
    axes = fig.subplots(1, 3 * len(items), squeeze=False)
    for i, p in enumerate(items):
        names = [lp.name or "(root)" for lp in p.layers]
        panels = (
            ("MACs", [lp.macs for lp in p.layers], "tab:blue"),
            ("parameters", [lp.params for lp in p.layers], "tab:green"),
            ("latency (ms)", [(lp.latency_s or 0) * 1e3 for lp in p.layers], "tab:red"),
        )
        for j, (title, values, color) in enumerate(panels):
            ax = axes[0][3 * i + j]
            ax.barh(range(len(names)), values, color=color)
            ax.set_yticks(
                range(len(names)), labels=names if j == 0 else [""] * len(names), fontsize=7
            )
            ax.invert_yaxis()
            ax.set_title(f"{p.name}: {title}", fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(Path(path), buf.getvalue())


COMPARE_FIGURES = (
    ("parameters", lambda p: p.params),
    ("nonzero parameters", lambda p: p.nonzero_params),
    ("size (bits)", lambda p: p.size_bits),
    ("MACs", lambda p: p.macs),
    ("effective MACs", lambda p: p.effective_macs),
    ("FLOPs", lambda p: p.flops),
    ("peak activation bytes", lambda p: p.activation.peak_bytes),
    ("training memory bytes", lambda p: p.training.total_bytes),
    ("energy (pJ)", lambda p: p.energy.total_pj),
    ("latency median (s)", lambda p: p.latency.median_s if p.latency else None),
)


def compare_rows(
    a: ModelProfile, b: ModelProfile
) -> list[tuple[str, float | None, float | None, float | None]]:
    """(figure, a, b, a/b) for each compared figure; the ratio is None when undefined."""
    rows = []
    for label, get in COMPARE_FIGURES:
        va, vb = get(a), get(b)
        ratio = va / vb if va is not None and vb not in (None, 0) else None
        rows.append((label, va, vb, ratio))
    return rows


def compare_table(a: ModelProfile, b: ModelProfile) -> Table:
    """Two models side by side with the ratio A/B of every figure."""
    t = Table(title=f"{a.name} vs {b.name}")
    for col in ("figure", a.name, b.name, "A/B"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for label, va, vb, ratio in compare_rows(a, b):
        t.add_row(label, human(va), human(vb), "-" if ratio is None else f"{ratio:.3f}x")
    return t
