"""Systems under test: turn what the user named into a callable the load generator drives.

An adapter recognizes a source string (``matches``) and loads it into a :class:`BenchTarget`
(the callable plus what the harness needs to know about it). The built-in ``model`` adapter
takes whatever ``slimtorch.resolve.resolve_model`` takes (zoo name, checkpoint folder,
``package.module:factory``). Other capabilities plug in their own, e.g. a compressed-file
decoder or an LLM generator, with :func:`register_sut_adapter`; adapters registered later are
tried first, the ``model`` adapter last.

Example:
    >>> target = load_target("lenet5")
    >>> target.kind, tuple(target.sut(torch.zeros(2, 1, 8, 8)).shape)
    ('classifier', (2, 10))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtorch.checkpoint import read_checkpoint_header
from slimtorch.data.record import DataRecord, artefact_record
from slimtorch.errors import ConfigError
from slimtorch.models import MODEL_NAMES
from slimtorch.resolve import resolve_model

KINDS = ("classifier", "generator")


@dataclass(frozen=True)
class LoadOptions:
    """What the harness knows when loading a target.

    Attributes:
        sample_shape: the data's per-sample shape (e.g. ``(1, 8, 8)``), or None.
        num_classes: classes in the data, or None.
        model_kwargs: construction arguments the user gave (``--norm``, ``--act``).
    """

    sample_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchTarget:
    """A system under test, ready to benchmark.

    Attributes:
        label: short name for reports.
        sut: ``classifier``: takes a stacked batch, returns logits ``[n, C]``;
            ``generator``: takes one prompt, yields tokens.
        kind: ``classifier`` or ``generator``.
        model: the underlying module, when there is one (never changed by the harness).
        prompts: ``generator``: the prompts to drive it with (its own data).
        perplexity: ``generator``: a callable returning the model's perplexity (accuracy mode).
        info: whatever else the adapter knows (format, construction arguments, data source).
    """

    label: str
    sut: Callable[[Any], Any]
    kind: str = "classifier"
    model: nn.Module | None = None
    prompts: Sequence[Any] = ()
    perplexity: Callable[[], float] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"{self.label}: kind must be one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class SUTAdapter:
    """How to recognize and load one kind of source, and read the data it was made with.

    ``recorded(source)`` returns the :class:`~slimtorch.data.record.DataRecord` the source
    carries (None: it records none, e.g. a zoo name); ``bench`` uses it when given no data.
    """

    name: str
    matches: Callable[[str], bool]
    load: Callable[[str, LoadOptions], BenchTarget]
    recorded: Callable[[str], DataRecord | None] = lambda _source: None


def module_sut(model: nn.Module) -> Callable[[Any], Any]:
    """A callable running ``model`` under ``torch.inference_mode``.

    The model must already be in eval mode: the harness never changes a model.

    Args:
        model: an ``nn.Module`` in eval mode.

    Returns:
        ``f(batch) -> model(batch)``.

    Example:
        >>> module_sut(nn.Linear(2, 3).eval())(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """
    if any(m.training for m in model.modules()):
        raise ConfigError("the model is in training mode; call model.eval() before benchmarking")

    def run(batch: Any) -> Any:
        with torch.inference_mode():
            return model(batch)

    return run


def _zoo_kwargs(options: LoadOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if options.num_classes is not None:
        kwargs["num_classes"] = options.num_classes
    shape = options.sample_shape
    if shape is not None and len(shape) == 3 and shape[1] == shape[2]:
        kwargs.update(in_channels=shape[0], image_size=shape[1])
    return {**kwargs, **options.model_kwargs}


def _load_model(source: str, options: LoadOptions) -> BenchTarget:
    if source in MODEL_NAMES:  # a bare zoo name (resolve_model warns if a folder shadows it)
        resolved = resolve_model(source, **_zoo_kwargs(options))
    else:
        resolved = resolve_model(source, **options.model_kwargs)
    info = {"source": source, "adapter": "model", "spec_kwargs": resolved.spec_kwargs}
    return BenchTarget(resolved.label, module_sut(resolved.model), "classifier",
                       resolved.model, info=info)  # fmt: skip


def checkpoint_record(path: str) -> DataRecord | None:
    """The data a checkpoint folder (or its ``model.json``) records, its header validated."""
    spec, metrics = read_checkpoint_header(path)  # the model is built once, by its loader
    return artefact_record(metrics, spec.kwargs, path)


def _recorded_model(source: str) -> DataRecord | None:
    if source in MODEL_NAMES or not Path(source).exists():
        return None  # a zoo name or a factory: built for the data, records none
    return checkpoint_record(source)


MODEL_ADAPTER = SUTAdapter("model", lambda _source: True, _load_model, _recorded_model)
_ADAPTERS: list[SUTAdapter] = []


def register_sut_adapter(adapter: SUTAdapter) -> None:
    """Add an adapter; it is tried before those registered earlier and before ``model``.

    Args:
        adapter: the adapter; one with the same name replaces the old one.

    Example:
        >>> toy = SUTAdapter("toy", lambda s: s.startswith("toy:"),
        ...                  lambda s, o: BenchTarget(s, lambda b: b))
        >>> register_sut_adapter(toy); load_target("toy:x").label
        'toy:x'
        >>> unregister_sut_adapter("toy")
    """
    unregister_sut_adapter(adapter.name)
    _ADAPTERS.insert(0, adapter)


def unregister_sut_adapter(name: str) -> None:
    """Remove the adapter called ``name`` (no error when absent)."""
    _ADAPTERS[:] = [a for a in _ADAPTERS if a.name != name]


def sut_adapters() -> tuple[SUTAdapter, ...]:
    """Adapters in the order they are tried (``model`` last)."""
    return (*_ADAPTERS, MODEL_ADAPTER)


def load_target(source: str | Path, options: LoadOptions | None = None) -> BenchTarget:
    """Load ``source`` with the first adapter that matches it.

    Args:
        source: what the user typed (zoo name, checkpoint folder, factory, or anything a
            registered adapter understands).
        options: data shape, classes and model arguments.

    Returns:
        The ``BenchTarget``.
    """
    text, options = str(source), options or LoadOptions()
    for adapter in sut_adapters():
        if adapter.matches(text):
            return adapter.load(text, options)
    raise ConfigError(f"{text}: no benchmark adapter understands this source")  # unreachable


def recorded_data(source: str | Path) -> DataRecord | None:
    """The data ``source`` was made with, as its adapter reads it (None: it records none).

    Example:
        >>> recorded_data("lenet5") is None
        True
    """
    text = str(source)
    for adapter in sut_adapters():
        if adapter.matches(text):
            return adapter.recorded(text)
    return None  # unreachable: the model adapter matches everything
