"""A comparison of learners as a study: equal tuning budgets, then many seeds on test.

::

    name = "bit_recall"
    base = "../bit_recall.toml"       # the task (and P-TNCN's own options)
    set = ["train.final_eval_batches=16"]
    budget_s = 30                     # training seconds of every run
    metric = "bit_accuracy"           # tuned on valid.<metric>, reported on test.<metric>
    tune_seeds = 1                    # seeds per configuration while tuning
    final_seeds = 5                   # seeds of each learner's chosen configuration

    [learners.ptncn]                  # the base config's [model] and [optimizer]
    grid = {"optimizer.lr" = [0.02, 0.05, 0.1, 0.2]}

    [learners.rtrl]                   # [model] / [optimizer] replaced wholesale
    model = {learner = "rtrl", hidden = 32}
    optimizer = {name = "adam"}
    grid = {"optimizer.lr" = [0.001, 0.003, 0.01, 0.03]}

Every learner gets the same number of configurations (the study refuses unequal
grids) and every run the same training time (``train.time_budget_s = budget_s``,
``train.batches`` unbounded).  Stage 1 (``OUT/<learner>/tune``) scores each
configuration on validation; stage 2 (``OUT/<learner>/final``) runs the best one
with ``final_seeds`` new seeds (``seed + 1``'s stream: none is a tuning run) and
scores it on test.  Both stages are sweeps (:func:`ptncn.sweep.run_sweep`).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from ..harness import ConfigError, apply_overrides, read_toml
from .spec import Spec, configurations, plan_runs

STUDY_KEYS = ("name", "description", "base", "set", "budget_s", "metric", "direction",
              "tune_seeds", "final_seeds", "seed", "learners")
LEARNER_KEYS = ("model", "optimizer", "set", "grid")
UNBOUNDED_BATCHES = 10**9


@dataclass
class Study:
    path: str
    name: str
    base_path: str
    sets: list
    budget_s: float
    metric: str
    direction: str
    tune_seeds: int
    final_seeds: int
    seed: int
    learners: dict          # label -> {"model", "optimizer", "set", "grid"}


def _fail(path: str, where: str, what: str):
    raise ConfigError(f"{path}: {where}: {what}")


def load_study(path) -> Study:
    """Read and check a study spec (module docstring)."""
    path = os.fspath(path)
    raw = read_toml(path)
    for k in raw:
        if k not in STUDY_KEYS:
            _fail(path, repr(k), f"unknown key; allowed: {', '.join(STUDY_KEYS)}")
    for k in ("name", "base", "metric", "budget_s", "learners"):
        if k not in raw:
            _fail(path, k, "missing")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), raw["base"]))
    if not os.path.exists(base_path):
        _fail(path, "base", f"no such file {base_path}")
    budget = raw["budget_s"]
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        _fail(path, "budget_s", f"expected a number of seconds > 0, got {budget!r}")
    study = Study(path, raw["name"], base_path, list(raw.get("set", [])), float(budget),
                  raw["metric"], raw.get("direction") or
                  ("max" if "accuracy" in raw["metric"] else "min"),
                  raw.get("tune_seeds", 1), raw.get("final_seeds", 5), raw.get("seed", 0),
                  _learners(path, raw["learners"]))
    _equal_budgets(study)
    return study


def _learners(path: str, table) -> dict:
    if not isinstance(table, dict) or not table:
        _fail(path, "learners", "expected a table of learners ([learners.<label>])")
    for label, entry in table.items():
        if not isinstance(entry, dict):
            _fail(path, f"[learners.{label}]", "expected a table")
        for k in entry:
            if k not in LEARNER_KEYS:
                _fail(path, f"[learners.{label}] {k!r}",
                      f"unknown key; allowed: {', '.join(LEARNER_KEYS)}")
        if not isinstance(entry.get("grid"), dict) or not entry["grid"]:
            _fail(path, f"[learners.{label}] grid", "expected a non-empty table of "
                                                    "key -> list of values")
    return table


def _equal_budgets(study: Study) -> None:
    """Every learner gets as many configurations as every other."""
    sizes = {label: int(np.prod([len(v) if isinstance(v, list) else 1
                                 for v in e["grid"].values()]))
             for label, e in study.learners.items()}
    if len(set(sizes.values())) > 1:
        _fail(study.path, "learners", "unequal tuning budgets: configurations per learner "
              + ", ".join(f"{k} {v}" for k, v in sizes.items()))


def learner_base(study: Study, label: str) -> dict:
    """The run config of ``label`` before its grid: the base, the study's ``set``, the
    learner's ``model`` / ``optimizer`` tables (replacing the base's), its ``set``, and
    the time budget."""
    entry = study.learners[label]
    cfg = apply_overrides(read_toml(study.base_path), study.sets)
    for section in ("model", "optimizer"):
        if section in entry:
            cfg[section] = copy.deepcopy(entry[section])
    cfg = apply_overrides(cfg, entry.get("set", []))
    cfg.setdefault("train", {}).update(time_budget_s=study.budget_s,
                                       batches=UNBOUNDED_BATCHES)
    cfg["name"] = f"{study.name}-{label}"
    return cfg


def stage_spec(study: Study, label: str, best: dict | None = None) -> Spec:
    """The sweep of ``label``'s tuning stage, or (``best``: the chosen values) its final
    stage."""
    grid = study.learners[label]["grid"] if best is None else {k: [v] for k, v in best.items()}
    final = best is not None
    return Spec(path=f"{study.path} [learners.{label}]", base_path=study.base_path,
                base=learner_base(study, label), grid=copy.deepcopy(grid), random=None,
                seeds=study.final_seeds if final else study.tune_seeds,
                seed=study.seed + int(final),
                metric=f"{'test' if final else 'valid'}.{study.metric}",
                direction=study.direction)


# ---------------------------------------------------------------------------
# running it
# ---------------------------------------------------------------------------
def run_study(path, out: str, *, workers: int = 1, scheduler: str | None = None,
              retries: int = 2, data_dir=None, progress=None, log=print) -> dict:
    """Both stages for every learner, on one Dask client; returns (and writes to
    ``out``/study.json) per learner the chosen values, their tuning score and the
    final runs' test scores."""
    from ..jsonio import write_json
    from .engine import connect, disconnect, run_sweep
    from .results import read_meta, summarize

    study = load_study(path)
    specs = {label: stage_spec(study, label) for label in study.learners}
    for spec in specs.values():                       # every config checked up front
        plan_runs(spec, data_dir)
    client = connect(workers, scheduler, 1 + retries)
    results = {}
    try:
        for label, spec in specs.items():
            log(f"{label}: tuning {len(configurations(spec))} configurations")
            tune = run_sweep(spec, os.path.join(out, label, "tune"), client=client,
                             retries=retries, data_dir=data_dir, progress=progress)
            meta = read_meta(os.path.join(out, label, "tune"))
            best = summarize(tune.rows, meta)[0]
            log(f"{label}: chose {best.values}; {study.final_seeds} seeds on test")
            final = run_sweep(stage_spec(study, label, best.values),
                              os.path.join(out, label, "final"), client=client,
                              retries=retries, data_dir=data_dir, progress=progress)
            results[label] = _learner_result(study, best, tune.rows, final.rows,
                                             os.path.join(out, label, "final"))
    finally:
        if client is not None:
            disconnect(client, scheduler)
    doc = {"study": study.path, "name": study.name, "metric": study.metric,
           "direction": study.direction, "budget_s": study.budget_s,
           "tune_seeds": study.tune_seeds, "final_seeds": study.final_seeds,
           "learners": results}
    write_json(os.path.join(out, "study.json"), doc, indent=2)
    return doc


def _learner_result(study: Study, best, tune_rows: list, final_rows: list,
                    final_dir: str) -> dict:
    """One learner's line of the study: what was chosen, how it scored."""
    from .results import mean_interval

    m = study.metric
    done = [r for r in final_rows if r["status"] == "done"]
    stat = mean_interval([r[f"test.{m}"] for r in done])
    valid = best.stats.get(f"valid.{m}")
    return {"values": best.values, "valid": None if valid is None else valid.mean,
            "test_mean": stat.mean, "test_half": stat.half, "n": stat.n,
            "test_values": [r[f"test.{m}"] for r in done],
            "failed": len(final_rows) - len(done) + sum(r["status"] != "done"
                                                        for r in tune_rows),
            "seconds": float(np.nanmean([r["seconds"] for r in done])) if done else math.nan,
            "steps": float(np.nanmean([r["steps"] for r in done])) if done else math.nan,
            "baselines": _baselines(final_dir, done, m)}


def _baselines(final_dir: str, done: list, metric: str) -> dict:
    """The trivial predictors' test scores (the same for every run of the task)."""
    for r in done:
        try:
            with open(os.path.join(final_dir, "runs", r["run_id"], "metrics.json")) as f:
                base = json.load(f)["test"]["baselines"]
            return {k: v.get(metric) for k, v in base.items() if v.get(metric) is not None}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return {}
