"""The main job (``slimtorch compress``): train (or reuse) a model, run a recipe's stages,
write the compressed file, decode it, re-evaluate, report.

- :func:`run_pipeline` runs a recipe's stages (:data:`slimtorch.compress.stages.STAGES`) in
  order on one model and measures it after the baseline and after every stage (a
  :class:`~slimtorch.compress.measure.StageRecord` each);
- :func:`compress` is the whole job: the baseline (a ``--model`` checkpoint, the cache in
  ``out/baseline`` or a fresh training), :func:`run_pipeline`, decoding the file and checking
  it against the compressed model, the warnings and the reports.

Its outputs under ``out``: ``baseline/`` (the cached trained model), ``model.slim`` (the
compressed file), ``decoded/`` (the file decoded back into a safetensors checkpoint),
``report.json``, ``report.md`` and PNG plots.

Example:
    >>> import torch
    >>> from slimtorch.models import build_model, make_spec
    >>> from slimtorch.compress.recipe import parse_recipe
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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.compress.accuracy import pipeline_warnings
from slimtorch.compress.measure import PipelineResult, StageRecord, measure, state_bytes
from slimtorch.compress.recipe import Recipe, Stage, load_recipe
from slimtorch.compress.report import write_report
from slimtorch.compress.stages import STAGES
from slimtorch.compress.state import Loaders, PipelineState, StageContext, dense_model
from slimtorch.data import load_data, make_loaders, recorded_split
from slimtorch.data.record import check_given_data, data_record
from slimtorch.distill.distill import snapshot_teacher
from slimtorch.encode import CompressedSummary, load_compressed
from slimtorch.errors import SlimtorchError
from slimtorch.models import ModelSpec, build_model, create_model, make_spec
from slimtorch.resolve import is_zoo_name
from slimtorch.train import FitConfig, evaluate, fit

DEFAULT_OUT = Path("slimtorch-out")
FILE_NAME = "model.slim"


@dataclass(frozen=True)
class CompressOutcome:
    """What :func:`compress` produced: the pipeline result and the decoded model's checks."""

    result: PipelineResult
    summary: dict[str, Any]
    paths: list[Path]


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
        progress: progress lines while training.
        max_stage_epochs: cap every stage's epoch counts (quick runs).
        on_stage: called with each record as soon as it is measured.
        threads: torch threads for the latency figures (None: the current setting); each
            record holds it with the figure's noise verdict.
        file_metadata: more metadata for the compressed file (after the recipe's name), e.g.
            the data the model was trained and measured on (``data_record``).

    Returns:
        A :class:`PipelineResult`; ``result.model`` is the final model as an ordinary dense
        model (what the compressed file decodes to).
    """
    original = state_bytes(model)
    state = PipelineState(model, spec, teacher=snapshot_teacher(model))
    encode = [s.config for s in recipe.stages if s.kind == "encode"]
    if encode:  # closed-form sizes before the file use the file's index and codebook widths
        state.huffman = encode[0]
    state.file_metadata = {"recipe": recipe.name, **(file_metadata or {})}
    out = None if out_file is None else Path(out_file)
    records = [measure(state, -1, "original", loaders, original, 0.0, threads)]
    _emit(on_stage, records[-1])
    for i, stage in enumerate(recipe.stages):
        config = cap_epochs(stage, max_stage_epochs).config
        ctx = StageContext(state, config, loaders, recipe.model.seed, recipe.distill, progress, out)
        start = time.perf_counter()
        STAGES[stage.kind].run(ctx)
        elapsed = time.perf_counter() - start
        records.append(measure(state, i, stage.kind, loaders, original, elapsed, threads))
        _emit(on_stage, records[-1])
    final = dense_model(state.model, state.spec)  # a search stage may have replaced the spec
    return PipelineResult(
        tuple(records), final, state.spec, state.masks, state.qbits, state.file,
        dict(state.histogram), original, state.huffman.codebook_dtype,
    )  # fmt: skip


def _emit(callback: Callable[[StageRecord], None] | None, record: StageRecord) -> None:
    if callback is not None:
        callback(record)


def _is_checkpoint(name: str) -> bool:
    return not is_zoo_name(name) and (Path(name).is_dir() or name.endswith(".json"))


def _baseline(
    recipe: Recipe, out: Path, retrain: bool, progress: bool, user_named: bool = False
) -> tuple[nn.Module, ModelSpec, Any]:
    """(model, spec, splits): a checkpoint given as --model, the cache, or a fresh training.

    ``user_named``: the model name came from the caller (``--model`` or a Recipe object), so a
    factory is theirs to run; a name read from a recipe file obeys the trust policy."""
    m = recipe.model
    splits = load_data(m.data, seed=m.seed)
    if _is_checkpoint(m.name):
        model, spec, _ = load_checkpoint(m.name)
        return model, spec, splits
    key = {
        "model": m.name,
        "data": m.data,
        "epochs": m.epochs,
        "lr": m.lr,
        "seed": m.seed,
        "batch_size": m.batch_size,
    }
    cache = out / "baseline"
    if (cache / "model.json").exists() and not retrain:
        try:
            model, spec, metrics = load_checkpoint(cache)
            if metrics.get("compress_key") == key:
                return model, spec, splits
        except SlimtorchError:
            pass  # a damaged cache is simply retrained
    model, spec = _train_baseline(recipe, splits, progress, user_named)
    record = data_record(m.data, m.seed, splits)
    save_checkpoint(cache, model, spec, {"compress_key": key, **record}, overwrite=True)
    return model, spec, splits


def _train_baseline(
    recipe: Recipe, splits: Any, progress: bool, user_named: bool
) -> tuple[nn.Module, ModelSpec]:
    """A freshly initialized model of the recipe's ``[model]`` trained on ``splits``."""
    m = recipe.model
    c, h = splits.input_shape[0], splits.input_shape[-1]
    spec = make_spec(m.name, num_classes=splits.num_classes, in_channels=c, image_size=h)
    torch.manual_seed(m.seed)
    where = f"{recipe.source}: [model] name"
    model = create_model(spec.name, **spec.kwargs) if user_named else build_model(spec, where=where)
    train, val, _ = _loaders(splits, recipe)
    if progress:
        print(f"training the baseline {m.name} on {m.data} for {m.epochs} epochs")
    config = FitConfig(epochs=m.epochs, lr=m.lr, scheduler="cosine", seed=m.seed)
    fit(model, train, val, config, progress=progress, label="baseline")
    return model, spec


def _checkpoint_data(rec: Recipe, data: str | None, seed: int | None) -> Recipe:
    """The recipe with a ``--model`` checkpoint's recorded data and seed (what it was trained
    and split on) unless the caller gave them; given data must fit the checkpoint."""
    name = rec.model.name
    if not _is_checkpoint(name):
        return rec
    _model, spec, metrics = load_checkpoint(name)
    data, seed = recorded_split(metrics, name, data, seed)
    if data != metrics.get("data"):
        check_given_data(data, load_data(data, seed=seed), metrics, spec.kwargs, name)
    return replace(rec, model=replace(rec.model, data=data, seed=seed))


def _loaders(splits: Any, recipe: Recipe) -> Loaders:
    return make_loaders(splits, recipe.model.batch_size, seed=recipe.model.seed)


def compress(
    recipe: Recipe | str | Path = "default",
    *,
    model: str | None = None,
    data: str | None = None,
    out: str | Path = DEFAULT_OUT,
    epochs: int | None = None,
    stage_epochs: int | None = None,
    seed: int | None = None,
    retrain: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> CompressOutcome:
    """The main job (``slimtorch compress``) as a function.

    Args:
        recipe: a :class:`~slimtorch.compress.recipe.Recipe`, a TOML path or a shipped
            recipe name.
        model, data, epochs, seed: override the recipe's ``[model]`` section.
        out: output folder.
        stage_epochs: cap every stage's epochs (quick runs).
        retrain: train the baseline even if a matching one is cached in ``out/baseline``.
        progress: progress lines and printed tables.
        threads: torch threads for the latency figures (None: the current setting).

    Returns:
        A :class:`CompressOutcome`: the pipeline result, the summary (ratio, accuracies,
        whether the decoded weights equal the compressed ones bit for bit) and the paths.
    """
    user_named = model is not None or isinstance(recipe, Recipe)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    overrides = {"name": model, "data": data, "epochs": epochs, "seed": seed}
    section = replace(rec.model, **{k: v for k, v in overrides.items() if v is not None})
    rec = _checkpoint_data(replace(rec, model=section), data, seed)
    out = Path(out)
    base, spec, splits = _baseline(rec, out, retrain, progress, user_named)
    return _run(rec, base, spec, splits, out, stage_epochs, progress, threads)


def _run(
    rec: Recipe,
    base: nn.Module,
    spec: ModelSpec,
    splits: Any,
    out: Path,
    stage_epochs: int | None,
    progress: bool,
    threads: int | None = None,
) -> CompressOutcome:
    """Run the pipeline, decode and check its file, warn and report."""
    loaders = _loaders(splits, rec)
    recorded = data_record(rec.model.data, rec.model.seed, splits)
    result = run_pipeline(
        base,
        spec,
        rec,
        loaders,
        out / FILE_NAME,
        progress=progress,
        max_stage_epochs=stage_epochs,
        on_stage=_show if progress else None,
        threads=threads,
        file_metadata=recorded,  # the .slim file remembers its data
    )
    summary = _summary(rec, result)
    paths = []
    if result.file is not None:
        paths += _decode(result.file, result, loaders[2], out, recorded, summary)
    warnings = pipeline_warnings(result.records, rec.stages, splits.num_classes)
    summary["warnings"] = [w.to_dict() for w in warnings]
    summary["recipe_settings"] = rec.to_dict()
    paths += write_report(out, result, summary)
    return CompressOutcome(result, summary, paths)


def _show(record: StageRecord) -> None:
    print(
        f"  {record.stage}: test accuracy {record.test_accuracy:.4f}, "
        f"{record.size_bytes:,} bytes ({record.ratio:.1f}x)"
    )


def _summary(rec: Recipe, result: PipelineResult) -> dict[str, Any]:
    return {
        "model": rec.model.name,
        "data": rec.model.data,
        "recipe": rec.name,
        "original_bytes": result.original_bytes,
        "baseline_test_accuracy": result.records[0].test_accuracy,
        "compressed_test_accuracy": result.records[-1].test_accuracy,
        "threads": result.records[0].threads,
        "noisy_latency_stages": [r.stage for r in result.records if r.noisy],
    }


def _decode(
    file: CompressedSummary,
    result: PipelineResult,
    test: Any,
    out: Path,
    recorded: dict[str, Any],
    summary: dict[str, Any],
) -> list[Path]:
    """Decode ``file``, compare it with the compressed model bit for bit, re-evaluate it and
    save it as a checkpoint under ``out/decoded``; the figures go into ``summary``."""
    decoded, dspec, _ = load_compressed(file.path)
    want = result.model.state_dict()
    exact = all(same_bits(t, want[k]) for k, t in decoded.state_dict().items())
    acc = evaluate(decoded, test).accuracy
    metrics = {"decoded_from": str(file.path), "test_accuracy": acc, **recorded}
    folder = save_checkpoint(out / "decoded", decoded, dspec, metrics, overwrite=True)
    summary.update(
        file_bytes=file.file_bytes,
        header_bytes=file.header_bytes,
        ratio=round(result.original_bytes / file.file_bytes, 2),
        decoded_test_accuracy=acc,
        bit_exact=exact,
        accuracy_change_points=round(100 * (acc - summary["baseline_test_accuracy"]), 2),
    )
    return [file.path, folder]


def same_bits(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are equal bit for bit (fp32: -0.0 and NaN payloads too).

    Example:
        >>> same_bits(torch.tensor([0.0]), torch.tensor([-0.0]))
        False
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() and a.element_size() == 4:
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)
