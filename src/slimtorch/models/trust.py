"""Which model factories a *file* may name: opening a file never runs code it names.

A checkpoint's ``model.json``, a ``.slim`` header and a recipe name the architecture to build as
a ``ModelSpec``. A spec read from a file may name only

- a zoo model (``MODEL_NAMES``), or
- an architecture slimtorch itself registers (``BUILTIN_FACTORIES``: the channel-pruned shell),

unless the user opts in with ``--trust-code`` / ``trust_code=True`` (the convention of Hugging
Face's ``trust_remote_code``). Even then, a ``module:factory`` from the standard library, from
slimtorch's own dependencies (torch, numpy, ...) or from slimtorch is refused: those are not model
factories a file has any business naming (``os:system``, ``subprocess:run``, ``torch:load``).

A factory the user names on the command line or in Python (``create_model("mypkg:build")``) is
theirs to run and does not pass through this check.

The policy in force is a context variable: the CLI sets it once per command from
``--trust-code`` (:func:`trust_code_scope`), and ``load_checkpoint(..., trust_code=...)`` /
``load_compressed(..., trust_code=...)`` set it for the duration of one load, so nested specs
(a pruned model's base) are held to the same rule.

Example:
    >>> check_spec_name("lenet5", trust_code=False)
    >>> check_spec_name("mypkg.nets:build", trust_code=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slimtorch.errors.ModelError: the model spec names 'mypkg.nets:build', which is not ...
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from slimtorch.errors import ModelError

# Architectures slimtorch registers itself: a file may name these without --trust-code.
BUILTIN_FACTORIES: frozenset[str] = frozenset({"slimtorch.prune.surgery:build_pruned"})

# slimtorch's direct dependencies' import names, used when package metadata is unavailable
# (running from a source tree): the closure from metadata is added to these.
_KNOWN_DEPENDENCY_MODULES = frozenset(
    {"torch", "numpy", "safetensors", "gguf", "tokenizers", "matplotlib", "rich", "tqdm"}
    | {"sklearn", "scipy", "numba", "llvmlite", "yaml", "tomli", "tomllib", "huggingface_hub"}
    | {"hypothesis", "pytest", "setuptools", "pip", "pkg_resources", "_pytest", "ruff"}
)
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")

_TRUST_CODE: ContextVar[bool] = ContextVar("slimtorch_trust_code", default=False)


@contextmanager
def trust_code_scope(trust_code: bool) -> Iterator[None]:
    """Set the policy for specs read from files inside the ``with`` block.

    Args:
        trust_code: True lets a file name a third-party ``module:factory`` (never the standard
            library's or a dependency's).

    Example:
        >>> with trust_code_scope(True):
        ...     current_trust()
        True
    """
    token = _TRUST_CODE.set(bool(trust_code))
    try:
        yield
    finally:
        _TRUST_CODE.reset(token)


def current_trust() -> bool:
    """The policy in force: ``--trust-code`` of the running command, else False."""
    return _TRUST_CODE.get()


def resolve_trust(trust_code: bool | None) -> bool:
    """An explicit ``trust_code`` wins; None means the policy in force (:func:`current_trust`)."""
    return current_trust() if trust_code is None else bool(trust_code)


def _normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


@functools.lru_cache(maxsize=1)
def dependency_modules() -> frozenset[str]:
    """Top-level import names of slimtorch's dependencies (the whole requirement closure).

    Example:
        >>> "torch" in dependency_modules()
        True
    """
    try:
        by_module = importlib.metadata.packages_distributions()
    except Exception:  # broken metadata of some unrelated package: fall back to the named set
        return _KNOWN_DEPENDENCY_MODULES
    wanted: set[str] = set()
    todo = ["slimtorch"]
    while todo:
        name = _normalize(todo.pop())
        if name in wanted:
            continue
        wanted.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in requires:
            match = _REQUIREMENT_NAME.match(req)
            if match:
                todo.append(match.group(1))
    found = {mod for mod, dists in by_module.items() if any(_normalize(d) in wanted for d in dists)}
    return frozenset(found | _KNOWN_DEPENDENCY_MODULES)


def _is_forbidden_module(module: str) -> bool:
    top = module.split(".", 1)[0]
    return (
        top in sys.stdlib_module_names
        or top in sys.builtin_module_names
        or top == "slimtorch"
        or top in dependency_modules()
    )


def check_spec_name(name: str, *, trust_code: bool | None = None, where: str = "") -> None:
    """Refuse a spec name read from a file unless the policy allows building it.

    Args:
        name: the spec's model name (zoo name or ``module:factory``).
        trust_code: the user's opt-in; None means the policy in force.
        where: the file the name was read from, to start the message with.

    Raises:
        ModelError: a factory outside the zoo without ``trust_code``, or (always) one from
            the standard library, a dependency or slimtorch itself (builtins excepted).

    Example:
        >>> check_spec_name("slimtorch.prune.surgery:build_pruned")
    """
    if ":" not in name or name in BUILTIN_FACTORIES:
        return  # zoo names (unknown ones fail in create_model, importing nothing)
    prefix = f"{where}: " if where else ""
    module = name.partition(":")[0]
    if _is_forbidden_module(module):
        raise ModelError(
            f"{prefix}the model spec names {name!r}, a callable from the standard library, "
            "slimtorch or one of its dependencies, not a model factory; refused (even with "
            "--trust-code)"
        )
    if not resolve_trust(trust_code):
        raise ModelError(
            f"{prefix}the model spec names {name!r}, which is not a slimtorch zoo model; "
            "building it would import and run that code. Pass --trust-code (trust_code=True) "
            "only for a file you trust"
        )
