"""The CLI's safety net: failures the user's environment causes, said in one line.

``main()`` catches ``SlimtorchError`` (a mistake the code recognised) and, here, what the
operating system or the user's files raise wherever they are opened: ``OSError`` (permissions,
missing or read-only folders, a full disk, a folder where a file must be), ``UnicodeDecodeError``
(a text file that is not UTF-8) and running out of memory for a size the user asked for. The
message names the file, and the option that named it when the user gave one (``--json x``).
Anything else is a bug and keeps its traceback.

Example:
    >>> err = PermissionError(13, "Permission denied", "out/report.json")
    >>> describe_user_error(err, ["compress", "--out", "out"])
    'out/report.json: Permission denied (in --out out)'
    >>> describe_user_error(ValueError("a bug"), []) is None
    True
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from slimtorch.errors import first_line

# OSErrors a user's files, folders and disks cause even when no file name comes with them
# (a write that fills the disk names none); other errno values without a file name are bugs.
_USER_ERRNO_NAMES = (
    "EACCES EPERM ENOENT EEXIST EISDIR ENOTDIR EROFS ENOSPC EDQUOT EFBIG ENAMETOOLONG ELOOP EIO "
    "ENXIO ENOTEMPTY ETXTBSY"
)
USER_ERRNOS = frozenset(getattr(errno, n) for n in _USER_ERRNO_NAMES.split() if hasattr(errno, n))
# torch reports a failed CPU allocation as a RuntimeError, not MemoryError.
TORCH_ALLOC_FAILURE = "can't allocate memory"


def describe_user_error(exc: BaseException, argv: Sequence[str]) -> str | None:
    """One line for an error the user's environment caused, or None for a bug.

    Args:
        exc: what the command raised.
        argv: the command line (to name the option that gave the failing path).

    Returns:
        ``"<file>: <what>"`` (with the option when one named the file), or None when ``exc``
        is not an OS, decoding or out-of-memory error a user can cause.
    """
    if isinstance(exc, OSError):
        return _os_error(exc, argv)
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "save it as UTF-8 or pass another file"
        )
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and TORCH_ALLOC_FAILURE in str(exc)
    ):
        detail = first_line(exc) if str(exc) else "out of memory"
        return f"not enough memory for the sizes asked for ({detail}); ask for less"
    return None


def _os_error(exc: OSError, argv: Sequence[str]) -> str | None:
    what = exc.strerror or first_line(exc)
    if exc.filename is None:
        return what if exc.errno in USER_ERRNOS else None
    path = os.fsdecode(exc.filename)
    option = _option_for(path, argv)
    if option is None:
        return f"{path}: {what}"
    name, value = option
    if _norm(value) == _norm(path):
        return f"{name} {value}: {what}"
    return f"{path}: {what} (in {name} {value})"


def _option_values(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``(--option, value)`` pairs as written: ``--out x`` and ``--out=x``."""
    pairs = []
    for i, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        if "=" in token:
            name, _, value = token.partition("=")
            pairs.append((name, value))
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            pairs.append((token, argv[i + 1]))
    return pairs


def _norm(path: str) -> Path:
    return Path(os.path.abspath(path))


def _option_for(path: str, argv: Sequence[str]) -> tuple[str, str] | None:
    """The option whose value is ``path``, holds it, or lies under it (in that order)."""
    failed = _norm(path)
    exact, inside, above = [], [], []
    for name, value in _option_values(argv):
        given = _norm(value)
        if given == failed:
            exact.append((name, value))
        elif given in failed.parents:
            inside.append((len(given.parts), name, value))
        elif failed in given.parents and failed != failed.parent:
            above.append((-len(given.parts), name, value))
    if exact:
        return exact[0]
    for found in (sorted(inside, reverse=True), sorted(above, reverse=True)):
        if found:
            return found[0][1], found[0][2]
    return None
