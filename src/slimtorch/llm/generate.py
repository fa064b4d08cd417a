"""Text generation: ``prefill``, ``decode_one_token``, ``sample`` (gpt-fast style), streaming.

``generate`` runs the prompt through the model once (prefill, filling the KV cache), then one
token at a time (decode), timing both phases separately so tokens/s are reported for each.
Sampling is greedy at ``temperature=0``; otherwise logits are divided by the temperature,
cut to the ``top_k`` largest and to the smallest set whose probability reaches ``top_p``
(nucleus sampling, Holtzman et al. 2020), and sampled with a seeded generator.

Example:
    >>> import torch
    >>> from slimtorch.llm.model import Llama, LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, n_kv_heads=1,
    ...                   hidden_dim=32, max_seq_len=32)
    >>> out = generate(Llama(cfg).eval(), [1, 2, 3], GenerateConfig(max_new_tokens=4))
    >>> len(out.tokens)
    4
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from slimtorch.errors import ConfigError
from slimtorch.llm.decode import decode_plan
from slimtorch.llm.model import Llama
from slimtorch.llm.native import NativeDecoder, NativeUnavailable
from slimtorch.profile.noise import Noise, NoiseWatch, torch_threads

CONFIG_VERSION = 1
ENGINES = ("auto", "native", "torch")


class Decoder(Protocol):
    """One-token decode steps against a model's KV cache."""

    name: str

    def step(self, tokens: Tensor, pos: int) -> Tensor:
        """Logits ``[B, V]`` for ``tokens`` [B, 1] at position ``pos``."""
        ...


def decoder(model: Llama, engine: str = "auto", threads: int = 0) -> Decoder:
    """The decode engine for ``model`` (call after ``model.setup_cache``).

    Args:
        model: The model, its KV cache set up.
        engine: ``"auto"``, ``"native"`` or ``"torch"`` (see :class:`GenerateConfig`).
        threads: Native engine threads (0: ``torch.get_num_threads()``).

    Raises:
        NativeUnavailable: ``engine="native"`` and the engine cannot be built or cannot run a
            layer (the message says which).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine: expected one of {ENGINES}, got {engine!r}")
    caches = [layer.attention.kv_cache for layer in model.layers]
    batch = caches[0].kv.shape[1] if caches and caches[0] is not None else 1
    if engine == "native" or (engine == "auto" and batch == 1):
        try:
            return NativeDecoder(model, threads=threads or torch.get_num_threads())
        except NativeUnavailable:
            if engine == "native":
                raise
    return decode_plan(model)


@dataclass(frozen=True)
class GenerateConfig:
    """How to generate.

    Args:
        max_new_tokens: Tokens to generate at most.
        temperature: 0 is greedy; otherwise logits are divided by it before sampling.
        top_k: Keep only the k most likely tokens (0: all).
        top_p: Keep the smallest set of tokens whose probability reaches p (1.0: all).
        seed: Seed of the sampling generator.
        stop_ids: Generation stops after emitting one of these.
        threads: torch threads for prefill and decode, and the native engine's threads
            (restored after; None: torch's current setting). Recorded in the
            :class:`Generation` with the noise verdict of its decode steps.
        decode_threads: threads for the decode phase only (0: as ``threads``, for either
            engine). One thread avoids OpenMP barrier stalls when the cores are shared with
            other work.
        engine: Decode engine: native (the compiled C step of :mod:`slimtorch.llm.native`,
            int8-activation integer kernels, batch 1; built with the system C compiler at
            first use), torch (the fused-kernel :class:`~slimtorch.llm.decode.DecodePlan`) or
            auto (native when it can be built and runs every layer of the model, else torch).
        version: Config format version.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_ids: tuple[int, ...] = ()
    decode_threads: int = 0
    engine: str = field(default="auto", metadata={"choices": ENGINES})
    threads: int | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: expected >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature: expected >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k: expected >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: expected in (0, 1], got {self.top_p}")
        if self.decode_threads < 0:
            raise ConfigError(f"decode_threads: expected >= 0, got {self.decode_threads}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected >= 1, got {self.threads}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine: expected one of {ENGINES}, got {self.engine!r}")


@dataclass(frozen=True)
class Generation:
    """Generated token ids and the speed of each phase.

    ``threads`` / ``decode_threads`` are the thread counts of prefill and decode; ``noisy``
    and ``noise`` judge the decode steps' times (:mod:`slimtorch.profile.noise`).
    """

    tokens: list[int]
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    engine: str = "torch"
    threads: int | None = None
    decode_threads: int | None = None
    noisy: bool = False
    noise: Noise | None = None

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens processed per second."""
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        """Generated tokens per second after the first (which prefill produced)."""
        n = len(self.tokens) - 1
        return n / self.decode_s if self.decode_s > 0 and n > 0 else float("nan")


def sample(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Pick the next token from ``logits`` [V].

    Example:
        >>> sample(torch.tensor([0.1, 3.0, 0.2]))
        1
        >>> g = torch.Generator().manual_seed(0)
        >>> sample(torch.tensor([0.0, 9.0, 8.0]), temperature=1.0, top_k=1, generator=g)
        1
    """
    if temperature == 0:
        return int(logits.argmax())
    z = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(z, min(top_k, z.numel())).values[-1]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        z = _nucleus(z, top_p)
    probs = torch.softmax(z, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _nucleus(z: Tensor, top_p: float) -> Tensor:
    """Mask all but the smallest prefix of sorted tokens whose probability reaches top_p."""
    sorted_z, order = torch.sort(z, descending=True)
    cum = torch.softmax(sorted_z, dim=-1).cumsum(-1)
    drop = cum - torch.softmax(sorted_z, dim=-1) >= top_p  # mass before this token already >= p
    return z.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))


def prefill(model: Llama, tokens: Tensor) -> Tensor:
    """Run the prompt ``[1, T]`` from position 0, filling the cache; last logits [V]."""
    return model(tokens, start_pos=0)[0, -1]


def decode_one_token(model: Llama, token: int, pos: int) -> Tensor:
    """Run one token at position ``pos`` against the cache; its logits [V].

    Goes through the model's :func:`~slimtorch.llm.decode.decode_plan` (fused kernels, no
    module calls); same logits as ``model(tokens, start_pos=pos)``.
    """
    return decode_plan(model).step(torch.tensor([[token]]), pos)[0]


def generate(
    model: Llama,
    prompt: Sequence[int],
    config: GenerateConfig | None = None,
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Generate up to ``config.max_new_tokens`` tokens after ``prompt``.

    Args:
        model: The model (its KV cache is set up here for prompt + new tokens).
        prompt: Prompt token ids (at least one).
        config: Sampling and stopping.
        on_token: Called with each new token id as soon as it exists (streaming).

    Returns:
        A :class:`Generation` (new tokens, prefill and decode seconds, threads, noise).
    """
    cfg = config or GenerateConfig()
    if not prompt:
        raise ConfigError("prompt: at least one token is needed")
    total = len(prompt) + cfg.max_new_tokens
    if total > model.config.max_seq_len:
        raise ConfigError(
            f"prompt ({len(prompt)}) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
            f"model's context {model.config.max_seq_len}"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    pick = lambda lg: sample(lg, cfg.temperature, cfg.top_k, cfg.top_p, gen)  # noqa: E731
    model.setup_cache(1, total)
    try:
        with torch_threads(cfg.threads) as used:
            n_dec = cfg.decode_threads or used
            dec = decoder(model, cfg.engine, n_dec)  # weights packed once per model
            with torch.inference_mode(), NoiseWatch(n_dec) as watch:
                t0 = time.perf_counter()
                tok = pick(prefill(model, torch.tensor([list(prompt)])))
                t1 = time.perf_counter()
                with _threads(cfg.decode_threads if dec.name == "torch" else 0):
                    out, steps = _decode_loop(dec, tok, len(prompt), cfg, pick, on_token)
                t2 = time.perf_counter()
    finally:
        model.clear_cache()
    noise = watch.judge(steps or None)
    return Generation(out, len(prompt), t1 - t0, t2 - t1, dec.name, used, n_dec, noise.noisy, noise)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch threads (0: leave the setting alone)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)


def _decode_loop(
    plan: Decoder,
    tok: int,
    pos: int,
    cfg: GenerateConfig,
    pick: Callable[[Tensor], int],
    on_token: Callable[[int], None] | None,
) -> tuple[list[int], list[float]]:
    """(tokens, seconds of each decode step, streaming callback excluded)."""
    out, seconds = [tok], []
    step = torch.empty(1, 1, dtype=torch.long)  # reused token buffer
    while True:
        if on_token is not None:
            on_token(tok)
        if tok in cfg.stop_ids or len(out) >= cfg.max_new_tokens:
            return out, seconds
        start = time.perf_counter()
        step.fill_(tok)
        tok = pick(plan.step(step, pos)[0])
        seconds.append(time.perf_counter() - start)
        out.append(tok)
        pos += 1


class TextStreamer:
    """Turns a stream of token ids into text pieces, holding back incomplete UTF-8.

    Args:
        decode: ``ids -> text`` (e.g. ``Tokenizer.decode``).
        write: Where each new piece goes (e.g. ``print(end="", flush=True)``).

    Example:
        >>> pieces = []
        >>> s = TextStreamer(lambda ids: "".join(chr(97 + i) for i in ids), pieces.append)
        >>> s(0); s(1)
        >>> pieces
        ['a', 'b']
    """

    def __init__(self, decode: Callable[[list[int]], str], write: Callable[[str], object]) -> None:
        self.decode, self.write = decode, write
        self.ids: list[int] = []
        self.shown = 0

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        self.write(text[self.shown :])
        self.shown = len(text)
