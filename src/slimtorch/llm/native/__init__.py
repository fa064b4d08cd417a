"""Native (C) decode engine: a whole token step in one call, int8-activation integer kernels.

torch's per-op cost (~3-5 us an op, ~25 ops per block) and its int4 kernel's bandwidth cap
decode on this CPU well below llama.cpp (see BENCHMARKS.md). This package compiles
``decode.c`` (about 300 lines of C, AVX2 when the CPU has it, a portable scalar path otherwise)
with the system C compiler at first use, caches the shared library under
``$SLIMTORCH_CACHE`` (default ``~/.cache/slimtorch``), and runs a batch-1 decode step of a
:class:`~slimtorch.llm.model.Llama` with no Python in the loop. The work is in three modules;
this one only hands their names on:

- :mod:`~slimtorch.llm.native.build`: compile (first flag set that works), cache, fallback.
- :mod:`~slimtorch.llm.native.pack`: a model's weights in the engine's layout.
- :mod:`~slimtorch.llm.native.engine`: load through ctypes, run a linear or a decode step.

What a step computes:

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

from slimtorch.llm.native.build import FLAG_SETS, SOURCE, NativeUnavailable, build, cache_dir
from slimtorch.llm.native.engine import (
    ABI_VERSION,
    HEADER_FIELDS,
    LAYER_FIELDS,
    NativeDecoder,
    NativeLinear,
    available,
    has_avx2,
    library,
    load,
)
from slimtorch.llm.native.pack import (
    KIND_F32,
    KIND_Q4,
    KIND_Q8,
    LIN_FIELDS,
    QBLOCK,
    PackedLinear,
    PackedModel,
    pack_q4_codes,
    packed_weights,
)

__all__ = [
    "ABI_VERSION",
    "FLAG_SETS",
    "HEADER_FIELDS",
    "KIND_F32",
    "KIND_Q4",
    "KIND_Q8",
    "LAYER_FIELDS",
    "LIN_FIELDS",
    "QBLOCK",
    "SOURCE",
    "NativeDecoder",
    "NativeLinear",
    "NativeUnavailable",
    "PackedLinear",
    "PackedModel",
    "available",
    "build",
    "cache_dir",
    "has_avx2",
    "library",
    "load",
    "pack_q4_codes",
    "packed_weights",
]
