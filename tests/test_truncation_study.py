"""analysis/truncation_study.py: validation curves read from the final runs, scores at
fractions of the budget, the mean over the budget; and every shipped study spec plans."""

import glob
import importlib.util
import json
import os

import numpy as np
import pytest

from ptncn.sweep.study import load_study, stage_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location(
        "truncation_study", os.path.join(ROOT, "analysis", "truncation_study.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ts = _module()
HIST = [{"tokens": 100, "train_seconds": 2.0, "bpc": 4.0},
        {"tokens": 200, "train_seconds": 4.0, "bpc": 3.0},
        {"tokens": 300, "train_seconds": 6.0, "bpc": 2.5}]


def test_curve_interpolates_between_evaluations_only():
    c = ts.curve(HIST, "bpc", "tokens", np.array([50, 100, 150, 300, 350]))
    assert np.isnan(c[0]) and np.isnan(c[-1])
    np.testing.assert_allclose(c[1:4], [4.0, 3.5, 2.5])


def test_score_at_a_fraction_is_the_last_evaluation_before_it():
    assert ts.at_fraction([HIST], "bpc", 10.0, 0.1) == [None]        # before the first
    assert ts.at_fraction([HIST], "bpc", 10.0, 0.5) == [3.0]
    assert ts.at_fraction([HIST], "bpc", 6.0, 1.0) == [2.5]


def test_mean_over_the_budget_is_the_area_under_the_curve_over_the_time():
    # first score held back to 0: (4*2 + 3.5*2 + 2.75*2) / 6
    assert ts.mean_over_budget(HIST, "bpc", 6.0) == pytest.approx((8 + 7 + 5.5) / 6)
    early = [dict(h, bpc=v) for h, v in zip(HIST, (2.5, 2.5, 2.5))]
    assert ts.mean_over_budget(early, "bpc", 6.0) < ts.mean_over_budget(HIST, "bpc", 6.0)


def test_band_is_the_mean_and_t_interval_over_seeds():
    from scipy import stats
    c = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, np.nan]])
    mean, half = ts.band(c)
    np.testing.assert_allclose(mean, [2.0, 2.0])
    assert half[0] == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3))
    assert half[1] == 0.0


def _studies():
    paths = sorted(glob.glob(os.path.join(ROOT, "models", "studies", "*.toml")))
    return [p for p in paths if "[learners." in open(p).read()]      # not the sweep specs


@pytest.mark.parametrize("path", _studies(), ids=os.path.basename)
def test_every_shipped_study_plans(path):
    from ptncn.sweep.spec import plan_runs
    study = load_study(path)
    for label in study.learners:
        assert plan_runs(stage_spec(study, label), None)


STUDY = """name = "tiny"
base = "{base}"
set = ["train.eval_batches=1", "train.final_eval_batches=1", "train.checkpoint_every=0",
       'record.traces=["loss"]']
budget_s = 0.4
metric = "bpc"
tune_seeds = 1
final_seeds = 2

[learners.tbptt1]
model = {{learner = "tbptt", out = "softmax", hidden = 8, k = 1}}
optimizer = {{name = "adam"}}
grid = {{"optimizer.lr" = [0.01]}}
set = ["train.eval_every=1"]

[learners.window2]
model = {{learner = "window", out = "softmax", hidden = 8, w = 2}}
optimizer = {{name = "adam"}}
grid = {{"optimizer.lr" = [0.01]}}
set = ["train.eval_every=1"]
"""


def test_study_writes_curves_and_summary(tmp_path, capsys):
    p = tmp_path / "study.toml"
    p.write_text(STUDY.format(base=os.path.join(ROOT, "models", "cyclic.toml")))
    assert ts.main([str(p), "--out", str(tmp_path / "out"), "--workers", "0"]) == 0
    out = tmp_path / "out" / "tiny"
    doc = json.loads((out / "truncation.json").read_text())
    for label in ("tbptt1", "window2"):
        row = doc["summary"][label]
        assert row["tokens"][0] > 0 and np.isfinite(row["valid_mean_over_budget"][0])
        assert row["test"][0] == doc["study"]["learners"][label]["test_mean"]
    md = (out / "truncation.md").read_text()
    assert "| window2 |" in md and "mean over the budget" in md
    assert (out / "curves.png").stat().st_size > 10_000
