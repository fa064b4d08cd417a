"""Command-line options generated from a config dataclass, so the CLI cannot drift from the API.

A subcommand declares which config fields it offers::

    PTQ = ConfigOptions(PTQConfig, only=("weight_bits", "observer"), flags={"weight_bits": "--wb"})
    PTQ.add(parser)            # --wb, --observer: type, default and help from PTQConfig
    config = PTQ.build(args)   # PTQConfig(weight_bits=args.wb, observer=args.observer)

Each option's type comes from the field's annotation (``bool`` becomes ``--x/--no-x``, tuples of
strings a repeatable option, tuples of ints a comma list, a granularity its spelling), its
default *is* the field's default, and its help is the field's entry in the class docstring
(``Attributes:`` or ``Args:``) or ``field(metadata={"help": ...})``. Where two configs share a
flag (``--bits`` for linear and k-means quantization), the option's default is
``CONFIG_DEFAULT``: "the chosen config's own default", each listed in the help. Every
generated action carries ``config_fields`` (``(cls, field)`` pairs), which
``tests/cli/test_defaults.py`` checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slimtorch.core.granularity import GRANULARITY_TYPES, format_granularity, parse_granularity
from slimtorch.errors import ConfigError

_SECTION = re.compile(r"^\s*(Attributes|Args):\s*$")


class _ConfigDefault:
    """The default of an option two configs share: each config's own default applies."""

    def __repr__(self) -> str:
        return "CONFIG_DEFAULT"


CONFIG_DEFAULT: Any = _ConfigDefault()


@dataclass(frozen=True)
class Custom:
    """How one field is typed on the command line when its annotation does not say.

    ``parse``: text -> value (raise ``ConfigError`` or ``ValueError`` for bad text); ``text``:
    value -> how the default is shown; ``choices`` / ``metavar`` for ``--help``.
    """

    parse: Callable[[str], Any]
    text: Callable[[Any], str] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


@dataclass(frozen=True)
class ConfigOptions:
    """The options a subcommand takes from one config class.

    Args:
        cls: a config dataclass.
        only: the fields offered, in this order (default: every field with a help text,
            except ``version``).
        skip: fields not offered (set by the subcommand itself).
        prefix: prepended to every flag and dest (``"teacher-"`` gives ``--teacher-lr``).
        flags: field -> flag for fields whose flag is not ``--field-name``.
        custom: field -> :class:`Custom` for fields typed on the command line differently.
        group: an argument-group title for ``--help`` (default: the class name).
    """

    cls: type
    only: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    prefix: str = ""
    flags: Mapping[str, str] = field(default_factory=dict)
    custom: Mapping[str, Custom] = field(default_factory=dict)
    group: str | None = None

    def fields(self) -> list[dataclasses.Field]:
        """The offered fields, in order."""
        by_name = {f.name: f for f in dataclasses.fields(self.cls)}
        docs = field_docs(self.cls)
        if self.only is not None:
            unknown = [n for n in self.only if n not in by_name]
            if unknown:
                raise TypeError(f"{self.cls.__name__} has no field(s) {unknown}")
            names = list(self.only)
        else:
            names = [n for n in by_name if n != "version" and (n in docs or _meta_help(by_name[n]))]
        return [by_name[n] for n in names if n not in self.skip]

    def flag(self, name: str) -> str:
        return self.flags.get(name, "--" + (self.prefix + name).replace("_", "-"))

    def dest(self, name: str) -> str:
        return self.flag(name).lstrip("-").replace("-", "_")

    def add(self, parser: argparse.ArgumentParser) -> None:
        """Add one option per offered field to ``parser`` (in an argument group)."""
        title = self.group or f"{self.cls.__name__} options"
        group = _group(parser, title)
        docs = field_docs(self.cls)
        hints = _hints(self.cls)
        for f in self.fields():
            help_text = (_meta_help(f) or docs.get(f.name) or f.name.replace("_", " ")).rstrip(".")
            default = field_default(f)
            existing = parser._option_string_actions.get(self.flag(f.name))
            if existing is not None:
                _share(existing, self.cls, f.name, default, self._text(f, default))
                continue
            kwargs = self._kwargs(f, hints[f.name], default, help_text)
            action = group.add_argument(self.flag(f.name), dest=self.dest(f.name), **kwargs)
            action.config_fields = [(self.cls, f.name)]
            action.base_help = help_text
            action.shown_defaults = [(self.cls.__name__, self._text(f, default), default)]

    def build(self, args: argparse.Namespace, **overrides: Any) -> Any:
        """The config from parsed ``args`` (each offered field, unless ``CONFIG_DEFAULT``), then
        ``overrides``.

        Raises:
            ConfigError: the config refuses a value; the message names the option.
        """
        kwargs: dict[str, Any] = {}
        for f in self.fields():
            value = getattr(args, self.dest(f.name), CONFIG_DEFAULT)
            if value is not CONFIG_DEFAULT:
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        kwargs.update(overrides)
        return self.cls(**kwargs)

    def _text(self, f: dataclasses.Field, default: Any) -> str:
        if f.name in self.custom:
            return self.custom[f.name].text(default)
        return _default_text(default)

    def _kwargs(self, f: dataclasses.Field, hint: Any, default: Any, help_text: str) -> dict:
        if f.name in self.custom:
            c = self.custom[f.name]
            shown = c.text(default)
            return dict(
                type=_typed(c.parse, self.flag(f.name)),
                default=default,
                choices=None,
                metavar=c.metavar or (("{" + ",".join(c.choices) + "}") if c.choices else None),
                help=f"{help_text} (default {shown})",
            )
        return _kwargs_for(hint, default, help_text, self.flag(f.name), _meta(f))


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (calling its ``default_factory``)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name} has no default; a CLI option needs one")


def _meta(f: dataclasses.Field) -> Mapping[str, Any]:
    return f.metadata or {}


def _meta_help(f: dataclasses.Field) -> str | None:
    return _meta(f).get("help")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` / ``Args:`` section of ``cls``'s docstring.

    Example:
        >>> from slimtorch.prune.config import PruneConfig
        >>> field_docs(PruneConfig)["sparsity"].startswith("the target fraction")
        True
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    docs: dict[str, str] = {}
    inside, indent, name = False, None, None
    for line in lines:
        if _SECTION.match(line):
            inside, indent, name = True, None, None
            continue
        if not inside:
            continue
        if not line.strip():
            name = None
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            inside = False
            continue
        indent = depth if indent is None else indent
        m = re.match(r"(\w+)(?: \([^)]*\))?:\s*(.*)$", line.strip())
        if depth == indent and m:
            name = m.group(1)
            docs[name] = m.group(2)
        elif name is not None:
            docs[name] = f"{docs[name]} {line.strip()}".strip()
    return {k: _rst_to_plain(v) for k, v in docs.items()}


def _rst_to_plain(text: str) -> str:
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)  # :func:`x` -> x
    return text.replace("``", "").replace("%", "%%")  # argparse formats help with %


def _group(parser: argparse.ArgumentParser, title: str) -> Any:
    for g in parser._action_groups:
        if g.title == title:
            return g
    return parser.add_argument_group(title)


def _share(action: argparse.Action, cls: type, name: str, default: Any, shown: str) -> None:
    """A second config takes the same flag: where the defaults differ, the option's default
    becomes None ("the chosen config's own default") and the help lists each."""
    action.config_fields.append((cls, name))
    action.shown_defaults.append((cls.__name__, shown, default))
    if len({repr(d) for _, _, d in action.shown_defaults}) > 1:
        listed = ", ".join(f"{text} for {owner}" for owner, text, _ in action.shown_defaults)
        action.help = f"{action.base_help} (default {listed})"
        action.default = CONFIG_DEFAULT


def _default_text(default: Any) -> str:
    if isinstance(default, GRANULARITY_TYPES):
        return format_granularity(default)
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple | list):
        return ",".join(map(str, default)) or "none"
    return "none" if default is None else str(default)


def _typed(parse: Callable[[str], Any], flag: str) -> Callable[[str], Any]:
    """An argparse ``type`` whose ``ConfigError`` becomes argparse's one-line usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = flag.lstrip("-")
    return convert


def _unwrap_optional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _kwargs_for(
    hint: Any, default: Any, help_text: str, flag: str, meta: Mapping[str, Any]
) -> dict[str, Any]:
    """argparse keyword arguments for one field from its type hint."""
    shown = f"{help_text} (default {_default_text(default)})"
    choices = meta.get("choices")
    base = _unwrap_optional(hint)
    if base is bool:
        return dict(action=argparse.BooleanOptionalAction, default=default, help=shown)
    if isinstance(default, GRANULARITY_TYPES):
        parse = functools.partial(_granularity, allowed=meta.get("kinds"), flag=flag)
        return dict(type=_typed(parse, flag), default=default, help=shown, metavar="GRANULARITY")
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        values = tuple(typing.get_args(base))
        return dict(type=type(values[0]), default=default, choices=values, help=shown)
    if origin is tuple:
        item = typing.get_args(base)[0]
        if item is str:
            return dict(
                action="append", default=list(default), metavar="TEXT", help=f"{shown}; repeatable"
            )
        parse = functools.partial(_number_list, item=item, flag=flag)
        return dict(type=_typed(parse, flag), default=default, metavar="N,N,...", help=shown)
    if base in (int, float, str):
        return dict(type=base, default=default, choices=choices, help=shown)
    raise TypeError(f"{flag}: no command-line form for a field typed {hint!r}; pass custom=")


def _granularity(text: str, allowed: tuple[type, ...] | None, flag: str) -> Any:
    return parse_granularity(text, allowed, flag)


def _number_list(text: str, item: type, flag: str) -> tuple[Any, ...]:
    try:
        return tuple(item(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ConfigError(
            f"{flag}: expected comma-separated {item.__name__}s, got {text!r}"
        ) from None


def generated_actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """``(command path, action)`` for every generated option of every (nested) subcommand."""
    found: list[tuple[str, argparse.Action]] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if hasattr(action, "config_fields"):
                found.append((path, action))
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}".strip())

    walk(parser, "")
    return found
