"""Training and evaluation from TOML configs (``ptncn train models/X.toml``).

A config fully describes a run; unknown sections or keys, and values of the
wrong type, are errors naming the key and what is allowed::

    name = "ptb_char_small"
    seed = 1234
    [task]        name = "ptb_char", batch_size = 50, ... (the task's own options)
    [model]       learner = "ptncn", hidden = [250, 250], act = "tanh", ... (PTNCN options)
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
import inspect
import json
import math
import os
import time
import tomllib

import numpy as np

from .simulate import Simulation, step_loss, step_sq_error

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
#: ``[model] learner = ...`` -> class name in :data:`ptncn.learner.LEARNER_CLASSES`.
#: Every learner class takes ``(x_dim, *, seed, optimizer, lr, momentum, weight_decay,
#: max_norm, optimizer_options, **model_options)``; the model options allowed in a
#: config are the other keyword arguments of its constructor.
LEARNERS = {
    "ptncn": "PTNCN",
    "rtrl": "RTRL",
    "uoro": "UORO",
    "nobacktrack": "NoBackTrack",
    "tbptt": "TBPTT",
    "bptt": "BPTT",
    "esn": "ESN",
    "spiking_ptncn": "SpikingPTNCN",
}
#: constructor arguments filled by the harness, not by [model]
HARNESS_ARGS = ("x_dim", "seed", "optimizer", "lr", "momentum", "weight_decay", "max_norm",
                "optimizer_options")

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


def _type_ok(v, t) -> bool:
    if t is None:
        return True
    ts = t if isinstance(t, tuple) else (t,)
    if isinstance(v, bool) and bool not in ts:
        return False
    return isinstance(v, ts)


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
    if learner not in LEARNERS:
        raise ConfigError(f"model.learner = {learner!r}: allowed {', '.join(LEARNERS)}")
    allowed = _signature_keys(learner_cls(learner), exclude=HARNESS_ARGS)
    _check_keys("model.", model, allowed)
    out["model"] = {"learner": learner, **model}
    opt = {**DEFAULTS["optimizer"], **cfg.get("optimizer", {})}
    _check_keys("optimizer.", opt, OPTIMIZER_KEYS)
    out["optimizer"] = opt
    for sec, keys in (("train", TRAIN_KEYS), ("record", RECORD_KEYS)):
        d = {**DEFAULTS[sec], **cfg.get(sec, {})}
        _check_keys(f"{sec}.", d, keys)
        out[sec] = d
    return out


def load_config(path, overrides: list[str] = ()) -> dict:
    """Read a TOML config, apply ``section.key=value`` overrides, validate."""
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return validate(apply_overrides(cfg, overrides))


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


def default_eval_split(task) -> str:
    """PTB has a validation split; the video tasks evaluate on their test pool."""
    return "valid" if type(task).__name__.startswith("PTB") else "test"


def learner_cls(name: str):
    """The class behind ``[model] learner = name`` (imported on first use)."""
    from .learner import learner_class
    if name not in LEARNERS:
        raise ConfigError(f"model.learner = {name!r}: allowed {', '.join(LEARNERS)}")
    return learner_class(LEARNERS[name])


def make_learner(cfg: dict, x_dim: int):
    model = dict(cfg["model"])
    cls = learner_cls(model.pop("learner"))
    opt = dict(cfg["optimizer"])
    name = opt.pop("name")
    kw = {k: opt.pop(k) for k in ("lr", "momentum", "weight_decay", "max_norm") if k in opt}
    if name not in ("momentum", "nesterov"):
        kw.pop("momentum", None)
    if "hidden" in model and isinstance(model["hidden"], list):
        model["hidden"] = tuple(model["hidden"])
    return cls(x_dim, seed=cfg["seed"], optimizer=name, optimizer_options=opt or None,
               **kw, **model)


def evaluate(learner, task, max_batches: int = 0) -> dict:
    """Score ``learner`` (weights frozen) on ``task``'s batches; returns metrics.

    loss: mean NLL (nats) per scored token for one-hot tasks (also bpc and ppl),
    BCE summed over pixels per scored frame for binary tasks (also mse per
    frame); bit_accuracy for the bit-recall task.
    """
    kind = task.kind
    bit_acc = None
    if type(task).__name__ == "BitRecall":
        from .data.bitrecall import bit_accuracy as bit_acc
    n = task.n_batches if not max_batches else min(max_batches, task.n_batches)
    loss = sq = count = 0.0
    acc_sum = acc_n = 0.0
    for i in range(n):
        x, m, sc = task.batch(i)
        learner.reset(x.shape[1])
        for t in range(x.shape[0]):
            pred = learner.step(x[t], m[t], learn=False)
            k = float(sc[t].sum())
            if not k:
                continue
            loss += step_loss(kind, pred, x[t], sc[t])
            count += k
            if kind == "binary":
                sq += step_sq_error(pred, x[t], sc[t])
            if bit_acc is not None:
                a = bit_acc(pred[None], x[t][None], sc[t][None])
                acc_sum, acc_n = acc_sum + a * k, acc_n + k
    out = {"batches": n, "scored": count, "loss": loss / count if count else float("nan")}
    if kind == "onehot":
        out["bpc"] = out["loss"] / math.log(2)
        out["ppl"] = math.exp(min(out["loss"], 700))
    else:
        out["bce_per_frame"] = out["loss"]
        out["mse_per_frame"] = sq / count if count else float("nan")
    if acc_n:
        out["bit_accuracy"] = acc_sum / acc_n
    return out


def trivial_baselines(train_task, eval_task, max_batches: int = 0) -> dict:
    """Scores of predictors that learn nothing, on the same evaluation data.

    Video tasks: "copy the last frame" and "the mean training frame"; one-hot
    tasks: the unigram (symbol frequencies of the training data's first batches).
    """
    n = eval_task.n_batches if not max_batches else min(max_batches, eval_task.n_batches)
    if type(eval_task).__name__ == "BouncingDigits":
        from .data import bouncing
        cl = bouncing.copy_last_frame_bce(eval_task, n_batches=n)
        mf = bouncing.mean_frame_bce(eval_task, train_task, n_batches=n)
        return {"copy_last_frame": {"bce_per_frame": cl["bce"], "mse_per_frame": cl["mse"]},
                "mean_frame": {"bce_per_frame": mf["bce"], "mse_per_frame": mf["mse"]}}
    if eval_task.kind == "onehot":
        counts = np.ones(eval_task.x_dim)
        for i in range(min(20, train_task.n_batches)):
            x, m, _ = train_task.batch(i)
            counts += (x * m).sum(axis=(0, 1))
        p = counts / counts.sum()
        loss = cnt = 0.0
        for i in range(n):
            x, m, sc = eval_task.batch(i)
            loss -= float((np.log(p)[None, None, :] * x * sc).sum())
            cnt += float(sc.sum())
        return {"unigram": {"bpc": loss / cnt / math.log(2), "loss": loss / cnt}}
    return {}


def _recorder(cfg, path, learner):
    from .record import Recorder
    r = cfg["record"]
    rec = Recorder(path, buffer_steps=r["buffer_steps"], flush_seconds=r["flush_seconds"],
                   compression=None if r["compression"] == "none" else r["compression"])
    for name in r["traces"]:
        if name == "loss" or name.startswith("norm_") or name in learner.params:
            rec.add(name, every=r["every"])
        else:
            rec.add(name, rows=r["rows"], every=r["every"])
    return rec


def train(cfg: dict, out_dir: str | None = None, data_dir=None, quiet: bool = False,
          resume: bool = False, plots: bool = True, log=None) -> dict:
    """Run (or resume) the training described by ``cfg``; returns the final metrics."""
    if log is None:
        def log(msg):
            print(msg, flush=True)
    out_dir = out_dir or os.path.join("runs", cfg["name"])
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, v) for k, v in
             (("run", "run.h5"), ("ckpt", "run.ckpt.npz"), ("best", "best.npz"),
              ("final", "final.npz"), ("config", "config.json"), ("metrics", "metrics.json"))}
    tr = cfg["train"]
    task = make_task(cfg, "train", data_dir)
    split = tr["eval_split"] or default_eval_split(task)
    eval_task = make_task(cfg, split, data_dir)
    with open(paths["config"], "w") as f:
        json.dump(cfg, f, indent=2)
    rec_factory = (lambda learner: _recorder(cfg, paths["run"], learner))
    ckpt_every = tr["checkpoint_every"]
    if resume:
        from .learner import load_learner
        probe = load_learner(paths["ckpt"])
        sim = Simulation.resume(paths["ckpt"], task, recorder=rec_factory(probe),
                                checkpoint_every=ckpt_every,
                                progress=False if quiet else None)
        learner = sim.learner
        log(f"resuming {cfg['name']} at step {sim.step} (batch {sim.position[0]})")
    else:
        learner = make_learner(cfg, task.x_dim)
        sim = Simulation(learner, task, tr["batches"], recorder=rec_factory(learner),
                         checkpoint_every=ckpt_every, checkpoint_path=paths["ckpt"],
                         progress=False if quiet else None,
                         attrs={"config": cfg, "seed": cfg["seed"]})
    best = {"loss": float("inf")}
    history = []
    t0 = time.perf_counter()

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
    baselines = trivial_baselines(task, eval_task, tr["final_eval_batches"])
    metrics = {"name": cfg["name"], "split": split, "final": final, "baselines": baselines,
               "best": {k: v for k, v in best.items()}, "history": history,
               "train": {"steps": res.steps, "batches": res.batches, "seconds": res.seconds,
                         "steps_per_s": res.steps_per_s,
                         "mean_loss_last_batches": float(np.nanmean(res.train_loss[-20:]))
                         if res.train_loss else float("nan")},
               "data": task.identity(), "eval_data": eval_task.identity()}
    with open(paths["metrics"], "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    log(_fmt(f"final {split}", final))
    for name, b in baselines.items():
        log(f"  {name} predictor on the same data: " +
            ", ".join(f"{k} {v:.4f}" for k, v in b.items()))
    log(f"trained {res.steps} steps in {res.seconds:.0f} s ({res.steps_per_s:.0f} steps/s); "
        f"wrote {out_dir}")
    if plots:
        from .analysis import plot_run
        plot_run(paths["run"], os.path.join(out_dir, "plots"))
    return metrics


def _fmt(prefix: str, m: dict) -> str:
    keys = [k for k in ("bpc", "ppl", "bce_per_frame", "mse_per_frame", "bit_accuracy", "loss")
            if k in m]
    return prefix + ": " + ", ".join(f"{k} {m[k]:.4f}" for k in keys)
