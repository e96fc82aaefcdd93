"""Training and evaluation from TOML configs (``ptncn train models/X.toml``).

A config fully describes a run; unknown sections or keys, and values of the
wrong type or out of range (sizes are ints >= 1, counts and budgets >= 0, momentum-like
rates in [0, 1), the learning rate > 0, every number finite; ``[model]`` values as the
learner's Config checks them) are errors naming the key, what is expected and what was
given (``<file>: [train] batches: expected int >= 1, got -1``), raised before anything
is built::

    name = "ptb_char_small"
    seed = 1234
    [task]        name = "ptb_char", batch_size = 50, ... (the task's own options)
    [model]       learner = "ptncn", hidden = [250, 250], ... (the fields of the learner's Config)
    [optimizer]   name = "nesterov", lr = 0.075, momentum = 0.95, ...
    [train]       batches, time_budget_s, eval_every, eval_batches (periodic evaluation),
                  final_eval_batches (0 = the whole evaluation set), eval_split, checkpoint_every
    [record]      traces = ["loss", "e0", ...], rows, every, buffer_steps, flush_seconds, compression

A run writes into its output folder (default ``runs/<name>``): ``run.h5``
(the recording), ``run.ckpt.npz`` (checkpoint, for ``ptncn resume``),
``best.npz`` (the model with the best validation loss), ``final.npz``,
``config.json`` (the resolved config), ``metrics.json`` (final metrics) and
``plots/``.

Splits: periodic evaluation, ``best.npz`` and ``metrics["final"]`` / ``["best"]`` /
``["history"]`` / ``["baselines"]`` use the selection split ``metrics["split"]``
(``train.eval_split``, default the task's ``default_eval_split``: "valid" for PTB and
the bouncing-digit tasks).  The test split is read only after training has ended:
``metrics["test"]`` holds the final and the best model scored on it
(``{"split": "test", "final": ..., "best": ..., "baselines": ...}``).  Each entry of
``metrics["history"]`` is one periodic evaluation with where training stood:
``batch``, ``step``, ``tokens`` (scored training tokens or frames so far),
``seconds`` since the start of training and ``train_seconds``, those less the
periodic evaluations (what ``train.time_budget_s`` limits).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import os
import time
import tomllib
import types
import typing

import numpy as np

from .jsonio import dump_json
from .learner import REGISTRY, learner_class
from .optim import OPTIMIZERS, make_optimizer
from .simulate import Simulation, simulate

# ---------------------------------------------------------------------------
# config schema
# ---------------------------------------------------------------------------
TASKS = {
    "ptb_char": ("ptncn.data.ptb", "PTBChar", {}),
    "ptb_word": ("ptncn.data.ptb", "PTBWord", {}),
    "bouncing_mnist": ("ptncn.data.bouncing", "BouncingDigits", {"source": "mnist"}),
    "bouncing_notmnist": ("ptncn.data.bouncing", "BouncingDigits", {"source": "notmnist"}),
    "bit_recall": ("ptncn.data.bitrecall", "BitRecall", {}),
    "cyclic": ("ptncn.data.synthetic", "CyclicSymbols", {}),
    "array": ("ptncn.data.arrays", "ArrayTask.from_file", {}),      # path = "data.npz"
}
#: ``[model] learner = ...`` names a learner of :data:`ptncn.learner.REGISTRY`; the
#: allowed [model] keys are the fields of its ``Config`` but these (the harness fills them)
HARNESS_FIELDS = ("x_dim", "seed")
#: TOML value types a config field of this Python type accepts (arrays: see _toml_types)
TOML_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}

@dataclasses.dataclass(frozen=True)
class ListOf:
    """A TOML array whose items have the types ``items`` (None: any)."""

    items: tuple | None

    @property
    def __name__(self) -> str:
        return "list" if self.items is None else \
            "list of " + " or ".join(t.__name__ for t in self.items)


@dataclasses.dataclass(frozen=True)
class Num:
    """A finite number of the TOML ``types`` in a range: ``lo`` / ``hi`` (None: unbounded),
    inclusive unless ``lo_open`` / ``hi_open``."""

    types: tuple = (int, float)
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    @property
    def __name__(self) -> str:
        kind = "int" if self.types == (int,) else "number"
        if self.lo is not None and self.hi is not None:
            return (f"{kind} in {'(' if self.lo_open else '['}{self.lo:g}, "
                    f"{self.hi:g}{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"finite {kind}"

    def accepts(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.types) or not math.isfinite(v):
            return False
        lo_ok = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        return lo_ok and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi))


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of the strings ``values``."""

    values: tuple

    @property
    def __name__(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


SIZE, COUNT = Num((int,), 1), Num((int,), 0)          # sizes >= 1; counts >= 0 (0: off/all)
NONNEG, POSITIVE = Num(lo=0), Num(lo=0, lo_open=True)
FRACTION = Num(lo=0, hi=1, hi_open=True)              # momentum-like: [0, 1)
TOP_KEYS = {"name": str, "seed": COUNT, "description": str, "task": dict, "model": dict,
            "optimizer": dict, "train": dict, "record": dict}
TRAIN_KEYS = {"batches": SIZE, "time_budget_s": NONNEG, "eval_every": COUNT,
              "eval_batches": COUNT, "final_eval_batches": COUNT, "eval_split": str,
              "checkpoint_every": COUNT}
RECORD_KEYS = {"traces": ListOf((str,)), "rows": ListOf((COUNT,)), "every": SIZE,
               "buffer_steps": SIZE, "flush_seconds": NONNEG,
               "compression": OneOf(("lzf", "gzip", "none"))}
OPTIMIZER_KEYS = {"name": OneOf(tuple(OPTIMIZERS)), "lr": POSITIVE, "momentum": FRACTION,
                  "weight_decay": NONNEG, "max_norm": NONNEG, "beta1": FRACTION,
                  "beta2": FRACTION, "eps": POSITIVE, "rho": FRACTION, "lr_schedule": dict}
#: what a task constructor's annotated parameter accepts (its ints are sizes or counts >= 1)
TASK_TYPES = {int: SIZE, float: Num(), bool: bool, str: str}
DEFAULTS = {
    "seed": 1234,
    "train": {"batches": 100, "time_budget_s": 0, "eval_every": 0, "eval_batches": 0,
              "final_eval_batches": 0, "eval_split": "", "checkpoint_every": 0},
    "record": {"traces": ["loss"], "rows": [0], "every": 1, "buffer_steps": 256,
               "flush_seconds": 1.0, "compression": "lzf"},
    "optimizer": {"name": "nesterov", "lr": 0.075, "momentum": 0.95},
}


class ConfigError(ValueError):
    """A config file is malformed: unknown key, wrong type or range, unknown name."""


def _type_ok(v, t) -> bool:
    if t is None:
        return True
    return any(_is(v, x) for x in (t if isinstance(t, tuple) else (t,)))


def _is(v, t) -> bool:
    if isinstance(t, ListOf):
        return isinstance(v, list) and all(_type_ok(e, t.items) for e in v)
    if isinstance(t, Num):
        return t.accepts(v)
    if isinstance(t, OneOf):
        return isinstance(v, str) and v in t.values
    return isinstance(v, t) and (t is bool or not isinstance(v, bool))


def _where(section: str, key: str) -> str:
    """``[section] key`` (``section`` given as "name." or "" for the top level)."""
    return f"[{section.rstrip('.')}] {key}" if section else key


def _check_keys(section: str, d: dict, allowed: dict) -> None:
    for k, v in d.items():
        if k not in allowed:
            raise ConfigError(f"unknown key {section}{k!r}; allowed: {', '.join(sorted(allowed))}")
        if not _type_ok(v, allowed[k]):
            t = allowed[k]
            want = " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))
            raise ConfigError(f"{_where(section, k)}: expected {want}, got {v!r}")


def _task_class(name: str):
    """The class (or factory) behind ``[task] name``: a name of :data:`TASKS`, or
    ``"module:Class"`` for a user's subclass of :class:`ptncn.data.base.Task`."""
    import importlib
    if ":" in name:
        return _user_task_class(name), {}
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}, "
                          "or 'module:Class' for your own Task subclass")
    mod, attr, fixed = TASKS[name]
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj, fixed


def _user_task_class(name: str):
    """``"module:Class"`` imported (the current directory is searched after sys.path);
    it must be a subclass of :class:`ptncn.data.base.Task`."""
    import importlib
    import sys
    from .data.base import Task
    mod_name, _, attr = name.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"[task] name = {name!r}: expected 'module:Class'")
    try:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name != mod_name.split(".")[0] or os.getcwd() in sys.path:
                raise
            sys.path.append(os.getcwd())
            try:
                module = importlib.import_module(mod_name)
            finally:
                sys.path.remove(os.getcwd())
    except Exception as exc:         # noqa: BLE001 - any import failure is the config's
        raise ConfigError(f"[task] name = {name!r}: cannot import module {mod_name!r} "
                          f"({type(exc).__name__}: {exc})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"[task] name = {name!r}: module {mod_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise ConfigError(f"[task] name = {name!r}: {attr} is not a subclass of "
                          f"ptncn.data.base.Task (got {obj!r})")
    return obj


def _signature_keys(fn, exclude=()) -> dict:
    """The keyword parameters of ``fn`` (a task class) -> the TOML values each accepts,
    from its annotations (:data:`TASK_TYPES`; None: not checked here)."""
    try:
        hints = typing.get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    except (NameError, TypeError):
        hints = {}
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", *exclude) or p.kind not in (p.POSITIONAL_OR_KEYWORD,
                                                          p.KEYWORD_ONLY):
            continue
        types_ = _toml_types(hints.get(p.name))
        out[p.name] = None if types_ is None else tuple(TASK_TYPES.get(t, t) for t in types_
                                                        if t is not int or float not in types_)
    return out


def validate(cfg: dict) -> dict:
    """Check a config dict and return it with defaults filled in (a new dict)."""
    cfg = copy.deepcopy(cfg)
    _check_keys("", cfg, TOP_KEYS)
    for k in ("name", "task", "model"):
        if k not in cfg:
            raise ConfigError(f"config needs [{k}]" if k != "name" else "config needs name = ...")
    out = {"name": cfg["name"], "seed": cfg.get("seed", DEFAULTS["seed"]),
           "description": cfg.get("description", "")}
    task = dict(cfg["task"])
    if "name" not in task:
        raise ConfigError(f"[task] needs name; allowed: {', '.join(TASKS)}")
    cls, fixed = _task_class(task["name"])
    allowed = _signature_keys(cls, exclude=("split", "data_dir", "seed", *fixed))
    _check_keys("task.", {k: v for k, v in task.items() if k != "name"}, allowed)
    out["task"] = task
    out["model"] = _check_model(dict(cfg["model"]), out["seed"])
    opt = {**DEFAULTS["optimizer"], **cfg.get("optimizer", {})}
    _check_keys("optimizer.", opt, OPTIMIZER_KEYS)
    _check_optimizer(opt)
    out["optimizer"] = opt
    for sec, keys in (("train", TRAIN_KEYS), ("record", RECORD_KEYS)):
        d = {**DEFAULTS[sec], **cfg.get(sec, {})}
        _check_keys(f"{sec}.", d, keys)
        out[sec] = d
    return out


def _check_model(model: dict, seed: int) -> dict:
    """``[model]`` checked against the learner's Config: the TOML types of its fields, then
    its own checks (ranges), by building it (``x_dim`` 1 stands in for the task's)."""
    learner = model.pop("learner", "ptncn")
    config_cls = learner_cls(learner).Config
    try:
        model = config_cls.upgrade(model)
    except ValueError as exc:
        raise ConfigError(f"[model]: {exc}") from None
    _check_keys("model.", model, model_schema(config_cls))
    try:
        config_cls.from_dict({"x_dim": 1, "seed": seed, **model})
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise ConfigError(f"{_culprit(config_cls, model, seed)}: {exc}") from None
    return {"learner": learner, **model}


def _culprit(config_cls, model: dict, seed: int) -> str:
    """``[model] key``: the first key that the Config refuses on its own (with the other
    fields at their defaults); ``[model]`` when only a combination is refused."""
    for key, value in model.items():
        try:
            config_cls.from_dict({"x_dim": 1, "seed": seed, key: value})
        except (ValueError, TypeError, ZeroDivisionError):
            return f"[model] {key}"
    return "[model]"


def _optimizer_kwargs(opt: dict) -> tuple[str, dict]:
    """The optimizer's name and the options it is built with (``momentum`` only for the
    momentum methods, which the others do not take)."""
    kw = {k: v for k, v in opt.items() if k != "name"}
    if opt["name"] not in ("momentum", "nesterov"):
        kw.pop("momentum", None)
    return opt["name"], kw


def _check_optimizer(opt: dict) -> None:
    name, kw = _optimizer_kwargs(opt)
    try:
        make_optimizer(name, **kw)
    except ValueError as exc:
        raise ConfigError(f"[optimizer] {exc}") from None


def read_toml(path) -> dict:
    """A TOML file as a dict; malformed TOML is a ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path, overrides: list[str] = ()) -> dict:
    """Read a TOML config, apply ``section.key=value`` overrides, validate; errors name
    the file."""
    cfg = apply_overrides(read_toml(path), overrides)
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_overrides(cfg: dict, overrides) -> dict:
    """Set ``section.key=value`` items (values parsed as TOML) in a config dict."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        *secs, last = key.split(".")
        d = cfg
        for s in secs:
            d = d.setdefault(s, {})
        d[last] = value
    return cfg


# ---------------------------------------------------------------------------
# building runs
# ---------------------------------------------------------------------------
#: seed offsets of the held-out streams of tasks without splits (the task is built
#: with ``seed + offset``): "valid" and "test" draw different sequences
HELD_OUT_SEED = {"test": 10_007, "valid": 20_011}


def make_task(cfg: dict, split: str = "train", data_dir=None):
    """The task of ``cfg`` for ``split`` ("train", "valid" or "test").  Tasks with a
    ``split`` parameter get it; tasks without one get a held-out seed
    (``seed + HELD_OUT_SEED[split]``) for "valid" and "test"."""
    task = dict(cfg["task"])
    name = task.pop("name")
    cls, fixed = _task_class(name)
    params = inspect.signature(cls).parameters
    kw = {**fixed, **task}
    seed = cfg["seed"]
    if "split" in params:
        kw["split"] = split
    elif split != "train":
        if split not in HELD_OUT_SEED:
            raise ConfigError(f"split must be 'train', 'valid' or 'test', not {split!r}")
        seed = seed + HELD_OUT_SEED[split]     # a held-out stream for tasks without splits
    if "seed" in params:
        kw["seed"] = seed
    if "data_dir" in params:
        kw["data_dir"] = data_dir
    missing = [p.name for p in params.values() if p.default is p.empty and p.name not in kw
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        raise ConfigError(f"[task] {name!r} needs {', '.join(missing)}")
    return cls(**kw)


def learner_cls(name: str):
    """The class behind ``[model] learner = name`` (imported on first use)."""
    if name not in REGISTRY:
        raise ConfigError(f"model.learner = {name!r}: allowed {', '.join(REGISTRY)}")
    return learner_class(name)


def model_schema(config_cls) -> dict:
    """The [model] keys of a learner's config dataclass -> the TOML types each accepts
    (None: not checked here; the config checks its values when it is built)."""
    try:
        hints = typing.get_type_hints(config_cls)
    except (NameError, TypeError):
        hints = {}
    return {f.name: _toml_types(hints.get(f.name)) for f in dataclasses.fields(config_cls)
            if f.name not in HARNESS_FIELDS}


def _toml_types(tp) -> tuple | None:
    """The TOML types a field annotated ``tp`` accepts (None: any)."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    out: list = []
    for a in (typing.get_args(tp) if union else (tp,)):
        origin, args = typing.get_origin(a) or a, typing.get_args(a)
        if a is type(None):
            continue
        if origin in (tuple, list):           # tuple[int, ...], list[str]: an array
            same = len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)
            out.append(ListOf(_toml_types(args[0]) if same else None))
        elif origin in TOML_TYPES:
            out += [t for t in TOML_TYPES[origin] if t not in out]
        else:
            return None
    return tuple(out) or None


def make_learner(cfg: dict, x_dim: int):
    model = dict(cfg["model"])
    cls = learner_cls(model.pop("learner"))
    opt = dict(cfg["optimizer"])
    name = opt.pop("name")
    kw = {k: opt.pop(k) for k in ("lr", "momentum", "weight_decay", "max_norm") if k in opt}
    if name not in ("momentum", "nesterov"):
        kw.pop("momentum", None)
    learner = cls(x_dim, seed=cfg["seed"], optimizer=name, optimizer_options=opt or None,
                  **kw, **model)
    if "batch_size" in cfg["task"]:          # refused before the task makes a batch
        learner.check_memory(cfg["task"]["batch_size"])
    return learner


def first_batches(task, max_batches: int = 0) -> range:
    """Indices of ``task``'s first ``max_batches`` batches (0: all of them)."""
    return range(task.n_batches if not max_batches else min(max_batches, task.n_batches))


def evaluate(learner, task, max_batches: int = 0, progress=False, desc: str = "eval") -> dict:
    """Score ``learner`` (weights frozen) on ``task``'s batches; returns metrics.

    loss: mean NLL (nats) per scored token for one-hot tasks (also bpc and ppl),
    BCE summed over pixels per scored frame for binary tasks (also mse per
    frame); and the task's own ``step_metrics`` (bit_accuracy for bit recall),
    each a mean per scored row.  ``progress``: as :class:`ptncn.simulate.Simulation`'s
    (counted in batches, named ``desc``; off by default).
    """
    from .progress import progress_or_none
    sums: dict[str, float] = {}
    total = {"loss": 0.0, "scored": 0.0}

    def on_step(s):
        if s.scored:
            total["loss"] += s.loss
            total["scored"] += s.scored
            for k, v in task.step_metrics(s.pred, s.x, s.score).items():
                sums[k] = sums.get(k, 0.0) + v
    batches = first_batches(task, max_batches)
    bar = progress_or_none(len(batches), desc=desc, unit="batch", mode=progress)
    for _ in simulate(learner, task, batches, learn=False, on_step=on_step):
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    count = total["scored"]
    out = {"batches": len(batches), "scored": count,
           "loss": total["loss"] / count if count else float("nan")}
    out.update(task.loss_metrics(out["loss"]))
    out.update({k: v / count for k, v in sums.items()})
    return out


def trivial_baselines(train_task, eval_task, max_batches: int = 0) -> dict:
    """Scores of predictors that learn nothing, on the same evaluation data
    (the task's ``trivial_baselines``: e.g. the unigram for one-hot tasks, "copy
    the last frame" and "the mean training frame" for video)."""
    return eval_task.trivial_baselines(train_task, len(first_batches(eval_task, max_batches)))


def _recorder(cfg, path, learner):
    from .record import Recorder
    r = cfg["record"]
    rec = Recorder(path, buffer_steps=r["buffer_steps"], flush_seconds=r["flush_seconds"],
                   compression=None if r["compression"] == "none" else r["compression"])
    for name in r["traces"]:
        rows = r["rows"] if name in learner.recordable and _per_row(learner, name) else None
        rec.add(name, rows=rows, every=r["every"])
    return rec


def _per_row(learner, name: str) -> bool:
    """True for quantities with one row per sequence (their shape follows the batch)."""
    return learner.quantity_shape(name, 1) != learner.quantity_shape(name, 2)


def train(cfg: dict, out_dir: str | None = None, data_dir=None, quiet: bool = False,
          resume: bool = False, plots: bool = True, log=None) -> dict:
    """Run (or resume) the training described by ``cfg``; returns the final metrics.

    The run owns its folder for its whole length (:class:`ptncn.runlock.RunLock`:
    another writer is refused; partial files of a killed run are removed).  However it
    ends it leaves ``run.ckpt.npz``: at the end, at the time budget, on SIGINT
    (:class:`ptncn.errors.RunInterrupted` after the current step) and on divergence (the
    state before the diverging step; the :class:`DivergenceError` names the file).
    ``resume``: continue from that checkpoint up to ``cfg["train"]["batches"]``, keeping
    the best score and evaluation history; a finished run is left untouched and its
    recorded metrics are returned.
    """
    from .runlock import RunLock

    log = log or (lambda msg: print(msg, flush=True))
    out_dir = out_dir or os.path.join("runs", cfg["name"])
    with RunLock(out_dir, "resume" if resume else "train"):
        return _train_locked(cfg, out_dir, data_dir, quiet, resume, plots, log)


def _train_locked(cfg: dict, out_dir: str, data_dir, quiet: bool, resume: bool, plots: bool,
                  log) -> dict:
    from .threads import note_choice

    paths = _run_paths(out_dir)
    tr = cfg["train"]
    task = make_task(cfg, "train", data_dir)
    split = tr["eval_split"] or task.default_eval_split
    eval_task = make_task(cfg, split, data_dir)
    sim = _simulation(cfg, task, paths, quiet, resume, log)
    if sim is None:
        return _finished(paths, out_dir, log)
    learner = sim.learner
    note_choice()
    best, history = _past_evaluations(sim, paths) if resume else ({"loss": float("inf")}, [])
    sim.checkpoint_meta = {"best": best, "history": history}
    with open(paths["config"], "w") as f:
        dump_json(cfg, f, indent=2)
    t0 = time.perf_counter()
    cost = _EvalCost(tr, eval_task, sim.position[0], t0)
    sim.on_batch_end = _batch_end(tr, eval_task, split, paths, best, history, cost, log)
    sim.progress_setup = cost.setup
    res = _run_to_checkpoint(sim, out_dir, log)
    learner.save(paths["final"])
    final = evaluate(learner, eval_task, tr["final_eval_batches"], progress=_mode(quiet),
                     desc=f"final {split}")
    best_is_final = final["loss"] < best["loss"]
    if best_is_final:
        best.update(final)
        learner.save(paths["best"])
    metrics = {"name": cfg["name"], "split": split, "final": final,
               "baselines": trivial_baselines(task, eval_task, tr["final_eval_batches"]),
               "best": dict(best), "history": history, "train": _train_summary(res),
               "data": task.identity(), "eval_data": eval_task.identity()}
    metrics["test"] = _test_scores(cfg, learner, paths, task, split, eval_task, final,
                                   best_is_final, data_dir, _mode(quiet))
    with open(paths["metrics"], "w") as f:
        dump_json(metrics, f, indent=2, default=float)      # NaN / inf written as null
    _log_final(log, metrics, res, out_dir)
    if plots:
        from .analysis import plot_run
        plot_run(paths["run"], os.path.join(out_dir, "plots"))
    return metrics


def _mode(quiet: bool):
    """The progress mode of a run's own loops: off under ``quiet``, else automatic."""
    return False if quiet else None


def _batch_end(tr: dict, eval_task, split: str, paths: dict, best: dict, history: list,
               cost: "_EvalCost", log):
    """The training loop's ``on_batch_end``: evaluate every ``train.eval_every`` batches
    (keeping ``best.npz`` and the history), and stop at the time budget (training time:
    the periodic evaluations do not count, so learners that evaluate more slowly are
    not trained less)."""
    def batch_end(sim, b, mean_loss):
        cost.batch = b + 1
        if tr["eval_every"] and (b + 1) % tr["eval_every"] == 0:
            t = time.perf_counter()
            m = evaluate(sim.learner, eval_task, tr["eval_batches"])
            cost.evaluated(m["batches"], time.perf_counter() - t)
            m.update(batch=b + 1, step=sim.step, tokens=sim.tokens,
                     seconds=time.perf_counter() - cost.t0, train_seconds=cost.train_s())
            history.append(json.loads(json.dumps(m, default=float)))
            log(_fmt(f"batch {b + 1} {split}", m))
            if sim.progress_bar is not None:
                sim.progress_bar.note = _fmt(f"last {split}", m, first_only=True)
            if m["loss"] < best["loss"]:
                best.update(m)
                sim.learner.save(paths["best"])
        if tr["time_budget_s"] and cost.train_s() > tr["time_budget_s"]:
            sim.stop = True
    return batch_end


class _EvalCost:
    """What a training run will still spend outside its steps, for its progress's time
    left: the periodic evaluations still due and the final phase (validation, then the
    final and the best model on test: three passes of ``train.final_eval_batches``),
    each at the seconds per batch measured in evaluation so far (before the first one,
    at the training speed, which is slower)."""

    def __init__(self, tr: dict, eval_task, start_batch: int, t0: float):
        self.tr, self.batch, self.start_batch, self.t0 = tr, start_batch, start_batch, t0
        self.n_periodic = (len(first_batches(eval_task, tr["eval_batches"]))
                           if tr["eval_every"] else 0)
        self.n_final = 3 * len(first_batches(eval_task, tr["final_eval_batches"]))
        self.eval_s, self.eval_batches = 0.0, 0
        self.progress = None

    def evaluated(self, batches: int, seconds: float) -> None:
        self.eval_s, self.eval_batches = self.eval_s + seconds, self.eval_batches + batches
        if self.progress is not None and self.progress.deadline is not None:
            self.progress.deadline += seconds        # evaluations do not use the budget

    def train_s(self) -> float:
        """Seconds spent training in this invocation: since the start, less the periodic
        evaluations."""
        return time.perf_counter() - self.t0 - self.eval_s

    def per_batch_s(self) -> float:
        if self.eval_batches:
            return self.eval_s / self.eval_batches
        trained = self.batch - self.start_batch
        return (time.perf_counter() - self.t0 - self.eval_s) / trained if trained else 0.0

    def final_s(self) -> float:
        return self.n_final * self.per_batch_s()

    def left_s(self) -> float:
        every = self.tr["eval_every"]
        due = self.tr["batches"] // every - self.batch // every if every else 0
        return due * self.n_periodic * self.per_batch_s() + self.final_s()

    def setup(self, progress) -> None:
        """Give ``progress`` (the loop's :class:`ptncn.progress.Progress`) these estimates
        and the time budget."""
        self.progress = progress
        progress.extra_s, progress.after_deadline_s = self.left_s, self.final_s
        if self.tr["time_budget_s"]:
            progress.deadline = self.t0 + self.eval_s + self.tr["time_budget_s"]


def _test_scores(cfg: dict, learner, paths: dict, task, split: str, eval_task, final: dict,
                 best_is_final: bool, data_dir, progress=False) -> dict:
    """The final and the best model (``best.npz``) scored on the test split, after
    training and selection are over (``train.final_eval_batches`` batches, with the
    trivial predictors' scores on the same data).  When selection was itself on
    "test" the final score is reused."""
    from .learner import load_learner
    n = cfg["train"]["final_eval_batches"]
    test_task = eval_task if split == "test" else make_task(cfg, "test", data_dir)
    test_final = (final if test_task is eval_task
                  else evaluate(learner, test_task, n, progress, "final model on test"))
    if best_is_final:
        test_best = dict(test_final)
    elif not os.path.exists(paths["best"]):
        test_best = None                     # no model was ever selected
    else:
        test_best = evaluate(load_learner(paths["best"]), test_task, n, progress,
                             "best model on test")
    return {"split": "test", "final": test_final, "best": test_best,
            "baselines": trivial_baselines(task, test_task, n),
            "data": test_task.identity()}


def _run_to_checkpoint(sim: Simulation, out_dir: str, log):
    """``sim.run()``, leaving a checkpoint however it ends: at the end, at the time budget,
    on SIGINT (re-raised saying how to resume) or on divergence (the state before the
    diverging step; the error carries the file)."""
    from .errors import DivergenceError, RunInterrupted
    try:
        res = sim.run()
    except DivergenceError as exc:
        sim.save_checkpoint()
        exc.checkpoint = sim.checkpoint_path
        raise
    except RunInterrupted as exc:
        raise RunInterrupted(f"interrupted at step {exc.step}; checkpoint saved; "
                             f"`ptncn resume {out_dir}` continues", exc.step,
                             exc.checkpoint) from None
    sim.save_checkpoint()
    if sim.stop:            # stopped by the time budget
        log(f"time budget reached at step {sim.step}; `ptncn resume {out_dir}` continues")
    return res


def _finished(paths: dict, out_dir: str, log) -> dict:
    """A resumed run that has nothing left to do: say so, change nothing."""
    log(f"{out_dir} is finished (train.batches reached); nothing to resume — "
        "`--set train.batches=N` with a larger N trains it further")
    try:
        with open(paths["metrics"]) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _past_evaluations(sim: Simulation, paths: dict) -> tuple[dict, list]:
    """The best score and evaluation history of a resumed run up to its checkpoint: from
    the checkpoint, or (checkpoints that predate them) from its metrics.json."""
    meta = sim.learner.extra_meta
    if "best" in meta and "history" in meta:
        return dict(meta["best"]), list(meta["history"])
    try:
        with open(paths["metrics"]) as f:
            history = [h for h in json.load(f).get("history", []) if h["step"] <= sim.step]
    except (OSError, ValueError, KeyError, TypeError):
        history = []
    best = min(history, default={"loss": float("inf")},
               key=lambda h: float("inf") if h.get("loss") is None else h["loss"])
    return dict(best), history


#: what ``ptncn resume --set`` may change: how long the run goes on, when it evaluates,
#: checkpoints and flushes.  Anything else would make the resumed run another run.
RESUME_KEYS = ("train.batches", "train.time_budget_s", "train.eval_every",
               "train.eval_batches", "train.final_eval_batches", "train.checkpoint_every",
               "record.buffer_steps", "record.flush_seconds")


def resume_config(run_dir: str, overrides=()) -> dict:
    """The config of the run in ``run_dir`` with ``overrides`` (``section.key=value``)
    applied and validated.  Only :data:`RESUME_KEYS` may be overridden; anything else is
    refused, naming it.  Reads only: nothing in the folder is written."""
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: not a run folder (no config.json)") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    refused = [k for k in (item.split("=", 1)[0].strip() for item in overrides)
               if k not in RESUME_KEYS]
    if refused:
        raise ConfigError(f"resume cannot change {', '.join(refused)} (a resumed run keeps "
                          f"its config; it may change {', '.join(RESUME_KEYS)}); start a new "
                          "run with `ptncn train --set ...` instead")
    return validate(apply_overrides(saved, overrides))


def _run_paths(out_dir: str) -> dict:
    """The files of a run folder (created if needed), by role."""
    os.makedirs(out_dir, exist_ok=True)
    return {k: os.path.join(out_dir, v) for k, v in
            (("run", "run.h5"), ("ckpt", "run.ckpt.npz"), ("best", "best.npz"),
             ("final", "final.npz"), ("config", "config.json"), ("metrics", "metrics.json"))}


def _simulation(cfg: dict, task, paths: dict, quiet: bool, resume: bool, log):
    """A new run's Simulation, or the one resuming from the run's checkpoint (None when
    that run is finished: its checkpoint at or past ``train.batches``)."""
    tr, progress = cfg["train"], False if quiet else None
    attrs = {"config": cfg, "seed": cfg["seed"]}
    if resume:
        probe = _checkpoint(paths)
        if probe is None or probe.extra_meta["position"][0] >= tr["batches"]:
            return None
        sim = Simulation.resume(paths["ckpt"], task, tr["batches"],
                                recorder=_recorder(cfg, paths["run"], probe),
                                checkpoint_every=tr["checkpoint_every"], progress=progress,
                                attrs=attrs)
        log(f"resuming {cfg['name']} at step {sim.step} (batch {sim.position[0]})")
        return sim
    learner = make_learner(cfg, task.x_dim)
    return Simulation(learner, task, tr["batches"], recorder=_recorder(cfg, paths["run"], learner),
                      checkpoint_every=tr["checkpoint_every"], checkpoint_path=paths["ckpt"],
                      progress=progress, attrs=attrs)


def _checkpoint(paths: dict):
    """The learner in a run's checkpoint; None for a run that finished without one."""
    from .learner import load_learner
    if os.path.exists(paths["ckpt"]) or not os.path.exists(paths["metrics"]):
        try:
            return load_learner(paths["ckpt"])
        except FileNotFoundError:
            raise FileNotFoundError(f"{os.path.dirname(paths['ckpt'])}: no checkpoint "
                                    "(run.ckpt.npz) to resume from") from None
    return None


def _train_summary(res) -> dict:
    return {"steps": res.steps, "batches": res.batches, "seconds": res.seconds,
            "steps_per_s": res.steps_per_s,
            "mean_loss_last_batches": float(np.nanmean(res.train_loss[-20:]))
            if res.train_loss else float("nan")}


def _log_final(log, metrics: dict, res, out_dir: str) -> None:
    log(_fmt(f"final {metrics['split']}", metrics["final"]))
    test = metrics.get("test")
    if test:
        log(_fmt("final model on test", test["final"]))
        if test["best"]:
            log(_fmt(f"best model (selected on {metrics['split']}) on test", test["best"]))
    for name, b in metrics["baselines"].items():
        log(f"  {name} predictor on the same data: " +
            ", ".join(f"{k} {v:.4f}" for k, v in b.items()))
    log(f"trained {res.steps} steps in {res.seconds:.0f} s ({res.steps_per_s:.0f} steps/s); "
        f"wrote {out_dir}")


def _fmt(prefix: str, m: dict, first_only: bool = False) -> str:
    keys = [k for k in ("bpc", "ppl", "bce_per_frame", "mse_per_frame", "bit_accuracy", "loss")
            if k in m][:1 if first_only else None]
    return prefix + ": " + ", ".join(f"{k} {m[k]:.4f}" for k in keys)
