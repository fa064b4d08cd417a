"""The latency table's file: one JSON file per machine, atomic, checksummed, merged on write.

Layout (``FORMAT`` version ``VERSION``)::

    {"format": "slimtorch-latency-table", "version": 1,
     "machine": {"cpu", "capability", "isa", "torch", "threads", "timer"},
     "overhead": {"call_s", "fault_s", "noisy"} or null,
     "entries": {"<LayerKey.text>": {"seconds", "samples", "cv", "noisy", "reasons", "faults"}},
     "calibrations": {"<structure signature>": rho},
     "checksum": "<SHA-256 of the canonical JSON of everything else>"}

A file that does not parse, fails its checksum, or holds a malformed entry is corrupt: the
reader warns and starts empty (the next write replaces it), never keeping part of it. A file
of another machine fingerprint is refused (ConfigError): its figures do not apply here.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.json"
    >>> write_table(path, {"cpu": "x"}, Contents({"k": Entry(1e-6)}, None, {}))
    >>> read_table(path, {"cpu": "x"}).entries["k"].seconds
    1e-06
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_text
from slimtorch.search.latency_timer import Overhead

FORMAT = "slimtorch-latency-table"
VERSION = 1
CACHE_ENV_VAR = "SLIMTORCH_CACHE"
FINGERPRINT_CHARS = 16


def default_table_path(fingerprint: Mapping[str, Any]) -> Path:
    """``$SLIMTORCH_CACHE/latency/<id>.json`` (default ``~/.cache/slimtorch``), ``<id>`` a
    hash of ``fingerprint``."""
    root = os.environ.get(CACHE_ENV_VAR)
    base = Path(root) if root else Path.home() / ".cache" / "slimtorch"
    digest = hashlib.sha256(canonical(dict(fingerprint)).encode()).hexdigest()
    return base / "latency" / f"{digest[:FINGERPRINT_CHARS]}.json"


@dataclass(frozen=True)
class Entry:
    """One measured layer configuration (the fields of :class:`~.latency_timer.Timing`)."""

    seconds: float
    samples: int = 0
    cv: float | None = None
    noisy: bool = False
    reasons: tuple[str, ...] = ()
    faults: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Entry:
        """Parse and check one entry of the JSON file (KeyError/TypeError/ValueError if bad)."""
        cv = None if d["cv"] is None else float(d["cv"])
        entry = cls(float(d["seconds"]), int(d["samples"]), cv, bool(d["noisy"]),
                    tuple(str(r) for r in d["reasons"]), float(d["faults"]))  # fmt: skip
        if not (0 <= entry.seconds < float("inf") and 0 <= entry.faults < float("inf")):
            raise ValueError(f"bad entry {dict(d)}")
        return entry

    def without_faults(self, fault_s: float) -> float:
        """``seconds`` less ``faults * fault_s`` (at least 0)."""
        return max(0.0, self.seconds - self.faults * fault_s)


def canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def checksum_of(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(payload).encode()).hexdigest()


@dataclass
class Contents:
    """What a table file holds besides its machine fingerprint."""

    entries: dict[str, Entry]
    overhead: Overhead | None
    calibrations: dict[str, float]


def _parse(text: str) -> tuple[dict[str, Any], Contents]:
    """Fingerprint and contents of a table file; ValueError/KeyError/TypeError if corrupt."""
    record = json.loads(text)
    checksum = record.pop("checksum")
    if checksum != checksum_of(record):
        raise ValueError("checksum mismatch")
    if record["format"] != FORMAT or record["version"] != VERSION:
        raise ValueError(f"not a {FORMAT} v{VERSION} file")
    entries = {str(k): Entry.from_dict(v) for k, v in record["entries"].items()}
    over = record["overhead"]
    overhead = None if over is None else Overhead(float(over["call_s"]), float(over["fault_s"]),
                                                  bool(over["noisy"]))  # fmt: skip
    calibrations = {str(k): float(v) for k, v in record["calibrations"].items()}
    return dict(record["machine"]), Contents(entries, overhead, calibrations)


def read_table(path: Path, fingerprint: dict[str, Any], *, warn: bool = True) -> Contents:
    """The table at ``path``: empty if missing; empty (with a warning if ``warn``) if corrupt.

    Raises:
        ConfigError: the file was measured for another machine fingerprint.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Contents({}, None, {})
    try:
        machine, contents = _parse(text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        if warn:
            warnings.warn(f"latency table {path} is corrupt ({why}); rebuilding it", stacklevel=3)
        return Contents({}, None, {})
    if machine != fingerprint:
        diff = sorted(k for k in {*machine, *fingerprint} if machine.get(k) != fingerprint.get(k))
        raise ConfigError(
            f"latency table {path} was measured for another setup ({', '.join(diff)} differ); "
            "pass another path or leave it out to use this machine's default"
        )
    return contents


def write_table(path: Path, fingerprint: dict[str, Any], contents: Contents) -> None:
    record = {
        "format": FORMAT,
        "version": VERSION,
        "machine": fingerprint,
        "overhead": None if contents.overhead is None else asdict(contents.overhead),
        "entries": {k: asdict(e) for k, e in sorted(contents.entries.items())},
        "calibrations": dict(sorted(contents.calibrations.items())),
    }
    record["checksum"] = checksum_of(record)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
