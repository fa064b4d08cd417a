"""Benchmark adapters for what the other capabilities produce: sparse, int8, k-means, .slim, LLMs.

Registered when ``slimtorch.bench`` is imported, so ``slimtorch bench`` (and ``benchmark``)
take these sources beside zoo names and checkpoint folders:

- ``sparse:CKPT`` / ``sparse@B:CKPT`` / ``sparse=S:CKPT``: a (magnitude-)pruned checkpoint
  executed with CSR kernels (``slimtorch.prune.sparse.to_sparse``): layers past the measured
  break-even sparsity at batch 1 (``@B``: at batch B), or past sparsity ``S``.
- ``int8:FILE`` / ``int8@BACKEND:FILE`` or a bare path to the ``int8.safetensors`` that
  ``slimtorch quantize --integer`` writes (or its ``--out`` folder): the integer-only model
  (``slimtorch.quantize.intformat.load_integer_model``), on its saved backend or ``BACKEND``.
- ``kmeansN:CKPT``: the checkpoint k-means quantized to ``N`` bits
  (``kmeans_quantize_model``). ``slimtorch quantize --method kmeans`` writes a report but no
  model file, so the adapter redoes the (deterministic, linear-init) clustering at load time.
- ``ptqN:CKPT``: linear fake-quant PTQ (``N``-bit weights, 8-bit activations), calibrated on
  the training split of the data recorded in the checkpoint (digits by default); the same
  reason: ``slimtorch quantize --method linear`` saves no fake-quant model.
- ``FILE.slim``: a Deep Compression file from ``slimtorch compress``
  (``slimtorch.encode.load_compressed``), decoded once at load time.
- LLM generators: ``smollm2``, ``FILE.gguf`` or ``llm:HF_FOLDER``, with optional
  ``@int4`` / ``@int4gG`` / ``@int8`` (``slimtorch.llm.kernels`` weight formats) and ``#N``
  (new tokens per request, default 32): greedy generation streaming one token at a time, so
  the LLM harness measures TTFT, TPOT and tokens/s.

Channel-pruned checkpoints (``slimtorch.prune`` surgery, spec ``build_pruned``) need no
adapter: the built-in ``model`` adapter rebuilds them from their spec.

Example:
    >>> parse_llm_source("smollm2@int4g64#16")
    ('smollm2', 'int4', 64, 16)
    >>> ADAPTERS[0].matches("sparse=0.5:runs/lenet"), ADAPTERS[0].matches("lenet5")
    (True, False)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from slimtorch.bench.sut import (
    BenchTarget,
    LoadOptions,
    SUTAdapter,
    checkpoint_record,
    module_sut,
    register_sut_adapter,
)
from slimtorch.checkpoint import load_checkpoint
from slimtorch.data import load_data, make_loaders, recorded_split
from slimtorch.data.record import DataRecord, artefact_record
from slimtorch.encode import load_compressed
from slimtorch.errors import ConfigError, ModelError
from slimtorch.prune.sparse import SparseConv2d, SparseLinear, to_sparse
from slimtorch.quantize.intformat import FORMAT_NAME as INTEGER_FORMAT
from slimtorch.quantize.intformat import integer_model_info, load_integer_model
from slimtorch.quantize.kmeans import KMeansConfig, kmeans_quantize_model
from slimtorch.quantize.ptq import PTQConfig, quantize_ptq

INTEGER_FILE = "int8.safetensors"  # what ``slimtorch quantize --integer`` writes in --out
COMPRESSED_SUFFIX = ".slim"
DEFAULT_NEW_TOKENS = 32
LLM_WARMUP_TOKENS = 2  # one untimed request at load: the decode plan is built lazily
DEFAULT_INT4_GROUP = 32  # slimtorch.llm.kernels.KernelConfig's default group size
SPARSE_DEFAULT_BATCH = 1  # SingleStream's batch: the break-even row used by plain ``sparse:``
PTQ_ACTIVATION_BITS = 8
PTQ_CALIB_BATCH = 64
# Short prompts for LLM SingleStream runs (the model's chat template is not applied).
LLM_PROMPTS = (
    "The capital of France is",
    "Write a haiku about the sea.",
    "List three primary colors:",
    "def fibonacci(n):",
    "Explain what a neural network is in one sentence.",
    "Translate 'good morning' into Spanish:",
    "The quick brown fox",
    "What is 12 times 7?",
)
# Token-id prompts when the model carries no tokenizer (tiny test models).
FALLBACK_PROMPT_LENGTHS = (4, 7, 5, 9)

_SPARSE = re.compile(r"sparse(?:@(?P<batch>\d+)|=(?P<sparsity>[0-9.]+))?:(?P<path>.+)", re.S)
_INT8 = re.compile(r"int8(?:@(?P<backend>\w+))?:(?P<path>.+)", re.S)
_KMEANS = re.compile(r"kmeans(?P<bits>\d+):(?P<path>.+)", re.S)
_PTQ = re.compile(r"ptq(?P<bits>\d+):(?P<path>.+)", re.S)
_LLM = re.compile(r"(?P<src>.+?)(?:@(?P<mode>int4|int8|fp32)(?:g(?P<group>\d+))?)?(?:#(?P<n>\d+))?")


def _target(label: str, model: nn.Module, adapter: str, **info: Any) -> BenchTarget:
    model = model.eval()
    return BenchTarget(label, module_sut(model), "classifier", model,
                       info={"adapter": adapter, **info})  # fmt: skip


def _label(path: str, tag: str) -> str:
    """``folder[tag]`` for checkpoint folders and their files, ``stem[tag]`` for other files."""
    p = Path(path)
    if p.is_file() and p.name not in ("model.json", "model.safetensors", INTEGER_FILE):
        return f"{p.stem}[{tag}]"
    return f"{(p if p.is_dir() else p.parent).name or p.name}[{tag}]"


# --- sparse (CSR) execution of a pruned checkpoint -------------------------------------------
def _load_sparse(source: str, _options: LoadOptions) -> BenchTarget:
    m = _SPARSE.fullmatch(source)
    assert m is not None  # matches() accepted it
    batch = int(m["batch"] or SPARSE_DEFAULT_BATCH)
    sparsity = float(m["sparsity"]) if m["sparsity"] else None
    if sparsity is not None and not 0 <= sparsity <= 1:
        raise ConfigError(f"{source}: sparse=S needs 0 <= S <= 1, got {sparsity}")
    model, spec, _ = load_checkpoint(m["path"])
    sparse = to_sparse(model, sparsity, batch_size=batch)
    switched = [n for n, x in sparse.named_modules() if isinstance(x, SparseLinear | SparseConv2d)]
    return _target(_label(m["path"], "sparse"), sparse, "sparse", source=source,
                   arch=spec.name, csr_layers=switched, batch_size=batch)  # fmt: skip


# --- integer-only int8 model -----------------------------------------------------------------
def is_integer_file(path: Path) -> bool:
    """True when ``path`` is a safetensors file whose metadata says it is an integer model."""
    if not path.is_file() or path.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get("slimtorch", "{}")).get("format") == INTEGER_FORMAT
    except Exception:  # not safetensors, or foreign metadata: not ours
        return False


def _integer_path(text: str) -> Path | None:
    p = Path(text)
    if p.is_dir() and not (p / "model.json").exists():
        p = p / INTEGER_FILE
    return p if is_integer_file(p) else None


def _match_integer(source: str) -> bool:
    return _INT8.fullmatch(source) is not None or _integer_path(source) is not None


def _load_integer(source: str, _options: LoadOptions) -> BenchTarget:
    m = _INT8.fullmatch(source)
    text, backend = (m["path"], m["backend"]) if m else (source, None)
    path = _integer_path(text)
    if path is None:
        raise ModelError(f"{text}: not an integer-only model file ({INTEGER_FILE})")
    model = load_integer_model(path)
    if backend is not None:
        model = model.with_backend(backend)
    runs_on = model.runs_on  # "reference" where this CPU's int8 engine would saturate
    tag = model.backend if runs_on == model.backend else f"{model.backend}->{runs_on}"
    return _target(_label(str(path), f"int8-{tag}"), model, "int8", source=source,
                   backend=model.backend, runs_on=runs_on)  # fmt: skip


# --- k-means and linear fake-quant, re-applied to a float checkpoint --------------------------
def _load_kmeans(source: str, _options: LoadOptions) -> BenchTarget:
    m = _KMEANS.fullmatch(source)
    assert m is not None
    model, spec, _ = load_checkpoint(m["path"])
    qmodel, _report = kmeans_quantize_model(model, KMeansConfig(bits=int(m["bits"])))
    return _target(_label(m["path"], f"kmeans{m['bits']}"), qmodel, "kmeans", source=source,
                   arch=spec.name, bits=int(m["bits"]))  # fmt: skip


def _load_ptq(source: str, _options: LoadOptions) -> BenchTarget:
    m = _PTQ.fullmatch(source)
    assert m is not None
    model, spec, metrics = load_checkpoint(m["path"])
    data, seed = recorded_split(metrics, m["path"])
    train, _, _ = make_loaders(load_data(data, seed=seed), PTQ_CALIB_BATCH, seed)
    config = PTQConfig(weight_bits=int(m["bits"]), activation_bits=PTQ_ACTIVATION_BITS)
    qmodel, _report = quantize_ptq(model, train, config)
    a_bits = PTQ_ACTIVATION_BITS - int(config.activation_range_reduced)  # 7 where auto narrowed
    return _target(_label(m["path"], f"ptq-w{m['bits']}a{a_bits}"), qmodel, "ptq", source=source,
                   arch=spec.name, bits=int(m["bits"]), activation_bits=a_bits)  # fmt: skip


# --- Deep Compression file -------------------------------------------------------------------
def _match_slim(source: str) -> bool:
    return source.endswith(COMPRESSED_SUFFIX)


def _load_slim(source: str, _options: LoadOptions) -> BenchTarget:
    if not Path(source).is_file():
        raise ModelError(f"{source}: no such compressed file")
    model, spec, _meta = load_compressed(source)
    return _target(f"{Path(source).stem}[slim]", model, "slim", source=source,
                   arch=spec.name, file_bytes=Path(source).stat().st_size)  # fmt: skip


# --- LLM token generators --------------------------------------------------------------------
def parse_llm_source(source: str) -> tuple[str, str, int, int]:
    """Split ``SOURCE[@MODE[gG]][#N]`` into ``(source, mode, group_size, new_tokens)``.

    Example:
        >>> parse_llm_source("llm:models/hf#8")
        ('models/hf', 'fp32', 32, 8)
    """
    m = _LLM.fullmatch(source)
    assert m is not None  # the pattern accepts any non-empty string
    src = m["src"].removeprefix("llm:")
    group = int(m["group"]) if m["group"] else DEFAULT_INT4_GROUP
    return src, m["mode"] or "fp32", group, int(m["n"] or DEFAULT_NEW_TOKENS)


def _match_llm(source: str) -> bool:
    src = _LLM.fullmatch(source)["src"]  # type: ignore[index]
    return src == "smollm2" or src.startswith("llm:") or src.endswith(".gguf")


def stream_tokens(model: nn.Module, prompt: Sequence[int], max_new_tokens: int,
                  stop_ids: Sequence[int] = ()) -> Iterator[int]:  # fmt: skip
    """Greedy generation yielding each token as soon as it exists (prefill, then decode).

    The same steps as ``slimtorch.llm.generate.generate`` (prefill, then the model's decode
    engine), as a generator so a load generator can time the first token and the rest.

    Args:
        model: a ``slimtorch.llm.Llama``.
        prompt: prompt token ids.
        max_new_tokens: tokens to generate at most.
        stop_ids: stop after emitting one of these.

    Returns:
        An iterator of token ids.
    """
    # deferred: slimtorch.llm needs the llm extra (gguf); the other adapters work without it
    from slimtorch.llm.generate import decoder, prefill

    model.setup_cache(1, len(prompt) + max_new_tokens)
    try:
        plan = decoder(model)  # the native engine where it runs, else the torch plan
        with torch.inference_mode():
            tok = int(prefill(model, torch.tensor([list(prompt)])).argmax())
        pos, step, count = len(prompt), torch.empty(1, 1, dtype=torch.long), 1
        yield tok
        while count < max_new_tokens and tok not in stop_ids:
            step.fill_(tok)
            with torch.inference_mode():
                tok = int(plan.step(step, pos)[0].argmax())
            pos, count = pos + 1, count + 1
            yield tok
    finally:
        model.clear_cache()


def _prompts(loaded: Any) -> list[list[int]]:
    from slimtorch.llm.source import load_tokenizer  # deferred: the llm extra, as above

    try:
        tok = load_tokenizer(loaded)
    except ModelError:
        vocab = loaded.model.config.vocab_size
        return [[(7 * i + 3 * n) % vocab for i in range(n)] for n in FALLBACK_PROMPT_LENGTHS]
    return [tok.encode(p) for p in LLM_PROMPTS]


def _load_llm(source: str, _options: LoadOptions) -> BenchTarget:
    # deferred: slimtorch.llm needs the llm extra (gguf); the other adapters work without it
    from slimtorch.llm.kernels import KernelConfig, convert_linears
    from slimtorch.llm.source import load_model

    src, mode, group, n_new = parse_llm_source(source)
    loaded = load_model(src)
    prompts, model = _prompts(loaded), loaded.model.eval()
    converted = convert_linears(model, KernelConfig(mode=mode, group_size=group))
    for _ in stream_tokens(model, prompts[0], LLM_WARMUP_TOKENS):  # untimed: builds the plan
        pass
    tag = mode if mode != "int4" else f"int4g{group}"
    return BenchTarget(
        f"{Path(src).stem or src}[{tag}]",
        lambda prompt: stream_tokens(model, prompt, n_new),  # fixed length: no EOS stop
        "generator",
        model,
        prompts=prompts,
        info={
            "adapter": "llm",
            "source": source,
            "mode": mode,
            "group_size": group,
            "new_tokens": n_new,
            "converted": len(converted),
        },
    )


# --- the data each source was made with ------------------------------------------------------
def _recorded_in_checkpoint(pattern: re.Pattern[str]) -> Any:
    """``recorded`` for ``PREFIX:CKPT`` sources: the checkpoint's record."""

    def recorded(source: str) -> DataRecord | None:
        m = pattern.fullmatch(source)
        return None if m is None else checkpoint_record(m["path"])

    return recorded


def _recorded_integer(source: str) -> DataRecord | None:
    m = _INT8.fullmatch(source)
    path = _integer_path(m["path"] if m else source)
    if path is None:
        return None
    info = integer_model_info(path)
    record = DataRecord.from_dict(info.get("data"), str(path))
    if record is None or record.input_shape is not None:
        return record  # the shape below is the model's own, recorded beside its data
    return DataRecord(record.data, record.seed, tuple(info["input_shape"]), record.num_classes)


def _recorded_slim(source: str) -> DataRecord | None:
    if not Path(source).is_file():
        return None
    _model, spec, metadata = load_compressed(source)
    return artefact_record(metadata, spec.kwargs, source)


ADAPTERS = (
    SUTAdapter("sparse", lambda s: _SPARSE.fullmatch(s) is not None, _load_sparse,
               _recorded_in_checkpoint(_SPARSE)),
    SUTAdapter("int8", _match_integer, _load_integer, _recorded_integer),
    SUTAdapter("kmeans", lambda s: _KMEANS.fullmatch(s) is not None, _load_kmeans,
               _recorded_in_checkpoint(_KMEANS)),
    SUTAdapter("ptq", lambda s: _PTQ.fullmatch(s) is not None, _load_ptq,
               _recorded_in_checkpoint(_PTQ)),
    SUTAdapter("slim", _match_slim, _load_slim, _recorded_slim),
    SUTAdapter("llm", _match_llm, _load_llm),
)  # fmt: skip


def register_all() -> None:
    """Register every adapter of this module (what importing ``slimtorch.bench`` does)."""
    for adapter in reversed(ADAPTERS):
        register_sut_adapter(adapter)
