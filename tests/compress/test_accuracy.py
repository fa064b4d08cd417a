"""A stage of the compress job that destroys accuracy is flagged, with the recipe fields to
change, in the stage table, report.json and report.md, unless a later stage wins it back."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from rich.console import Console

from slimtorch.accuracy_check import MAX_DROP_POINTS
from slimtorch.compress.accuracy import pipeline_warnings
from slimtorch.compress.job import compress
from slimtorch.compress.recipe import parse_recipe
from slimtorch.compress.report import stage_table


def _records(*accuracies):
    return [
        SimpleNamespace(index=i - 1, stage="original" if i == 0 else k, test_accuracy=a)
        for i, (k, a) in enumerate(accuracies)
    ]


def _stage(kind, **config):
    return SimpleNamespace(kind=kind, config=SimpleNamespace(**config))


def test_pipeline_flags_the_stage_that_lost_accuracy_unless_a_later_stage_won_it_back():
    prune = _stage("prune", finetune_epochs=0, schedule="oneshot", sparsity=0.7, layers={})
    finetune = _stage("finetune", lr=1e-3)
    lost = pipeline_warnings(_records(("", 0.99), ("prune", 0.11)), [prune], 10)
    assert [w.stage for w in lost] == ["0 prune"] and lost[0].near_chance
    assert any("finetune_epochs = 5" in t for t in lost[0].suggestions)
    recovered = _records(("", 0.99), ("prune", 0.11), ("finetune", 0.97))
    assert pipeline_warnings(recovered, [prune, finetune], 10) == []
    km = _stage("kmeans", bits=2)
    eroded = _records(("", 0.99), ("prune", 0.95), ("kmeans", 0.91))
    (whole,) = pipeline_warnings(eroded, [prune, km], 10)  # no stage alone lost > 5 points
    assert whole.stage == "all stages" and whole.drop_points == pytest.approx(8.0)


RECIPE = """
[model]
name = "lenet300"
epochs = 3

[[stage]]
kind = "prune"
sparsity = 0.99
"""


def test_compress_warns_in_the_stage_table_and_the_reports(tmp_path):
    outcome = compress(parse_recipe(RECIPE), out=tmp_path, progress=False)
    (w,) = outcome.summary["warnings"]
    assert w["stage"] == "0 prune" and w["drop_points"] > MAX_DROP_POINTS
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["warnings"] == [w] and "warnings" not in report["summary"]
    assert w["message"] in (tmp_path / "report.md").read_text()
    console = Console(width=400, record=True)
    console.print(stage_table(outcome.result.records, "t", outcome.summary["warnings"]))
    text = console.export_text()
    assert f"(!) warning: {w['message']}" in " ".join(text.split())  # the caption wraps
    assert f"{outcome.result.records[1].test_accuracy:.4f} (!)" in text
