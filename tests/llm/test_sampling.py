"""Sampling properties: greedy is argmax, top-k / top-p never pick outside their set."""

from __future__ import annotations

import pytest
import torch

from slimtorch.errors import ConfigError
from slimtorch.llm.generate import GenerateConfig, generate, sample


def test_top_k_and_top_p_support() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
    g = torch.Generator().manual_seed(0)
    picks_k = {sample(logits, 1.0, top_k=2, generator=g) for _ in range(200)}
    assert picks_k == {0, 5}
    probs = torch.softmax(logits, -1)
    order = torch.argsort(probs, descending=True).tolist()  # 5, 0, 1, 2, 3, 4
    nucleus = set(order[: int((probs[order].cumsum(0) < 0.8).sum()) + 1])
    picks_p = {sample(logits, 1.0, top_p=0.8, generator=g) for _ in range(300)}
    assert picks_p == nucleus


def test_sampling_frequencies_follow_softmax() -> None:
    logits = torch.tensor([0.0, 1.0, 2.0])
    g = torch.Generator().manual_seed(1)
    counts = torch.bincount(torch.tensor([sample(logits, 1.0, generator=g) for _ in range(3000)]))
    torch.testing.assert_close(counts / 3000, torch.softmax(logits, -1), atol=0.03, rtol=0)


def test_greedy_generation_equals_argmax_of_full_forward(tiny) -> None:
    model = tiny()
    prompt = [3, 1, 4, 1, 5]
    out = generate(model, prompt, GenerateConfig(max_new_tokens=6))
    seq = list(prompt)
    with torch.inference_mode():
        for _ in range(6):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out.tokens == seq[len(prompt) :]
    stop = generate(model, prompt, GenerateConfig(max_new_tokens=6, stop_ids=(seq[6],)))
    gen = seq[len(prompt) :]
    assert stop.tokens == gen[: gen.index(seq[6]) + 1]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="top_p"):
        GenerateConfig(top_p=0.0)
    with pytest.raises(ConfigError, match="temperature"):
        GenerateConfig(temperature=-1)
