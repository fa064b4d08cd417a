"""Tokenizer from GGUF metadata, Hugging Face folder round trip, the ``slimtorch llm`` CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from slimtorch.cli.main import main
from slimtorch.errors import DataError, ModelError
from slimtorch.llm.gguf_export import ExportConfig, export_gguf
from slimtorch.llm.gguf_load import load_gguf
from slimtorch.llm.hf_load import load_hf, save_hf
from slimtorch.llm.perplexity import PerplexityConfig, perplexity
from slimtorch.llm.tokenizer import Tokenizer


def byte_alphabet() -> list[str]:
    """GPT-2's bytes_to_unicode, written out independently."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


SPECIAL = ["<|im_start|>", "<|im_end|>"]
TOKENS = [*SPECIAL, *byte_alphabet(), "Ġt", "he", "Ġthe"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
META = {
    "general.name": "tiny",
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "smollm",
    "tokenizer.ggml.tokens": TOKENS,
    "tokenizer.ggml.token_type": [3, 3] + [1] * (len(TOKENS) - 2),
    "tokenizer.ggml.merges": ["Ġ t", "h e", "Ġt he"],
    "tokenizer.ggml.bos_token_id": 0,
    "tokenizer.ggml.eos_token_id": 1,
    "tokenizer.ggml.add_bos_token": False,
    "tokenizer.chat_template": TEMPLATE,
}


def test_tokenizer_merges_specials_and_round_trip() -> None:
    tok = Tokenizer.from_gguf_metadata(META)
    ids = tok.encode("<|im_start|> the 42")
    assert ids[0] == 0 and TOKENS.index("Ġthe") in ids
    assert [TOKENS[i] for i in ids[-3:]] == ["Ġ", "4", "2"]  # digits split one by one
    text = "Hello, wörld! the\nthe 123 ✓"
    assert tok.decode(tok.encode(text)) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def tiny_gguf(tiny, tmp_path: Path) -> Path:
    model = tiny(vocab_size=len(TOKENS), bos_token_id=0, eos_token_id=1, max_seq_len=256)
    return export_gguf(model, tmp_path / "tiny.gguf", META, ExportConfig(weight_type="F32"))


def test_hf_folder_round_trip(tiny, tmp_path: Path) -> None:
    model = tiny(tie_embeddings=False)
    back = load_hf(save_hf(model, tmp_path / "hf"))
    for name, p in model.state_dict().items():
        assert torch.equal(back.model.state_dict()[name], p), name
    x = torch.tensor([[1, 5, 9, 3]])
    with torch.inference_mode():
        torch.testing.assert_close(back.model(x), model(x))


def test_cli_eval_matches_direct_nll(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 12)
    rc = main(
        [
            "llm",
            "eval",
            str(tiny_gguf),
            "--text",
            str(text),
            "--ctx",
            "32",
            "--protocol",
            "llamacpp",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 0
    ppl = float(capsys.readouterr().out.split()[1])
    # independent: non-overlapping 32-token windows, targets 17..31 of each
    loaded = load_gguf(tiny_gguf)
    ids = Tokenizer.from_gguf_metadata(META).encode(text.read_text())
    nll, n = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(ids) - 31, 32):
            w = torch.tensor([ids[s : s + 32]])
            logp = F.log_softmax(loaded.model(w)[0], -1)
            for j in range(16, 31):
                nll -= float(logp[j, w[0, j + 1]])
                n += 1
    assert ppl == pytest.approx(math.exp(nll / n), rel=1e-3)


def test_short_text_is_a_clear_error(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "short.txt"
    text.write_text("the")
    rc = main(["llm", "eval", str(tiny_gguf), "--text", str(text), "--ctx", "64"])
    assert rc == 2
    assert "fewer than one context of 64" in capsys.readouterr().err
    with pytest.raises(DataError):
        perplexity(load_gguf(tiny_gguf).model, [1, 2, 3], PerplexityConfig(ctx=8))


def test_cli_generate_and_export(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    rc = main(
        [
            "llm",
            "generate",
            str(tiny_gguf),
            "--prompt",
            "the",
            "--chat",
            "--max-new-tokens",
            "5",
            "--kernel",
            "int8",
        ]
    )
    assert rc == 0
    assert "decode" in capsys.readouterr().err
    out = tmp_path / "q.gguf"
    assert main(["llm", "export", str(tiny_gguf), "--out", str(out), "--type", "Q4_0"]) == 0
    back = load_gguf(out)
    assert back.tensor_types["layers.0.attention.wq.weight"] == "Q4_0"
    assert back.metadata["tokenizer.ggml.merges"] == META["tokenizer.ggml.merges"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.append({'role': 'x'}) }}",  # mutation: the sandbox is immutable
        "{% for m in messages %}",  # syntax error
    ],
)
def test_hostile_or_broken_chat_template_is_one_line_error(tmp_path, monkeypatch, template):
    from slimtorch.llm.tokenizer import Tokenizer

    monkeypatch.chdir(tmp_path)
    tok = Tokenizer(None, chat_template=template)
    with pytest.raises(ModelError, match="chat template") as info:
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "MARKER").exists()
