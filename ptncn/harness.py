"""Training and evaluation from TOML configs (``ptncn train models/X.toml``).

A config fully describes a run; unknown sections or keys, and values of the
wrong type, are errors naming the key and what is allowed::

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
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import time
import tomllib
import types
import typing

import numpy as np

from .learner import REGISTRY, learner_class
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
}
#: ``[model] learner = ...`` names a learner of :data:`ptncn.learner.REGISTRY`; the
#: allowed [model] keys are the fields of its ``Config`` but these (the harness fills them)
HARNESS_FIELDS = ("x_dim", "seed")
#: TOML value types a config field of this Python type accepts (arrays: see _toml_types)
TOML_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}

TOP_KEYS = {"name": str, "seed": int, "description": str, "task": dict, "model": dict,
            "optimizer": dict, "train": dict, "record": dict}
TRAIN_KEYS = {"batches": int, "time_budget_s": (int, float), "eval_every": int,
              "eval_batches": int, "final_eval_batches": int, "eval_split": str,
              "checkpoint_every": int}
RECORD_KEYS = {"traces": list, "rows": list, "every": int, "buffer_steps": int,
               "flush_seconds": (int, float), "compression": str}
OPTIMIZER_KEYS = {"name": str, "lr": (int, float), "momentum": (int, float),
                  "weight_decay": (int, float), "max_norm": (int, float), "beta1": (int, float),
                  "beta2": (int, float), "eps": (int, float), "rho": (int, float)}
DEFAULTS = {
    "seed": 1234,
    "train": {"batches": 100, "time_budget_s": 0, "eval_every": 0, "eval_batches": 0,
              "final_eval_batches": 0, "eval_split": "", "checkpoint_every": 0},
    "record": {"traces": ["loss"], "rows": [0], "every": 1, "buffer_steps": 256,
               "flush_seconds": 1.0, "compression": "lzf"},
    "optimizer": {"name": "nesterov", "lr": 0.075, "momentum": 0.95},
}


class ConfigError(ValueError):
    """A config file is malformed: unknown key, wrong type, unknown name."""


@dataclasses.dataclass(frozen=True)
class ListOf:
    """A TOML array whose items have the types ``items`` (None: any)."""

    items: tuple | None

    @property
    def __name__(self) -> str:
        return "list" if self.items is None else \
            "list of " + " or ".join(t.__name__ for t in self.items)


def _type_ok(v, t) -> bool:
    if t is None:
        return True
    return any(_is(v, x) for x in (t if isinstance(t, tuple) else (t,)))


def _is(v, t) -> bool:
    if isinstance(t, ListOf):
        return isinstance(v, list) and all(_type_ok(e, t.items) for e in v)
    return isinstance(v, t) and (t is bool or not isinstance(v, bool))


def _check_keys(section: str, d: dict, allowed: dict) -> None:
    for k, v in d.items():
        if k not in allowed:
            raise ConfigError(f"unknown key {section}{k!r}; allowed: {', '.join(sorted(allowed))}")
        if not _type_ok(v, allowed[k]):
            t = allowed[k]
            want = " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))
            raise ConfigError(f"{section}{k} = {v!r}: expected {want}")


def _task_class(name: str):
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    mod, cls, fixed = TASKS[name]
    import importlib
    return getattr(importlib.import_module(mod), cls), fixed


def _signature_keys(fn, exclude=()) -> dict:
    return {p.name: None for p in inspect.signature(fn).parameters.values()
            if p.name not in ("self", *exclude) and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                p.KEYWORD_ONLY)}


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
    model = dict(cfg["model"])
    learner = model.pop("learner", "ptncn")
    _check_keys("model.", model, model_schema(learner_cls(learner).Config))
    out["model"] = {"learner": learner, **model}
    opt = {**DEFAULTS["optimizer"], **cfg.get("optimizer", {})}
    _check_keys("optimizer.", opt, OPTIMIZER_KEYS)
    out["optimizer"] = opt
    for sec, keys in (("train", TRAIN_KEYS), ("record", RECORD_KEYS)):
        d = {**DEFAULTS[sec], **cfg.get(sec, {})}
        _check_keys(f"{sec}.", d, keys)
        out[sec] = d
    return out


def read_toml(path) -> dict:
    """A TOML file as a dict; malformed TOML is a ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path, overrides: list[str] = ()) -> dict:
    """Read a TOML config, apply ``section.key=value`` overrides, validate."""
    return validate(apply_overrides(read_toml(path), overrides))


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
def make_task(cfg: dict, split: str = "train", data_dir=None):
    task = dict(cfg["task"])
    cls, fixed = _task_class(task.pop("name"))
    params = inspect.signature(cls).parameters
    kw = {**fixed, **task}
    seed = cfg["seed"]
    if "split" in params:
        kw["split"] = split
    elif split != "train":
        seed = seed + 10_007          # a held-out stream for tasks without splits
    if "seed" in params:
        kw["seed"] = seed
    if "data_dir" in params:
        kw["data_dir"] = data_dir
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
    return cls(x_dim, seed=cfg["seed"], optimizer=name, optimizer_options=opt or None,
               **kw, **model)


def first_batches(task, max_batches: int = 0) -> range:
    """Indices of ``task``'s first ``max_batches`` batches (0: all of them)."""
    return range(task.n_batches if not max_batches else min(max_batches, task.n_batches))


def evaluate(learner, task, max_batches: int = 0) -> dict:
    """Score ``learner`` (weights frozen) on ``task``'s batches; returns metrics.

    loss: mean NLL (nats) per scored token for one-hot tasks (also bpc and ppl),
    BCE summed over pixels per scored frame for binary tasks (also mse per
    frame); and the task's own ``step_metrics`` (bit_accuracy for bit recall),
    each a mean per scored row.
    """
    sums: dict[str, float] = {}
    total = {"loss": 0.0, "scored": 0.0}

    def on_step(s):
        if s.scored:
            total["loss"] += s.loss
            total["scored"] += s.scored
            for k, v in task.step_metrics(s.pred, s.x, s.score).items():
                sums[k] = sums.get(k, 0.0) + v
    batches = first_batches(task, max_batches)
    for _ in simulate(learner, task, batches, learn=False, on_step=on_step):
        pass
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
    """Run (or resume) the training described by ``cfg``; returns the final metrics."""
    log = log or (lambda msg: print(msg, flush=True))
    out_dir = out_dir or os.path.join("runs", cfg["name"])
    paths = _run_paths(out_dir)
    tr = cfg["train"]
    task = make_task(cfg, "train", data_dir)
    split = tr["eval_split"] or task.default_eval_split
    eval_task = make_task(cfg, split, data_dir)
    with open(paths["config"], "w") as f:
        json.dump(cfg, f, indent=2)
    sim = _simulation(cfg, task, paths, quiet, resume, log)
    learner = sim.learner
    best, history, t0 = {"loss": float("inf")}, [], time.perf_counter()

    def batch_end(sim, b, mean_loss):
        if tr["eval_every"] and (b + 1) % tr["eval_every"] == 0:
            m = evaluate(learner, eval_task, tr["eval_batches"])
            m.update(batch=b + 1, step=sim.step, seconds=time.perf_counter() - t0)
            history.append(m)
            log(_fmt(f"batch {b + 1} {split}", m))
            if m["loss"] < best["loss"]:
                best.update(m)
                learner.save(paths["best"])
        if tr["time_budget_s"] and time.perf_counter() - t0 > tr["time_budget_s"]:
            sim.stop = True
    sim.on_batch_end = batch_end
    res = sim.run()
    if sim.stop:            # stopped by the time budget: leave a checkpoint to resume from
        sim.save_checkpoint()
        log(f"time budget reached at step {sim.step}; `ptncn resume {out_dir}` continues")
    learner.save(paths["final"])
    final = evaluate(learner, eval_task, tr["final_eval_batches"])
    if final["loss"] < best["loss"]:
        best.update(final)
        learner.save(paths["best"])
    metrics = {"name": cfg["name"], "split": split, "final": final,
               "baselines": trivial_baselines(task, eval_task, tr["final_eval_batches"]),
               "best": dict(best), "history": history, "train": _train_summary(res),
               "data": task.identity(), "eval_data": eval_task.identity()}
    with open(paths["metrics"], "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    _log_final(log, metrics, res, out_dir)
    if plots:
        from .analysis import plot_run
        plot_run(paths["run"], os.path.join(out_dir, "plots"))
    return metrics


def _run_paths(out_dir: str) -> dict:
    """The files of a run folder (created if needed), by role."""
    os.makedirs(out_dir, exist_ok=True)
    return {k: os.path.join(out_dir, v) for k, v in
            (("run", "run.h5"), ("ckpt", "run.ckpt.npz"), ("best", "best.npz"),
             ("final", "final.npz"), ("config", "config.json"), ("metrics", "metrics.json"))}


def _simulation(cfg: dict, task, paths: dict, quiet: bool, resume: bool, log) -> Simulation:
    """A new run's Simulation, or the one resuming from the run's checkpoint."""
    tr, progress = cfg["train"], False if quiet else None
    if resume:
        from .learner import load_learner
        probe = load_learner(paths["ckpt"])
        sim = Simulation.resume(paths["ckpt"], task, recorder=_recorder(cfg, paths["run"], probe),
                                checkpoint_every=tr["checkpoint_every"], progress=progress)
        log(f"resuming {cfg['name']} at step {sim.step} (batch {sim.position[0]})")
        return sim
    learner = make_learner(cfg, task.x_dim)
    return Simulation(learner, task, tr["batches"], recorder=_recorder(cfg, paths["run"], learner),
                      checkpoint_every=tr["checkpoint_every"], checkpoint_path=paths["ckpt"],
                      progress=progress, attrs={"config": cfg, "seed": cfg["seed"]})


def _train_summary(res) -> dict:
    return {"steps": res.steps, "batches": res.batches, "seconds": res.seconds,
            "steps_per_s": res.steps_per_s,
            "mean_loss_last_batches": float(np.nanmean(res.train_loss[-20:]))
            if res.train_loss else float("nan")}


def _log_final(log, metrics: dict, res, out_dir: str) -> None:
    log(_fmt(f"final {metrics['split']}", metrics["final"]))
    for name, b in metrics["baselines"].items():
        log(f"  {name} predictor on the same data: " +
            ", ".join(f"{k} {v:.4f}" for k, v in b.items()))
    log(f"trained {res.steps} steps in {res.seconds:.0f} s ({res.steps_per_s:.0f} steps/s); "
        f"wrote {out_dir}")


def _fmt(prefix: str, m: dict) -> str:
    keys = [k for k in ("bpc", "ppl", "bce_per_frame", "mse_per_frame", "bit_accuracy", "loss")
            if k in m]
    return prefix + ": " + ", ".join(f"{k} {m[k]:.4f}" for k in keys)
