"""Every artefact remembers its data (source, split seed, sample shape, classes); bench,
evaluate, prune, quantize, distill and compress use it when given no --data, and given data
that does not fit the model is refused in one line."""

from __future__ import annotations

import json

import pytest

from slimtorch.bench.sut import recorded_data
from slimtorch.checkpoint import load_checkpoint
from slimtorch.cli.main import main
from slimtorch.compress.recipe import parse_recipe
from slimtorch.data.record import DataRecord, artefact_record, check_data_fits
from slimtorch.errors import DataError
from slimtorch.quantize.intformat import integer_model_info

SEED = 3  # not the default 0: the split seed must travel too
SHAPE_16 = [1, 16, 16]
FAST_BENCH = ["--min-queries", "10", "--min-duration", "0", "--warmup", "1", "--quiet"]


def test_record_round_trips_and_refuses_edited_values():
    rec = DataRecord("digits:16", SEED, (1, 16, 16), 10)
    assert DataRecord.from_dict(json.loads(json.dumps(rec.to_dict())), "ck") == rec
    assert DataRecord.from_dict({"epochs": 3}, "ck") is None
    for bad in ({"seed": "3"}, {"input_shape": [1, -16]}, {"num_classes": True}, {"data": 5}):
        with pytest.raises(DataError, match="ck: recorded"):
            DataRecord.from_dict({"data": "digits", **bad}, "ck")


def test_older_artefacts_get_their_shape_from_the_model_arguments():
    old = {"data": "digits:16", "seed": 0}  # written before input_shape was recorded
    assert artefact_record(old, {"in_channels": 1, "image_size": 16}, "ck").input_shape == (
        1,
        16,
        16,
    )
    assert artefact_record(old, {}, "ck").input_shape is None


def test_data_of_another_shape_is_one_line_naming_both():
    rec = DataRecord("digits:16", 0, (1, 16, 16))
    check_data_fits(rec, "digits:16", (1, 16, 16), "vgg")  # fits: nothing happens
    with pytest.raises(DataError) as err:
        check_data_fits(rec, "digits", (1, 8, 8), "runs/vgg")
    message = str(err.value)
    assert "\n" not in message
    assert "1x8x8" in message and "digits:16 (1x16x16)" in message and "runs/vgg" in message


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory):
    """VGG trained one epoch on 16x16 digits (split seed 3), quantized to an int8 file."""
    root = tmp_path_factory.mktemp("vgg16")
    argv = ["train", "--model", "vgg", "--data", "digits:16", "--epochs", "1", "--quiet"]
    assert main([*argv, "--seed", str(SEED), "--out", str(root / "vgg")]) == 0
    argv = ["quantize", str(root / "vgg"), "--integer", "--calib-batches", "2"]
    assert main([*argv, "--out", str(root / "vgg-int8")]) == 0
    return root


def test_train_and_quantize_record_the_data(vgg16):
    _, _, metrics = load_checkpoint(vgg16 / "vgg")
    want = {"data": "digits:16", "seed": SEED, "input_shape": SHAPE_16, "num_classes": 10}
    assert {k: metrics[k] for k in want} == want
    assert integer_model_info(vgg16 / "vgg-int8" / "int8.safetensors")["data"] == want
    report = json.loads((vgg16 / "vgg-int8" / "report.json").read_text())
    assert {k: report["extra"][k] for k in want} == want


def test_bench_and_evaluate_an_int8_file_without_data_use_16x16(vgg16, tmp_path, capsys):
    int8 = str(vgg16 / "vgg-int8")
    bench_json, eval_json = tmp_path / "bench.json", tmp_path / "eval.json"
    assert main(["bench", int8, *FAST_BENCH, "--accuracy", "--json", str(bench_json)]) == 0
    data = json.loads(bench_json.read_text())["data"]
    assert (data["data"], data["seed"], data["input_shape"]) == ("digits:16", SEED, SHAPE_16)
    assert main(["evaluate", int8, "--json", str(eval_json)]) == 0
    assert json.loads(eval_json.read_text())["data"] == "digits:16"
    capsys.readouterr()
    assert main(["bench", int8, "--data", "digits", *FAST_BENCH]) == 2
    assert main(["evaluate", int8, "--data", "digits"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("1x8x8" in e and "digits:16 (1x16x16)" in e for e in lines)


def test_prune_and_distill_take_and_keep_the_data(vgg16, tmp_path, capsys):
    pruned, student = tmp_path / "pruned", tmp_path / "student"
    assert main(["prune", str(vgg16 / "vgg"), "--sparsity", "0.3", "--out", str(pruned)]) == 0
    argv = ["distill", "--teacher", str(vgg16 / "vgg"), "--student", "lenet5", "--epochs", "1"]
    assert main([*argv, "--out", str(student), "--quiet"]) == 0
    for folder in (pruned, student):
        _, _, metrics = load_checkpoint(folder)
        assert (metrics["data"], metrics["seed"], metrics["input_shape"]) == (
            "digits:16",
            SEED,
            SHAPE_16,
        )
    eval_json = tmp_path / "eval.json"
    assert main(["evaluate", str(pruned), "--json", str(eval_json)]) == 0
    assert json.loads(eval_json.read_text())["data"] == "digits:16"
    capsys.readouterr()
    assert main(["quantize", str(pruned), "--data", "digits", "--out", str(tmp_path / "q")]) == 2
    assert "digits:16 (1x16x16)" in capsys.readouterr().err


def test_bench_refuses_artefacts_made_on_samples_of_different_shapes(vgg16, tmp_path, capsys):
    small = tmp_path / "lenet"
    argv = ["train", "--model", "lenet300", "--data", "digits", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(small)]) == 0
    capsys.readouterr()
    assert main(["bench", str(vgg16 / "vgg-int8"), str(small), *FAST_BENCH]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "digits:16 (1x16x16)" in err and "digits (1x8x8)" in err


RECIPE = """
[model]
name = "lenet300"
data = "digits:16"
epochs = 1
seed = 3

[[stage]]
kind = "kmeans"
bits = 4

[[stage]]
kind = "encode"
"""


def test_compress_records_the_data_and_reuses_a_checkpoints(tmp_path):
    from slimtorch.compress.job import compress

    first = tmp_path / "first"
    compress(parse_recipe(RECIPE), out=first, progress=False)
    want = DataRecord("digits:16", SEED, (1, 16, 16), 10)
    assert recorded_data(first / "model.slim") == want
    for folder in ("baseline", "decoded"):
        _, _, metrics = load_checkpoint(first / folder)
        assert DataRecord.from_dict(metrics, folder) == want
    plain = parse_recipe(RECIPE.replace('data = "digits:16"\n', "").replace("seed = 3\n", ""))
    again = compress(plain, model=str(first / "baseline"), out=tmp_path / "again", progress=False)
    assert (again.summary["data"], plain.model.data) == ("digits:16", "digits")
    assert recorded_data(tmp_path / "again" / "model.slim") == want
