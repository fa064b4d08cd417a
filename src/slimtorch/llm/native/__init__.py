"""Native (C) decode engine: a whole token step in one call, int8-activation integer kernels.

torch's per-op cost (~3-5 us an op, ~25 ops per block) and its int4 kernel's bandwidth cap
decode on this CPU well below llama.cpp (see BENCHMARKS.md). This module compiles
``decode.c`` (about 300 lines of C, AVX2 when the CPU has it, a portable scalar path otherwise)
with the system C compiler at first use, caches the shared library under
``$SLIMTORCH_CACHE`` (default ``~/.cache/slimtorch``), and runs a batch-1 decode step of a
:class:`~slimtorch.llm.model.Llama` with no Python in the loop:

- :class:`~slimtorch.llm.kernels.Int4Linear` runs as 4-bit codes (GGUF Q4_0 nibble order)
  with its own bf16 scales and zeros, against activations quantized to int8 per block of 32
  (llama.cpp's Q4_0 x Q8_0 scheme); :class:`~slimtorch.llm.kernels.Int8Linear` likewise;
  plain ``nn.Linear`` in fp32.
- RMSNorm, RoPE, grouped-query attention over the model's own KV cache (so a torch prefill
  and native decode share it) and SwiGLU in plain C.

The int8 activations make it differ from the torch path by about 1e-2 relative in the
logits (the quantization llama.cpp also applies); ``tests/llm/test_native.py`` checks each
kernel against a float64 reference of exactly that arithmetic and the whole step against the
module forward.

Example:
    >>> import torch
    >>> from slimtorch.llm.model import Llama, LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=32, dim=64, n_layers=1, n_heads=2, n_kv_heads=1,
    ...                   hidden_dim=64, max_seq_len=8)
    >>> model = Llama(cfg).eval()
    >>> model.setup_cache(1, 8)
    >>> eng = NativeDecoder(model) if available() else None
    >>> logits = eng.step(torch.tensor([[3]]), 0) if eng else model(torch.tensor([[3]]))[:, 0]
    >>> logits.shape
    torch.Size([1, 32])
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.llm.decode import model_signature
from slimtorch.llm.kernels import Int4Linear, Int8Linear, unpack_int4_codes
from slimtorch.llm.model import Llama, RMSNorm

SOURCE = Path(__file__).with_name("decode.c")
ABI_VERSION = 2
QBLOCK = 32  # activation quantization block (inputs)
KIND_F32, KIND_Q4, KIND_Q8 = 0, 1, 2
LIN_FIELDS = 7  # kind, n, k, g, weight, scale and zero pointers
LAYER_FIELDS = 3 + 7 * LIN_FIELDS  # norm1, norm2, kv, then wq wk wv wo w1 w3 w2
HEADER_FIELDS = 13 + LIN_FIELDS  # sizes, pointers, then the head
FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-mavx2", "-mfma", "-fopenmp"),
    ("-O3",),
)


class NativeUnavailable(ConfigError):
    """The native engine cannot be built here (no C compiler) or cannot run this model."""


_LIB: ctypes.CDLL | None = None
_LIB_ERROR: str | None = None


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


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


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


class NativeLinear:
    """One linear in the engine's layout; keeps the tensors its pointers refer to alive.

    Args:
        module: ``nn.Linear`` (bias-free), :class:`Int4Linear` or :class:`Int8Linear`.
    """

    def __init__(self, module: nn.Module) -> None:
        if type(module) is nn.Linear and module.bias is None:
            w = module.weight.detach().float().contiguous()
            n, k = w.shape
            self.kind, self.g, self.tensors = KIND_F32, 0, [w]
        elif isinstance(module, Int4Linear):
            n, k, g = module.out_features, module.in_features, module.group_size
            if k % QBLOCK or g % QBLOCK:
                raise NativeUnavailable(
                    f"native engine: int4 needs inputs and group size divisible by {QBLOCK}, "
                    f"got {k} inputs, group {g}"
                )
            codes = pack_q4_codes(unpack_int4_codes(module))
            sz = module.scales_zeros  # [K/G, N, 2] bf16
            scale, zero = (sz[..., i].T.contiguous() for i in (0, 1))  # [N, K/G] each
            self.kind, self.g, self.tensors = KIND_Q4, g, [codes, scale, zero]
        elif isinstance(module, Int8Linear):
            n, k = module.out_features, module.in_features
            if k % QBLOCK:
                raise NativeUnavailable(f"native engine: int8 needs inputs divisible by {QBLOCK}")
            w8 = module.w_int8.contiguous()
            sc = module.scales.to(torch.bfloat16).contiguous()
            self.kind, self.g, self.tensors = KIND_Q8, 0, [w8, sc]
        else:
            raise NativeUnavailable(
                f"native engine: unsupported layer type {type(module).__name__}"
            )
        self.n, self.k = n, k

    def fields(self) -> list[int]:
        """The seven int64 fields of the C ``Lin`` struct."""
        ptrs = [t.data_ptr() for t in self.tensors] + [0, 0]
        return [self.kind, self.n, self.k, self.g, *ptrs[:3]]

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


def pack_q4_codes(codes: Tensor) -> Tensor:
    """int codes ``[N, K]`` in 0..15 -> uint8 ``[N, K/2]`` in GGUF Q4_0 nibble order.

    Inside each block of 32 inputs, byte ``j`` holds code ``j`` (low nibble) and ``j + 16``.

    Example:
        >>> pack_q4_codes(torch.arange(32).remainder(16)[None]).tolist()[0][:2]
        [0, 17]
    """
    n, k = codes.shape
    c = codes.to(torch.uint8).reshape(n, k // QBLOCK, 2, QBLOCK // 2)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(n, k // 2).contiguous()


def _norm_weight(m: nn.Module) -> Tensor:
    if type(m) is not RMSNorm:
        raise NativeUnavailable(f"native engine: unsupported norm {type(m).__name__}")
    return m.weight.detach().float().contiguous()


@dataclass
class _Packed:
    """A model's weights in the engine's layout (the tensors the descriptors point into)."""

    signature: tuple[object, ...]
    layers: list[tuple[list[NativeLinear], list[Tensor]]]  # 7 linears, 2 norm weights
    emb: Tensor
    head: NativeLinear
    norm: Tensor
    cos: Tensor
    sin: Tensor


_PACKED: weakref.WeakKeyDictionary[Llama, _Packed] = weakref.WeakKeyDictionary()


def packed_weights(model: Llama) -> _Packed:
    """``model``'s weights in the engine's layout, cached until the model changes.

    Raises:
        NativeUnavailable: A layer the engine does not run.
    """
    sig = model_signature(model)
    hit = _PACKED.get(model)
    if hit is not None and hit.signature == sig:
        return hit
    layers = []
    with torch.inference_mode(False), torch.no_grad():
        for layer in model.layers:
            att, ffn = layer.attention, layer.feed_forward
            mods = [att.wq, att.wk, att.wv, att.wo, ffn.w1, ffn.w3, ffn.w2]
            norms = [_norm_weight(layer.attention_norm), _norm_weight(layer.ffn_norm)]
            layers.append(([NativeLinear(m) for m in mods], norms))
        emb = model.tok_embeddings
        if type(emb) is not nn.Embedding:
            raise NativeUnavailable(f"native engine: unsupported embedding {type(emb).__name__}")
        packed = _Packed(
            sig, layers, emb.weight.detach().float().contiguous(), NativeLinear(model.output),
            _norm_weight(model.norm), model.rope_cos.contiguous(), model.rope_sin.contiguous(),
        )  # fmt: skip
    _PACKED[model] = packed
    return packed


class NativeDecoder:
    """Batch-1 decode steps of ``model`` in C, against ``model``'s KV cache (row 0).

    Build it after ``model.setup_cache``: it records the cache buffers' addresses. Packing the
    weights is cached per model (:func:`packed_weights`), so a new decoder per generation is
    cheap.

    Args:
        model: A :class:`Llama` whose block linears and head are ``nn.Linear``,
            :class:`Int4Linear` or :class:`Int8Linear`, with a KV cache set up.
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
