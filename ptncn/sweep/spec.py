"""A sweep spec: a base config, the values to sweep, the seeds, the metric.

::

    base = "../bit_recall.toml"          # any run config, relative to this file
    set = ["train.batches=200"]          # optional overrides of the base (as --set)

    [sweep]
    seeds = 3                            # runs per configuration
    seed = 0                             # root of the seeds (numpy SeedSequence); default 0
    metric = "valid.bit_accuracy"        # "valid.<m>" or "test.<m>"
    direction = "max"                    # default: max for accuracies, else min

    [sweep.grid]                         # every combination
    "optimizer.lr" = [0.01, 0.05]
    "model.beta" = [0.05, 0.1]

    [sweep.random]                       # n draws, crossed with the grid
    n = 4
    "model.alpha" = {log_uniform = [1e-4, 1e-2]}
    "model.act" = {choice = ["tanh", "relu"]}

Every configuration (base + values + seed) is validated by the harness before any
run starts, so a key the base config's schema lacks, or a value of the wrong type or
out of range, is one :class:`~ptncn.harness.ConfigError` naming the spec, the key and
the problem.  A run's id is a short hash of its whole resolved config (seed included):
the same configuration always lands in the same folder.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..harness import ConfigError, make_task, read_toml, validate

SPEC_KEYS = ("base", "set", "sweep", "name", "description")
SWEEP_KEYS = ("seeds", "seed", "metric", "direction", "grid", "random")
DISTRIBUTIONS = ("choice", "uniform", "log_uniform")
SPLITS = ("valid", "test")


@dataclass
class Spec:
    """A parsed sweep spec (see the module docstring)."""
    path: str
    base_path: str
    base: dict                     # the base config, overrides applied, not yet validated
    grid: dict                     # key -> list of values
    random: dict | None            # {"n", "seed", "keys": {key: {dist: args}}}
    seeds: int
    seed: int
    metric: str
    direction: str
    sets: list = field(default_factory=list)

    @property
    def axes(self) -> list[str]:
        """The swept keys: the grid's, then the random ones."""
        return list(self.grid) + list((self.random or {}).get("keys", {}))

    def meta(self) -> dict:
        """What ``sweep.json`` stores (and the spec hash covers)."""
        return {"base": self.base_path, "base_config": self.base, "grid": self.grid,
                "random": self.random, "axes": self.axes, "seeds": self.seeds,
                "seed": self.seed, "metric": self.metric, "direction": self.direction}

    def hash(self) -> str:
        return _digest(self.meta())


@dataclass
class RunPlan:
    """One run of a sweep: its configuration's values, its seed and its config."""
    run_id: str
    config_index: int
    seed_index: int
    seed: int
    values: dict
    config: dict


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _fail(path: str, where: str, what: str):
    raise ConfigError(f"{path}: {where}: {what}")


def load_spec(path, overrides=()) -> Spec:
    """Read and check a sweep spec; ``overrides`` (``section.key=value``) apply to the
    base config after the spec's own ``set``.  Every run's config is validated here."""
    from ..harness import apply_overrides

    path = os.fspath(path)
    raw = read_toml(path)
    _check_table(path, "", raw, SPEC_KEYS)
    if "base" not in raw or not isinstance(raw["base"], str):
        _fail(path, "base", "expected the path of a run config (a string)")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), raw["base"]))
    if not os.path.exists(base_path):
        _fail(path, "base", f"no such file {base_path}")
    sets = _string_list(path, "set", raw.get("set", [])) + list(overrides)
    base = apply_overrides(read_toml(base_path), sets)
    sweep = raw.get("sweep", {})
    _check_table(path, "[sweep] ", sweep, SWEEP_KEYS)
    spec = Spec(path=path, base_path=base_path, base=base,
                grid=_grid(path, sweep.get("grid")), random=_random(path, sweep.get("random")),
                seeds=_count(path, "[sweep] seeds", sweep.get("seeds", 1), lo=1),
                seed=_count(path, "[sweep] seed", sweep.get("seed", 0), lo=0),
                metric=sweep.get("metric", ""), direction=sweep.get("direction", ""),
                sets=sets)
    spec.metric, spec.direction = _metric(path, spec, sweep)
    return spec


def _check_table(path: str, where: str, table, allowed=None) -> None:
    """``table`` is a table whose keys are among ``allowed`` (None: any keys)."""
    if not isinstance(table, dict):
        _fail(path, where.strip() or "spec", f"expected a table, got {table!r}")
    for k in table:
        if allowed is not None and k not in allowed:
            _fail(path, f"{where}{k!r}", f"unknown key; allowed: {', '.join(allowed)}")


def _string_list(path: str, where: str, v) -> list:
    if not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
        _fail(path, where, f"expected a list of 'section.key=value' strings, got {v!r}")
    return list(v)


def _count(path: str, where: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        _fail(path, where, f"expected an integer >= {lo}, got {v!r}")
    return v


def _dotted(path: str, where: str, key: str) -> None:
    if not isinstance(key, str) or key.count(".") < 1 or not all(key.split(".")):
        _fail(path, where, f"{key!r} is not a config key in dotted form "
                           "(e.g. 'model.beta', 'optimizer.lr')")


def _grid(path: str, grid) -> dict:
    if grid is None:
        return {}
    _check_table(path, "[sweep.grid]", grid)
    if not grid:
        _fail(path, "[sweep.grid]", "empty: give each swept key a list of values "
                                    "(or leave the table out to run the base config only)")
    for key, values in grid.items():
        _dotted(path, "[sweep.grid]", key)
        if not isinstance(values, list) or not values:
            _fail(path, f"[sweep.grid] {key!r}", f"expected a non-empty list of values, "
                                                 f"got {values!r}")
    return dict(grid)


def _random(path: str, rnd) -> dict | None:
    if rnd is None:
        return None
    _check_table(path, "[sweep.random]", rnd)
    n = _count(path, "[sweep.random] n", rnd.get("n"), lo=1)
    seed = _count(path, "[sweep.random] seed", rnd.get("seed", 0), lo=0)
    keys = {k: v for k, v in rnd.items() if k not in ("n", "seed")}
    if not keys:
        _fail(path, "[sweep.random]", "no keys to draw (e.g. \"model.alpha\" = "
                                      "{log_uniform = [1e-4, 1e-2]})")
    for key, dist in keys.items():
        _dotted(path, "[sweep.random]", key)
        _distribution(path, key, dist)
    return {"n": n, "seed": seed, "keys": keys}


def _distribution(path: str, key: str, dist) -> None:
    where = f"[sweep.random] {key!r}"
    if not (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in DISTRIBUTIONS):
        _fail(path, where, f"expected one of {{choice = [...]}}, {{uniform = [lo, hi]}}, "
                           f"{{log_uniform = [lo, hi]}}; got {dist!r}")
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            _fail(path, where, f"choice needs a non-empty list, got {args!r}")
        return
    ok = (isinstance(args, list) and len(args) == 2
          and all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
                  for a in args) and args[0] < args[1])
    if not ok or (kind == "log_uniform" and args[0] <= 0):
        _fail(path, where, f"{kind} needs [lo, hi] with lo < hi"
                           f"{' and lo > 0' if kind == 'log_uniform' else ''}, got {args!r}")


def _metric(path: str, spec: Spec, sweep: dict) -> tuple[str, str]:
    """The metric (``valid.<m>`` / ``test.<m>``, ``<m>`` one the task reports) and its
    direction."""
    metric = sweep.get("metric", "valid.loss")
    split, _, name = metric.partition(".") if isinstance(metric, str) else ("", "", "")
    if split not in SPLITS or not name:
        _fail(path, "[sweep] metric", f"expected 'valid.<metric>' or 'test.<metric>', "
                                      f"got {metric!r}")
    direction = sweep.get("direction") or ("max" if "accuracy" in name else "min")
    if direction not in ("min", "max"):
        _fail(path, "[sweep] direction", f"expected 'min' or 'max', got {direction!r}")
    return metric, direction


def task_metrics(task) -> list[str]:
    """The metric names an evaluation of ``task`` reports."""
    names = ["loss", *task.loss_metrics(1.0)]
    x = np.zeros((1, task.x_dim), np.float32)
    try:
        names += list(task.step_metrics(x + 0.5, x, np.ones((1, 1), np.float32)))
    except Exception:            # noqa: BLE001 - a task whose metrics need real data
        pass
    return names


def check_runs(spec: Spec, plans: list, data_dir=None) -> None:
    """What only a built task and learner can tell, once per distinct task and model:
    the metric is one the task reports, and the recorded traces are the learner's."""
    from ..harness import make_learner

    tasks, seen = {}, set()
    for p in plans:
        cfg = p.config
        tkey = json.dumps(cfg["task"], sort_keys=True, default=str)
        if tkey not in tasks:
            tasks[tkey] = make_task(cfg, "train", data_dir)
            name = spec.metric.split(".", 1)[1]
            known = task_metrics(tasks[tkey])
            if name not in known:
                _fail(spec.path, "[sweep] metric", f"{name!r} is not reported by task "
                                                   f"{cfg['task']['name']!r} (it reports "
                                                   f"{', '.join(known)})")
        key = json.dumps([tkey, cfg["model"], cfg["record"]["traces"]], sort_keys=True,
                         default=str)
        if key not in seen:
            seen.add(key)
            names = set(make_learner(cfg, tasks[tkey].x_dim).recordable) | {"loss"}
            bad = [n for n in cfg["record"]["traces"] if n not in names]
            if bad:
                _fail(spec.path, "[record] traces", f"{', '.join(bad)} not recordable by "
                                                    f"the configuration {_swept(p.values)}")


def _swept(values: dict) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "}"


# ---------------------------------------------------------------------------
# the runs
# ---------------------------------------------------------------------------
def configurations(spec: Spec) -> list[dict]:
    """Each configuration's swept values: the grid's product, crossed with the random
    draws (drawn from ``default_rng(random.seed)``, key by key in spec order)."""
    grid = [dict(zip(spec.grid, combo)) for combo in itertools.product(*spec.grid.values())]
    if not spec.random:
        return grid
    rng = np.random.default_rng(spec.random["seed"])
    draws = [{k: _draw(rng, d) for k, d in spec.random["keys"].items()}
             for _ in range(spec.random["n"])]
    return [{**g, **d} for g in grid for d in draws]


def _draw(rng, dist: dict):
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        return copy.deepcopy(args[int(rng.integers(len(args)))])
    if kind == "uniform":
        return float(rng.uniform(*args))
    return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))


def run_seeds(spec: Spec) -> list[int]:
    """The seed of each seed index: ``SeedSequence([root, i])``'s first word (the same
    seeds for every configuration, so that configurations are compared pairwise)."""
    return [int(np.random.SeedSequence([spec.seed, i]).generate_state(1)[0])
            for i in range(spec.seeds)]


def set_key(cfg: dict, key: str, value) -> dict:
    """``cfg`` (copied) with the dotted ``key`` set to ``value``."""
    cfg = copy.deepcopy(cfg)
    *secs, last = key.split(".")
    d = cfg
    for s in secs:
        d = d.setdefault(s, {})
        if not isinstance(d, dict):
            raise ConfigError(f"{key}: {s} is not a section")
    d[last] = copy.deepcopy(value)
    return cfg


def plan_runs(spec: Spec, data_dir=None) -> list[RunPlan]:
    """Every run of the sweep, its config validated (errors name the spec and the key),
    then :func:`check_runs`."""
    seeds, plans = run_seeds(spec), []
    for ci, values in enumerate(configurations(spec)):
        cfg = spec.base
        for key, value in values.items():
            cfg = set_key(cfg, key, value)
        for si, seed in enumerate(seeds):
            try:
                resolved = validate(set_key(cfg, "seed", seed))
            except ConfigError as exc:
                raise ConfigError(f"{spec.path}: {exc}" + (
                    f" (configuration {_swept(values)})" if values else "")) from None
            plans.append(RunPlan(_digest(resolved), ci, si, seed, values, resolved))
    check_runs(spec, plans, data_dir)
    return plans
