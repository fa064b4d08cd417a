"""Sensitivity analysis: prune each layer alone at a sweep of ratios, then allocate.

:func:`sensitivity_scan` records, per layer, the accuracy after pruning only that layer at each
ratio (Han et al. 2015, Li et al. 2017). :func:`propose_ratios` picks one ratio per layer so
that the removed amount (parameters or MACs) reaches a target fraction of the model's total
with the least predicted loss, the sum of the per-layer accuracy drops (an exact dynamic
program over the sweep, with amounts in ``DP_BUCKETS`` units rounded down, so the target is
always met). :func:`plot_sensitivity` draws the curves as a PNG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_bytes
from slimtorch.prune.engine import compute_masks, select_layers
from slimtorch.prune.obs import first_batches
from slimtorch.train import evaluate

DP_BUCKETS = 2000  # resolution of the removed-amount axis of the allocation program

Curves = dict[str, list[tuple[float, float]]]  # layer -> [(ratio, accuracy)]


def sensitivity_scan(
    model: nn.Module,
    layers: Sequence[str],
    ratios: Sequence[float],
    mask_fn: Callable[[str, float], dict[str, Tensor]],
    score_fn: Callable[[nn.Module], float],
    progress: Callable[[str], None] | None = None,
) -> Curves:
    """Accuracy of the model with one layer pruned at a time, at each ratio.

    Args:
        model: the model (restored exactly after each trial).
        layers: qualified names to scan.
        ratios: sparsities to try, each in [0, 1).
        mask_fn: ``mask_fn(layer, ratio)`` -> parameter masks for that layer alone.
        score_fn: ``score_fn(model)`` -> accuracy (e.g. on the validation split).
        progress: called with a short status per trial.

    Returns:
        layer -> [(ratio, accuracy)] in the order of ``ratios``.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    curves: Curves = {}
    for layer in layers:
        curves[layer] = []
        for ratio in ratios:
            masks = mask_fn(layer, ratio)
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, mask in masks.items():
                    params[name].mul_(mask.to(params[name].dtype))
            curves[layer].append((float(ratio), float(score_fn(model))))
            model.load_state_dict(state)
            if progress is not None:
                progress(f"{layer} @ {ratio:.2f}")
    return curves


def propose_ratios(
    curves: Curves,
    sizes: dict[str, int],
    total: int,
    target: float,
    baseline: float | None = None,
) -> dict[str, float]:
    """Per-layer ratios removing at least ``target * total`` units with the least summed drop.

    Args:
        curves: layer -> [(ratio, accuracy)] (ratio 0 is implied with no drop when absent).
        sizes: layer -> its parameters (or MACs); a ratio ``r`` removes ``r * size``.
        total: the whole model's parameters (or MACs), including layers not scanned.
        target: fraction of ``total`` to remove, in [0, 1).
        baseline: the unpruned accuracy (default: the best accuracy in ``curves``).

    Returns:
        layer -> ratio.

    Raises:
        ConfigError: even the highest ratios cannot reach the target.

    Example:
        >>> curves = {"a": [(0.5, 0.9), (0.9, 0.5)], "b": [(0.5, 0.99), (0.9, 0.98)]}
        >>> propose_ratios(curves, {"a": 100, "b": 100}, 200, 0.45)
        {'a': 0.0, 'b': 0.9}
    """
    if not 0 <= target < 1:
        raise ConfigError(f"target must be in [0, 1), got {target}")
    layers = list(curves)
    best_seen = max((acc for pts in curves.values() for _, acc in pts), default=0.0)
    base = best_seen if baseline is None else baseline
    options = {n: [(0.0, 0.0)] + [(r, max(0.0, base - a)) for r, a in curves[n]] for n in layers}
    unit = total / DP_BUCKETS
    need = math.ceil(target * DP_BUCKETS - 1e-9)
    best: dict[int, tuple[float, tuple[float, ...]]] = {0: (0.0, ())}
    for n in layers:
        nxt: dict[int, tuple[float, tuple[float, ...]]] = {}
        for got, (drop, picks) in best.items():
            for r, d in options[n]:
                key = min(need, got + math.floor(r * sizes[n] / unit + 1e-9))
                cand = (drop + d, (*picks, r))
                if key not in nxt or cand[0] < nxt[key][0] - 1e-12:
                    nxt[key] = cand
        best = nxt
    if need not in best:
        raise ConfigError(
            f"the scanned ratios cannot remove {target:.0%} of the total; scan higher ratios"
        )
    return dict(zip(layers, best[need][1], strict=True))


def plot_sensitivity(curves: Curves, path: str | Path, baseline: float | None = None) -> Path:
    """Accuracy against ratio, one line per layer, as a PNG (written atomically)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for layer, pts in curves.items():
        ax.plot([r for r, _ in pts], [a for _, a in pts], marker="o", label=layer)
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label="unpruned")
    ax.set_xlabel("sparsity of the layer alone")
    ax.set_ylabel("accuracy")
    ax.set_title("Pruning sensitivity per layer")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def scan_and_propose(
    model: nn.Module,
    config: object,
    train: object,
    val: object,
    ratios: Sequence[float],
    target: str,
    fraction: float,
    progress: bool = False,
) -> dict:
    """Scan every layer ``config`` selects with its granularity and criterion, then propose
    ratios that remove ``fraction`` of the model's parameters (``target="params"``) or MACs
    (``"macs"``).

    Returns:
        ``{"baseline", "curves", "sizes", "total", "target", "fraction", "proposal"}``.
    """
    calib = list(first_batches(train, config.calib_batches))
    example = calib[0][0][:1]
    layers = select_layers(model, config, example)
    trace = trace_model(model, example)
    if target == "macs":
        counts = {lc.name: lc.macs for lc in trace.layers}
        sizes, total = {n: counts.get(n, 0) for n in layers}, trace.total_macs
    else:
        sizes, total = {n: m.weight.numel() for n, m in layers.items()}, trace.total_params

    def mask_fn(name: str, ratio: float) -> dict[str, Tensor]:
        return compute_masks(model, {name: layers[name]}, {name: ratio}, config, calib)

    def score(m: nn.Module) -> float:
        return evaluate(m, val).accuracy

    say = print if progress else None
    curves = sensitivity_scan(model, list(layers), ratios, mask_fn, score, say)
    baseline = score(model)
    proposal = propose_ratios(curves, sizes, total, fraction, baseline)
    return {
        "baseline": baseline,
        "curves": curves,
        "sizes": sizes,
        "total": total,
        "target": target,
        "fraction": fraction,
        "proposal": proposal,
    }
