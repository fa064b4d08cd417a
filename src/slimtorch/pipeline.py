"""The Deep Compression pipeline: run a recipe's stages on a trained model, measuring each.

Stages (see :mod:`slimtorch.recipe`) run in order on one model: pruning (masks kept through
every later fine-tuning), fine-tuning (optionally distilled from the uncompressed model),
k-means or linear quantization, centroid fine-tuning, bias sharing, and Huffman encoding into
one file (:func:`slimtorch.encode.save_compressed`). After the baseline and after every stage
a :class:`StageRecord` holds test/validation accuracy, nonzero weights, size, compression
ratio, MACs and latency. Sizes before the encode stage are closed forms in the paper's
convention (kept values at their bit width, relative indices at their fixed width including
filler entries, codebooks at 32 bits); the encode stage's size is the file's length.

Example:
    >>> import torch
    >>> from slimtorch.models import build_model, make_spec
    >>> from slimtorch.recipe import parse_recipe
    >>> spec = make_spec("lenet300", image_size=2)
    >>> model = build_model(spec)
    >>> data = [(torch.randn(16, 1, 2, 2), torch.randint(0, 10, (16,)))]
    >>> recipe = parse_recipe('[[stage]]\\nkind = "kmeans"\\nbits = 2')
    >>> result = run_pipeline(model, spec, recipe, (data, data, data), progress=False)
    >>> [r.stage for r in result.records], result.records[-1].ratio > 10
    (['original', 'kmeans'], True)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slimtorch.distill import Distiller
from slimtorch.distill.distill import compose_hooks
from slimtorch.encode import CompressedSummary, SparseWeight, from_quantized, save_compressed
from slimtorch.encode.sparse_index import relative_gaps
from slimtorch.errors import ConfigError
from slimtorch.models import ModelSpec, create_model
from slimtorch.profile.noise import Noise
from slimtorch.profile.timing import measure_latency
from slimtorch.profile.trace import trace_model
from slimtorch.prune import MaskKeeper, prune_model
from slimtorch.quantize import PerChannel, PerTensor, QuantSpec, fake_quantize
from slimtorch.quantize.kmeans import (
    CODEBOOK_ENTRY_BITS,
    kmeans_codebook,
    kmeans_quantize_model,
    quantizable_layers,
)
from slimtorch.quantize.trained import codebook_layers, finetune_centroids
from slimtorch.recipe import HuffmanConfig, Recipe, Stage
from slimtorch.train import FitConfig, evaluate, fit

Loaders = tuple[Any, Any, Any]  # (train, val, test) batches
LATENCY_RUNS = 30
LATENCY_BUDGET_S = 0.5


@dataclass(frozen=True)
class StageRecord:
    """Measurements after one stage (``stage == "original"`` for the uncompressed model)."""

    index: int
    stage: str
    test_accuracy: float
    val_accuracy: float
    nonzero_weights: int
    weights: int
    params: int
    size_bytes: int
    bits_per_weight: float
    ratio: float
    macs: int
    effective_macs: int
    latency_ms: float
    seconds: float
    exact_file: bool = False  # size is the real file's length (encode stage)
    threads: int | None = None  # torch threads of the latency figure
    noisy: bool = False  # the latency figure was flagged noisy (slimtorch.profile.noise)
    noise: Noise | None = None


@dataclass
class PipelineState:
    """What the stages change: the model, pruning masks, quantized bit widths."""

    model: nn.Module
    spec: ModelSpec
    masks: dict[str, Tensor] = field(default_factory=dict)
    qbits: dict[str, int] = field(default_factory=dict)
    huffman: HuffmanConfig = field(default_factory=HuffmanConfig)
    teacher: nn.Module | None = None
    file: CompressedSummary | None = None
    histogram: dict[str, Tensor] = field(default_factory=dict)
    file_metadata: dict[str, Any] = field(default_factory=dict)  # extra keys for the file


@dataclass(frozen=True)
class PipelineResult:
    """Records (baseline first), the final dense model, masks, and the file written."""

    records: tuple[StageRecord, ...]
    model: nn.Module
    spec: ModelSpec
    masks: dict[str, Tensor]
    qbits: dict[str, int]
    file: CompressedSummary | None
    histogram: dict[str, Any]
    original_bytes: int


def state_bytes(model: nn.Module) -> int:
    """Bytes of every ``state_dict`` tensor as stored (fp32 = 4 bytes per value)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def dense_model(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """An ordinary model of ``spec`` holding ``model``'s effective weights (codebook layers
    decoded; pruned positions +0.0), in eval mode."""
    dense = create_model(spec.name, **spec.kwargs)  # the spec of a model already built
    shells = codebook_layers(model)
    source = model.state_dict()
    state = {}
    for key in dense.state_dict():
        owner, _, leaf = key.rpartition(".")
        if owner in shells and leaf == "weight":
            state[key] = _plus_zero(shells[owner].weight.detach())
        else:
            state[key] = source[key].detach().clone()
    dense.load_state_dict(state)
    return dense.eval()


def _plus_zero(t: Tensor) -> Tensor:
    t = t.clone()
    t[t == 0] = 0.0  # -0.0 -> +0.0, as a decoder writes untouched positions
    return t


def _weight_keys(model: nn.Module) -> list[str]:
    return [f"{n}.weight" for n in quantizable_layers(model)]


def estimate_bytes(model: nn.Module, masks: dict, qbits: dict, huffman: HuffmanConfig) -> int:
    """Closed-form size (paper convention) of a dense model with these masks and bit widths.

    Kept values cost their bit width (quantized: ``qbits``, else the dtype's), a pruned tensor
    adds one fixed-width relative index per stored entry (fillers included) and a quantized
    tensor a ``2**bits`` codebook of fp32 entries.
    """
    bits = 0
    for key, t in model.state_dict().items():
        vbits = qbits.get(key, t.element_size() * 8)
        if key in qbits:
            bits += (2 ** qbits[key]) * CODEBOOK_ENTRY_BITS
        mask = masks.get(key)
        if mask is not None and not bool(mask.all()):
            ib = huffman.bits_for(tuple(t.shape))
            gaps, _ = relative_gaps(np.flatnonzero(mask.reshape(-1).numpy()), ib)
            bits += gaps.size * (vbits + ib)
        else:
            bits += t.numel() * vbits
    return math.ceil(bits / 8)


def measure(
    state: PipelineState,
    index: int,
    stage: str,
    loaders: Loaders,
    original: int,
    seconds: float,
    threads: int | None = None,
) -> StageRecord:
    """Accuracy, sparsity, size, MACs and latency (timed with ``threads``) of the model."""
    model = state.model.eval()
    dense = dense_model(model, state.spec)
    x = next(iter(loaders[2]))[0][:1]
    keys = _weight_keys(dense)
    weights = dict(dense.state_dict())
    nonzero = sum(int((weights[k] != 0).sum()) for k in keys)
    total = sum(weights[k].numel() for k in keys)
    if state.file is not None:
        size = state.file.file_bytes
    else:
        size = estimate_bytes(dense, state.masks, state.qbits, state.huffman)
    trace = trace_model(dense, x)
    latency = measure_latency(
        model, x, warmup=3, runs=LATENCY_RUNS, max_seconds=LATENCY_BUDGET_S, threads=threads
    )
    params = sum(p.numel() for p in dense.parameters())
    return StageRecord(
        index,
        stage,
        evaluate(model, loaders[2]).accuracy,
        evaluate(model, loaders[1]).accuracy,
        nonzero,
        total,
        params,
        size,
        8 * size / params,
        original / size,
        trace.total_macs,
        trace.total_effective_macs,
        latency.median_s * 1e3,
        seconds,
        state.file is not None,
        latency.threads,
        latency.noisy,
        latency.noise,
    )


def _fit_config(epochs: int, lr: float, optimizer: str, seed: int) -> FitConfig:
    return FitConfig(epochs=epochs, lr=lr, optimizer=optimizer, seed=seed)


def _distiller(state: PipelineState, recipe: Recipe, on: bool) -> Distiller | None:
    if not on or recipe.distill is None:
        return None
    return Distiller(state.model, state.teacher, recipe.distill)


def _run_prune(state, cfg, recipe, loaders, progress) -> None:
    result = prune_model(state.model, cfg, loaders[0], loaders[1], None, progress=progress)
    for key, mask in result.masks.items():
        old = state.masks.get(key)
        state.masks[key] = mask if old is None else (mask & old)


def _run_finetune(state, cfg, recipe, loaders, progress) -> None:
    kd = _distiller(state, recipe, cfg.distill)
    fit_cfg = _fit_config(cfg.epochs, cfg.lr, cfg.optimizer, recipe.model.seed)
    with MaskKeeper(state.model, state.masks) as keeper:
        try:
            fit(
                state.model,
                loaders[0],
                loaders[1],
                fit_cfg,
                progress,
                label="finetune",
                loss_fn=kd.loss_fn if kd else None,
                after_backward=compose_hooks(keeper.after_backward, kd and kd.after_backward),
                after_step=keeper.after_step,
            )
        finally:
            if kd is not None:
                kd.close()


def _capture(state: PipelineState, when: str) -> None:
    """Keep one layer's nonzero weights (the largest quantized layer) for the histogram."""
    dense = dense_model(state.model, state.spec).state_dict()
    name = state.histogram.get("layer") or max(
        _weight_keys(state.model), key=lambda k: dense[k].numel()
    )
    w = dense[name].reshape(-1)
    state.histogram["layer"] = name
    state.histogram[when] = w[w != 0].clone()


def _run_kmeans(state, cfg, recipe, loaders, progress) -> None:
    _capture(state, "before")
    state.model, _ = kmeans_quantize_model(state.model, cfg)
    for name, shell in codebook_layers(state.model).items():
        state.qbits[f"{name}.weight"] = shell.bits


def _run_linear(state, cfg, recipe, loaders, progress) -> None:
    _capture(state, "before")
    gran = PerTensor() if cfg.granularity == "tensor" else PerChannel(0)
    for name in quantizable_layers(state.model, cfg.exclude):
        bits = next((b for p, b in cfg.layer_bits.items() if _matches(p, name)), cfg.bits)
        weight = state.model.get_submodule(name).weight
        with torch.no_grad():
            weight.copy_(fake_quantize(weight.detach(), QuantSpec(bits=bits, granularity=gran)))
        state.qbits[f"{name}.weight"] = bits


def _matches(pattern: str, name: str) -> bool:
    import re

    return pattern == name or re.fullmatch(pattern, name) is not None


# Centroid fine-tuning updates BatchNorm running statistics (finetune_centroids' default,
# measured better than frozen statistics at low bit widths); both the plain and the
# distilled path follow this one switch.
CENTROID_FREEZE_BN = False


def _run_centroids(state, cfg, recipe, loaders, progress) -> None:
    kd = _distiller(state, recipe, cfg.distill)
    if kd is None:
        finetune_centroids(
            state.model,
            loaders[0],
            loaders[1],
            cfg.epochs,
            cfg.lr,
            freeze_bn=CENTROID_FREEZE_BN,
            seed=recipe.model.seed,
            progress=progress,
        )
        return
    # finetune_centroids has no loss hook: same recipe (only codebooks learn, BatchNorm
    # treated alike) with KD's loss
    centroids = {id(m.codebook) for m in codebook_layers(state.model).values()}
    saved = {p: p.requires_grad for p in state.model.parameters()}
    frozen = [  # as finetune_centroids(freeze_bn=...): BatchNorm keeps its running statistics
        m.register_forward_pre_hook(_bn_eval)
        for m in state.model.modules()
        if CENTROID_FREEZE_BN and isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        for p in state.model.parameters():
            p.requires_grad_(id(p) in centroids)
        fit(
            state.model,
            loaders[0],
            loaders[1],
            _fit_config(cfg.epochs, cfg.lr, "adam", recipe.model.seed),
            progress,
            label="finetune_centroids",
            loss_fn=kd.loss_fn,
            after_backward=kd.after_backward,
        )
    finally:
        kd.close()
        for handle in frozen:
            handle.remove()
        for p, flag in saved.items():
            p.requires_grad_(flag)


def _bn_eval(module: nn.Module, args: object) -> None:
    """Forward pre-hook: run this BatchNorm layer on its running statistics."""
    module.eval()


def _run_bias_kmeans(state, cfg, recipe, loaders, progress) -> None:
    for name, module in state.model.named_modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, Tensor) and bias.numel() >= cfg.min_numel and name:
            codebook, idx, _ = kmeans_codebook(bias.detach(), cfg.bits, keep_zeros=False)
            with torch.no_grad():
                bias.copy_(codebook[idx])
            state.qbits[f"{name}.bias"] = cfg.bits


def layer_codecs(dense: nn.Module, state: PipelineState) -> dict[str, Any]:
    """The encode codec of every compressed tensor of the dense model: a codebook of its
    distinct kept values (quantized tensors) or sparse values (pruned only)."""
    weights, codecs = dense.state_dict(), {}
    dtype = getattr(torch, state.huffman.codebook_dtype)
    for key in sorted(set(state.qbits) | set(state.masks)):
        w = weights[key]
        mask = w != 0 if key in state.masks and not bool(state.masks[key].all()) else None
        kept = w if mask is None else w[mask]
        bits = state.huffman.bits_for(tuple(w.shape))
        if key in state.qbits:
            book = torch.unique(kept).to(dtype) if kept.numel() else torch.zeros(1, dtype=dtype)
            codecs[key] = from_quantized(w, book, mask, index_bits=bits)
        else:
            codecs[key] = SparseWeight(tuple(w.shape), kept, mask, None, bits)
    return codecs


def _run_encode(state, cfg, recipe, loaders, progress, out_file: Path | None = None) -> None:
    state.huffman = cfg
    dense = dense_model(state.model, state.spec)
    if cfg.codebook_dtype != "float32":
        narrow = getattr(torch, cfg.codebook_dtype)
        with torch.no_grad():
            for key in state.qbits:
                t = dict(dense.named_parameters())[key]
                t.copy_(_plus_zero(t.to(narrow).to(t.dtype)))
    if out_file is None:
        raise ConfigError("the recipe has an encode stage: give an output file")
    meta = {"recipe": recipe.name, **state.file_metadata}
    state.file = save_compressed(
        out_file,
        dense,
        state.spec,
        layer_codecs(dense, state),
        metadata=meta,
        config=cfg.encode_config(),
    )
    state.model = dense
    _capture(state, "after")


RUNNERS: dict[str, Callable[..., None]] = {
    "prune": _run_prune,
    "finetune": _run_finetune,
    "kmeans": _run_kmeans,
    "linear": _run_linear,
    "finetune_centroids": _run_centroids,
    "bias_kmeans": _run_bias_kmeans,
    "encode": _run_encode,
}


def cap_epochs(stage: Stage, max_epochs: int | None) -> Stage:
    """The stage with every epoch count capped at ``max_epochs`` (quick runs and tests)."""
    if max_epochs is None:
        return stage
    changes = {
        k: min(getattr(stage.config, k), max_epochs)
        for k in ("epochs", "finetune_epochs")
        if hasattr(stage.config, k) and getattr(stage.config, k) > 0
    }
    return Stage(stage.kind, dataclasses.replace(stage.config, **changes))


def run_pipeline(
    model: nn.Module,
    spec: ModelSpec,
    recipe: Recipe,
    loaders: Loaders,
    out_file: str | Path | None = None,
    *,
    progress: bool = True,
    max_stage_epochs: int | None = None,
    on_stage: Callable[[StageRecord], None] | None = None,
    threads: int | None = None,
    file_metadata: dict[str, Any] | None = None,
) -> PipelineResult:
    """Run every stage of ``recipe`` on ``model`` (changed in place) and measure each.

    Args:
        model: the trained uncompressed model (an ordinary model of ``spec``).
        spec: how to rebuild its architecture (written into the compressed file).
        recipe: the stages.
        loaders: ``(train, val, test)`` batches.
        out_file: where the encode stage writes the compressed file.
        progress: progress bars while training.
        max_stage_epochs: cap every stage's epoch counts (quick runs).
        on_stage: called with each record as soon as it is measured.
        threads: torch threads for the latency figures (None: the current setting); each
            record holds it with the figure's noise verdict.
        file_metadata: more metadata for the compressed file, e.g. the data the model was
            trained and measured on (``slimtorch.data.record.data_record``), which commands
            reading the file then use.

    Returns:
        A :class:`PipelineResult`; ``result.model`` is the final model as an ordinary dense
        model (what the compressed file decodes to).
    """
    original = state_bytes(model)
    from slimtorch.distill.distill import snapshot_teacher

    state = PipelineState(model, spec, teacher=snapshot_teacher(model))
    state.file_metadata = dict(file_metadata or {})
    records = [measure(state, -1, "original", loaders, original, 0.0, threads)]
    _emit(on_stage, records[-1])
    for i, stage in enumerate(recipe.stages):
        stage = cap_epochs(stage, max_stage_epochs)
        start = time.perf_counter()
        runner = RUNNERS[stage.kind]
        if stage.kind == "encode":
            runner(state, stage.config, recipe, loaders, progress, _path(out_file))
        else:
            runner(state, stage.config, recipe, loaders, progress)
        elapsed = time.perf_counter() - start
        records.append(measure(state, i, stage.kind, loaders, original, elapsed, threads))
        _emit(on_stage, records[-1])
    final = dense_model(state.model, spec)
    return PipelineResult(
        tuple(records),
        final,
        spec,
        state.masks,
        state.qbits,
        state.file,
        dict(state.histogram),
        original,
    )


def _path(out_file: str | Path | None) -> Path | None:
    return None if out_file is None else Path(out_file)


def _emit(callback: Callable[[StageRecord], None] | None, record: StageRecord) -> None:
    if callback is not None:
        callback(record)


def stage_labels(records: Sequence[StageRecord]) -> list[str]:
    """Short, unique labels: ``"0 prune"``, ``"1 finetune"``, ... (``original`` first)."""
    return [r.stage if r.index < 0 else f"{r.index} {r.stage}" for r in records]
