"""What data an artefact was made with, written into it, so later commands reuse it.

Every artefact slimtorch writes (a checkpoint's ``model.json`` metrics, an integer-only
``int8.safetensors``, a ``.slim`` file's metadata, the JSON reports) records its data as the
same four keys: ``data`` (the source string; the resolution is part of it, ``digits:16``),
``seed`` (the split seed: scoring with it keeps the test split held out), ``input_shape`` (one
sample, e.g. ``[1, 16, 16]``) and ``num_classes``. A command given no ``--data`` takes them from
the artefact; given data whose samples do not fit the model, it says so in one line.

Example:
    >>> rec = DataRecord("digits:16", 0, (1, 16, 16), 10)
    >>> DataRecord.from_dict(rec.to_dict(), "ck") == rec
    True
    >>> rec.describe()
    'digits:16 (1x16x16)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimtorch.data.splits import Splits
from slimtorch.errors import DataError

RECORD_KEYS = ("data", "seed", "input_shape", "num_classes")


@dataclass(frozen=True)
class DataRecord:
    """The data an artefact was made with.

    Attributes:
        data: the source string (``digits``, ``digits:16``, a ``.npz`` path, ...).
        seed: the split seed.
        input_shape: one sample's shape, or None (older artefacts).
        num_classes: classes, or None (older artefacts).
    """

    data: str
    seed: int = 0
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The four keys as written into artefacts."""
        shape = None if self.input_shape is None else list(self.input_shape)
        return {
            "data": self.data,
            "seed": self.seed,
            "input_shape": shape,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> DataRecord | None:
        """The record in a dict holding :data:`RECORD_KEYS` (None when it names no data).

        Raises:
            DataError: a key holds a value of the wrong type (the file was edited or damaged).
        """
        if not isinstance(d, dict) or d.get("data") is None:
            return None
        data, seed = d["data"], d.get("seed", 0)
        shape, classes = d.get("input_shape"), d.get("num_classes")
        if not isinstance(data, str) or not data:
            raise DataError(f"{where}: recorded data must be a data source name, got {data!r}")
        if not _count(seed, 0):
            raise DataError(f"{where}: recorded seed must be a non-negative integer, got {seed!r}")
        if shape is not None and not (isinstance(shape, list) and all(_count(s) for s in shape)):
            raise DataError(f"{where}: recorded input_shape must be a list of sizes, got {shape!r}")
        if classes is not None and not _count(classes):
            raise DataError(f"{where}: recorded num_classes must be >= 1, got {classes!r}")
        return cls(data, seed, None if shape is None else tuple(shape), classes)

    def describe(self) -> str:
        """``digits:16 (1x16x16)``: the source and, when known, the sample shape."""
        if self.input_shape is None:
            return self.data
        return f"{self.data} ({_shape(self.input_shape)})"


def _count(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def artefact_record(
    metrics: Any, spec_kwargs: dict[str, Any] | None, where: str
) -> DataRecord | None:
    """The record in an artefact's metrics; artefacts written before ``input_shape`` was
    recorded get it from their model's construction arguments (``in_channels``,
    ``image_size``) when they have them.

    Example:
        >>> artefact_record({"data": "digits:16"}, {"in_channels": 1, "image_size": 16}, "ck")
        DataRecord(data='digits:16', seed=0, input_shape=(1, 16, 16), num_classes=None)
    """
    record = DataRecord.from_dict(metrics, where)
    kwargs = spec_kwargs or {}
    if record is None or record.input_shape is not None:
        return record
    channels, size = kwargs.get("in_channels"), kwargs.get("image_size")
    if _count(channels) and _count(size):
        return DataRecord(record.data, record.seed, (channels, size, size), record.num_classes)
    return record


def data_record(data: str, seed: int, splits: Splits) -> dict[str, Any]:
    """The keys to write into an artefact made with ``splits`` (loaded from ``data``, ``seed``).

    Example:
        >>> from slimtorch.data import load_data
        >>> data_record("digits", 0, load_data("digits"))["input_shape"]
        [1, 8, 8]
    """
    return DataRecord(data, seed, tuple(splits.input_shape), splits.num_classes).to_dict()


def check_data_fits(
    recorded: DataRecord | None, given: str, input_shape: tuple[int, ...], what: str
) -> None:
    """Refuse ``--data`` whose samples have another shape than those the artefact was made on.

    Args:
        recorded: the artefact's record (None or no shape: nothing to compare).
        given: the ``--data`` the user gave.
        input_shape: one sample of the given data.
        what: the artefact, for the message.

    Raises:
        DataError: one line naming both data sets and what to do.

    Example:
        >>> check_data_fits(DataRecord("digits:16", 0, (1, 16, 16)), "digits", (1, 8, 8), "vgg")
        Traceback (most recent call last):
        ...
        slimtorch.errors.DataError: --data digits: samples are 1x8x8, but vgg was made on ...
    """
    if recorded is None or recorded.input_shape is None:
        return
    if tuple(input_shape) != tuple(recorded.input_shape):
        raise DataError(
            f"--data {given}: samples are {_shape(tuple(input_shape))}, but {what} was made on "
            f"{recorded.describe()}; leave out --data to use that, or give data of that shape"
        )


def check_given_data(
    given: str | None, splits: Splits, metrics: Any, spec_kwargs: dict[str, Any] | None, where: str
) -> None:
    """:func:`check_data_fits` for a checkpoint's metrics when the user gave ``--data``.

    Args:
        given: the user's ``--data`` (None: the recorded data is used, nothing to check).
        splits: the data loaded from ``given``.
        metrics: the checkpoint's metrics.
        spec_kwargs: its model's construction arguments (shape of older checkpoints).
        where: the checkpoint, for the message.
    """
    if given is not None:
        recorded = artefact_record(metrics, spec_kwargs, where)
        check_data_fits(recorded, given, tuple(splits.input_shape), where)
