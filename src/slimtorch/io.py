"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Data goes to a temporary file in the target's folder, is flushed and fsynced, then
``os.replace``-d over the target (atomic on POSIX and Windows within one file system); the
folder is fsynced afterwards where the platform allows it, so the rename survives a crash.

Permissions are those of an ordinary ``open()``: a new file gets ``0o666`` less the user's
umask (the kernel applies it, so default ACLs work too); a file that is replaced keeps its
mode. An ``OSError`` while writing names the target, not the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from slimtorch.errors import ConfigError, DataError, SlimtorchError

NEW_FILE_MODE = 0o666  # the kernel takes the umask off, as for open(path, "w")
_TEMP_TRIES = 100  # name collisions before giving up (each name has 32 random bits)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows only


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder``; a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty, writable temporary file in ``folder``: ``(fd, path)``.

    Unlike ``tempfile.mkstemp`` (mode 0600) the file is created with ``NEW_FILE_MODE``, so
    it ends up with the permissions the user's umask asks for.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | _O_BINARY
    for _ in range(_TEMP_TRIES):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def _keep_mode(fd: int, target: Path) -> None:
    """Give the temporary file the mode of the file it replaces, if there is one."""
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        return  # a new file: the umask already decided
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def _about_target(exc: OSError, target: Path) -> OSError:
    """``exc`` re-addressed to ``target`` (its message names the folder when that failed)."""
    what = exc.strerror or str(exc)
    failed = Path(os.fsdecode(exc.filename)) if exc.filename is not None else None
    if failed is not None and failed != target and failed.name.endswith(".tmp"):
        failed = None  # the temporary file is ours; the user knows the target
    detail = (
        f"cannot write ({what})" if failed in (None, target) else f"cannot create {failed} ({what})"
    )
    return OSError(exc.errno, detail, str(target))  # OSError(errno, ...) picks the subclass


def _prepare(path: str | os.PathLike[str]) -> Path:
    """The target path, its parent folders created; refuse a folder or a file as parent."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SlimtorchError(
            f"{target}: cannot write here, {target.parent} is not a folder"
        ) from None
    except OSError as exc:
        raise _about_target(exc, target) from exc
    if target.is_dir():
        raise SlimtorchError(f"{target}: is a folder; expected a file path to write")
    return target


def _commit(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, flush, fsync, rename).

    Args:
        path: the target file; missing parent folders are created.
        data: the complete file contents.

    Returns:
        The target path.

    Raises:
        SlimtorchError: the target is a folder, or a parent is a file.
        OSError: the file cannot be written (permissions, read-only or full file system); its
            ``filename`` is the target.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> atomic_write_bytes(target, b"xyz").read_bytes()
        b'xyz'
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """For writers that need a path (a library opens it): write there, then it replaces ``path``.

    The temporary file exists (empty, with the mode the target will have) when the block
    starts; if the block raises, it is removed and the target is untouched.

    Args:
        path: the target file; missing parent folders are created.

    Yields:
        The temporary file's path.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_output(target) as tmp:
        ...     _ = tmp.write_text("hi")
        >>> target.read_text()
        'hi'
    """
    target = _prepare(path)
    tmp = None
    try:
        fd, tmp = _create_temp(target.parent, target.name)
        try:
            _keep_mode(fd, target)
        finally:
            os.close(fd)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _commit(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _about_target(exc, target) from exc
        raise


def check_writable(path: str | os.PathLike[str], option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Creates and removes a temporary file where the output will go: in ``path`` if it is an
    existing folder, else in the nearest existing folder above it (missing folders are
    created later, by the writer). Catches read-only folders and file systems, missing
    permissions, pseudo file systems such as ``/proc`` and a file where a folder must be.

    Args:
        path: an output file or folder.
        option: the option that named it, for the message (``--out``).

    Raises:
        ConfigError: one line naming the option, the path and the reason.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> check_writable(folder / "new" / "p.json", "--json")
        >>> (folder / "f").write_text("x")
        1
        >>> check_writable(folder / "f" / "p.json", "--json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        slimtorch.errors.ConfigError: --json .../f/p.json: cannot write here, .../f is not a folder
    """
    target = Path(path)
    where = target if target.is_dir() else target.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise ConfigError(f"{option} {target}: cannot write here, {where} is not a folder")
    try:
        fd, tmp = _create_temp(where, "slimtorch-write-check")
    except OSError as exc:
        what = exc.strerror or str(exc)
        raise ConfigError(f"{option} {target}: cannot write in {where} ({what})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def read_text_file(
    path: str | os.PathLike[str], label: str, error: type[SlimtorchError] = DataError
) -> str:
    """A user's UTF-8 text file, or one line saying why it cannot be read.

    Args:
        path: the file.
        label: how the message names it, e.g. ``"--recipe r.toml"``.
        error: the error class to raise (a configuration file may prefer ConfigError).

    Returns:
        The file's text.

    Raises:
        DataError: (or ``error``) the file is missing, unreadable, a folder, or not UTF-8.

    Example:
        >>> import tempfile, pathlib
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
        >>> _ = bad.write_bytes(b"ok \\xff")
        >>> read_text_file(bad, "--text t.txt")
        Traceback (most recent call last):
        ...
        slimtorch.errors.DataError: --text t.txt: not UTF-8 text (invalid start byte at byte 3)
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{label}: cannot read ({exc.strerror or exc})") from None
