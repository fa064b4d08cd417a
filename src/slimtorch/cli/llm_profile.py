"""``slimtorch llm profile``: per-token counts of a Llama-family model (no timing)."""

from __future__ import annotations

import argparse

import torch

from slimtorch.cli.options import add_llm_model_argument
from slimtorch.errors import ConfigError
from slimtorch.llm.llm_profile import profile_llm
from slimtorch.llm.source import load_model


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``slimtorch llm profile``."""
    p = sub.add_parser(
        "profile",
        help="parameters, bits, MACs per token, KV-cache and weight bytes per token",
        description="Profile MODEL on a [1, TOKENS] input (counts, no timing).",
    )
    add_llm_model_argument(p)
    p.add_argument("--tokens", type=int, default=128, help="sequence length profiled (128)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    if args.tokens < 1:
        raise ConfigError(f"--tokens: expected >= 1, got {args.tokens}")
    loaded = load_model(args.model, max_seq_len=max(args.tokens, 16))
    prof = profile_llm(loaded.model, torch.zeros(1, args.tokens, dtype=torch.long))
    for key, value in prof.to_dict().items():
        print(f"{key:>26}: {value:,.0f}")
    return 0
