"""``slimtorch compress``: the main job. Train (or reuse) a model, run a recipe, write the
compressed file, decode it, re-evaluate, report.

With no arguments it compresses LeNet-300-100 on the built-in digits with the ``default``
recipe into ``./slimtorch-out/``: ``baseline/`` (the cached trained model), ``model.slim`` (the
compressed file), ``decoded/`` (the file decoded back into a safetensors checkpoint),
``report.json``, ``report.md`` and PNG plots. :func:`compress` is the same job in Python.

Example:
    >>> import argparse
    >>> sub = argparse.ArgumentParser().add_subparsers()
    >>> register(sub)
    >>> "compress" in sub.choices
    True
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimtorch.profile.cli import add_threads_option, threads_from_args

DEFAULT_OUT = Path("slimtorch-out")
FILE_NAME = "model.slim"


@dataclass(frozen=True)
class CompressOutcome:
    """What :func:`compress` produced: the pipeline result and the decoded model's checks."""

    result: Any  # PipelineResult
    summary: dict[str, Any]
    paths: list[Path]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compress`` subcommand."""
    p = subparsers.add_parser(
        "compress",
        help="Deep Compression end to end: prune, quantize, Huffman-encode, decode, report",
        description="Run a compression recipe (TOML) on a trained model: train the baseline "
        "(or reuse the one cached under --out), run every stage with its measurements, write "
        "the compressed file, decode it back, re-evaluate it and report.",
    )
    p.add_argument(
        "--recipe",
        default="default",
        help="a recipe TOML file or a shipped recipe: default, lenet300-paper, lenet5-paper "
        "(default: default)",
    )
    p.add_argument(
        "--model", default=None, help="zoo name or checkpoint folder (default: recipe's)"
    )
    p.add_argument(
        "--data", default=None, help="data source, e.g. digits, digits:28 (default: recipe's)"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default ./slimtorch-out)"
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="baseline training epochs (default: recipe's)"
    )
    p.add_argument(
        "--stage-epochs",
        type=int,
        default=None,
        help="cap every stage's fine-tuning epochs at this many (quick runs)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed (default: recipe's)")
    p.add_argument("--retrain", action="store_true", help="ignore a cached baseline; train again")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    add_threads_option(p, "each stage's latency figure")
    p.set_defaults(func=_cmd_compress)


def _baseline(
    recipe: Any, out: Path, retrain: bool, progress: bool, user_named: bool = False
) -> tuple[Any, Any, Any]:
    """(model, spec, splits): a checkpoint given as --model, the cache, or a fresh training.

    ``user_named``: the model name came from the caller (``--model`` or a Recipe object), so a
    factory is theirs to run; a name read from a recipe file obeys the trust policy."""
    from slimtorch.checkpoint import load_checkpoint, save_checkpoint
    from slimtorch.data import load_data
    from slimtorch.data.record import data_record
    from slimtorch.errors import SlimtorchError
    from slimtorch.models import build_model, create_model, make_spec
    from slimtorch.resolve import is_zoo_name
    from slimtorch.train import FitConfig, fit

    m = recipe.model
    splits = load_data(m.data, seed=m.seed)
    if not is_zoo_name(m.name) and (Path(m.name).is_dir() or m.name.endswith(".json")):
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
    c, h = splits.input_shape[0], splits.input_shape[-1]
    spec = make_spec(m.name, num_classes=splits.num_classes, in_channels=c, image_size=h)
    import torch

    torch.manual_seed(m.seed)
    where = f"{recipe.source}: [model] name"
    model = create_model(spec.name, **spec.kwargs) if user_named else build_model(spec, where=where)
    train, val, _ = _loaders(splits, recipe)
    if progress:
        print(f"training the baseline {m.name} on {m.data} for {m.epochs} epochs")
    fit(
        model,
        train,
        val,
        FitConfig(epochs=m.epochs, lr=m.lr, scheduler="cosine", seed=m.seed),
        progress=progress,
        label="baseline",
    )
    record = data_record(m.data, m.seed, splits)
    save_checkpoint(cache, model, spec, {"compress_key": key, **record}, overwrite=True)
    return model, spec, splits


def _checkpoint_data(rec: Any, data: str | None, seed: int | None) -> Any:
    """The recipe with a ``--model`` checkpoint's recorded data and seed (what it was trained
    and split on) unless the caller gave them; given data must fit the checkpoint."""
    from slimtorch.checkpoint import load_checkpoint
    from slimtorch.data import load_data, recorded_split
    from slimtorch.data.record import check_given_data
    from slimtorch.resolve import is_zoo_name

    name = rec.model.name
    if is_zoo_name(name) or not (Path(name).is_dir() or name.endswith(".json")):
        return rec
    _model, spec, metrics = load_checkpoint(name)
    data, seed = recorded_split(metrics, name, data, seed)
    if data != metrics.get("data"):
        check_given_data(data, load_data(data, seed=seed), metrics, spec.kwargs, name)
    return replace(rec, model=replace(rec.model, data=data, seed=seed))


def _loaders(splits: Any, recipe: Any) -> tuple[Any, Any, Any]:
    from slimtorch.data import make_loaders

    return make_loaders(splits, recipe.model.batch_size, seed=recipe.model.seed)


def compress(
    recipe: Any = "default",
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
        recipe: a :class:`~slimtorch.recipe.Recipe`, a TOML path or a shipped recipe name.
        model, data, epochs, seed: override the recipe's ``[model]`` section.
        out: output folder.
        stage_epochs: cap every stage's epochs (quick runs).
        retrain: train the baseline even if a matching one is cached in ``out/baseline``.
        progress: progress bars and printed tables.
        threads: torch threads for the latency figures (None: the current setting).

    Returns:
        A :class:`CompressOutcome`: the pipeline result, the summary (ratio, accuracies,
        whether the decoded weights equal the compressed ones bit for bit) and the paths.
    """
    from slimtorch.recipe import Recipe, load_recipe

    user_named = model is not None or isinstance(recipe, Recipe)
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    overrides = {"name": model, "data": data, "epochs": epochs, "seed": seed}
    section = replace(rec.model, **{k: v for k, v in overrides.items() if v is not None})
    rec = _checkpoint_data(replace(rec, model=section), data, seed)
    out = Path(out)
    base, spec, splits = _baseline(rec, out, retrain, progress, user_named)
    return _run(rec, base, spec, splits, out, stage_epochs, progress, threads)


def _run(rec, base, spec, splits, out, stage_epochs, progress, threads=None) -> CompressOutcome:

    from slimtorch.accuracy_check import pipeline_warnings
    from slimtorch.checkpoint import save_checkpoint
    from slimtorch.compress_report import write_report
    from slimtorch.data.record import data_record
    from slimtorch.encode import load_compressed
    from slimtorch.pipeline import run_pipeline
    from slimtorch.train import evaluate

    loaders = _loaders(splits, rec)
    recorded = data_record(rec.model.data, rec.model.seed, splits)

    def show(record: Any) -> None:
        if progress:
            print(
                f"  {record.stage}: test accuracy {record.test_accuracy:.4f}, "
                f"{record.size_bytes:,} bytes ({record.ratio:.1f}x)"
            )

    result = run_pipeline(
        base,
        spec,
        rec,
        loaders,
        out / FILE_NAME,
        progress=progress,
        max_stage_epochs=stage_epochs,
        on_stage=show,
        threads=threads,
        file_metadata=recorded,  # the .slim file remembers its data
    )
    summary: dict[str, Any] = {
        "model": rec.model.name,
        "data": rec.model.data,
        "recipe": rec.name,
        "original_bytes": result.original_bytes,
        "baseline_test_accuracy": result.records[0].test_accuracy,
        "compressed_test_accuracy": result.records[-1].test_accuracy,
        "threads": result.records[0].threads,
        "noisy_latency_stages": [r.stage for r in result.records if r.noisy],
    }
    paths = []
    if result.file is not None:
        decoded, dspec, _ = load_compressed(result.file.path)
        want = result.model.state_dict()
        exact = all(_same_bits(t, want[k]) for k, t in decoded.state_dict().items())
        acc = evaluate(decoded, loaders[2]).accuracy
        paths += [
            result.file.path,
            save_checkpoint(
                out / "decoded",
                decoded,
                dspec,
                {"decoded_from": str(result.file.path), "test_accuracy": acc, **recorded},
                overwrite=True,
            ),
        ]
        summary.update(
            file_bytes=result.file.file_bytes,
            header_bytes=result.file.header_bytes,
            ratio=round(result.original_bytes / result.file.file_bytes, 2),
            decoded_test_accuracy=acc,
            bit_exact=exact,
            accuracy_change_points=round(100 * (acc - summary["baseline_test_accuracy"]), 2),
        )
    summary["warnings"] = [
        w.to_dict() for w in pipeline_warnings(result.records, rec.stages, splits.num_classes)
    ]
    summary["recipe_settings"] = rec.to_dict()
    paths += write_report(out, result, summary)
    return CompressOutcome(result, summary, paths)


def _same_bits(a: Any, b: Any) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() and a.element_size() == 4:
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)


def _cmd_compress(args: argparse.Namespace) -> int:
    from slimtorch.compress_report import stage_table
    from slimtorch.errors import ConfigError
    from slimtorch.profile.output import wide_console

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file; expected a folder")
    for name in ("epochs", "stage_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    outcome = compress(
        args.recipe,
        model=args.model,
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        stage_epochs=args.stage_epochs,
        seed=args.seed,
        retrain=args.retrain,
        progress=not args.quiet,
        threads=threads_from_args(args),
    )
    s = outcome.summary
    if not args.quiet:
        from slimtorch.profile.noise import noise_hint, threads_text

        console = wide_console()
        threads = threads_text(s["threads"])
        title = f"{s['model']} on {s['data']}: {s['recipe']}, latency on {threads}"
        console.print(stage_table(outcome.result.records, title, s["warnings"]))
        hint = noise_hint([r.noise for r in outcome.result.records])
        if hint:
            console.print(f"hint: {hint}", markup=False, highlight=False)
    elif s["warnings"]:
        print("\n".join(f"warning: {w['message']}" for w in s["warnings"]))
    if "ratio" in s:
        print(
            f"compressed {s['original_bytes']:,} fp32 bytes -> {s['file_bytes']:,} bytes "
            f"({s['ratio']:.1f}x); test accuracy {s['baseline_test_accuracy']:.4f} -> "
            f"{s['decoded_test_accuracy']:.4f} decoded ({s['accuracy_change_points']:+.2f} "
            f"points); decoded weights bit-exact: {s['bit_exact']}"
        )
    print(f"wrote {args.out}/ ({', '.join(p.name for p in outcome.paths)})")
    return 0
