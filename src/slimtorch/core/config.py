"""Reading a config dataclass back from its dictionary: one check for every ``from_dict``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     lr: float = 0.1
    >>> config_values(Demo, {"version": 1, "lr": 0.5}, version=1)
    {'lr': 0.5}
    >>> config_values(Demo, {"lr": 0.5, "epochs": 3})
    Traceback (most recent call last):
    ...
    slimtorch.errors.ConfigError: Demo: unknown field(s) epochs
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from slimtorch.errors import ConfigError


def config_values(cls: type, d: Mapping[str, Any], version: int | None = None) -> dict[str, Any]:
    """The field values of ``d`` for ``cls(**values)``, checked.

    Args:
        cls: a config dataclass.
        d: what its ``to_dict`` wrote (JSON, TOML, a state file).
        version: the newest schema version this code reads; the ``version`` key is then
            removed (None: ``cls`` keeps ``version`` as an ordinary field, if it has one).

    Raises:
        ConfigError: ``d`` is not a mapping, names a field ``cls`` does not have, or has a
            newer version.
    """
    name = cls.__name__
    if not isinstance(d, Mapping):
        raise ConfigError(f"{name}: expected a table of fields, got {type(d).__name__}")
    values = dict(d)
    if version is not None:
        found = values.pop("version", version)
        if not isinstance(found, int) or isinstance(found, bool) or found > version:
            raise ConfigError(f"{name} version {found!r} is newer than {version}")
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"{name}: unknown field(s) {', '.join(unknown)}")
    return values


def is_int(x: object, low: int = 0) -> bool:
    """An ``int`` (not a ``bool``) of at least ``low``."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def check_fields(config: object, checks: Iterable[tuple[str, bool, str]]) -> None:
    """Raise for the first ``(field, ok, expected)`` that is not ok, naming the field.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Demo:
        ...     epochs: int = -1
        >>> check_fields(Demo(), [("epochs", False, "an int >= 0")])
        Traceback (most recent call last):
        ...
        slimtorch.errors.ConfigError: Demo.epochs: expected an int >= 0, got -1
    """
    for name, ok, expected in checks:
        if not ok:
            value = getattr(config, name)
            raise ConfigError(f"{type(config).__name__}.{name}: expected {expected}, got {value!r}")
