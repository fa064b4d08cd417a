"""resolve_model: a bare zoo name means the zoo, a path means a path, factories keep defaults."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from slimtorch.checkpoint import save_checkpoint
from slimtorch.cli.main import main
from slimtorch.models import build_model, make_spec
from slimtorch.resolve import is_zoo_name, resolve_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def shadowing_folder(tmp_path, monkeypatch):
    """A checkpoint of lenet5 saved as ./lenet300 (an earlier ``--out lenet300``)."""
    monkeypatch.chdir(tmp_path)
    spec = make_spec("lenet5")
    save_checkpoint(tmp_path / "lenet300", build_model(spec), spec)
    return tmp_path / "lenet300"


def test_bare_zoo_name_means_the_zoo_and_says_so(shadowing_folder):
    with pytest.warns(UserWarning, match=r"write \./lenet300"):
        resolved = resolve_model("lenet300")
    zoo = build_model(make_spec("lenet300"))
    assert n_params(resolved.model) == n_params(zoo) == 64 * 300 + 300 + 300 * 100 + 100 + 1010


@pytest.mark.parametrize("name", ["./lenet300", "{abs}"])
def test_a_path_means_the_path(shadowing_folder, name, recwarn):
    resolved = resolve_model(name.format(abs=shadowing_folder))
    assert n_params(resolved.model) == n_params(build_model(make_spec("lenet5")))
    assert not [w for w in recwarn if "zoo model" in str(w.message)]


def test_no_warning_without_a_shadowing_folder(tmp_path, monkeypatch, recwarn):
    monkeypatch.chdir(tmp_path)
    assert is_zoo_name("vgg") and not is_zoo_name("./vgg") and not is_zoo_name("runs/vgg")
    assert not recwarn.list


def test_cli_warns_on_one_line(shadowing_folder, capsys):
    argv = ["profile", "lenet300", "--no-latency", "--no-roofline", "--quiet", "--json", "p.json"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "slimtorch profile: warning: 'lenet300' names the zoo model; the lenet300 in the working "
        "folder is not used (write ./lenet300 to load it)"
    ]


def test_factory_keeps_its_own_defaults(tmp_path, monkeypatch):
    """ResNet-style factories default to 1000 classes; profiling one must not make it 10."""
    (tmp_path / "wide_factory_for_tests.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            def build(num_classes=1000, in_channels=3):
                return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        resolved = resolve_model("wide_factory_for_tests:build")
        assert resolved.model(torch.zeros(1, 3, 4, 4)).shape == (1, 1000)
        given = resolve_model("wide_factory_for_tests:build", num_classes=7)
        assert given.model(torch.zeros(1, 3, 4, 4)).shape == (1, 7)
    finally:
        sys.modules.pop("wide_factory_for_tests", None)
