"""`slimtorch llm compress`: options map onto the same configs the API takes; bad input is a
one-line error (exit 2)."""

from __future__ import annotations

import pytest

from slimtorch.cli.llm_compress import build_config
from slimtorch.cli.main import build_parser, main
from slimtorch.llm.compress import (
    AWQConfig,
    GPTQConfig,
    GroupKMeansConfig,
    RTNConfig,
    SparseGPTConfig,
    WandaConfig,
)


def _config(*argv):
    return build_config(build_parser().parse_args(["llm", "compress", *argv, "--out", "x.gguf"]))


def test_options_build_the_api_configs():
    assert _config("--method", "awq", "--bits", "3", "--group-size", "32") == AWQConfig(3, 32)
    assert _config("--method", "rtn", "--group-size", "channel") == RTNConfig(4, None)
    assert _config("--method", "gptq", "--act-order") == GPTQConfig(4, 128, act_order=True)
    assert _config("--method", "kmeans") == GroupKMeansConfig(4, None)
    awq = ("--method", "awq", "--awq-solver", "gptq", "--awq-scales", "duo", "--percdamp", "0.1")
    assert _config(*awq, "--awq-clip-mode", "asym", "--act-order") == AWQConfig(
        scale_search="duo", solver="gptq", gptq_percdamp=0.1, clip_mode="asym", gptq_act_order=True
    )
    assert _config("--method", "gptq", "--percdamp", "0.05") == GPTQConfig(percdamp=0.05)
    assert _config("--method", "wanda", "--nm", "4:8") == WandaConfig(nm=(4, 8))
    assert _config("--method", "sparsegpt", "--sparsity", "0.6") == SparseGPTConfig(0.6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "rtn", "--bits", "5", "--out", "x.gguf"], "bits"),
        (["--method", "rtn", "--out", "x.bin"], "--out"),
        (["--method", "gptq", "--percdamp", "0", "--out", "x.gguf"], "percdamp"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv, message, capsys):
    assert main(["llm", "compress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
