"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Data goes to a temporary file in the target's folder, is flushed and fsynced, then
``os.replace``-d over the target (atomic on POSIX and Windows within one file system); the
folder is fsynced afterwards where the platform allows it, so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from slimtorch.errors import SlimtorchError

NEW_FILE_MODE = 0o644  # rw-r--r--, what a plain open() gives under the usual umask 022


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder``; a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_mode(target: Path) -> int:
    """Keep an existing file's permissions; new files get ``NEW_FILE_MODE``."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        return NEW_FILE_MODE


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, flush, fsync, rename).

    Args:
        path: the target file; missing parent folders are created.
        data: the complete file contents.

    Returns:
        The target path.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> atomic_write_bytes(target, b"xyz").read_bytes()
        b'xyz'
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SlimtorchError(
            f"{target}: cannot write here, {target.parent} is not a folder"
        ) from None
    if target.is_dir():
        raise SlimtorchError(f"{target}: is a folder; expected a file path to write")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), _file_mode(target))  # mkstemp creates 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`.

    Args:
        path: the target file; missing parent folders are created.
        text: the complete file contents.
        encoding: text encoding.

    Returns:
        The target path.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> atomic_write_text(target, "{}").read_text()
        '{}'
    """
    return atomic_write_bytes(path, text.encode(encoding))
