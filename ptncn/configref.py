"""The config-key reference (docs/config.md), generated from the config schema.

Keys, types, ranges and defaults come from :mod:`ptncn.harness` (``TOP_KEYS``,
``TRAIN_KEYS``, ``RECORD_KEYS``, ``OPTIMIZER_KEYS``, ``DEFAULTS``, the task
constructors' signatures) and from each learner's ``Config`` dataclass
(:func:`ptncn.harness.model_schema`); allowed names (activations, engines...) from the
modules that check them.  The meanings are the tables below, one entry per key::

    python -m ptncn.configref > docs/config.md

A key of the schema without a meaning here is listed by :func:`missing` (and the
tests fail), so the page cannot fall behind the schema.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

from . import harness
from .optim import OPTIMIZERS

#: what each page section says before its table
INTRO = {
    "": "Top-level keys and sections of a config file.",
    "train": "How long to train, when to evaluate and checkpoint.",
    "record": "What the run records into `run.h5` (see docs/recording.md).",
    "optimizer": "The optimizer applied to the learner's update directions "
                 "(`momentum` is used by `momentum` and `nesterov`, `beta1`, `beta2` by "
                 "`adam`, `rho` by `rmsprop`).  A key left out takes the default below "
                 "(per optimizer where they differ).",
}

TOP = {
    "name": "run name; the default output folder is `runs/<name>`",
    "seed": "seed of the model's initial weights and of the task's data streams",
    "description": "free text, kept in the run's config.json",
    "task": "the data: `[task]` below",
    "model": "the learner and its options: `[model]` below",
    "optimizer": "`[optimizer]` below",
    "train": "`[train]` below",
    "record": "`[record]` below",
}

TRAIN = {
    "batches": "training batches to run",
    "time_budget_s": "stop training after this many seconds of training (wall time less "
                     "the periodic evaluations; 0: no budget)",
    "eval_every": "evaluate on the selection split every N batches and keep the best model "
                  "in best.npz (0: no periodic evaluation)",
    "eval_batches": "batches of each periodic evaluation (0: the whole split)",
    "final_eval_batches": "batches of the final evaluations (0: the whole split)",
    "eval_split": "selection split (\"valid\", \"test\" or \"train\"; empty: the task's "
                  "default, \"valid\" where the task has one)",
    "checkpoint_every": "write run.ckpt.npz every N steps, for `ptncn resume` (0: off)",
}

RECORD = {
    "traces": "names to record: the learner's quantities (`z1`, `e0`...), parameters "
              "(`W1`), updates (`dW1`), norms (`norm_dW1`) and `loss`",
    "rows": "batch rows recorded of per-row quantities",
    "every": "record every N-th step",
    "buffer_steps": "records held in memory per trace before a write",
    "flush_seconds": "write buffered records at least this often (seconds)",
    "compression": "HDF5 compression of the values",
}

OPTIMIZER = {
    "name": "the update rule (see ptncn.optim)",
    "lr": "learning rate",
    "momentum": "momentum coefficient (momentum and nesterov only)",
    "weight_decay": "L2 weight decay added to the update direction (0: off)",
    "max_norm": "after each update, rescale every row of a 2-D parameter to at most this "
                "Euclidean norm (0: off)",
    "beta1": "Adam's first-moment decay",
    "beta2": "Adam's second-moment decay",
    "eps": "the denominator's regulariser (adam, rmsprop)",
    "rho": "RMSprop's squared-gradient decay",
    "lr_schedule": "the learning rate over the updates (lr times a factor; none: constant): "
                   "{kind = \"step\", every = N, factor = 0.5}, {kind = \"exponential\", "
                   "half_life = N} or {kind = \"cosine\", over = N, floor = 0} (N in "
                   "updates; saved and resumed with the model)",
}

#: [task] parameters; a task's own entry overrides the shared one
TASK = {
    "*": {
        "batch_size": "sequences per batch",
        "n_batches": "batches per epoch",
    },
    "ptb_char": {
        "max_lines": "keep only the first N non-empty lines of each split (unset: all)",
        "max_len": "truncate every line to N symbols (unset: whole lines)",
    },
    "bouncing_mnist": {
        "canvas": "frame side in pixels (frames are canvas x canvas, flattened)",
        "digits": "glyphs moving in each sequence",
        "frames": "frames per sequence",
        "speed": "glyph speed per frame, in units of the canvas (<= 1)",
        "binarize": "map pixels to 1 where > 0.5, else 0",
        "n_batches": "batches per epoch (unset: 1,000 for train; a fixed set of 1,000 "
                     "sequences for valid and test)",
        "glyph": "glyph side in pixels, a divisor of 28 (smaller glyphs are averaged down)",
    },
    "bit_recall": {
        "n_bits": "bits to remember; a sequence is 2 n_bits + 1 steps",
    },
    "cyclic": {
        "length": "steps per sequence",
        "vocab": "symbols (one-hot size)",
        "period": "symbols in each repeating pattern",
        "n_patterns": "distinct patterns, drawn from the seed",
        "ragged": "give rows random lengths in [length/2, length] (padding masked)",
    },
    "array": {
        "path": "the .npz file (relative paths: the current folder, then --data-dir)",
        "key": "name of the (N, T, X) array of sequences in the file",
        "mask_key": "name of the optional (N, T) mask array",
        "kind": "\"onehot\" (symbols, cross-entropy) or \"binary\" (pixels in [0, 1], "
                "binary cross-entropy)",
        "valid_fraction": "fraction of the sequences held out for validation",
        "test_fraction": "fraction of the sequences held out for testing",
    },
}
TASK["ptb_word"] = TASK["ptb_char"]
TASK["bouncing_notmnist"] = TASK["bouncing_mnist"]

#: [model] fields; a learner's own entry overrides the shared one
MODEL = {
    "*": {
        "learner": "the learner, a name of ptncn.learner.REGISTRY",
        "out": "output function mapping the prediction to the data's space",
    },
    "ptncn": {
        "hidden": "latent layer sizes h_1..h_L (L = the number of entries)",
        "beta": "correction step of the states (0: no correction)",
        "alpha": "mixing of the error units into the perturbation",
        "gamma": "learning-rate factor of the error weights E",
        "zeta": "strength of top-down control (0: off)",
        "clip": "clipping radius (Frobenius norm) of every update",
        "clip_mode": "what clip bounds: \"sum\" (the reference code's: the update summed "
                     "over the batch, before dividing by its size) or \"mean\" (the "
                     "batch-mean update)",
        "wght_sd": "standard deviation of the initial W, U, M, V",
        "err_wght_sd": "standard deviation of the initial error weights E",
        "temporal_error_rule": "learn E with the temporal error rule",
        "act": "state activation phi",
        "K": "correction iterations per step (integer >= 1)",
        "engine": "backend computing the step: \"fast\" or the readable \"reference\" "
                  "(equal to 1e-6)",
    },
    "rnn": {
        "hidden": "recurrent units",
        "act": "recurrent activation",
        "leak": "leak rate of the state, in (0, 1] (1: no leak)",
        "init_scale": "scale of the initial weights (>= 0)",
        "dtype": "floating-point type of the computation",
        "clip": "gradient-norm clipping (0: off)",
        "max_memory_gb": "largest sensitivity tensor allowed (GB)",
        "eps": "regulariser of the rank-one normalisers (> 0)",
        "kalman": "smooth the gradient estimate",
        "smoothing": "gain of the smoothing, in (0, 1]",
        "k": "truncation: steps back-propagated through (integer >= 1)",
        "k_schedule": ("TBPTT's truncation over the updates: [[update, k], ...] from update 0, "
                       "or {start, end, over, kind = linear|geometric} (replaces k)"),
        "cell": "recurrent cell: \"rnn\" (vanilla) or \"lstm\" (tbptt, bptt, sab; its "
                "nonlinearities are fixed: leave act and leak at their defaults)",
    },
    "esn": {
        "hidden": "reservoir units",
        "sr": "spectral radius of the reservoir matrix (>= 0)",
        "leak": "leak rate of the reservoir, in (0, 1]",
        "input_scaling": "scale of the input weights",
        "bias_scaling": "scale of the reservoir bias",
        "rc_connectivity": "density of the reservoir matrix, in (0, 1]",
        "input_connectivity": "density of the input matrix, in (0, 1]",
        "readout": "how the linear readout is learnt",
        "ridge": "ridge penalty of the \"ridge\" readout (>= 0)",
        "forgetting": "forgetting factor of the \"rls\" readout, in (0, 1]",
        "rls_delta": "the \"rls\" readout starts from I / rls_delta (> 0)",
        "eps": "floor of the clipped outputs, in (0, 0.5)",
    },
    "spiking_ptncn": {
        "window_ms": "simulated window of one step (ms; window_ms / 2 a whole number of "
                     "dt_ms)",
        "tau_m": "membrane time constant (ms, > 0)",
        "tau_ref": "refractory period (ms, > 0)",
        "gain": "input gain: LIF neurons take the current gain * h + bias (> 0)",
        "bias": "input bias current",
        "dt_ms": "simulation time step (ms, > 0)",
        "err_theta": "accumulated input per error-unit event (> 0)",
        "target": "Brian2 code generation target",
        "record_spikes": "write spike events of batch row 0 into the run file",
        "record_membrane": "layer-1 units whose membrane traces (batch row 0) are written "
                           "into the run file",
    },
}
MODEL["learned_neuron"] = {
    "hidden": "layer sizes of network b",
    "variant": "what the activation network a carries per unit: \"memory\" (gated memory) "
               "or \"recurrent\" (its own hidden state)",
    "n_m": "values each unit carries (integer >= 0)",
    "a_hidden": "hidden units of the activation network a (integer >= 1)",
    "neuron": "\"mlp\": the activation network a; \"tanh\": the fixed tanh neuron",
    "theta_a": "parameters of a: numbers, the path of a theta file, or unset (drawn from "
               "the seed)",
    "recurrent_b": "feed each layer its own previous output",
    "wght_sd": "initial weights ~ N(0, wght_sd^2 / fan-in)",
    "clip": "gradient-norm clipping (0: off)",
    "dtype": "floating-point type of the computation",
}
MODEL["window"] = {
    "w": "window length: the network sees the last w inputs (integer >= 1)",
    "hidden": "hidden units of the feed-forward network (0: none, a linear or softmax "
              "regression on the window)",
    "act": "hidden activation",
    "clip": "gradient-norm clipping (0: off)",
    "dtype": "floating-point type of the computation",
}
for _name in ("rtrl", "uoro", "nobacktrack", "tbptt", "bptt"):
    MODEL[_name] = MODEL["rnn"]
MODEL["sab"] = {
    **MODEL["rnn"],
    "k_trunc": "steps per update and truncation of the backtrack (integer >= 1)",
    "k_att": "a state is stored in the memory every k_att steps (integer >= 1)",
    "k_top": "memories attended per step (integer >= 1; more memories: sparse weights)",
    "att_hidden": "hidden units of the attention MLP (integer >= 1)",
}
MODEL["spiking_ptncn"] = {**MODEL["ptncn"], **MODEL["spiking_ptncn"]}


def _allowed() -> dict:
    """(learner, field) -> the names it accepts, from the modules that check them."""
    from .activations import ACTIVATIONS, OUTPUTS
    from .baselines.rnn import ACTS, CELLS, OUTS
    from .ptncn import CLIP_MODES, ENGINES
    from .spiking.config import TARGETS
    out = {("ptncn", "act"): tuple(ACTIVATIONS), ("ptncn", "out"): tuple(OUTPUTS),
           ("ptncn", "engine"): ENGINES, ("spiking_ptncn", "out"): tuple(OUTPUTS),
           ("ptncn", "clip_mode"): CLIP_MODES, ("spiking_ptncn", "clip_mode"): CLIP_MODES,
           ("spiking_ptncn", "target"): TARGETS,
           ("esn", "readout"): ("ridge", "rls"), ("esn", "out"): tuple(OUTS),
           ("esn", "dtype"): ("float32", "float64")}
    out.update({("window", "act"): ACTS, ("window", "out"): OUTS,
                ("window", "dtype"): ("float32", "float64")})
    from .learned_neuron import NEURONS, VARIANTS
    out.update({("learned_neuron", "variant"): VARIANTS, ("learned_neuron", "neuron"): NEURONS,
                ("learned_neuron", "out"): OUTS,
                ("learned_neuron", "dtype"): ("float32", "float64")})
    for name in ("rtrl", "uoro", "nobacktrack", "tbptt", "bptt", "sab"):
        out.update({(name, "act"): ACTS, (name, "out"): OUTS,
                    (name, "dtype"): ("float32", "float64"),
                    (name, "cell"): CELLS if name in ("tbptt", "bptt", "sab") else ("rnn",)})
    return out


# ---------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------
def type_text(t) -> str:
    """A schema type (a Python type, Num, OneOf, ListOf, or a tuple of them) in words."""
    if t is None:
        return "any"
    if isinstance(t, tuple):
        if int in t and float in t:
            t = tuple(a for a in t if a is not int)
        return " or ".join(dict.fromkeys(type_text(a) for a in t)) or "any"
    if t is dict:
        return "table"
    return {int: "int", float: "number", bool: "bool", str: "string"}.get(t, t.__name__)


def value_text(v) -> str:
    """A default as it is written in TOML (``—``: none)."""
    if v is None or v is inspect.Parameter.empty:
        return "—"
    if isinstance(v, _Shown):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(a) for a in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """A markdown table of (key, type, default, meaning) rows."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {_cell(t)} | {_cell(d)} | {_cell(m)} |" for k, t, d, m in rows]
    return "\n".join(lines)


def _meaning(table_: dict, key: str) -> str:
    return table_.get(key, "(no description)")


# ---------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------
def _plain_section(section: str, keys: dict, defaults: dict, meanings: dict) -> str:
    """A section of fixed keys (``section`` "": the top level)."""
    rows = [(k, type_text(t), value_text(defaults[k]) if k in defaults else "—",
             _meaning(meanings, k)) for k, t in keys.items()]
    title = f"[{section}]" if section else "Top level"
    return f"## {title}\n\n{INTRO[section]}\n\n{table(rows)}\n"


def task_rows(name: str) -> list[tuple[str, str, str, str]]:
    """The rows of ``[task] name = "<name>"``: its constructor's parameters."""
    cls, fixed = harness._task_class(name)
    keys = harness._signature_keys(cls, exclude=("split", "data_dir", "seed", *fixed))
    params = inspect.signature(cls).parameters
    meanings = {**TASK["*"], **TASK.get(name, {})}
    rows = []
    for k, t in keys.items():
        default = params[k].default
        rows.append((k, type_text(t), "required" if default is inspect.Parameter.empty
                     else value_text(default), _meaning(meanings, k)))
    return rows


def task_section() -> str:
    parts = ["## [task]\n",
             "`name` picks the data; the other keys are that task's options.  The task's "
             "seed is the top-level `seed`.  `name = \"module:Class\"` names your own "
             "subclass of `ptncn.data.base.Task` (docs/tasks.md), whose constructor's "
             "parameters are its keys.\n"]
    for name in harness.TASKS:
        parts.append(f"### name = \"{name}\"\n\n{table(task_rows(name))}\n")
    return "\n".join(parts)


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def model_rows(learner: str) -> list[tuple[str, str, str, str]]:
    """The rows of ``[model] learner = "<learner>"``: its Config's fields."""
    config_cls = harness.learner_cls(learner).Config
    schema = harness.model_schema(config_cls)
    meanings = {**MODEL["*"], **MODEL.get(learner, {})}
    allowed = _allowed()
    rows = []
    for f in dataclasses.fields(config_cls):
        if f.name not in schema:
            continue
        names = allowed.get((learner, f.name))
        kind = ("one of " + ", ".join(map(repr, names))) if names else type_text(schema[f.name])
        rows.append((f.name, kind, value_text(_field_default(f)),
                     _meaning(meanings, f.name)))
    return rows


def _learner_doc(learner: str) -> str:
    """The first paragraph of the learner's docstring, in markdown."""
    doc = inspect.getdoc(harness.learner_cls(learner)) or ""
    text = doc.split("\n\n")[0].replace("\n", " ").replace("``", "`")
    return re.sub(r":\w+:`~?(?:[\w.]*\.)?(\w+)`", r"`\1`", text)


def optimizer_defaults() -> dict:
    """[optimizer] key -> the default ptncn.harness.DEFAULTS gives it, or else the
    constructor default of the optimizers taking it ("adam: 1e-08, rmsprop: 1e-10" where
    they differ)."""
    out = dict(harness.DEFAULTS["optimizer"])
    for key in harness.OPTIMIZER_KEYS:
        if key in out:
            continue
        seen = {}
        for name, cls in OPTIMIZERS.items():
            for klass in cls.__mro__:
                p = inspect.signature(klass.__init__).parameters.get(key) \
                    if "__init__" in vars(klass) else None
                if p is not None and p.default is not p.empty:
                    seen[name] = p.default
                    break
        values = set(seen.values())
        if len(values) == 1:
            out[key] = values.pop()
        elif seen:
            out[key] = _Shown(", ".join(f"{n}: {value_text(v)}" for n, v in seen.items()))
    return out


class _Shown(str):
    """A default already written as text."""


def builtin_learners() -> list[str]:
    """The learners ptncn itself registers (not ones a user or a test registered)."""
    def module(ref) -> str:            # "module:Class" or a class
        return ref.split(":")[0] if isinstance(ref, str) else ref.__module__
    return [n for n, ref in harness.REGISTRY.items() if module(ref).split(".")[0] == "ptncn"]


def model_section() -> str:
    learner = [("learner", "one of " + ", ".join(map(repr, builtin_learners())), '"ptncn"',
                MODEL["*"]["learner"])]
    parts = ["## [model]\n",
             "`learner` picks the learner; the other keys are the fields of its Config.  "
             "`x_dim` comes from the task and `seed` from the top-level `seed`.  Ranges "
             "beyond the type are checked by the Config before the run starts; an error "
             "names the key.\n", table(learner) + "\n"]
    for name in builtin_learners():
        parts.append(f"### learner = \"{name}\"\n\n{_learner_doc(name)}\n\n"
                     f"{table(model_rows(name))}\n")
    return "\n".join(parts)


def render() -> str:
    """docs/config.md: every config key with its type or range, default and meaning."""
    d = harness.DEFAULTS
    head = ("# Config reference\n\n"
            "Every key a run config (TOML) accepts.  Unknown keys, wrong types and values "
            "out of range are errors naming the key.  Generated from the schema in "
            "`ptncn/harness.py` and the learners' Config classes by "
            "`python -m ptncn.configref > docs/config.md`; do not edit by hand.\n")
    parts = [head, _plain_section("", harness.TOP_KEYS, {"seed": d["seed"]}, TOP),
             _plain_section("train", harness.TRAIN_KEYS, d["train"], TRAIN),
             _plain_section("record", harness.RECORD_KEYS, d["record"], RECORD),
             _plain_section("optimizer", harness.OPTIMIZER_KEYS, optimizer_defaults(),
                            OPTIMIZER),
             task_section(), model_section()]
    return "\n".join(parts)


def missing() -> list[str]:
    """Keys of the schema with no meaning in the tables above (should be none)."""
    out = [f"{sec}.{k}" for sec, keys, m in (("", harness.TOP_KEYS, TOP),
                                             ("train", harness.TRAIN_KEYS, TRAIN),
                                             ("record", harness.RECORD_KEYS, RECORD),
                                             ("optimizer", harness.OPTIMIZER_KEYS, OPTIMIZER))
           for k in keys if k not in m]
    out += [f"task.{n}.{r[0]}" for n in harness.TASKS for r in task_rows(n)
            if r[3] == "(no description)"]
    out += [f"model.{n}.{r[0]}" for n in builtin_learners() for r in model_rows(n)
            if r[3] == "(no description)"]
    return out


if __name__ == "__main__":
    print(render(), end="")
