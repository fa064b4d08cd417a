"""Byte-level BPE tokenizer from GGUF metadata (or ``tokenizer.json``), and the chat template.

Built on the ``tokenizers`` library: the vocabulary (``tokenizer.ggml.tokens``), the merges
(``tokenizer.ggml.merges``) and the control tokens (token type 3, matched whole in text, e.g.
``<|im_start|>``) come from the file; the pre-tokenizer follows ``tokenizer.ggml.pre`` the way
llama.cpp does (``smollm``: every digit split off, then GPT-2's regex; ``gpt2``/``default``:
GPT-2's regex). The chat template (``tokenizer.chat_template``, Jinja) is rendered with a
sandboxed Jinja environment.

Example:
    >>> tok = Tokenizer.from_gguf_metadata(meta)  # doctest: +SKIP
    >>> tok.decode(tok.encode("Hello world"))  # doctest: +SKIP
    'Hello world'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from slimtorch.errors import ModelError, first_line

CONTROL_TOKEN_TYPE = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL
USER_DEFINED_TOKEN_TYPE = 4  # LLAMA_TOKEN_TYPE_USER_DEFINED
SPLIT_DIGITS_PRE = ("smollm",)
GPT2_PRE = ("gpt2", "default", "smollm")


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus special token ids and the chat template.

    Args:
        backend: The ``tokenizers.Tokenizer``.
        bos_id / eos_id: Special token ids (-1: none).
        add_bos: Prepend BOS when encoding (the model's metadata decides).
        chat_template: Jinja chat template, or ``None``.
    """

    def __init__(
        self,
        backend: Any,
        bos_id: int = -1,
        eos_id: int = -1,
        add_bos: bool = False,
        chat_template: str | None = None,
    ) -> None:
        self.backend = backend
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.chat_template = chat_template

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        """Build from GGUF key/values (``tokenizer.ggml.*``, ``tokenizer.chat_template``)."""
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ModelError(
                f"tokenizer.ggml.model {model!r} is not supported (only byte-level BPE, 'gpt2')"
            )
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre not in GPT2_PRE:
            raise ModelError(
                f"tokenizer.ggml.pre {pre!r} is not supported (supported: {', '.join(GPT2_PRE)})"
            )
        backend = _bpe_backend(
            list(meta["tokenizer.ggml.tokens"]),
            list(meta["tokenizer.ggml.merges"]),
            list(meta.get("tokenizer.ggml.token_type", [])),
            split_digits=pre in SPLIT_DIGITS_PRE,
        )
        return cls(
            backend,
            bos_id=int(meta.get("tokenizer.ggml.bos_token_id", -1)),
            eos_id=int(meta.get("tokenizer.ggml.eos_token_id", -1)),
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=meta.get("tokenizer.chat_template"),
        )

    @classmethod
    def from_file(cls, path: str | Path, **special: Any) -> Tokenizer:
        """Build from a Hugging Face ``tokenizer.json``; ``special`` as in the constructor."""
        try:
            backend = HFTokenizer.from_file(str(path))
        except Exception as e:
            raise ModelError(f"{path}: unreadable tokenizer.json ({e})") from None
        return cls(backend, **special)

    @property
    def vocab_size(self) -> int:
        """Number of tokens including special ones."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; control tokens written in the text are recognised.

        Args:
            text: Input text.
            add_bos: Prepend BOS; ``None`` follows the model's metadata.

        Returns:
            The ids.
        """
        ids = self.backend.encode(text, add_special_tokens=False).ids
        bos = self.add_bos if add_bos is None else add_bos
        return [self.bos_id, *ids] if bos and self.bos_id >= 0 else list(ids)

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of ``ids`` (byte-level BPE, so partial UTF-8 shows as U+FFFD)."""
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special))

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """Render ``[{"role": ..., "content": ...}, ...]`` with the model's chat template.

        Example:
            >>> t = Tokenizer(None, chat_template="{% for m in messages %}"
            ...     "<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
            ...     "{% if add_generation_prompt %}<assistant>{% endif %}")
            >>> t.apply_chat_template([{"role": "user", "content": "hi"}])
            '<user>hi<assistant>'
        """
        if not self.chat_template:
            raise ModelError("this model has no chat template (tokenizer.chat_template)")
        # deferred: jinja2 adds 12-40 ms to importing slimtorch.llm (python -X importtime,
        # 2 busy cores) and only chat templates use it
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # The template comes from the model file: render it in jinja2's sandbox, so a template
        # that reaches for Python internals (``cycler.__init__.__globals__.os``) is refused.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        try:
            template = env.from_string(self.chat_template)
            return template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self._token(self.bos_id),
                eos_token=self._token(self.eos_id),
            )
        except TemplateError as exc:  # SecurityError, syntax and undefined errors included
            detail = first_line(exc)
            raise ModelError(
                f"the model's chat template (tokenizer.chat_template) fails: "
                f"{type(exc).__name__}: {detail}"
            ) from None

    def _token(self, i: int) -> str:
        return "" if i < 0 else str(self.backend.id_to_token(i) or "")


def _bpe_backend(tokens: list[str], merges: list[str], types: list[int], split_digits: bool) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` from vocabulary and merges."""
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False)
    backend = HFTokenizer(bpe)
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if split_digits:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
    backend.decoder = decoders.ByteLevel()
    special = [
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types, strict=False)
        if ty in (CONTROL_TOKEN_TYPE, USER_DEFINED_TOKEN_TYPE)
    ]
    backend.add_special_tokens(special)
    return backend
