"""Turn what a user typed (a zoo name, a checkpoint path, ``package.module:factory``) into a model.

The CLI and the Python API share this, so ``slimtorch profile X`` and
``slimtorch.resolve_model("X")`` mean the same thing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtorch.checkpoint import load_checkpoint
from slimtorch.errors import ConfigError, ModelError, first_line
from slimtorch.models import MODEL_NAMES, create_model

DEFAULT_IMAGE_SIZE = 8
DEFAULT_IN_CHANNELS = 1


@dataclass(frozen=True)
class ResolvedModel:
    """A model plus what is known about the input it expects.

    Attributes:
        model: the module, in eval mode.
        label: a short name for reports (zoo name, checkpoint folder, factory path).
        source: what the user passed.
        input_shape: a default example input shape with batch 1, or None when unknown
            (factories: the user must pass ``--input-shape``).
        spec_kwargs: the construction arguments, when known.
    """

    model: nn.Module
    label: str
    source: str
    input_shape: tuple[int, ...] | None
    spec_kwargs: dict[str, Any]


def _zoo_input_shape(kwargs: dict[str, Any]) -> tuple[int, ...]:
    c = int(kwargs.get("in_channels", DEFAULT_IN_CHANNELS))
    s = int(kwargs.get("image_size", DEFAULT_IMAGE_SIZE))
    return (1, c, s, s)


def is_zoo_name(source: str | Path) -> bool:
    """True when ``source`` means a zoo model: a bare zoo name, never a path.

    A bare name (``lenet300``) means the zoo even when a folder of that name exists in the
    working directory (an earlier ``--out lenet300``, say); a warning then says how to name the
    folder instead (``./lenet300``). Anything with a path separator is a path.

    Example:
        >>> is_zoo_name("lenet300"), is_zoo_name("./lenet300"), is_zoo_name("runs/vgg")
        (True, False, False)
    """
    text = str(source)
    if text not in MODEL_NAMES:
        return False
    if Path(text).exists():
        warnings.warn(
            f"{text!r} names the zoo model; the {text} in the working folder is not used "
            f"(write ./{text} to load it)",
            stacklevel=2,
        )
    return True


def resolve_model(source: str | Path, **model_kwargs: Any) -> ResolvedModel:
    """Build or load the model named by ``source``.

    Args:
        source: a zoo name (``lenet5``; a bare zoo name always means the zoo, see
            :func:`is_zoo_name`), a checkpoint folder or its ``model.json`` /
            ``model.safetensors``, or ``package.module:factory`` (yours to run: it is imported
            and called).
        **model_kwargs: construction arguments for zoo names and factories (ignored, with an
            error, for checkpoints, which carry their own).

    Returns:
        A ``ResolvedModel``.

    Raises:
        ModelError: the name is unknown, the path holds no checkpoint, or the factory fails.

    Example:
        >>> resolve_model("lenet5").input_shape
        (1, 1, 8, 8)
    """
    text = str(source)
    path = Path(text)
    zoo = is_zoo_name(text)
    if path.exists() and not zoo:
        return _from_checkpoint(path, text, model_kwargs)
    if zoo or ":" in text:
        model = create_model(text, **model_kwargs).eval()
        shape = _zoo_input_shape(model_kwargs) if text in MODEL_NAMES else None
        if shape is None and "image_size" in model_kwargs and "in_channels" in model_kwargs:
            shape = _zoo_input_shape(model_kwargs)
        return ResolvedModel(model, text, text, shape, dict(model_kwargs))
    raise ModelError(
        f"{text!r} is not a zoo model ({', '.join(MODEL_NAMES)}), an existing checkpoint path, "
        "or a package.module:factory"
    )


def _from_checkpoint(path: Path, text: str, model_kwargs: dict[str, Any]) -> ResolvedModel:
    if model_kwargs:
        raise ConfigError(
            f"{text}: a checkpoint carries its own construction arguments; "
            f"drop {', '.join('--' + k.replace('_', '-') for k in model_kwargs)}"
        )
    model, spec, _ = load_checkpoint(path)
    label = (path if path.is_dir() else path.parent).name or text
    shape = _zoo_input_shape(spec.kwargs) if ":" not in spec.name else None
    if ":" in spec.name and "image_size" in spec.kwargs and "in_channels" in spec.kwargs:
        shape = _zoo_input_shape(spec.kwargs)
    return ResolvedModel(model.eval(), label, text, shape, dict(spec.kwargs))


INPUT_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def example_input(
    resolved: ResolvedModel, shape: tuple[int, ...] | None = None, dtype: str = "float32"
) -> torch.Tensor:
    """An example input for ``resolved``, checked by one forward pass.

    Args:
        resolved: the model.
        shape: explicit input shape (with batch); default: the model's own.
        dtype: ``float32`` (seeded uniform values in [0, 1)) or ``int64`` (zeros: valid token
            ids or indices for any vocabulary).

    Returns:
        A float32 tensor of that shape.

    Raises:
        ConfigError: no shape given and none known.
        ModelError: the model fails on this shape (one line, naming the shape).
    """
    shape = shape or resolved.input_shape
    if shape is None:
        raise ConfigError(
            f"{resolved.source}: the input shape is not known for a factory model; "
            "pass --input-shape, e.g. --input-shape 1,3,32,32"
        )
    if dtype not in INPUT_DTYPES:
        raise ConfigError(
            f"--input-dtype: expected one of {', '.join(INPUT_DTYPES)}, got {dtype!r}"
        )
    if INPUT_DTYPES[dtype].is_floating_point:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    else:
        x = torch.zeros(shape, dtype=INPUT_DTYPES[dtype])
    _check_runs(resolved, x)
    return x


def _check_runs(resolved: ResolvedModel, x: torch.Tensor) -> None:
    was_training = resolved.model.training
    resolved.model.eval()
    try:
        with torch.no_grad():
            resolved.model(x)
    except Exception as exc:  # the user's model: any failure is reported in one line
        first = first_line(exc)
        raise ModelError(
            f"{resolved.label} fails on input shape {'x'.join(map(str, x.shape))}: {first}"
        ) from None
    finally:
        resolved.model.train(was_training)
