"""The benchmark adapters load each capability's artefact into a system under test that
computes what that capability's own loader / model computes (the oracle), and the harness
runs them side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import slimtorch.bench  # noqa: F401  (registers the adapters)
from slimtorch.bench import LLMSettings, TestSettings, benchmark, benchmark_llm
from slimtorch.bench.accuracy import DivisionConfig
from slimtorch.bench.sut import LoadOptions, load_target
from slimtorch.checkpoint import save_checkpoint
from slimtorch.errors import ModelError
from slimtorch.models import build_model, make_spec

X = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
QUICK = TestSettings("singlestream", min_query_count=8, min_duration_s=0.0, warmup_queries=1)


def _lenet300(tmp_path: Path, sparsity: float = 0.0) -> tuple[Path, torch.nn.Module]:
    spec = make_spec("lenet300")
    torch.manual_seed(0)
    model = build_model(spec).eval()
    if sparsity:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("weight"):
                    cut = p.abs().flatten().kthvalue(int(sparsity * p.numel())).values
                    p.mul_(p.abs() > cut)
    return save_checkpoint(tmp_path / "lenet300", model, spec, {"data": "digits"}), model


def test_sparse_adapter_matches_dense_and_switches_layers(tmp_path: Path) -> None:
    folder, dense = _lenet300(tmp_path, sparsity=0.9)
    target = load_target(f"sparse=0.5:{folder}")
    assert target.info["adapter"] == "sparse" and len(target.info["csr_layers"]) == 3
    types = {type(m).__name__ for m in target.model.modules()}
    assert "SparseLinear" in types
    torch.testing.assert_close(target.sut(X), dense(X), rtol=1e-4, atol=1e-5)
    # a plain sparse: uses the measured batch-1 break-even; still the dense model's outputs
    torch.testing.assert_close(load_target(f"sparse:{folder}").sut(X), dense(X))


def test_channel_pruned_checkpoint_goes_through_the_model_adapter(tmp_path: Path) -> None:
    from slimtorch.prune import prune_channels, pruned_spec

    spec = make_spec("vgg")
    torch.manual_seed(0)
    model = build_model(spec).eval()
    small = prune_channels(model, X[:1], ratio=0.5).eval()
    folder = save_checkpoint(tmp_path / "vgg_half", small, pruned_spec(spec, small))
    target = load_target(str(folder))
    assert target.info["adapter"] == "model"
    assert sum(p.numel() for p in target.model.parameters()) < sum(
        p.numel() for p in model.parameters()
    )
    torch.testing.assert_close(target.sut(X), small(X))


def _integer_model(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    from slimtorch.quantize.integer import to_integer
    from slimtorch.quantize.intformat import save_integer_model
    from slimtorch.quantize.ptq import PTQConfig, quantize_ptq

    torch.manual_seed(0)
    model = build_model(make_spec("lenet5")).eval()
    qmodel, _ = quantize_ptq(model, [X[:8], X[8:]], PTQConfig(calib_batches=2))
    imodel = to_integer(qmodel, X[:4])
    out = tmp_path / "q"
    return save_integer_model(imodel, out / "int8.safetensors"), qmodel


def test_integer_adapter_bare_path_folder_and_prefix(tmp_path: Path) -> None:
    from slimtorch.quantize.intformat import load_integer_model

    path, qmodel = _integer_model(tmp_path)
    oracle = load_integer_model(path)(X)
    for source in (str(path), str(path.parent), f"int8:{path}"):
        target = load_target(source)
        assert target.info["adapter"] == "int8", source
        assert torch.equal(target.sut(X), oracle)
    # the integer model tracks its fake-quant parent to within a few output steps
    assert (oracle - qmodel.eval()(X)).abs().max() < 0.5
    with pytest.raises(ModelError):
        load_target(f"int8:{tmp_path / 'nothing.safetensors'}")


def test_kmeans_adapter_has_at_most_2_to_the_bits_values_per_layer(tmp_path: Path) -> None:
    from slimtorch.quantize.trained import codebook_layers

    folder, dense = _lenet300(tmp_path)
    target = load_target(f"kmeans2:{folder}")
    layers = codebook_layers(target.model)
    assert len(layers) == 3
    assert all(m.weight.unique().numel() <= 2**2 for m in layers.values())
    assert not torch.equal(target.sut(X), dense(X))


def test_ptq_adapter_close_to_float(tmp_path: Path) -> None:
    """Calibrated on the checkpoint's digits training split, as ``slimtorch quantize`` does."""
    from slimtorch.data import load_data, make_loaders
    from slimtorch.quantize.ptq import PTQConfig, quantize_ptq

    folder, dense = _lenet300(tmp_path)
    target = load_target(f"ptq8:{folder}")
    train = make_loaders(load_data("digits", seed=0), 64, 0)[0]
    oracle, _ = quantize_ptq(dense, train, PTQConfig(weight_bits=8, activation_bits=8))
    out, ref = target.sut(X), dense(X)
    torch.testing.assert_close(out, oracle.eval()(X))
    assert not torch.equal(out, ref)
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_slim_adapter_decodes_the_saved_model(tmp_path: Path) -> None:
    from slimtorch.encode import save_compressed

    _folder, dense = _lenet300(tmp_path, sparsity=0.8)
    path = tmp_path / "lenet300.slim"
    save_compressed(path, dense, make_spec("lenet300"))
    target = load_target(str(path))
    assert target.info["adapter"] == "slim" and target.info["file_bytes"] > 0
    assert torch.equal(target.sut(X), dense(X))
    with pytest.raises(ModelError):
        load_target(str(tmp_path / "missing.slim"))


def test_compressed_variants_side_by_side_in_the_closed_division(tmp_path: Path) -> None:
    """Each variant equals the reference's own model, so all PASS at 99% of the reference."""
    folder, _ = _lenet300(tmp_path, sparsity=0.9)
    from slimtorch.encode import save_compressed

    model, spec = load_target(str(folder)).model, make_spec("lenet300")
    save_compressed(tmp_path / "m.slim", model, spec)
    sources = [str(folder), f"sparse=0.5:{folder}", str(tmp_path / "m.slim")]
    options = LoadOptions((1, 8, 8), 10)
    assert all(load_target(s, options).kind == "classifier" for s in sources)
    records = benchmark(sources, QUICK, division=DivisionConfig("closed"), progress=False)
    values = [r.quality.value for r in records]
    assert abs(values[1] - values[0]) <= 1 / records[0].quality.n  # CSR sums: a tie may flip
    assert values[2] == values[0]
    assert [r.verdict.verdict for r in records] == ["PASS"] * 3


def _tiny_gguf(tmp_path: Path) -> Path:
    from slimtorch.llm.gguf_export import ExportConfig, export_gguf
    from slimtorch.llm.model import Llama, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96,
                      max_seq_len=64)  # fmt: skip
    model = Llama(cfg).eval()
    meta = {"general.name": "tiny"}
    return export_gguf(model, tmp_path / "tiny.gguf", meta, ExportConfig(weight_type="F32"))


@pytest.mark.parametrize("mode", ["", "@int8", "@int4"])
def test_llm_adapter_streams_what_generate_produces(tmp_path: Path, mode: str) -> None:
    from slimtorch.llm.generate import GenerateConfig, generate

    path = _tiny_gguf(tmp_path)
    target = load_target(f"{path}{mode}#6")
    assert target.kind == "generator" and target.prompts
    prompt = list(target.prompts[0])
    streamed = list(target.sut(prompt))
    oracle = generate(target.model, prompt, GenerateConfig(max_new_tokens=6)).tokens
    assert streamed == oracle and len(streamed) == 6
    if mode:
        assert target.info["converted"] > 0


def test_llm_adapter_through_benchmark_llm(tmp_path: Path) -> None:
    path = _tiny_gguf(tmp_path)
    results = benchmark_llm([f"llm:{path}#5", f"{path}@int4g32#5"],
                            LLMSettings(min_query_count=4), progress=False)  # fmt: skip
    for r in results:
        assert r.output_tokens == 4 * 5 and r.valid
        assert r.tpot is not None and r.ttft.percentiles[50.0] > 0
    assert results[1].label.endswith("[int4g32]")


def test_cli_bench_takes_every_classifier_artefact(tmp_path: Path) -> None:
    """``slimtorch bench`` on a checkpoint, its sparse, int8, k-means and .slim forms."""
    import json

    from slimtorch.cli.main import main
    from slimtorch.encode import save_compressed

    folder, dense = _lenet300(tmp_path, sparsity=0.9)
    save_compressed(tmp_path / "m.slim", dense, make_spec("lenet300"))
    path, _ = _integer_model(tmp_path)  # a LeNet-5 on 8x8: same data shape
    sources = [str(folder), f"sparse=0.5:{folder}", f"kmeans4:{folder}", str(tmp_path / "m.slim"),
               str(path)]  # fmt: skip
    out = tmp_path / "r.json"
    args = ["bench", *sources, "--min-duration", "0", "--min-queries", "8", "--warmup", "1",
            "--accuracy", "--quiet", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    records = json.loads(out.read_text())["records"]
    adapters = ["model", "sparse", "kmeans", "slim", "int8"]
    assert [r["label"].endswith("]") for r in records] == [a != "model" for a in adapters]
    assert all(r["division"]["verdict"] in ("PASS", "FAIL") for r in records)
    assert records[3]["quality"]["value"] == records[0]["quality"]["value"]  # .slim: same model


def test_cli_bench_generators(tmp_path: Path) -> None:
    import json

    from slimtorch.cli.main import main

    path = _tiny_gguf(tmp_path)
    out = tmp_path / "llm.json"
    args = ["bench", f"{path}#3", f"{path}@int8#3", "--min-queries", "2", "--quiet",
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    results = json.loads(out.read_text())
    assert [r["output_tokens"] for r in results] == [6, 6]
