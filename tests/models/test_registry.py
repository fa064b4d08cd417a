"""create_model by name and by factory path; ModelSpec round trips through JSON."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from slimtorch.errors import ConfigError, ModelError
from slimtorch.models import MODEL_NAMES, ModelSpec, build_model, create_model, make_spec

FACTORY_MODULE = """
    import torch.nn as nn

    def mlp(num_classes, hidden=5):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.Linear(hidden, num_classes))

    def everything(**kwargs):
        everything.seen = kwargs
        return nn.Identity()

    def broken(**kwargs):
        raise RuntimeError("boom")

    def not_a_module(**kwargs):
        return 42

    not_callable = 3
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "zoo_factories_for_tests.py").write_text(textwrap.dedent(FACTORY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "zoo_factories_for_tests"
    sys.modules.pop("zoo_factories_for_tests", None)


def test_factory_path_gets_only_the_arguments_it_accepts(factories):
    model = create_model(f"{factories}:mlp", num_classes=3, image_size=8, hidden=4)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    create_model(f"{factories}:everything", image_size=5, act="relu", depth=2)
    seen = sys.modules[factories].everything.seen
    assert seen == {"image_size": 5, "act": "relu", "depth": 2}  # only what the caller gave


@pytest.mark.parametrize(
    "name,match",
    [
        ("alexnet", "unknown model 'alexnet'"),
        ("no_such_pkg_xyz.models:net", "cannot import module 'no_such_pkg_xyz.models'"),
        ("{mod}:missing", "has no callable 'missing'"),
        ("{mod}:not_callable", "has no callable 'not_callable'"),
        ("{mod}:broken", "failed to build: RuntimeError: boom"),
        ("{mod}:not_a_module", "returned int, not nn.Module"),
        (":net", "must look like"),
    ],
)
def test_unresolvable_models_are_one_line_model_errors(factories, name, match):
    with pytest.raises(ModelError, match=match) as info:
        create_model(name.format(mod=factories))
    assert "\n" not in str(info.value)


def test_unknown_zoo_option_is_model_error():
    with pytest.raises(ModelError, match="unknown option"):
        create_model("resnet", depth=18)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_spec_round_trips_through_json_and_rebuilds_same_architecture(name):
    extra = {"resnet": {"blocks": (1, 2)}, "vgg": {"cfg": [8, "M", 16]}}.get(name, {})
    spec = make_spec(name, num_classes=4, norm="weight", **extra)
    assert set(spec.kwargs) >= {"num_classes", "in_channels", "image_size", "norm", "act"}
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    a, b = build_model(spec), build_model(again)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(a) == shapes(b)
    assert a(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def test_spec_rejects_unserializable_or_malformed_input():
    with pytest.raises(ConfigError, match="JSON"):
        ModelSpec("resnet", {"width": object()})
    with pytest.raises(ConfigError):
        ModelSpec.from_dict({"kwargs": {}})
    with pytest.raises(ConfigError, match="unknown model spec field"):
        ModelSpec.from_dict({"name": "resnet", "kwargs": {}, "extra": 1})


def test_make_spec_records_model_defaults():
    spec = make_spec("mobilenetv2")
    assert spec.kwargs["norm"] == "batch" and spec.kwargs["act"] == "relu6"
    assert make_spec("lenet5").kwargs["norm"] == "none"
