"""Perplexity of a language model on a token stream, batched, with a progress bar.

Two protocols:

- ``"sliding"`` (Hugging Face's): windows of ``ctx`` tokens every ``stride`` tokens; each
  window scores only the tokens no earlier window scored (the first scores ``ctx - 1``), so
  with ``stride < ctx`` every scored token sees at least ``ctx - stride`` tokens of context.
- ``"llamacpp"`` (llama.cpp's ``llama-perplexity``): non-overlapping windows of ``ctx``
  tokens; only the second half of each window is scored (predictions at positions
  ``ctx/2 .. ctx-2``, i.e. ``ctx/2 - 1`` per window); the first token of each window is
  replaced by BOS only when the model's metadata asks for a BOS token.

``perplexity = exp(mean negative log-likelihood of the scored tokens)``.

Example:
    >>> import torch
    >>> from slimtorch.llm.model import Llama, LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=16, dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
    ...                   hidden_dim=16, max_seq_len=8)
    >>> res = perplexity(Llama(cfg).eval(), list(range(16)) * 2, PerplexityConfig(ctx=8),
    ...                  progress=False)
    >>> res.windows, res.scored
    (4, 28)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from slimtorch.errors import ConfigError, DataError

CONFIG_VERSION = 1
PROTOCOLS = ("sliding", "llamacpp")


@dataclass(frozen=True)
class PerplexityConfig:
    """How to measure perplexity.

    Args:
        ctx: Tokens per window.
        stride: Step between window starts for ``"sliding"`` (0: ``ctx``, no overlap).
        batch_size: Windows per forward pass.
        protocol: sliding (every token scored once) or llamacpp (non-overlapping windows,
            second half scored, BOS only if the model asks: llama-perplexity's figures).
        bos_id: BOS token put first in each llama.cpp window (-1: none, the text as is).
        max_windows: Stop after this many windows (0: all).
        version: Config format version.
    """

    ctx: int = 512
    stride: int = 0
    batch_size: int = 4
    protocol: str = field(default="sliding", metadata={"choices": PROTOCOLS})
    bos_id: int = -1
    max_windows: int = 0
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.ctx < 2:
            raise ConfigError(f"ctx: expected >= 2, got {self.ctx}")
        if not 0 <= self.stride <= self.ctx:
            raise ConfigError(f"stride: expected 0..ctx ({self.ctx}), got {self.stride}")
        if self.batch_size < 1 or self.max_windows < 0:
            raise ConfigError("batch_size must be >= 1 and max_windows >= 0")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: expected one of {PROTOCOLS}, got {self.protocol!r}")


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity and what it was computed over."""

    perplexity: float
    nll: float  # mean negative log-likelihood (nats per token)
    scored: int  # tokens scored
    windows: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Scored tokens per second of wall time."""
        return self.scored / self.seconds if self.seconds > 0 else float("nan")


def windows(n_tokens: int, cfg: PerplexityConfig) -> list[tuple[int, int, int]]:
    """``(start, end, first_scored_position)`` of every window over ``n_tokens`` tokens.

    The window covers ``tokens[start:end]``; logits at positions ``p >= first - 1`` ... are
    scored against ``tokens[start + p + 1]``, i.e. targets ``tokens[start+first : end]``.

    Example:
        >>> windows(10, PerplexityConfig(ctx=4, stride=2))
        [(0, 4, 1), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
        >>> windows(10, PerplexityConfig(ctx=4, protocol="llamacpp"))
        [(0, 4, 3), (4, 8, 3)]
    """
    if n_tokens < cfg.ctx:
        raise DataError(
            f"text has {n_tokens} tokens, fewer than one context of {cfg.ctx}; "
            "use a longer text or a smaller --ctx"
        )
    if cfg.protocol == "llamacpp":
        first = cfg.ctx // 2 + 1  # llama.cpp scores logits ctx/2 .. ctx-2 -> targets +1
        out = [(i * cfg.ctx, (i + 1) * cfg.ctx, first) for i in range(n_tokens // cfg.ctx)]
    else:
        stride = cfg.stride or cfg.ctx
        out, prev_end, start = [], 0, 0
        while prev_end < n_tokens:
            end = min(start + cfg.ctx, n_tokens)
            out.append((start, end, max(prev_end - start, 1)))
            prev_end, start = end, start + stride
            if end == n_tokens:
                break
    return out[: cfg.max_windows] if cfg.max_windows else out


def perplexity(
    model: nn.Module,
    tokens: Sequence[int],
    config: PerplexityConfig | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` (``tokens [B,T] -> logits [B,T,V]``) on ``tokens``.

    Args:
        model: A causal language model.
        tokens: The token stream.
        config: Window length, stride, batch size, protocol.
        progress: Show a rich progress bar.

    Returns:
        A :class:`PerplexityResult`.

    Raises:
        DataError: The text is shorter than one context.
    """
    cfg = config or PerplexityConfig()
    ids = torch.tensor(list(tokens), dtype=torch.long)
    wins = windows(len(ids), cfg)
    total_nll, scored, t0 = 0.0, 0, time.perf_counter()
    with torch.inference_mode(), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"perplexity (ctx {cfg.ctx})", total=len(wins))
        for batch in _batches(wins, cfg.batch_size):
            nll, n = _score_batch(
                model, ids, batch, cfg.bos_id if cfg.protocol == "llamacpp" else -1
            )
            total_nll, scored = total_nll + nll, scored + n
            bar.advance(task, len(batch))
    mean = total_nll / scored
    return PerplexityResult(math.exp(mean), mean, scored, len(wins), time.perf_counter() - t0)


def _batches(wins: list[tuple[int, int, int]], size: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive windows of equal length, ``size`` at a time."""
    out: list[list[tuple[int, int, int]]] = []
    for w in wins:
        if out and len(out[-1]) < size and out[-1][0][1] - out[-1][0][0] == w[1] - w[0]:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def _score_batch(
    model: nn.Module, ids: torch.Tensor, batch: list[tuple[int, int, int]], bos_id: int
) -> tuple[float, int]:
    """Summed NLL and count of the scored targets of equally long windows."""
    x = torch.stack([ids[s:e] for s, e, _ in batch])  # [B, T]
    if bos_id >= 0:
        x[:, 0] = bos_id
    logits = model(x)  # [B, T, V]
    total, count = 0.0, 0
    for b, (_, _, first) in enumerate(batch):
        lg = logits[b, first - 1 : -1].float()  # predicts x[b, first:]
        total += float(F.cross_entropy(lg, x[b, first:], reduction="sum"))
        count += lg.shape[0]
    return total, count
