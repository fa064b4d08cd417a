"""`slimtorch llm ...` options are generated from the configs the Python API takes.

The oracle is each config class: given only its required arguments, a subcommand builds exactly
the config's defaults; a value given on the command line reaches its field.
"""

from __future__ import annotations

import pytest

from slimtorch.cli import llm as llm_cli
from slimtorch.cli import llm_compress
from slimtorch.cli.main import build_parser, main
from slimtorch.llm.compress import (
    AWQConfig,
    CalibConfig,
    GPTQConfig,
    GroupKMeansConfig,
    MagnitudeConfig,
    RTNConfig,
    SparseGPTConfig,
    WandaConfig,
)
from slimtorch.llm.generate import GenerateConfig
from slimtorch.llm.gguf_export import ExportConfig
from slimtorch.llm.kernels import KernelConfig
from slimtorch.llm.perplexity import PerplexityConfig

METHOD_CONFIGS = {
    "rtn": RTNConfig,
    "awq": AWQConfig,
    "gptq": GPTQConfig,
    "kmeans": GroupKMeansConfig,
    "magnitude": MagnitudeConfig,
    "wanda": WandaConfig,
    "sparsegpt": SparseGPTConfig,
}
GRID_METHODS = ("rtn", "awq", "gptq", "kmeans")


def _args(*argv: str):
    return build_parser().parse_args(["llm", *argv])


@pytest.mark.parametrize("argv", [("eval", "--text", "t.txt"), ("generate", "--prompt", "p"),
                                  ("chat",)])  # fmt: skip
def test_kernel_default_is_the_config_default(argv: tuple[str, ...]) -> None:
    assert llm_cli.KERNEL_OPTIONS.build(_args(*argv)) == KernelConfig()
    assert KernelConfig().mode == "fp32"  # the model as loaded, as `llm eval` always measured


def test_eval_without_options_builds_the_default_config() -> None:
    args = _args("eval", "--text", "t.txt")
    assert llm_cli.PERPLEXITY_OPTIONS.build(args) == PerplexityConfig()


@pytest.mark.parametrize("argv", [("generate", "--prompt", "p"), ("chat",)])
def test_generate_and_chat_without_options_build_the_default_config(
    argv: tuple[str, ...],
) -> None:
    assert llm_cli.GENERATE_OPTIONS.build(_args(*argv)) == GenerateConfig()
    assert llm_cli._gen_config(_args(*argv), ()) == GenerateConfig()


def test_export_without_options_builds_the_default_config() -> None:
    assert llm_cli.EXPORT_OPTIONS.build(_args("export", "--out", "x.gguf")) == ExportConfig()


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_compress_without_options_builds_the_methods_default_config(method: str) -> None:
    args = _args("compress", "--method", method, "--out", "x.gguf")
    assert llm_compress.build_config(args) == METHOD_CONFIGS[method]()
    assert llm_compress.CALIB_OPTIONS.build(args) == CalibConfig()


def test_llm_options_reach_the_configs() -> None:
    args = _args("generate", "--prompt", "p", "--kernel", "int4", "--group-size", "64",
                 "--temperature", "0.7", "--top-k", "5", "--top-p", "0.9", "--seed", "3",
                 "--max-new-tokens", "7", "--decode-threads", "1", "--engine", "torch",
                 "--threads", "2")  # fmt: skip
    assert llm_cli.KERNEL_OPTIONS.build(args) == KernelConfig(mode="int4", group_size=64)
    assert llm_cli._gen_config(args, (9,)) == GenerateConfig(
        max_new_tokens=7, temperature=0.7, top_k=5, top_p=0.9, seed=3, stop_ids=(9,),
        decode_threads=1, engine="torch", threads=2)  # fmt: skip
    args = _args("eval", "--text", "t", "--ctx", "256", "--stride", "128", "--batch-size", "2",
                 "--protocol", "llamacpp", "--max-windows", "3")  # fmt: skip
    assert llm_cli.PERPLEXITY_OPTIONS.build(args, bos_id=1) == PerplexityConfig(
        ctx=256, stride=128, batch_size=2, protocol="llamacpp", bos_id=1, max_windows=3
    )
    args = _args("export", "--out", "x.gguf", "--type", "Q4_0", "--embedding-type", "F16")
    assert llm_cli.EXPORT_OPTIONS.build(args) == ExportConfig("Q4_0", "F16")
    args = _args("export", "--out", "x.gguf", "--embedding-type", "")
    assert llm_cli.EXPORT_OPTIONS.build(args) == ExportConfig(embedding_type="")


def test_compress_options_reach_the_configs() -> None:
    def config(*argv: str):
        return llm_compress.build_config(_args("compress", *argv, "--out", "x.gguf"))

    assert config("--method", "kmeans", "--bits", "3", "--group-size", "64") == (
        GroupKMeansConfig(bits=3, group_size=64))  # fmt: skip
    assert config("--method", "sparsegpt", "--percdamp", "0.05", "--nm", "2:4") == (
        SparseGPTConfig(nm=(2, 4), percdamp=0.05))  # fmt: skip
    assert config("--method", "rtn", "--symmetric", "--group-size", "ch") == (
        RTNConfig(group_size=None, symmetric=True))  # fmt: skip
    argv = ("--calib-samples", "8", "--calib-seq-len", "64")
    args = _args("compress", "--method", "wanda", *argv, "--out", "x.gguf")
    assert llm_compress.CALIB_OPTIONS.build(args) == CalibConfig(n_samples=8, seq_len=64)


@pytest.mark.parametrize("method", GRID_METHODS)
def test_group_size_channel_is_none_for_every_grid_method(method: str) -> None:
    args = _args("compress", "--method", method, "--group-size", "channel", "--out", "x.gguf")
    assert llm_compress.build_config(args) == METHOD_CONFIGS[method](group_size=None)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["compress", "--method", "rtn", "--group-size", "-1"], "--group-size"),  # no placeholder
        (["compress", "--method", "rtn", "--group-size", "0"], "--group-size"),
        (["compress", "--method", "wanda", "--nm", "2-4"], "--nm"),
        (["compress", "--method", "awq", "--awq-solver", "nope"], "--awq-solver"),
        (["export", "--embedding-type", "Q2_K"], "--embedding-type"),
        (["generate", "--prompt", "p", "--kernel", "int2"], "--kernel"),
    ],
)
def test_bad_option_values_are_usage_errors(argv: list[str], option: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["llm", *argv, "--out", "x.gguf"] if argv[0] != "generate" else ["llm", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}" in err
