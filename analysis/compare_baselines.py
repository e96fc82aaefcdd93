"""Compare learners at an equal wall-clock training budget.

    python analysis/compare_baselines.py [--tasks CFG.toml ...] [--learners NAME ...]
        [--budget SECONDS] [--out DIR] [--set section.key=value ...]
        [--final-eval-batches N] [--rtrl-limit-gb GB] [--timeout S] [--threads N]

For every (task config, learner) the script trains one run in a fresh
subprocess (this file with ``--child``, which calls :func:`ptncn.harness.train`),
so each run's peak memory is its own.  Every run gets

* ``train.time_budget_s = BUDGET`` and ``train.batches`` = a huge number (the
  budget ends it, at the end of a batch), no periodic evaluation, no
  checkpoints, only the ``loss`` trace recorded (so the budget is all training);
* ``[model]``/``[optimizer]``: P-TNCN keeps the task config's own; every other
  learner gets the entry of :data:`OVERRIDES` for the config's task type
  (``[task] name``) -- the hidden size, learning rate and method options chosen
  here (keys its constructor does not take are dropped, with a note);
* then the ``--set`` overrides, applied to every run.

and the table reports, per run: the hidden size, the parameter count (every
array in ``final.npz``, fixed ones such as the ESN reservoir included), the
final metric on the evaluation split (``bit_accuracy`` for bit recall,
``bce_per_frame`` for the video tasks, ``bpc`` for the one-hot tasks) beside
the trivial predictors' score on the same data, the training seconds, the
run's whole wall time (startup and final evaluation included), the peak RSS
of the run's process, and tokens/s = scored tokens (frames) of the training
batches per training second.

RTRL's sensitivity tensor holds B*H*H*(X+H+1) numbers; a configuration over
``--rtrl-limit-gb`` (default 4) is refused before starting.  An unknown
learner, an unavailable class, a config error, a crash or a timeout gives a
row with the reason: the comparison as a whole never fails.

Writes ``OUT/compare.md`` (also printed), ``OUT/compare.json`` (the rows),
``OUT/compare.png`` (one panel per task: the metric of every learner as a bar,
the trivial predictor as a dashed line) and one run folder per pair under
``OUT/runs/<task>/<learner>``.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TASKS = [os.path.join(ROOT, "models", f) for f in
                 ("bit_recall.toml", "bouncing_mnist_small.toml", "ptb_char_small.toml")]
ALL_LEARNERS = ["ptncn", "rtrl", "uoro", "nobacktrack", "tbptt", "bptt", "esn"]
#: learners that take the task config's own P-TNCN options (hidden, beta, ...)
PTNCN_FAMILY = ("ptncn", "spiking_ptncn")
#: extra names: label -> (learner, fixed [model] options); ptncn_lif is the spiking
#: P-TNCN's rate twin (the LIF f-I curve with Brian2's dt rounding as activation)
ALIASES = {"ptncn_lif": ("ptncn", {"act": "lif_rate_dt"})}
HUGE_BATCHES = 10**9

#: [task] name -> learner -> {"model": {...}, "optimizer": {...}} for every learner but
#: P-TNCN (which uses the task config's own).  Sizes are chosen for a 2-core CPU:
#: RTRL's sensitivity is B*H*H*(X+H+1) floats and its step O(B*H^2*(X+H+1)), so it
#: stays small (bit recall B=32,X=3,H=32: 4.7 MB; bouncing 32x32 B=16,X=1024,H=16:
#: 17 MB; PTB char B=50,X~50,H=24: 8.5 MB); the other gradient learners get the
#: width of one P-TNCN layer; the ESN a 500-1000 unit reservoir.
_ADAM = {"name": "adam"}
OVERRIDES: dict[str, dict[str, dict]] = {
    "bit_recall": {
        "rtrl": {"model": {"hidden": 32}, "optimizer": {**_ADAM, "lr": 0.003}},
        "uoro": {"model": {"hidden": 64}, "optimizer": {**_ADAM, "lr": 0.003}},
        "nobacktrack": {"model": {"hidden": 64}, "optimizer": {**_ADAM, "lr": 0.003}},
        "tbptt": {"model": {"hidden": 64, "k": 8}, "optimizer": {**_ADAM, "lr": 0.003}},
        "bptt": {"model": {"hidden": 64}, "optimizer": {**_ADAM, "lr": 0.003}},
        "esn": {"model": {"hidden": 500, "sr": 0.9, "leak": 0.3, "input_scaling": 1.0,
                          "readout": "ridge", "ridge": 1e-6}},
    },
    "bouncing_mnist": {
        "rtrl": {"model": {"hidden": 16}, "optimizer": {**_ADAM, "lr": 0.001}},
        "uoro": {"model": {"hidden": 256}, "optimizer": {**_ADAM, "lr": 0.001}},
        "nobacktrack": {"model": {"hidden": 256}, "optimizer": {**_ADAM, "lr": 0.001}},
        "tbptt": {"model": {"hidden": 256, "k": 10}, "optimizer": {**_ADAM, "lr": 0.001}},
        "bptt": {"model": {"hidden": 256}, "optimizer": {**_ADAM, "lr": 0.001}},
        "esn": {"model": {"hidden": 1000, "sr": 0.9, "leak": 0.5, "input_scaling": 0.3,
                          "readout": "ridge", "ridge": 1e-4}},
    },
    "ptb_char": {
        "rtrl": {"model": {"hidden": 24}, "optimizer": {**_ADAM, "lr": 0.002}},
        "uoro": {"model": {"hidden": 250}, "optimizer": {**_ADAM, "lr": 0.002}},
        "nobacktrack": {"model": {"hidden": 250}, "optimizer": {**_ADAM, "lr": 0.002}},
        "tbptt": {"model": {"hidden": 250, "k": 32}, "optimizer": {**_ADAM, "lr": 0.002}},
        "bptt": {"model": {"hidden": 250}, "optimizer": {**_ADAM, "lr": 0.002}},
        "esn": {"model": {"hidden": 1000, "sr": 0.9, "leak": 0.3, "input_scaling": 1.0,
                          "readout": "ridge", "ridge": 1e-4}},
    },
    "cyclic": {
        "rtrl": {"model": {"hidden": 16}, "optimizer": {**_ADAM, "lr": 0.01}},
        "uoro": {"model": {"hidden": 64}, "optimizer": {**_ADAM, "lr": 0.01}},
        "nobacktrack": {"model": {"hidden": 64}, "optimizer": {**_ADAM, "lr": 0.01}},
        "tbptt": {"model": {"hidden": 64, "k": 10}, "optimizer": {**_ADAM, "lr": 0.01}},
        "bptt": {"model": {"hidden": 64}, "optimizer": {**_ADAM, "lr": 0.01}},
        "esn": {"model": {"hidden": 200, "sr": 0.9, "leak": 0.5, "readout": "ridge"}},
    },
}
OVERRIDES["bouncing_notmnist"] = OVERRIDES["bouncing_mnist"]
OVERRIDES["ptb_word"] = OVERRIDES["ptb_char"]

#: the metric reported per task kind, and whether higher is better
METRICS = {"bit_recall": ("bit_accuracy", True), "binary": ("bce_per_frame", False),
           "onehot": ("bpc", False)}


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------
def _task_type(cfg: dict) -> str:
    return cfg["task"]["name"]


def metric_name(task_type: str) -> tuple[str, bool]:
    """(metrics.json key, higher is better) for a task type ([task] name)."""
    if task_type == "bit_recall":
        return METRICS["bit_recall"]
    if task_type.startswith("bouncing"):
        return METRICS["binary"]
    return METRICS["onehot"]


def build_config(task_path: str, learner: str, budget: float, sets=(),
                 final_eval_batches: int | None = None, rtrl_limit_gb: float = 4.0):
    """The validated config of one comparison run, and notes (list of str).

    Raises ``ptncn.harness.ConfigError`` (or ImportError for an unavailable class)
    with the reason when the run cannot be configured.
    """
    from ptncn import harness
    from ptncn.learner import REGISTRY

    with open(task_path, "rb") as f:
        import tomllib
        base = tomllib.load(f)
    base = harness.validate(base)           # the task config itself must be valid
    cfg = copy.deepcopy(base)
    notes = []
    label = learner
    learner, fixed = ALIASES.get(label, (label, {}))
    if learner not in REGISTRY:
        raise harness.ConfigError(f"unknown learner {learner!r}; known: "
                                  f"{', '.join([*REGISTRY, *ALIASES])}")
    cls = harness.learner_cls(learner)      # ImportError etc. if the class is unavailable
    own = base["model"]["learner"]
    if learner in PTNCN_FAMILY and own in PTNCN_FAMILY:
        # the rate and spiking P-TNCN share their options: keep the config's own
        allowed = set(cls.Config.field_names())
        model = {"learner": learner}
        for k, v in {**base["model"], **fixed}.items():
            if k == "learner":
                continue
            if k in allowed:
                model[k] = v
            elif learner != own:
                notes.append(f"dropped model.{k} (not an option of {cls.__name__})")
        cfg["model"] = model
    elif learner != "ptncn":
        table = OVERRIDES.get(_task_type(base), {}).get(learner, {})
        allowed = set(cls.Config.field_names())
        model = {"learner": learner}
        out = base["model"].get("out")
        if out is not None and "out" in allowed:
            model["out"] = out               # the task's output mapping (softmax / sigmoid)
        for k, v in table.get("model", {}).items():
            if k in allowed:
                model[k] = v
            else:
                notes.append(f"dropped model.{k} (not an option of {cls.__name__})")
        if learner == "rtrl" and "max_memory_gb" in allowed:
            model["max_memory_gb"] = float(rtrl_limit_gb)
        cfg["model"] = model
        if "optimizer" in table:
            cfg["optimizer"] = dict(table["optimizer"])
    cfg["name"] = f"{base['name']}-{label}"
    cfg["train"].update({"batches": HUGE_BATCHES, "time_budget_s": float(budget),
                         "eval_every": 0, "eval_batches": 0, "checkpoint_every": 0})
    if final_eval_batches is not None:
        cfg["train"]["final_eval_batches"] = int(final_eval_batches)
    cfg["record"] = {**cfg["record"], "traces": ["loss"], "rows": [0]}
    cfg = harness.apply_overrides(cfg, list(sets))
    return harness.validate(cfg), notes


def hidden_of(cfg: dict) -> str:
    m = cfg["model"]
    for key in ("hidden", "units"):
        if key in m:
            v = m[key]
            return ",".join(str(h) for h in v) if isinstance(v, (list, tuple)) else str(v)
    # the class default
    try:
        from ptncn import harness
        cls = harness.learner_cls(m["learner"])
        for key in ("hidden", "units"):
            p = inspect.signature(cls.Config).parameters.get(key)
            if p is not None and p.default is not inspect.Parameter.empty:
                v = p.default
                return ",".join(str(h) for h in v) if isinstance(v, (list, tuple)) else str(v)
    except Exception:  # noqa: BLE001 - only a label
        pass
    return "?"


def rtrl_bytes(batch: int, hidden: int, x_dim: int, itemsize: int = 4) -> int:
    """Bytes of RTRL's sensitivity tensor: B * H * H * (X + H + 1) numbers."""
    return int(batch) * int(hidden) * int(hidden) * (int(x_dim) + int(hidden) + 1) * itemsize


def _rtrl_refusal(cfg: dict, limit_gb: float) -> str | None:
    """A refusal reason when RTRL's sensitivity would exceed the limit (None if it fits
    or the task cannot be built here: the run then reports its own error)."""
    from ptncn import harness

    try:
        task = harness.make_task(cfg, "train")
        x_dim = task.x_dim
        batch = task.batch(0).x.shape[1]
    except Exception:  # noqa: BLE001 - e.g. missing data: the child run will say so
        return None
    m = cfg["model"]
    hidden = int(m.get("hidden", 64))
    itemsize = 8 if m.get("dtype") == "float64" else 4
    nbytes = rtrl_bytes(batch, hidden, x_dim, itemsize)
    if nbytes > limit_gb * 1e9:
        return (f"refused: RTRL sensitivity {nbytes / 1e9:.3g} GB > limit {limit_gb:g} GB "
                f"(B={batch}, H={hidden}, X={x_dim})")
    return None


# ---------------------------------------------------------------------------
# one run (child process)
# ---------------------------------------------------------------------------
def child_main(run_dir: str) -> int:
    """Train the config in ``run_dir/compare_config.json``; write ``run_dir/child.json``
    (scored training tokens, peak RSS of this process)."""
    from ptncn import harness

    with open(os.path.join(run_dir, "compare_config.json")) as f:
        cfg = harness.validate(json.load(f))
    metrics = harness.train(cfg, out_dir=run_dir, quiet=True, plots=False,
                            log=lambda s: print(s, file=sys.stderr, flush=True))
    task = harness.make_task(cfg, "train")
    tokens = 0.0
    for i in range(int(metrics["train"]["batches"])):
        tokens += float(task.batch(i).score.sum())
    info = {"scored_tokens": tokens,
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    with open(os.path.join(run_dir, "child.json"), "w") as f:
        json.dump(info, f)
    return 0


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "Exception" in ln:
            return ln
    return lines[-1] if lines else "no output"


def _short(s: str, n: int = 160) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n - 3] + "..."


def param_count(model_path: str) -> int:
    from ptncn.learner import load_learner

    model = load_learner(model_path)
    return int(sum(int(v.size) for v in model.params.values()))


def run_one(task_path: str, learner: str, budget: float, out_dir: str, sets=(),
            final_eval_batches: int | None = None, rtrl_limit_gb: float = 4.0,
            timeout: float | None = None, threads: int | None = None) -> dict:
    """Train one (task, learner) pair in a subprocess; return its table row (never raises)."""
    row = {"task": os.path.splitext(os.path.basename(task_path))[0], "learner": learner,
           "hidden": "", "params": None, "metric": "", "value": None, "higher_better": None,
           "reference": "", "train_s": None, "wall_s": None, "rss_mib": None,
           "tokens_per_s": None, "status": "ok", "note": ""}
    try:
        cfg, notes = build_config(task_path, learner, budget, sets, final_eval_batches,
                                  rtrl_limit_gb)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        kind = "unavailable" if isinstance(exc, ImportError) else "config error"
        row.update(status="failed", note=_short(f"{kind}: {exc}"))
        return row
    row["task"] = cfg["name"][:-(len(learner) + 1)]
    row["hidden"] = hidden_of(cfg)
    row["metric"], row["higher_better"] = metric_name(_task_type(cfg))
    if learner == "rtrl":
        reason = _rtrl_refusal(cfg, rtrl_limit_gb)
        if reason:
            row.update(status="refused", note=reason)
            return row
    run_dir = os.path.join(out_dir, "runs", row["task"], learner)
    os.makedirs(run_dir, exist_ok=True)
    for stale in ("metrics.json", "child.json", "final.npz"):
        if os.path.exists(os.path.join(run_dir, stale)):
            os.unlink(os.path.join(run_dir, stale))
    with open(os.path.join(run_dir, "compare_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    env = dict(os.environ)
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    if timeout is None:
        timeout = 3 * float(budget) + 600
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", run_dir],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        row.update(status="failed", wall_s=time.perf_counter() - t0,
                   note=f"timeout: no result after {timeout:.0f} s")
        return row
    row["wall_s"] = time.perf_counter() - t0
    with open(os.path.join(run_dir, "child.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        row.update(status="failed", note=_short(
            f"exit {proc.returncode}: {_last_error_line(proc.stderr or proc.stdout)}"))
        return row
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(run_dir, "child.json")) as f:
            child = json.load(f)
        held_out = metrics.get("test") or metrics      # reported on test (nothing is selected)
        final, tr = held_out["final"], metrics["train"]
        row["value"] = final.get(row["metric"])
        row["reference"] = reference_text(row["metric"], held_out.get("baselines", {}))
        row["train_s"] = tr["seconds"]
        row["rss_mib"] = child["maxrss_mib"]
        row["tokens_per_s"] = child["scored_tokens"] / tr["seconds"] if tr["seconds"] else None
        row["steps"] = tr["steps"]
        row["batches"] = tr["batches"]
        row["params"] = param_count(os.path.join(run_dir, "final.npz"))
    except Exception as exc:  # noqa: BLE001
        row.update(status="failed", note=_short(f"could not read the run's results: {exc}"))
        return row
    if notes:
        row["note"] = "; ".join(notes)
    return row


def reference_text(metric: str, baselines: dict) -> str:
    """The trivial predictors' score on the same evaluation data, as text."""
    if metric == "bit_accuracy":
        return "chance 0.5"
    parts = []
    for name, scores in baselines.items():
        if metric in scores:
            parts.append(f"{name.replace('_', ' ')} {scores[metric]:.4g}")
    return ", ".join(parts)


def reference_value(row: dict) -> float | None:
    """The best trivial predictor's score (for the plot's dashed line)."""
    if row["metric"] == "bit_accuracy":
        return 0.5
    vals = []
    for part in str(row["reference"]).split(","):
        try:
            vals.append(float(part.split()[-1]))
        except (ValueError, IndexError):
            pass
    return min(vals) if vals else None


# ---------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------
def compare(tasks, learners, budget: float, out_dir: str, sets=(), log=print, **kw) -> list:
    """Run every (task, learner) pair one after the other; write compare.md/.json/.png."""
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for task_path in tasks:
        for learner in learners:
            log(f"[compare] {os.path.basename(task_path)} / {learner} "
                f"(budget {budget:g} s) ...")
            row = run_one(task_path, learner, budget, out_dir, sets, **kw)
            log(f"[compare]   {row['status']}: {row['metric']} = {_fmt(row['value'])} "
                f"{row['note']}")
            rows.append(row)
    md = markdown_table(rows, budget)
    with open(os.path.join(out_dir, "compare.md"), "w") as f:
        f.write(md)
    from ptncn.jsonio import dump_json
    with open(os.path.join(out_dir, "compare.json"), "w") as f:
        dump_json(rows, f, indent=2, default=float)            # NaN (diverged) -> null
    plot(rows, os.path.join(out_dir, "compare.png"), budget)
    return rows


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def markdown_table(rows, budget: float) -> str:
    head = ["task", "learner", "hidden", "params", "metric", "value", "trivial predictor",
            "train s", "wall s", "peak RSS MiB", "tokens/s", "note"]
    lines = [f"# Learners at an equal training budget of {budget:g} s", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        value = _fmt(r["value"]) if r["status"] == "ok" else r["status"]
        metric = r["metric"] + (" (↑)" if r["higher_better"] else " (↓)") if r["metric"] else ""
        cells = [r["task"], r["learner"], r["hidden"], _fmt(r["params"]), metric, value,
                 r["reference"], _fmt(r["train_s"], 3), _fmt(r["wall_s"], 3),
                 _fmt(r["rss_mib"], 4), _fmt(r["tokens_per_s"], 4), r["note"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    lines += ["", "value: the final metric on the evaluation split (↑ higher is better, "
              "↓ lower); trivial predictor: predictors that learn nothing, on the same data; "
              "train s: seconds of training (stops at the first batch end past the budget); "
              "wall s: the whole run (start-up and final evaluation included); tokens/s: "
              "scored training tokens (frames) per training second.", ""]
    return "\n".join(lines)


def plot(rows, path: str, budget: float) -> str:
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = Figure(figsize=(4.5 * max(1, len(tasks)), 4.2))
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        rs = [r for r in rows if r["task"] == task]
        names = [r["learner"] for r in rs]
        vals = [r["value"] if r["status"] == "ok" and r["value"] is not None else 0.0
                for r in rs]
        bars = ax.bar(range(len(rs)), vals, color="tab:blue")
        for i, (r, b) in enumerate(zip(rs, bars)):
            if r["status"] != "ok" or r["value"] is None:
                ax.text(i, 0, r["status"], rotation=90, ha="center", va="bottom", fontsize=8,
                        color="tab:red")
            else:
                ax.text(i, b.get_height(), f"{r['value']:.3g}", ha="center", va="bottom",
                        fontsize=7)
        ref = next((reference_value(r) for r in rs if reference_value(r) is not None), None)
        if ref is not None:
            ax.axhline(ref, color="gray", ls="--", lw=1, label="trivial predictor")
            ax.legend(fontsize=7, loc="best")
        metric = next((r["metric"] for r in rs if r["metric"]), "metric")
        better = next((r["higher_better"] for r in rs if r["higher_better"] is not None), None)
        arrow = "" if better is None else (" (higher is better)" if better
                                           else " (lower is better)")
        ax.set_xticks(range(len(rs)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_xlabel("learner")
        ax.set_ylabel(metric + arrow)
        ax.set_title(task)
    fig.suptitle(f"final metric after {budget:g} s of training per learner")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compare learners at an equal wall-clock budget.")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="task configs (TOML)")
    ap.add_argument("--learners", nargs="+", default=ALL_LEARNERS)
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per run")
    ap.add_argument("--out", default=os.path.join("runs", "compare"))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override applied to every run (after the learner's table)")
    ap.add_argument("--final-eval-batches", type=int, default=None,
                    help="evaluation batches for the final score (default: the config's)")
    ap.add_argument("--rtrl-limit-gb", type=float, default=4.0,
                    help="refuse RTRL when its sensitivity tensor exceeds this (GB)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="kill a run after this many seconds (default 3 * budget + 600)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads of each run (default: inherited)")
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child)
    compare(args.tasks, args.learners, args.budget, args.out, args.set,
            final_eval_batches=args.final_eval_batches, rtrl_limit_gb=args.rtrl_limit_gb,
            timeout=args.timeout, threads=args.threads,
            log=lambda s: print(s, file=sys.stderr, flush=True))
    with open(os.path.join(args.out, "compare.md")) as f:
        print(f.read())
    print(f"wrote {os.path.join(args.out, 'compare.md')}, "
          f"{os.path.join(args.out, 'compare.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
