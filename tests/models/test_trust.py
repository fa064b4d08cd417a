"""Opening a file never runs code it names: crafted checkpoints, .slim files and recipes.

Each crafted file is valid in every other way (the checkpoint header's checksum and the .slim
CRC are correct, as anyone can recompute them), names a callable outside the zoo, and is opened
by every loader and command that loads. The oracle is a marker file that the named code would
create: it must not exist afterwards, and the command must exit with status 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.cli.main import main
from slimtorch.encode import load_compressed, save_compressed
from slimtorch.errors import ModelError
from slimtorch.models import ModelSpec, build_model, make_spec
from slimtorch.models.trust import check_spec_name, dependency_modules, trust_code_scope
from slimtorch.resolve import resolve_model

EVIL_MODULE = "slimtorch_trust_test_payload"
EVIL_SOURCE = """
    import os
    import pathlib

    from torch import nn

    pathlib.Path(os.environ["SLIMTORCH_TEST_MARKER"]).write_text("imported")

    def build(**kwargs):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
"""


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """A payload module importable from sys.path, and the marker it (or a shell) would write."""
    (tmp_path / f"{EVIL_MODULE}.py").write_text(textwrap.dedent(EVIL_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "marker"
    monkeypatch.setenv("SLIMTORCH_TEST_MARKER", str(marker))
    yield marker
    sys.modules.pop(EVIL_MODULE, None)


def hostile_specs(marker: Path) -> dict[str, ModelSpec]:
    nested = ModelSpec(
        "slimtorch.prune.surgery:build_pruned",
        {"base": {"name": f"{EVIL_MODULE}:build", "kwargs": {}}, "channels": {}},
    )
    return {
        "third_party": ModelSpec(f"{EVIL_MODULE}:build", {}),
        "os_system": ModelSpec("os:system", {"command": f"touch {marker}"}),
        "subprocess": ModelSpec("subprocess:call", {"args": ["touch", str(marker)]}),
        "nested_in_pruned": nested,
    }


def write_files(folder: Path, spec: ModelSpec) -> tuple[Path, Path]:
    """A checkpoint folder and a .slim file whose (valid) headers name ``spec``."""
    ck = save_checkpoint(folder / "ck", tiny_model(), spec)
    slim = folder / "m.slim"
    save_compressed(slim, tiny_model(), spec)
    return ck, slim


@pytest.mark.parametrize("kind", ["third_party", "os_system", "subprocess", "nested_in_pruned"])
def test_api_loaders_refuse_specs_outside_the_zoo(tmp_path, hostile, kind):
    ck, slim = write_files(tmp_path, hostile_specs(hostile)[kind])
    loaders = [
        lambda: load_checkpoint(ck),
        lambda: load_checkpoint(ck / "model.json"),
        lambda: load_compressed(slim),
        lambda: resolve_model(ck),
        lambda: build_model(ModelSpec.from_dict(hostile_specs(hostile)[kind].to_dict())),
    ]
    for load in loaders:
        with pytest.raises(ModelError, match="--trust-code") as info:
            load()
        assert "\n" not in str(info.value)
    assert not hostile.exists()
    assert EVIL_MODULE not in sys.modules


@pytest.mark.parametrize("kind", ["os_system", "subprocess"])
def test_standard_library_is_refused_even_with_trust_code(tmp_path, hostile, kind):
    ck, slim = write_files(tmp_path, hostile_specs(hostile)[kind])
    with pytest.raises(ModelError, match="standard library"):
        load_checkpoint(ck, trust_code=True)
    with pytest.raises(ModelError, match="standard library"):
        load_compressed(slim, trust_code=True)
    assert not hostile.exists()


def test_trust_code_runs_a_third_party_factory(tmp_path, hostile):
    """The positive control: the payload does run when the user opts in, so the refusals
    above are the policy at work, not a payload that could not run."""
    ck, slim = write_files(tmp_path, hostile_specs(hostile)["third_party"])
    model, _, _ = load_checkpoint(ck, trust_code=True)
    assert hostile.read_text() == "imported"
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    with trust_code_scope(True):
        load_compressed(slim)


@pytest.mark.parametrize(
    "name",
    ["torch:load", "numpy:load", "safetensors.torch:load_file", "slimtorch.io:atomic_write_bytes"],
)
def test_dependencies_and_slimtorch_itself_are_refused(name):
    with pytest.raises(ModelError, match="dependencies"):
        check_spec_name(name, trust_code=True)


def test_dependency_closure_comes_from_metadata():
    mods = dependency_modules()
    assert {"torch", "numpy", "safetensors"} <= mods
    assert "jinja2" in mods or "sympy" in mods  # torch's own requirements, found transitively


def test_zoo_and_builtin_architectures_need_no_trust():
    check_spec_name("resnet", trust_code=False)
    check_spec_name("slimtorch.prune.surgery:build_pruned", trust_code=False)
    spec = make_spec("lenet5")
    assert isinstance(build_model(spec, trust_code=False), nn.Module)


def command_lines(ck: Path, slim: Path, out: Path, recipe: Path) -> list[list[str]]:
    quick = ["--quiet"]
    return [
        ["evaluate", str(ck)],
        ["profile", str(ck), "--no-latency", "--no-roofline", *quick],
        ["prune", str(ck), "--sparsity", "0.5", "--out", str(out / "p"), *quick],
        ["quantize", str(ck), "--bits", "8", "--out", str(out / "q")],
        ["distill", "--teacher", str(ck), "--student", "lenet300", "--out", str(out / "d")],
        ["bench", str(ck), "--min-queries", "1", "--min-duration", "0"],
        ["compress", "--model", str(ck), "--out", str(out / "c"), *quick],
        ["compress", "--recipe", str(recipe), "--out", str(out / "r"), *quick],
        ["decode", str(slim), "--out", str(out / "dec")],
        ["evaluate", str(slim)],
        ["bench", str(slim), "--min-queries", "1", "--min-duration", "0"],
    ]


@pytest.mark.parametrize("kind", ["third_party", "os_system"])
def test_every_loading_command_refuses_with_status_2(tmp_path, hostile, capsys, kind):
    spec = hostile_specs(hostile)[kind]
    ck, slim = write_files(tmp_path, spec)
    recipe = tmp_path / "hostile.toml"
    recipe.write_text(
        f'name = "x"\n[model]\nname = "{spec.name}"\nepochs = 1\n[[stage]]\nkind = "encode"\n'
    )
    for argv in command_lines(ck, slim, tmp_path / "out", recipe):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--trust-code" in err[0], (argv, err)
        assert not hostile.exists(), argv
    assert EVIL_MODULE not in sys.modules


def test_console_script_refuses_and_never_imports_the_working_folder(tmp_path):
    """End to end: a subprocess run from the payload's folder (as a user who downloaded both)."""
    (tmp_path / f"{EVIL_MODULE}.py").write_text(textwrap.dedent(EVIL_SOURCE))
    marker = tmp_path / "marker"
    ck, _ = write_files(tmp_path, ModelSpec(f"{EVIL_MODULE}:build", {}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SLIMTORCH_TEST_MARKER"] = str(marker)
    script = Path(sys.executable).with_name("slimtorch")
    run = subprocess.run(
        [str(script), "evaluate", str(ck)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--trust-code" in run.stderr and not marker.exists()
    trusted = subprocess.run(  # opted in, the module still is not importable from cwd implicitly
        [str(script), "evaluate", str(ck), "--trust-code"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert trusted.returncode == 2 and "PYTHONPATH" in trusted.stderr and not marker.exists()
    as_module = subprocess.run(  # `python -m` would put the working folder first; we drop it
        [sys.executable, "-m", "slimtorch", "evaluate", str(ck), "--trust-code"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert as_module.returncode == 2 and "PYTHONPATH" in as_module.stderr
    assert not marker.exists()
