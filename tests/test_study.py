"""A comparison of learners as a study (ptncn.sweep.study, analysis/compare_baselines.py):
equal tuning budgets, the best configuration re-run with new seeds and scored on test."""

import importlib.util
import json
import os

import pytest

from ptncn.harness import ConfigError
from ptncn.sweep.study import load_study, stage_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = """name = "tiny"
base = "{base}"
set = ["train.eval_every=0", "train.final_eval_batches=2", "train.checkpoint_every=0",
       'record.traces=["loss"]']
budget_s = 0.3
metric = "bpc"
tune_seeds = 1
final_seeds = 2

[learners.ptncn]
grid = {{"optimizer.lr" = [0.02, 0.1]}}

[learners.tbptt]
model = {{learner = "tbptt", out = "softmax", hidden = 8, k = 4}}
optimizer = {{name = "adam"}}
grid = {{"optimizer.lr" = [0.003, 0.03]}}
"""


def write(tmp_path, text=STUDY):
    p = tmp_path / "study.toml"
    p.write_text(text.format(base=os.path.join(ROOT, "models", "cyclic.toml")))
    return p


def test_stages_tune_on_valid_then_new_seeds_on_test(tmp_path):
    study = load_study(write(tmp_path))
    tune = stage_spec(study, "tbptt")
    assert tune.metric == "valid.bpc" and tune.seeds == 1 and tune.seed == 0
    assert tune.base["model"] == {"learner": "tbptt", "out": "softmax", "hidden": 8, "k": 4}
    assert tune.base["train"]["time_budget_s"] == 0.3
    final = stage_spec(study, "tbptt", {"optimizer.lr": 0.03})
    assert final.metric == "test.bpc" and final.seeds == 2 and final.seed == 1
    assert final.grid == {"optimizer.lr": [0.03]}


def test_unequal_tuning_budgets_are_refused(tmp_path):
    text = STUDY.replace("[0.003, 0.03]", "[0.003, 0.01, 0.03]")
    with pytest.raises(ConfigError, match="unequal tuning budgets: configurations per "
                                          "learner ptncn 2, tbptt 3"):
        load_study(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"\[learners.tbptt\] 'gird': unknown key"):
        load_study(write(tmp_path, STUDY.replace('grid = {{"optimizer.lr" = [0.003',
                                                 'gird = {{"optimizer.lr" = [0.003')))


def test_compare_baselines_runs_a_study_and_writes_its_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "compare_baselines", os.path.join(ROOT, "analysis", "compare_baselines.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(write(tmp_path)), "--out", str(tmp_path / "out"),
                     "--workers", "0"]) == 0
    out = tmp_path / "out" / "tiny"
    doc = json.loads((out / "study.json").read_text())
    for label in ("ptncn", "tbptt"):
        r = doc["learners"][label]
        assert r["n"] == 2 and len(r["test_values"]) == 2 and r["failed"] == 0
        tune = json.loads((out / label / "tune" / "sweep.json").read_text())
        chosen = r["values"]["optimizer.lr"]
        assert chosen in tune["grid"]["optimizer.lr"]
        final = json.loads((out / label / "final" / "sweep.json").read_text())
        assert final["grid"] == {"optimizer.lr": [chosen]} and final["metric"] == "test.bpc"
        assert "unigram" in r["baselines"]
    md = (out / "study.md").read_text()
    assert md in capsys.readouterr().out and "| tbptt |" in md and "unigram" in md
    assert (out / "study.png").stat().st_size > 10_000
