"""Load the compiled engine through ctypes and run it: one linear, or a whole decode step.

:func:`library` builds (:mod:`~slimtorch.llm.native.build`) and loads the engine once per
process; :class:`NativeDecoder` points a descriptor (header, then one row of fields per layer,
matching ``decode.c``) at a model's packed weights (:mod:`~slimtorch.llm.native.pack`) and
its KV cache, and runs batch-1 decode steps with no Python in the loop.

Example:
    >>> from torch import nn
    >>> lin = NativeLinear(nn.Linear(32, 4, bias=False)) if available() else None
    >>> (lin(torch.zeros(32)) if lin else torch.zeros(4)).tolist()
    [0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from slimtorch.errors import ConfigError
from slimtorch.llm.model import Llama
from slimtorch.llm.native.build import NativeUnavailable, build
from slimtorch.llm.native.pack import LIN_FIELDS, PackedLinear, packed_weights

ABI_VERSION = 2
LAYER_FIELDS = 3 + 7 * LIN_FIELDS  # norm1, norm2, kv, then wq wk wv wo w1 w3 w2
HEADER_FIELDS = 13 + LIN_FIELDS  # sizes, pointers, then the head

_LIB: ctypes.CDLL | None = None
_LIB_ERROR: str | None = None


def load(path: Path) -> ctypes.CDLL:
    """Load a built engine and declare its entry points."""
    lib = ctypes.CDLL(str(path))
    lib.slim_abi_version.restype = ctypes.c_int64
    lib.slim_has_avx2.restype = ctypes.c_int64
    if lib.slim_abi_version() != ABI_VERSION:
        raise NativeUnavailable(f"native decode engine: {path} has a different ABI; delete it")
    lib.slim_decode_step.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p,
        ctypes.c_int,
    ]  # fmt: skip
    lib.slim_decode_step.restype = ctypes.c_int
    lib.slim_linear.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.slim_linear.restype = ctypes.c_int
    return lib


def library() -> ctypes.CDLL:
    """The process's engine (built once per source, CPU and compiler, then loaded from cache).

    Raises:
        NativeUnavailable: No compiler, or the build failed (the message says why).
    """
    global _LIB, _LIB_ERROR
    if _LIB is not None:
        return _LIB
    if _LIB_ERROR is not None:
        raise NativeUnavailable(_LIB_ERROR)
    try:
        _LIB = load(build())
    except NativeUnavailable as e:
        _LIB_ERROR = str(e)
        raise
    return _LIB


def available() -> bool:
    """Whether the engine can be built and loaded here."""
    try:
        library()
    except NativeUnavailable:
        return False
    return True


def has_avx2() -> bool:
    """Whether the compiled engine uses its AVX2 kernels (else the scalar fallback)."""
    return bool(library().slim_has_avx2())


class NativeLinear(PackedLinear):
    """A :class:`~slimtorch.llm.native.pack.PackedLinear` that runs in the engine.

    Args:
        module: ``nn.Linear`` (bias-free), :class:`~slimtorch.llm.kernels.Int4Linear` or
            :class:`~slimtorch.llm.kernels.Int8Linear`.
    """

    def __call__(self, x: Tensor, threads: int = 1, lib: ctypes.CDLL | None = None) -> Tensor:
        """``W x`` for one fp32 vector ``x`` [k] (tests and micro-benchmarks; ``lib``: a
        specific build, default :func:`library`)."""
        xc = x.detach().float().contiguous()
        if xc.shape != (self.k,):
            raise ConfigError(f"native linear: expected input [{self.k}], got {list(xc.shape)}")
        y = torch.empty(self.n)
        desc = torch.tensor(self.fields(), dtype=torch.int64)
        rc = (lib or library()).slim_linear(desc.data_ptr(), xc.data_ptr(), y.data_ptr(), threads)
        if rc != 0:
            raise MemoryError("native linear: out of memory")
        return y


class NativeDecoder:
    """Batch-1 decode steps of ``model`` in C, against ``model``'s KV cache (row 0).

    Build it after ``model.setup_cache``: it records the cache buffers' addresses. Packing the
    weights is cached per model (:func:`~slimtorch.llm.native.pack.packed_weights`), so a new
    decoder per generation is cheap.

    Args:
        model: A :class:`Llama` whose block linears and head are ``nn.Linear``,
            :class:`~slimtorch.llm.kernels.Int4Linear` or
            :class:`~slimtorch.llm.kernels.Int8Linear`, with a KV cache set up.
        threads: OpenMP threads for the matrix-vector products (1 avoids the barrier
            waits that hurt on shared cores).

    Raises:
        NativeUnavailable: No compiler, or a layer the engine does not run.
    """

    name = "native"

    def __init__(self, model: Llama, threads: int = 1) -> None:
        self._lib = library()
        cfg = model.config
        self.threads, self.eps, self.vocab = max(1, threads), float(cfg.norm_eps), cfg.vocab_size
        caches = [layer.attention.kv_cache for layer in model.layers]
        if any(c is None for c in caches):
            raise ConfigError("native decode: call model.setup_cache(batch, max_len) first")
        kvs = [c.kv for c in caches]  # type: ignore[union-attr]
        if any(not kv.is_contiguous() or kv.dtype != torch.float32 for kv in kvs):
            raise NativeUnavailable("native engine: KV caches must be contiguous fp32")
        self.cache_len = kvs[0].shape[3]
        self.packed = p = packed_weights(model)
        header = [
            cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_size, cfg.hidden_dim,
            cfg.vocab_size, kvs[0].shape[1], self.cache_len, p.emb.data_ptr(),
            p.norm.data_ptr(), p.cos.data_ptr(), p.sin.data_ptr(), *p.head.fields(),
        ]  # fmt: skip
        rows = [
            [norms[0].data_ptr(), norms[1].data_ptr(), kv.data_ptr()]
            + [f for lin in lins for f in lin.fields()]
            for (lins, norms), kv in zip(p.layers, kvs, strict=True)
        ]
        self._kvs = kvs  # the buffers the descriptor points into stay alive with it
        self.desc = torch.tensor(header + [f for row in rows for f in row], dtype=torch.int64)
        if self.desc.numel() != HEADER_FIELDS + cfg.n_layers * LAYER_FIELDS:
            raise RuntimeError("native decode: descriptor layout does not match decode.c")

    def step(self, tokens: Tensor, pos: int) -> Tensor:
        """Logits ``[1, V]`` for one token ``tokens`` [1, 1] at position ``pos``."""
        if tokens.numel() != 1:
            raise ConfigError(f"native decode: batch 1 only, got {tokens.numel()} tokens")
        if pos + 1 > self.cache_len:
            raise ConfigError(f"KV cache: position {pos + 1} exceeds its length")
        logits = torch.empty(1, self.vocab)
        rc = self._lib.slim_decode_step(
            self.desc.data_ptr(), int(tokens.reshape(-1)[0]), pos, self.eps,
            logits.data_ptr(), self.threads,
        )  # fmt: skip
        if rc != 0:
            raise ConfigError(f"native decode: step failed (code {rc}; token or position)")
        return logits
