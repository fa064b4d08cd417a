"""A latency model of this machine: a lookup table of measured latency per layer configuration.

``LatencyTable.predict(model, x)`` walks one forward pass (:func:`~slimtorch.search.latency_keys.
walk_layers`: every leaf-module call and every functional op between them, keyed by op kind,
input shapes, channels, kernel, stride, padding, groups, batch and threads), looks each key up,
times the keys it has not seen (:class:`~slimtorch.search.latency_timer.MedianTimer`: warm-up,
repeats, median, noise verdict), and returns

    seconds = (1 + rho) * sum(layer seconds) + module_calls * call_s

- layer seconds: the median of the layer timed alone, less its page faults (the timer counts
  them; each costs ``fault_s``, measured once per machine). glibc hands large activations
  fresh pages when its heap shrinks and grows again, and how often it does depends on what
  the process ran before, not on the layer: MobileNetV2 on 16x16 at batch 64 took ~4,500
  faults per forward pass (2-3x the layers' own time) in a process that had run other models
  before, and none in a fresh one. Predictions are of the fault-free latency;
  :meth:`LatencyTable.measure` measures the same (``measure_timing`` gives the raw figure
  and its faults).
- ``module_calls * call_s``: the Python dispatch of the non-leaf modules (``Sequential``,
  residual blocks), which no layer's time contains; ``call_s`` is measured once per machine.
- ``rho``: 0 unless the model was calibrated (:meth:`LatencyTable.calibrate`): one measurement
  of the whole model sets ``rho`` so that the formula meets it; it is kept per model
  *structure* (module names and classes, input shape, batch), so every channel-pruned variant
  of that model, which a search scores by the thousand, gets the same correction for what
  timing layers alone misses (weights and activations a layer finds in cache when it runs
  alone but not inside the model).

The table lives in a JSON file per machine: by default ``$SLIMTORCH_CACHE/latency/<id>.json``
(else ``~/.cache/slimtorch/latency/``), where ``<id>`` hashes the machine fingerprint (CPU
model, CPU capability, ISA flags, torch version, threads, timer). Writes are atomic (temporary
file, fsync, rename) and merge with what is on disk; the file carries a SHA-256 of its content,
and a corrupt or truncated file is reported with a warning and rebuilt, never half-loaded.
Entries flagged noisy are kept, flagged (``Prediction.noisy``). CPU only.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> def cost(fn, args):  # a deterministic stand-in timer: 1 us per input element
    ...     return 1e-6 * sum(a.numel() for a in args if isinstance(a, torch.Tensor))
    >>> table = LatencyTable(tempfile.mkdtemp() + "/t.json", batch=2, timer=cost)
    >>> p = table.breakdown(nn.Sequential(nn.Linear(8, 4), nn.ReLU()), torch.zeros(1, 8))
    >>> [(name, round(s * 1e6)) for name, _, s in p.layers], round(p.seconds * 1e6)
    ([('0', 16), ('1', 8)], 24)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

from slimtorch.core.trace import call_model, restored_state
from slimtorch.errors import ConfigError
from slimtorch.profile.noise import NoiseWatch, torch_threads
from slimtorch.search.latency_cache import (
    FINGERPRINT_CHARS,
    Contents,
    Entry,
    canonical,
    default_table_path,
    read_table,
    write_table,
)
from slimtorch.search.latency_keys import LayerCall, LayerKey, walk_layers
from slimtorch.search.latency_timer import (
    MedianTimer,
    Overhead,
    Timer,
    Timing,
    as_timing,
    machine_fingerprint,
    measure_overhead,
)

BATCH_NOISE_SEED = 0


@dataclass(frozen=True)
class Prediction:
    """A predicted whole-model latency and what it is made of.

    Attributes:
        seconds: the prediction, calibrated when the model's structure was calibrated.
        raw_s: the prediction without calibration (``rho = 0``).
        layers_s: sum over the layer calls (each without page faults).
        calls_s: ``module_calls * call_s``.
        rho: the calibration of this structure (0 when none).
        layers: ``(call name, key text, seconds)`` per layer call, in execution order.
        module_calls: non-leaf module calls in one forward pass.
        measured: layer configurations timed for this prediction (not found in the table).
        noisy: any figure used was flagged noisy.
    """

    seconds: float
    raw_s: float
    layers_s: float
    calls_s: float
    rho: float
    layers: tuple[tuple[str, str, float], ...]
    module_calls: int
    measured: int
    noisy: bool


def batched(example_input: Any, batch: int) -> Any:
    """``example_input`` as a batch of ``batch`` distinct samples (a copy).

    A tensor of batch 1 is repeated; floating ones get Gaussian noise of the sample's standard
    deviation (seeded) so the samples differ, as in a real batch: 64 copies of one sample
    ran 25% faster on VGG (a max pool's branches learned the repeated pattern).

    Example:
        >>> x = batched(torch.ones(1, 3), 4)
        >>> x.shape, bool((x[0] == 1).all()), bool((x[1] != x[2]).any())
        (torch.Size([4, 3]), True, True)
    """
    gen = torch.Generator().manual_seed(BATCH_NOISE_SEED)

    def grow(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        if t.device.type != "cpu":
            raise ConfigError(f"LatencyTable times CPU latency; an input is on {t.device}")
        if t.dim() == 0 or t.shape[0] not in (1, batch):
            raise ConfigError(f"example_input: expected batch 1 or {batch}, got {list(t.shape)}")
        out = t.expand(batch, *t.shape[1:]).clone()
        if t.shape[0] == 1 and batch > 1 and out.is_floating_point():
            scale = float(t.std()) if t.numel() > 1 and float(t.std()) > 0 else 1.0
            noise = torch.randn(out[1:].shape, generator=gen, dtype=out.dtype)
            out[1:] += scale * noise
        return out

    with torch.no_grad():
        return tree_map(grow, example_input)


def structure_signature(model: nn.Module, inputs: Any) -> str:
    """What a calibration is kept under: module names and classes, input shapes (with batch).

    Channel counts are left out, so a channel-pruned copy shares its model's signature.
    """
    modules = [(name, type(m).__name__) for name, m in model.named_modules()]
    shapes = [list(t.shape) for t in tree_leaves(inputs) if isinstance(t, Tensor)]
    return hashlib.sha256(canonical([modules, shapes]).encode()).hexdigest()[:FINGERPRINT_CHARS]


class LatencyTable:
    """Measured latency per layer configuration on this machine (see the module docstring).

    Args:
        path: the JSON file; None uses :func:`default_table_path` of this machine.
        batch: the batch size predictions are for (example inputs of batch 1 are repeated).
        threads: torch threads to time with; None: the current setting.
        timer: ``timer(fn, args) -> seconds`` (or a ``Timing``) for one call of ``fn(*args)``;
            None: :class:`~.latency_timer.MedianTimer`. The overhead probes use it too.
        autosave: write the file after every prediction that measured something new.
        progress: show a progress bar while measuring new configurations.
        overhead: the machine constants (``call_s``, ``fault_s``) to use; None: the file's,
            else measured with ``timer`` on first use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        batch: int = 1,
        threads: int | None = None,
        timer: Timer | None = None,
        autosave: bool = True,
        progress: bool = False,
        overhead: Overhead | None = None,
    ) -> None:
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"LatencyTable.batch: expected an integer >= 1, got {batch!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"LatencyTable.threads: expected >= 1, got {threads}")
        self.batch, self.threads = batch, threads or torch.get_num_threads()
        self.timer: Timer = timer if timer is not None else MedianTimer()
        if getattr(self.timer, "clock", None) == "cpu" and self.threads != 1:
            raise ConfigError(f"LatencyTable: clock 'cpu' needs 1 torch thread, not {self.threads}")
        self.fingerprint = machine_fingerprint(self.threads, self.timer)
        self.path = Path(path) if path is not None else default_table_path(self.fingerprint)
        self.autosave, self.progress = autosave, progress
        self._contents = read_table(self.path, self.fingerprint)
        if overhead is not None:
            self._contents.overhead = overhead

    def __len__(self) -> int:
        return len(self._contents.entries)

    def __contains__(self, key: LayerKey) -> bool:
        return key.text in self._contents.entries

    def lookup(self, key: LayerKey) -> Entry | None:
        """The measured entry of ``key``, or None if it was never measured."""
        return self._contents.entries.get(key.text)

    @property
    def entries(self) -> Mapping[str, Entry]:
        """Every measured configuration: key text -> entry."""
        return dict(self._contents.entries)

    @property
    def overhead(self) -> Overhead:
        """The machine's overhead constants (measured on first use)."""
        if self._contents.overhead is None:
            with torch_threads(self.threads):
                self._contents.overhead = measure_overhead(self.timer)
            self._save()
        return self._contents.overhead

    @contextmanager
    def _timing_scope(self, model: nn.Module, inputs: Any) -> Iterator[None]:
        with (
            torch_threads(self.threads),
            restored_state(model, inputs, train=False),
            torch.inference_mode(),
        ):
            yield

    def _measure_calls(self, model: nn.Module, inputs: Any, calls: list[LayerCall]) -> int:
        todo = [c for c in calls if c.fn is not None and c.key.text not in self._contents.entries]
        with (
            self._timing_scope(model, inputs),  # eval mode: running stats stay untouched
            NoiseWatch(self.threads) as watch,
            Progress(transient=True, disable=not self.progress or len(todo) < 2) as bar,
        ):
            task = bar.add_task("timing layers", total=len(todo))
            timings = []
            for call in todo:
                timings.append(as_timing(self.timer(call.fn, call.args)))  # type: ignore[misc]
                bar.advance(task)
        machine = watch.judge().reasons if todo else ()
        for call, t in zip(todo, timings, strict=True):
            reasons = (*t.reasons, *machine)
            entry = Entry(t.seconds, t.samples, t.cv, bool(reasons), reasons, t.faults)
            self._contents.entries[call.key.text] = entry
        return len(todo)

    def breakdown(self, model: nn.Module, example_input: Any) -> Prediction:
        """Predict the whole-model latency at this table's batch, with its parts.

        Args:
            model: the model (not changed).
            example_input: a tensor, tuple or dict of batch 1 (or of the table's batch).

        Returns:
            The :class:`Prediction`.
        """
        inputs = batched(example_input, self.batch)
        known = self._contents.entries.__contains__
        walk = walk_layers(model, inputs, threads=self.threads, known=lambda k: known(k.text))
        measured = self._measure_calls(model, inputs, walk.calls)
        over = self.overhead
        entries = [self._contents.entries[c.key.text] for c in walk.calls]
        seconds = [e.without_faults(over.fault_s) for e in entries]
        layers = tuple((c.name, c.key.text, t) for c, t in zip(walk.calls, seconds, strict=True))
        layers_s, calls_s = sum(seconds), walk.module_calls * over.call_s
        rho = self._contents.calibrations.get(structure_signature(model, inputs), 0.0)
        if measured:
            self._save()
        noisy = over.noisy or any(e.noisy for e in entries)
        return Prediction(layers_s * (1 + rho) + calls_s, layers_s + calls_s, layers_s, calls_s,
                          rho, layers, walk.module_calls, measured, noisy)  # fmt: skip

    def predict(self, model: nn.Module, example_input: Any) -> float:
        """Predicted seconds of one forward pass at this table's batch (see :meth:`breakdown`).

        Example:
            >>> import tempfile
            >>> t = LatencyTable(tempfile.mkdtemp() + "/t.json", timer=lambda fn, a: 1e-6)
            >>> round(t.predict(nn.Sequential(nn.ReLU(), nn.ReLU()), torch.zeros(1, 2)) * 1e6)
            2
        """
        return self.breakdown(model, example_input).seconds

    def measure_timing(self, model: nn.Module, example_input: Any) -> Timing:
        """The whole model timed by this table's timer: the raw median, with its page faults
        per call and the noise verdict (the timer's, and the machine's around it)."""
        inputs = batched(example_input, self.batch)
        with self._timing_scope(model, inputs), NoiseWatch(self.threads) as watch:
            timing = as_timing(self.timer(functools.partial(call_model, model), (inputs,)))
        reasons = (*timing.reasons, *watch.judge().reasons)
        return dataclasses.replace(timing, noisy=bool(reasons), reasons=reasons)

    def measure(self, model: nn.Module, example_input: Any) -> float:
        """Measured seconds of one forward pass at this table's batch, timed like a layer and,
        like a layer's, without its page faults (see the module docstring)."""
        return self.measure_timing(model, example_input).without_faults(self.overhead.fault_s)

    def calibrate(
        self, model: nn.Module, example_input: Any, measured_s: float | None = None
    ) -> float:
        """Set ``rho`` of ``model``'s structure so the prediction meets its measured latency.

        Args:
            model: the model (its channel-pruned copies share the calibration).
            example_input: as for :meth:`breakdown`.
            measured_s: its measured seconds; None measures it (:meth:`measure`).

        Returns:
            ``rho = (measured - raw prediction) / layers_s``, so that
            ``(1 + rho) * layers_s + calls_s`` is the measurement.
        """
        measured = self.measure(model, example_input) if measured_s is None else measured_s
        p = self.breakdown(model, example_input)
        if p.layers_s <= 0:
            raise ConfigError("calibrate: the model has no timed layers")
        rho = (measured - p.raw_s) / p.layers_s
        signature = structure_signature(model, batched(example_input, self.batch))
        self._contents.calibrations[signature] = rho
        self._save()
        return rho

    def _save(self) -> None:
        if self.autosave:
            self.save()

    def save(self) -> Path:
        """Write the table, merged with the file's current entries (ours win), atomically."""
        on_disk = read_table(self.path, self.fingerprint, warn=False)  # warned when loaded
        on_disk.entries.update(self._contents.entries)
        on_disk.calibrations.update(self._contents.calibrations)
        self._contents = Contents(
            on_disk.entries, self._contents.overhead or on_disk.overhead, on_disk.calibrations
        )
        write_table(self.path, self.fingerprint, self._contents)
        return self.path
