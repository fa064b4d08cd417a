"""Model names -> factories, ``create_model``, and the JSON-serializable ``ModelSpec``.

A model is named either by a zoo name (``MODEL_NAMES``) or by ``"package.module:factory"``.
A ``ModelSpec`` records the name and every argument, so ``build_model(spec)`` rebuilds the same
architecture (weights come from a checkpoint, see ``slimtorch.checkpoint``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from slimtorch.errors import ConfigError, ModelError, SlimtorchError
from slimtorch.models.layers import check_act, check_norm
from slimtorch.models.lenet import lenet5, lenet300
from slimtorch.models.mobilenetv2 import mobilenetv2
from slimtorch.models.resnet import resnet
from slimtorch.models.trust import check_spec_name, resolve_trust, trust_code_scope
from slimtorch.models.vgg import vgg

MODEL_NAMES: tuple[str, ...] = ("lenet300", "lenet5", "vgg", "mobilenetv2", "resnet")
_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "lenet300": lenet300,
    "lenet5": lenet5,
    "vgg": vgg,
    "mobilenetv2": mobilenetv2,
    "resnet": resnet,
}
_SHAPE_ARGS = ("num_classes", "in_channels", "image_size")
ZOO_SHAPE_DEFAULTS: dict[str, int] = {"num_classes": 10, "in_channels": 1, "image_size": 8}


def default_norm_act(name: str) -> tuple[str, str]:
    """The ``(norm, act)`` a zoo model uses when none is given.

    Example:
        >>> default_norm_act("mobilenetv2")
        ('batch', 'relu6')
    """
    params = inspect.signature(_zoo_factory(name)).parameters
    return params["norm"].default, params["act"].default


def _zoo_factory(name: str) -> Callable[..., nn.Module]:
    if name not in _FACTORIES:
        raise ModelError(
            f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)} "
            "or 'package.module:factory'"
        )
    return _FACTORIES[name]


def _import_factory(path: str) -> Callable[..., Any]:
    """Resolve ``"package.module:factory"`` to a callable, or raise ModelError."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model path {path!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = "" if "." in sys.path else "; a module in the working folder needs PYTHONPATH=."
        raise ModelError(
            f"cannot import module {module_name!r} for model {path!r}: {exc}{hint}"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"module {module_name!r} has no callable {attr!r} (model {path!r})")
    return factory


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    """True when ``factory`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _call(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> nn.Module:
    """Call ``factory(**kwargs)``; turn its failures into one-line ModelErrors."""
    try:
        model = factory(**kwargs)
    except SlimtorchError:
        raise
    except Exception as exc:  # a factory can fail in any way; report it on one line
        raise ModelError(f"model {name!r} failed to build: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory {name!r} returned {type(model).__name__}, not nn.Module")
    return model


def _check_shape_args(shape: dict[str, Any]) -> None:
    for arg, value in shape.items():
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{arg} must be a positive int, got {value!r}")


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    norm: str | None = None,
    act: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo model by name, or call a user factory given as ``"package.module:factory"``.

    For a factory path, ``factory`` receives only what the caller gave: the extra ``kwargs``,
    and ``norm``, ``act``, ``num_classes``, ``in_channels``, ``image_size`` when given (not
    None) and its signature names them or has ``**kwargs``; its own defaults hold otherwise.
    A factory path is the caller's code to run: names read from files go through
    :func:`build_model`, which applies the trust policy.

    Args:
        name: one of ``MODEL_NAMES`` or ``"package.module:factory"``.
        num_classes: output classes (zoo default 10).
        in_channels: input channels (zoo default 1).
        image_size: input height and width, inputs are square (zoo default 8).
        norm: one of ``layers.NORMS``; None means the model's default (see
            ``default_norm_act``).
        act: one of ``layers.ACTS``; None means the model's default.
        **kwargs: model-specific options (``blocks``, ``width``, ``cfg``, ``settings``, ...).

    Returns:
        The model, freshly initialized from torch's global RNG, in training mode.

    Raises:
        ModelError: unknown name, unimportable module, missing factory, unknown option, or
            the factory raised.
        ConfigError: an option is out of range (unknown norm/act, bad sizes).

    Example:
        >>> import torch
        >>> create_model("resnet", image_size=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    shape = dict(zip(_SHAPE_ARGS, (num_classes, in_channels, image_size), strict=True))
    _check_shape_args(shape)
    if ":" in name:
        factory = _import_factory(name)
        given = {k: v for k, v in {**shape, "norm": norm, "act": act}.items() if v is not None}
        given = {k: v for k, v in given.items() if k in ("norm", "act") or _accepts(factory, k)}
        return _call(name, factory, {**given, **kwargs})
    shape = {k: ZOO_SHAPE_DEFAULTS[k] if v is None else v for k, v in shape.items()}
    factory = _zoo_factory(name)
    default_norm, default_act = default_norm_act(name)
    norm_act = {"norm": check_norm(norm or default_norm), "act": check_act(act or default_act)}
    unknown = sorted(set(kwargs) - set(inspect.signature(factory).parameters))
    if unknown:
        raise ModelError(f"model {name!r} got unknown option(s) {', '.join(unknown)}")
    return _call(name, factory, {**shape, **norm_act, **kwargs})


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a model: a name for ``create_model`` and all of its arguments.

    ``kwargs`` is stored as its JSON round trip (tuples become lists), so a spec equals the
    spec read back from JSON. Use :func:`make_spec` to fill in the defaults.

    Example:
        >>> spec = ModelSpec("lenet5", {"num_classes": 10})
        >>> ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        True
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"ModelSpec.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.kwargs, dict):
            raise ConfigError(f"ModelSpec.kwargs must be a dict, got {type(self.kwargs).__name__}")
        try:
            normalized = json.loads(json.dumps(self.kwargs, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"ModelSpec.kwargs must be JSON-serializable: {exc}") from exc
        object.__setattr__(self, "kwargs", normalized)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "kwargs": {...}}``, ready for ``json.dumps``."""
        return {"name": self.name, "kwargs": json.loads(json.dumps(self.kwargs))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; raises ConfigError on a malformed dict."""
        if not isinstance(d, dict) or "name" not in d:
            raise ConfigError(f"a model spec needs a 'name' and 'kwargs', got {d!r}")
        extra = sorted(set(d) - {"name", "kwargs"})
        if extra:
            raise ConfigError(f"unknown model spec field(s): {', '.join(extra)}")
        return cls(name=d["name"], kwargs=d.get("kwargs", {}))


def make_spec(name: str, **kwargs: Any) -> ModelSpec:
    """A complete spec for ``create_model(name, **kwargs)``: shape args, norm and act filled in.

    Example:
        >>> make_spec("resnet").kwargs["norm"]
        'batch'
    """
    if ":" in name:  # a factory keeps its own defaults for what the caller did not give
        return ModelSpec(name, {k: v for k, v in kwargs.items() if v is not None})
    full: dict[str, Any] = {**ZOO_SHAPE_DEFAULTS, **kwargs}
    default_norm, default_act = default_norm_act(name)
    full["norm"] = full.get("norm") or default_norm
    full["act"] = full.get("act") or default_act
    return ModelSpec(name, full)


def build_model(spec: ModelSpec, *, trust_code: bool | None = None, where: str = "") -> nn.Module:
    """Build the architecture a spec read from a file describes (fresh weights).

    A spec from a file may name only zoo models and slimtorch's own architectures unless
    ``trust_code`` allows a third-party ``module:factory`` (see :mod:`slimtorch.models.trust`);
    nested specs (a pruned model's base) are held to the same policy. To build a factory you
    name yourself, call :func:`create_model`.

    Args:
        spec: the spec, e.g. from :func:`make_spec` or a checkpoint's ``model.json``.
        trust_code: allow a third-party factory; None means the policy in force (the CLI's
            ``--trust-code``, else False).
        where: the file the spec came from, for error messages.

    Returns:
        ``create_model(spec.name, **spec.kwargs)``.

    Raises:
        ModelError: the spec names a factory the policy refuses, or building fails.

    Example:
        >>> import torch
        >>> build_model(make_spec("lenet5", image_size=28))(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    trust = resolve_trust(trust_code)
    check_spec_name(spec.name, trust_code=trust, where=where)
    with trust_code_scope(trust):
        return create_model(spec.name, **spec.kwargs)
