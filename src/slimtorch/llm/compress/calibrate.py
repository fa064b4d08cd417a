"""Block-by-block calibration: capture the first block's inputs once, then for each block run
its calibration batch (in chunks), observe what its submodules see, let a solver change the
block, and pass the (compressed) block's outputs on as the next block's inputs.

Only one block's activations (``n_samples x seq_len x dim``) and whatever one solver keeps are
alive at a time, whatever the depth.

Example:
    >>> import torch
    >>> from slimtorch.llm.model import Llama, LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=32, dim=16, n_layers=2, n_heads=2, n_kv_heads=1,
    ...                   hidden_dim=24, max_seq_len=8)
    >>> model = Llama(cfg).eval()
    >>> inputs = capture_block_inputs(model, model.layers, torch.zeros(3, 8, dtype=torch.long), 2)
    >>> [h.shape[0] for h in inputs.hidden]
    [2, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtorch.errors import DataError, ModelError

CORPUS_DIR = "corpus"  # package data: the default calibration text and its attribution
CORPUS_FILE = "wikitext2-valid-excerpt.txt"


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass at the first block."""


@dataclass(frozen=True)
class BlockInputs:
    """A block's calibration inputs: hidden states in chunks plus the block's other arguments
    (rotary tables, position), which are the same for every chunk of equal length."""

    hidden: list[torch.Tensor]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def with_hidden(self, hidden: list[torch.Tensor]) -> BlockInputs:
        """The same extra arguments with new hidden states."""
        return replace(self, hidden=hidden)

    def tokens(self) -> int:
        """Total calibration tokens."""
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)


def subsample(inputs: BlockInputs, max_tokens: int) -> BlockInputs:
    """At most ``max_tokens`` tokens of ``inputs`` as whole sequences spread evenly over the
    calibration set (whole sequences, because attention needs its context).

    Args:
        inputs: a block's calibration inputs (chunks of ``(batch, seq, dim)``).
        max_tokens: token budget (at least one sequence is always kept).

    Returns:
        ``inputs`` itself when it fits, else new inputs with fewer sequences per chunk.

    Example:
        >>> h = [torch.arange(4.0).reshape(2, 2, 1), torch.arange(4.0, 8).reshape(2, 2, 1)]
        >>> sub = subsample(BlockInputs(h, (), {}), 4)
        >>> [c[:, 0, 0].tolist() for c in sub.hidden]
        [[0.0], [6.0]]
    """
    seqs = [(c, j) for c, h in enumerate(inputs.hidden) for j in range(h.shape[0])]
    keep = max(1, max_tokens // inputs.hidden[0].shape[1])
    if keep >= len(seqs):
        return inputs
    picks = torch.linspace(0, len(seqs) - 1, keep).round().long().tolist()
    by_chunk: dict[int, list[int]] = {}
    for i in picks:
        by_chunk.setdefault(seqs[i][0], []).append(seqs[i][1])
    return inputs.with_hidden([inputs.hidden[c][rows] for c, rows in by_chunk.items()])


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, blocks: nn.ModuleList, tokens: torch.Tensor, batch_size: int
) -> BlockInputs:
    """Run the model up to its first block on ``tokens`` (``(n, seq)``) in chunks.

    Args:
        model: the model (called as ``model(tokens_chunk)``).
        blocks: its blocks; the first one's inputs are captured.
        tokens: calibration windows.
        batch_size: windows per chunk.

    Returns:
        The first block's inputs.
    """
    hidden: list[torch.Tensor] = []
    extra: dict[str, Any] = {}

    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden.append(args[0].detach())
        extra.update(args=args[1:], kwargs=kwargs)
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for chunk in tokens.split(batch_size):
            try:
                model(chunk)
            except _Stop:
                continue
            raise ModelError("calibration: the model never called its first block")
    finally:
        handle.remove()
    return BlockInputs(hidden, extra["args"], extra["kwargs"])


@torch.no_grad()
def run_block(block: nn.Module, inputs: BlockInputs) -> list[torch.Tensor]:
    """The block's outputs for every input chunk."""
    return [block(h, *inputs.args, **inputs.kwargs) for h in inputs.hidden]


@torch.no_grad()
def observe_inputs(
    block: nn.Module, observers: dict[str, Callable[[torch.Tensor], None]], inputs: BlockInputs
) -> None:
    """Run the block once, calling ``observers[name](x)`` with each named submodule's input.

    Args:
        block: the block.
        observers: submodule name (relative to the block) -> callback on its first input.
        inputs: the block's calibration inputs.
    """
    handles = []
    for name, fn in observers.items():

        def hook(_m: nn.Module, args: tuple, fn: Callable = fn) -> None:
            fn(args[0].detach())

        handles.append(block.get_submodule(name).register_forward_pre_hook(hook))
    try:
        run_block(block, inputs)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def record_calls(block: nn.Module, name: str, inputs: BlockInputs) -> list[tuple[tuple, dict]]:
    """Every ``(args, kwargs)`` the named submodule is called with during one block run."""
    calls: list[tuple[tuple, dict]] = []

    def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append((tuple(a.detach() if torch.is_tensor(a) else a for a in args), kwargs))

    handle = block.get_submodule(name).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run_block(block, inputs)
    finally:
        handle.remove()
    return calls


@torch.no_grad()
def record_many(
    block: nn.Module, names: list[str], inputs: BlockInputs
) -> dict[str, list[tuple[tuple, dict]]]:
    """``record_calls`` for several submodules in a single block run.

    Example:
        >>> blk = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> calls = record_many(blk, ["0", "1"], BlockInputs([torch.ones(1, 3, 2)], (), {}))
        >>> [len(c) for c in calls.values()]
        [1, 1]
    """
    calls: dict[str, list[tuple[tuple, dict]]] = {n: [] for n in names}
    handles = []
    for name in names:

        def hook(_m: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
            args = tuple(a.detach() if torch.is_tensor(a) else a for a in args)
            calls[name].append((args, kwargs))

        handles.append(block.get_submodule(name).register_forward_pre_hook(hook, with_kwargs=True))
    try:
        run_block(block, inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def calibration_windows(ids: list[int], n_samples: int, seq_len: int) -> torch.Tensor:
    """``n_samples`` windows of ``seq_len`` tokens, evenly spaced through ``ids``.

    Args:
        ids: the tokenized calibration text.
        n_samples: windows wanted.
        seq_len: tokens per window.

    Returns:
        ``(n, seq_len)`` int64; fewer windows (at least one) when the text is short.

    Example:
        >>> calibration_windows(list(range(10)), 2, 4).tolist()
        [[0, 1, 2, 3], [6, 7, 8, 9]]
    """
    if len(ids) < seq_len:
        raise DataError(f"calibration text: {len(ids)} tokens, fewer than one window of {seq_len}")
    last = len(ids) - seq_len
    n = min(n_samples, last // seq_len + 1) if last else 1
    starts = torch.linspace(0, last, n).round().long().tolist() if n > 1 else [0]
    return torch.tensor([ids[s : s + seq_len] for s in starts], dtype=torch.long)


def default_calibration_text() -> Path:
    """The calibration text shipped with slimtorch: an 85 kB excerpt of WikiText-2's
    validation split (CC BY-SA 3.0; source, license and how it was cut in
    ``corpus/README.md`` beside it), about 21,000 SmolLM2 tokens (32 windows of 512).

    Returns:
        Its path inside the installed package.

    Example:
        >>> default_calibration_text().name
        'wikitext2-valid-excerpt.txt'
    """
    return Path(str(files("slimtorch.llm.compress").joinpath(CORPUS_DIR, CORPUS_FILE)))


def calibration_tokens(
    tokenizer: Any, n_samples: int, seq_len: int, path: str | Path | None = None
) -> torch.Tensor:
    """Calibration windows from a text file, or from the shipped text when ``path`` is None.

    Args:
        tokenizer: anything with ``encode(text, add_bos=False) -> list[int]``.
        n_samples: windows wanted.
        seq_len: tokens per window.
        path: a UTF-8 text file; None: :func:`default_calibration_text`.

    Returns:
        ``(n, seq_len)`` int64 (see :func:`calibration_windows`); the same tokens every call.
    """
    text = read_text(default_calibration_text() if path is None else path)
    return calibration_windows(tokenizer.encode(text, add_bos=False), n_samples, seq_len)


def read_text(path: str | Path) -> str:
    """A calibration text file (UTF-8), with a one-line error if missing."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{p}: cannot read calibration text ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def iter_blocks(
    blocks: nn.ModuleList,
    inputs: BlockInputs,
    solve: Callable[[int, nn.Module, BlockInputs], None],
    propagate: str = "quantized",
    on_block: Callable[[int], None] | None = None,
) -> Iterator[int]:
    """Solve every block in turn, feeding each the previous block's outputs.

    Args:
        blocks: the blocks.
        inputs: the first block's inputs.
        solve: ``solve(index, block, inputs)`` compresses the block in place.
        propagate: "quantized" passes on the compressed block's outputs, "fp" the original's.
        on_block: called after each block (progress).

    Yields:
        Each block index once it is solved.
    """
    for i, block in enumerate(blocks):
        fp_out = run_block(block, inputs) if propagate == "fp" else None
        solve(i, block, inputs)
        inputs = inputs.with_hidden(fp_out if fp_out is not None else run_block(block, inputs))
        if on_block is not None:
            on_block(i)
        yield i
