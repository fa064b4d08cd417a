"""Compile the native decode engine (``decode.c``) with the system C compiler, and cache it.

The first flag set that compiles wins: ``-march=native`` (AVX2 kernels when the CPU has them),
then explicit ``-mavx2 -mfma``, then a portable ``-O3`` build (the scalar fallback). The
shared library is kept under ``$SLIMTORCH_CACHE`` (default ``~/.cache/slimtorch``) in
``native/``, named by a hash of the source, machine, compiler, flags and CPU flags, so a
change to any of them builds anew. Writes are atomic (temporary file, then rename).

Example:
    >>> cache_dir().name
    'native'
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from slimtorch.errors import ConfigError

SOURCE = Path(__file__).with_name("decode.c")
FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-mavx2", "-mfma", "-fopenmp"),
    ("-O3",),
)


class NativeUnavailable(ConfigError):
    """The native engine cannot be built here (no C compiler) or cannot run this model."""


def cache_dir() -> Path:
    """Where compiled libraries are kept (``$SLIMTORCH_CACHE`` or ``~/.cache/slimtorch``)."""
    root = os.environ.get("SLIMTORCH_CACHE") or Path.home() / ".cache" / "slimtorch"
    return Path(root) / "native"


def _compile(src: Path, out: Path, flag_sets: tuple[tuple[str, ...], ...]) -> str | None:
    """Compile ``src`` into ``out`` atomically; the last compiler error, or None on success."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler found (set CC or install gcc)"
    out.parent.mkdir(parents=True, exist_ok=True)
    err = "compiler failed"
    for flags in flag_sets:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *flags, "-shared", "-fPIC", str(src), "-o", tmp, "-lm"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            os.unlink(tmp)
            return f"{cc}: {e.strerror}"
        if res.returncode == 0:
            os.replace(tmp, out)
            return None
        os.unlink(tmp)
        err = (res.stderr.strip().splitlines() or ["compiler failed"])[-1]
    return err


def build(flags: tuple[tuple[str, ...], ...] = FLAG_SETS, directory: Path | None = None) -> Path:
    """Compile ``decode.c`` (first flag set that works) unless a cached build exists.

    Args:
        flags: Compiler flag sets to try in order (default: ``-march=native`` first, a
            portable ``-O3`` build last).
        directory: Cache directory (default :func:`cache_dir`).

    Returns:
        The shared library's path.

    Raises:
        NativeUnavailable: No compiler, or every flag set failed.
    """
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(f"{platform.machine()}|{os.environ.get('CC', '')}|{flags}".encode())
    key.update(_cpu_flags().encode())
    path = (directory or cache_dir()) / f"slimdecode-{key.hexdigest()[:16]}.so"
    if not path.exists():
        err = _compile(SOURCE, path, flags)
        if err is not None:
            raise NativeUnavailable(f"native decode engine: build failed: {err}")
    return path


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""
