"""Assemble a whole-model profile from the profiler's building blocks.

``profile_model`` runs the op tracer once (MACs, FLOPs, OPs, shapes, bytes), sizes every
parameter in bits, estimates energy from the 45 nm table, places each layer on this machine's
roofline, and (optionally) measures latency and throughput. It never mutates the model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from rich.console import Console
from torch import nn

from slimtorch.core.size import (
    TensorSize,
    effective_parameters,
    model_size_bits,
)
from slimtorch.core.trace import Trace, trace_model
from slimtorch.profile.config import PROFILE_FORMAT_VERSION, ProfileConfig
from slimtorch.profile.energy import EnergyBreakdown, estimate_energy, sum_energy
from slimtorch.profile.memory import (
    ActivationMemory,
    TrainingMemory,
    activation_memory,
    training_memory,
)
from slimtorch.profile.roofline import MachinePeaks, load_or_measure_machine, roofline_point
from slimtorch.profile.timing import (
    LatencyStats,
    ThroughputPoint,
    layer_latencies,
    measure_latency,
    throughput_sweep,
)

BITS_PER_BYTE = 8


@dataclass(frozen=True)
class LayerProfile:
    """One module's share of the model's cost (ops attributed to the innermost module)."""

    name: str
    kind: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    nonzero_params: int
    size_bits: int
    macs: int
    effective_macs: int
    flops: int
    ops: int
    energy_pj: float
    bytes_moved: int
    intensity: float | None
    bound: str | None
    latency_s: float | None


@dataclass(frozen=True)
class ModelProfile:
    """Everything ``profile_model`` measured, per layer and in total."""

    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    layers: tuple[LayerProfile, ...]
    params: int
    nonzero_params: int
    size_bits: int
    macs: int
    effective_macs: int
    flops: int
    ops: int
    activation: ActivationMemory
    training: TrainingMemory
    energy: EnergyBreakdown
    latency: LatencyStats | None
    throughput: tuple[ThroughputPoint, ...]
    machine: MachinePeaks | None
    threads: int | None = None  # torch threads of the timings (None: nothing was timed)
    version: int = PROFILE_FORMAT_VERSION

    @property
    def size_bytes(self) -> float:
        """Model size in bytes (size in bits / 8)."""
        return self.size_bits / BITS_PER_BYTE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (timeline and raw latency samples left out for size)."""
        return _jsonable(self)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        skip = {"timeline", "samples_s"}
        out = {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__ if k not in skip}
        if isinstance(obj, ModelProfile):
            out["size_bytes"] = obj.size_bytes
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _owner(param_name: str) -> str:
    return param_name.rpartition(".")[0]


def _layer_of(owner: str, layer_names: Sequence[str]) -> str:
    """The traced layer a parameter belongs to: its owner, or the nearest traced ancestor.

    Parametrized weights (weight norm) live under ``<layer>.parametrizations.weight``.
    """
    names = set(layer_names)
    probe = owner
    while True:
        if probe in names:
            return probe
        if not probe:
            return ""
        probe = probe.rpartition(".")[0]


def _stored_values(s: TensorSize) -> int:
    return s.numel if s.layout == "dense" else max(s.nonzeros, 1)


def _sizes_by_layer(
    sizes: Mapping[str, TensorSize], layer_names: Sequence[str]
) -> dict[str, list[TensorSize]]:
    grouped: dict[str, list[TensorSize]] = {}
    for pname, s in sizes.items():
        grouped.setdefault(_layer_of(_owner(pname), layer_names), []).append(s)
    return grouped


def _weight_bits(sizes: Sequence[TensorSize]) -> int:
    """Bits per stored weight value of a layer (the widest of its tensors), 32 if none."""
    bits = [math.ceil(s.values_bits / _stored_values(s)) for s in sizes if s.numel > 1]
    return max(bits) if bits else 32


def _layer_energy(layer: Any, sizes: Sequence[TensorSize], act_bits: int) -> EnergyBreakdown:
    weight_bits = _weight_bits(sizes)
    return estimate_energy(
        macs=layer.effective_macs,
        other_flops=max(layer.flops - 2 * layer.macs, 0),
        weight_bits_read=sum(s.total_bits for s in sizes),
        activation_bits_read=layer.input_bytes * BITS_PER_BYTE * act_bits // 32,
        activation_bits_written=layer.output_bytes * BITS_PER_BYTE * act_bits // 32,
        weight_bits=weight_bits,
        act_bits=act_bits,
        number="float" if weight_bits >= 16 and act_bits >= 16 else "int",
    )


ExampleInput = torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


def _first_tensor(example: ExampleInput) -> torch.Tensor | None:
    if isinstance(example, torch.Tensor):
        return example
    values = example.values() if isinstance(example, dict) else example
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def profile_model(
    model: nn.Module,
    example_input: ExampleInput,
    config: ProfileConfig | None = None,
    name: str = "model",
    progress: bool = False,
) -> ModelProfile:
    """Profile ``model`` on ``example_input``.

    Args:
        model: any ``nn.Module``; it is not changed (training flag restored).
        example_input: one input batch (its shape is the profiled shape): a tensor, a tuple
            of positional arguments or a dict of keyword arguments. The throughput sweep
            needs a single tensor and is skipped otherwise.
        config: what to measure; defaults to ``ProfileConfig()``.
        name: label used in reports and comparisons.
        progress: print a spinner per stage (for the CLI).

    Returns:
        A ``ModelProfile`` with per-layer and total figures.

    Example:
        >>> from slimtorch.models import create_model
        >>> p = profile_model(create_model("lenet5"), torch.zeros(1, 1, 8, 8),
        ...                   ProfileConfig(latency=False, roofline=False,
        ...                                 throughput_batch_sizes=()))
        >>> p.macs > 0
        True
    """
    cfg = config or ProfileConfig()
    stage = _Stages(progress)
    with stage("tracing ops"):
        trace = trace_model(model, example_input)
        act = activation_memory(trace)
        train_mem = training_memory(model, example_input, optimizer=cfg.optimizer)
    sizes = model_size_bits(model, cfg.formats)
    machine, latency, per_layer_s, throughput = _measured(model, example_input, cfg, stage)
    param_names = set(effective_parameters(model))
    params_only = {n: s for n, s in sizes.items() if n in param_names}
    first = _first_tensor(example_input)
    return ModelProfile(
        name=name,
        input_shape=tuple(first.shape) if first is not None else (),
        output_shape=trace.output_shape,
        layers=_layer_profiles(trace, sizes, params_only, machine, per_layer_s, cfg.act_bits),
        params=trace.total_params,
        nonzero_params=sum(s.nonzeros for s in params_only.values()),
        size_bits=sum(s.total_bits for s in sizes.values()),
        macs=trace.total_macs,
        effective_macs=trace.total_effective_macs,
        flops=trace.total_flops,
        ops=trace.total_ops,
        activation=act,
        training=train_mem,
        energy=_model_energy(trace, sizes, cfg.act_bits),
        latency=latency,
        throughput=throughput,
        machine=machine,
        threads=latency.threads if latency else None,
    )


def _measured(model: nn.Module, example_input: ExampleInput, cfg: ProfileConfig, stage: Any):
    """``(machine peaks, latency, per-layer seconds, throughput)``, each only if asked for."""
    machine = None
    if cfg.roofline:
        with stage("measuring machine peaks (cached after the first quiet run)"):
            machine = load_or_measure_machine(threads=cfg.threads)
    if not cfg.latency:
        return machine, None, {}, ()
    with stage("timing"):
        return (machine, *_timings(model, example_input, cfg))


def _model_energy(trace: Any, sizes: dict[str, Any], act_bits: int) -> Any:
    """The 45 nm energy estimate summed over the traced layers."""
    grouped = _sizes_by_layer(sizes, [lc.name for lc in trace.layers])
    return sum_energy(
        [_layer_energy(lc, grouped.get(lc.name, []), act_bits) for lc in trace.layers]
    )


def _timings(
    model: nn.Module, example_input: ExampleInput, cfg: ProfileConfig
) -> tuple[LatencyStats, dict[str, float], tuple[ThroughputPoint, ...]]:
    """Whole-model latency, per-layer latency and the throughput sweep, at ``cfg.threads``."""
    threads = cfg.threads
    latency = measure_latency(
        model, example_input, warmup=cfg.warmup, runs=cfg.runs, threads=threads
    )
    per_layer_s: dict[str, float] = {}
    if cfg.layer_latency:
        runs = max(3, cfg.runs // 3)
        per_layer_s = layer_latencies(model, example_input, runs=runs, threads=threads)
    throughput: tuple[ThroughputPoint, ...] = ()
    if cfg.throughput_batch_sizes and isinstance(example_input, torch.Tensor):
        one = example_input[:1]
        sweep = throughput_sweep(model, one, cfg.throughput_batch_sizes, threads=threads)
        throughput = tuple(sweep)
    return latency, per_layer_s, throughput


def _layer_profiles(
    trace: Trace,
    sizes: Mapping[str, TensorSize],
    param_sizes: Mapping[str, TensorSize],
    machine: MachinePeaks | None,
    per_layer_s: Mapping[str, float],
    act_bits: int,
) -> tuple[LayerProfile, ...]:
    grouped = _sizes_by_layer(sizes, [lc.name for lc in trace.layers])
    grouped_params = _sizes_by_layer(param_sizes, [lc.name for lc in trace.layers])
    out = []
    for lc in trace.layers:
        layer_sizes = grouped.get(lc.name, [])
        point = None
        moved = lc.input_bytes + lc.output_bytes + lc.weight_bytes
        if machine is not None and lc.flops > 0 and moved > 0:
            point = roofline_point(lc.flops, moved, machine)
        out.append(
            LayerProfile(
                name=lc.name,
                kind=lc.kind,
                input_shape=lc.input_shape,
                output_shape=lc.output_shape,
                params=lc.params,
                nonzero_params=sum(s.nonzeros for s in grouped_params.get(lc.name, [])),
                size_bits=sum(s.total_bits for s in layer_sizes),
                macs=lc.macs,
                effective_macs=lc.effective_macs,
                flops=lc.flops,
                ops=lc.ops,
                energy_pj=_layer_energy(lc, layer_sizes, act_bits).total_pj,
                bytes_moved=moved,
                intensity=point.intensity if point else None,
                bound=point.bound if point else None,
                latency_s=per_layer_s.get(lc.name),
            )
        )
    return tuple(out)


class _Stages:
    """Tiny status printer: a rich spinner per stage when enabled, silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, what: str) -> Any:
        if not self.enabled:
            return _Null()

        return Console(stderr=True).status(f"[bold]profile[/]: {what}")


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> Literal[False]:
        return False


def select_layers(profile: ModelProfile, pattern: str) -> list[LayerProfile]:
    """Layers whose qualified name fully matches ``pattern`` (a regex)."""
    rx = re.compile(pattern)
    return [lp for lp in profile.layers if rx.fullmatch(lp.name)]
