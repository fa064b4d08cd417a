"""Errors that slimtorch raises for user mistakes.

Every error a user can cause (a bad file, a wrong shape, an unknown model name) is a
``SlimtorchError``; the CLI prints its message on one line and exits non-zero, without a
traceback. Messages name the file or field and say what was expected.
"""

from __future__ import annotations


class SlimtorchError(Exception):
    """Base class for errors caused by user input (files, names, shapes, options)."""


class DataError(SlimtorchError):
    """A data set file or folder is missing, unreadable or malformed."""


class ModelError(SlimtorchError):
    """A model name, factory or checkpoint cannot be resolved or run."""


class ConfigError(SlimtorchError):
    """A configuration value is out of range or inconsistent."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty).

    Used to report a failure inside the user's own model in one line, without a traceback.

    Example:
        >>> first_line(RuntimeError("shapes do not match\\nmore detail"))
        'shapes do not match'
    """
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
