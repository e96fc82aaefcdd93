"""Sweep specs: what they expand to, and what they refuse before any run starts."""

import math
import pathlib

import numpy as np
import pytest

from ptncn.harness import ConfigError
from ptncn.sweep.spec import configurations, load_spec, plan_runs, run_seeds

BASE = """name = "tiny"
[task]
name = "cyclic"
batch_size = 4
length = 6
vocab = 5
[model]
hidden = [6, 6]
[train]
batches = 2
"""


def write(tmp_path, sweep: str, top: str = 'base = "base.toml"\n') -> pathlib.Path:
    (tmp_path / "base.toml").write_text(BASE)
    p = tmp_path / "spec.toml"
    p.write_text(top + sweep)
    return p


GRID = """[sweep]
seeds = 2
metric = "valid.bpc"
[sweep.grid]
"optimizer.lr" = [0.01, 0.1]
"model.beta" = [0.05, 0.1, 0.2]
"""


def test_grid_times_seeds_with_stable_distinct_ids(tmp_path):
    spec = load_spec(write(tmp_path, GRID))
    plans = plan_runs(spec)
    assert len(plans) == 2 * 3 * 2 and spec.axes == ["optimizer.lr", "model.beta"]
    assert len({p.run_id for p in plans}) == len(plans)
    assert [p.run_id for p in plan_runs(load_spec(write(tmp_path, GRID)))] == \
        [p.run_id for p in plans]                                 # the same spec, the same ids
    p = plans[3]
    assert p.config["optimizer"]["lr"] == p.values["optimizer.lr"]
    assert p.config["model"]["beta"] == p.values["model.beta"] and p.config["seed"] == p.seed
    assert spec.direction == "min"


def test_seeds_come_from_a_seed_sequence_and_are_shared_by_configurations(tmp_path):
    spec = load_spec(write(tmp_path, GRID))
    expected = [int(np.random.SeedSequence([0, i]).generate_state(1)[0]) for i in range(2)]
    assert run_seeds(spec) == expected
    assert {(p.seed_index, p.seed) for p in plan_runs(spec)} == set(enumerate(expected))


def test_random_draws_are_seeded_and_in_range(tmp_path):
    sweep = """[sweep]
metric = "valid.loss"
[sweep.random]
n = 5
seed = 3
"model.alpha" = {log_uniform = [1e-4, 1e-2]}
"model.beta" = {uniform = [0.0, 0.5]}
"optimizer.name" = {choice = ["sgd", "adam"]}
"""
    a = configurations(load_spec(write(tmp_path, sweep)))
    assert a == configurations(load_spec(write(tmp_path, sweep))) and len(a) == 5
    assert all(1e-4 <= c["model.alpha"] <= 1e-2 and 0 <= c["model.beta"] <= 0.5
               and c["optimizer.name"] in ("sgd", "adam") for c in a)
    logs = [math.log10(c["model.alpha"]) for c in a]
    assert len(set(logs)) == 5


def test_spec_overrides_and_cli_overrides_reach_every_run(tmp_path):
    p = write(tmp_path, GRID, top='base = "base.toml"\nset = ["train.batches=3"]\n')
    plans = plan_runs(load_spec(p, ["model.alpha=0.01"]))
    assert all(q.config["train"]["batches"] == 3 and q.config["model"]["alpha"] == 0.01
               for q in plans)


@pytest.mark.parametrize("sweep, match", [
    ('[sweep]\nmetric = "valid.bpc"\ncolour = 1\n', r"\[sweep\] 'colour': unknown key"),
    ('[sweep]\n[sweep.grid]\n', r"\[sweep.grid\]: empty"),
    ('[sweep]\n[sweep.grid]\n"model.beta" = []\n', "non-empty list"),
    ('[sweep]\n[sweep.grid]\n"model.bta" = [0.1]\n',
     r"unknown key model.'bta'; allowed: .*beta"),
    ('[sweep]\n[sweep.grid]\n"model.beta" = ["big"]\n', r"\[model\] beta"),
    ('[sweep]\n[sweep.grid]\n"optimizer.lr" = [-1.0]\n', r"optimizer.*lr"),
    ('[sweep]\n[sweep.grid]\nbeta = [0.1]\n', "not a config key in dotted form"),
    ('[sweep]\nmetric = "train.bpc"\n', "expected 'valid.<metric>'"),
    ('[sweep]\nmetric = "valid.accuracy"\n', "'accuracy' is not reported by task 'cyclic'"),
    ('[sweep]\nseeds = 0\n', r"seeds: expected an integer >= 1"),
    ('[sweep]\ndirection = "up"\n', "expected 'min' or 'max'"),
    ('[sweep]\n[sweep.random]\nn = 2\n"model.beta" = {normal = [0, 1]}\n', "expected one of"),
    ('[sweep]\n[sweep.random]\nn = 2\n"model.alpha" = {log_uniform = [0, 1]}\n', "lo > 0"),
])
def test_bad_specs_are_one_error_naming_the_problem(tmp_path, sweep, match):
    with pytest.raises(ConfigError, match=match) as exc:
        plan_runs(load_spec(write(tmp_path, sweep)))
    assert str(exc.value).startswith(str(tmp_path / "spec.toml"))


def test_a_missing_base_and_unknown_top_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="base: no such file"):
        load_spec(write(tmp_path, "", top='base = "nope.toml"\n'))
    with pytest.raises(ConfigError, match="'grid': unknown key"):
        load_spec(write(tmp_path, "[grid]\n"))


def test_traces_a_swept_model_cannot_record_are_refused(tmp_path):
    base = BASE + '[record]\ntraces = ["loss", "eps2"]\n'
    (tmp_path / "base.toml").write_text(base)
    spec = tmp_path / "spec.toml"
    spec.write_text('base = "base.toml"\n[sweep]\n[sweep.grid]\n"model.hidden" = [[6, 6], [6]]\n')
    with pytest.raises(ConfigError, match=r"\[record\] traces: eps2 not recordable by the "
                                          r"configuration \{model.hidden = \[6\]\}"):
        plan_runs(load_spec(spec))
