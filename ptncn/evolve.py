"""Evolving the learned neuron's activation network with CMA-ES (``ptncn evolve``).

The learned-neuron learner (:mod:`ptncn.learned_neuron`) has two kinds of
parameters: ``theta_a``, the small network ``a`` shared by every neuron, and the
synaptic weights ``b``, learned online.  Evolution searches ``theta_a`` by CMA-ES
(the ``cma`` package, extra ``evolve``); each candidate's fitness is how well a
network built with it *learns*: ``b`` is trained from scratch on bit-recall
sequences, then scored on held-out ones.

A config (TOML)::

    [evolve]
    fitness = "bit_repetition"   # or "sphere": a toy with a known optimum (dim, target)
    generations = 20
    popsize = 8
    sigma0 = 0.3                 # CMA-ES's initial step size
    seed = 0                     # CMA-ES's samples, theta_a's start, every data seed
    train_sequences = 64         # bit-recall sequences b learns on (online, batches of batch)
    eval_sequences = 64          # held-out sequences, b frozen
    batch = 16
    n_bits = 4

    [model]                      # options of the "learned_neuron" learner
    hidden = [10]
    variant = "memory"
    n_m = 2
    a_hidden = 8

Fitness ``bit_repetition`` is the mean bit error (1 - bit accuracy) on the
held-out sequences, lower is better; a candidate whose training diverges scores
the worst, 1.0.  All candidates of a generation see the same training and
held-out data and the same initial ``b`` (common random numbers), drawn from the
generation's seed; the next generation draws new ones.  ``sphere`` is
``sum((theta - target)**2)``, its optimum 0 at ``theta = target``.

Candidates are evaluated in this process (``workers=0``), on a LocalCluster of
one-thread worker processes, or on a running Dask scheduler; each evaluation is a
pure function of (theta, spec, generation seed) with one BLAS thread, so where it
runs does not change its value.  After every generation ``evolve.ckpt.pkl`` (the
CMA-ES object and its random state) and the outputs are written atomically; a
run resumed from it is bitwise the run that was not interrupted.

Outputs in the run folder: ``best_theta.npz`` (``theta`` and a JSON ``meta``,
read by :func:`ptncn.learned_neuron.load_theta`), ``generations.csv``,
``fitness.png``, and for ``bit_repetition`` ``neuron.png`` (the evolved neuron).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import pickle
import time

import numpy as np

from .harness import ConfigError, read_toml
from .jsonio import replacing, write_json

FITNESSES = ("bit_repetition", "sphere")
#: [evolve] key -> (kind, lower bound, default); kinds: "int", "float", "str", "target"
EVOLVE_KEYS = {
    "fitness": ("str", None, None),
    "generations": ("int", 1, 20),
    "popsize": ("int", 2, 8),
    "sigma0": ("float", 0.0, 0.3),
    "seed": ("int", 0, 0),
    "train_sequences": ("int", 1, 64),
    "eval_sequences": ("int", 1, 64),
    "batch": ("int", 1, 16),
    "n_bits": ("int", 1, 4),
    "dim": ("int", 1, 4),
    "target": ("target", None, 1.0),
}
#: the keys that only one fitness reads
ONLY_FOR = {"sphere": ("dim", "target"),
            "bit_repetition": ("train_sequences", "eval_sequences", "batch", "n_bits")}
#: [model] keys evolution sets itself
MODEL_SET_HERE = ("x_dim", "theta_a", "seed")
CHECKPOINT = "evolve.ckpt.pkl"
CSV_COLUMNS = ("generation", "best", "mean", "median", "sigma", "evaluations", "seconds")
WORST = 1.0
NEURON_S = (-3.0, 3.0)
log = logging.getLogger("ptncn.evolve")


# ---------------------------------------------------------------------------
# the config
# ---------------------------------------------------------------------------
def _fail(path: str, where: str, what: str):
    raise ConfigError(f"{path}: {where}: {what}")


def _check_value(path: str, key: str, v, kind: str, lo):
    """``v`` as the ``[evolve] key`` of ``kind`` (see :data:`EVOLVE_KEYS`)."""
    where = f"[evolve] {key}"
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            _fail(path, where, f"expected an integer >= {lo}, got {v!r}")
        return v
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                math.isfinite(v) and v > lo):
            _fail(path, where, f"expected a number > {lo}, got {v!r}")
        return float(v)
    if kind == "str":
        if v not in FITNESSES:
            _fail(path, where, f"expected one of {', '.join(map(repr, FITNESSES))}, got {v!r}")
        return v
    ok = (lambda x: not isinstance(x, bool) and isinstance(x, (int, float))
          and math.isfinite(x))
    if not (ok(v) or (isinstance(v, list) and v and all(map(ok, v)))):
        _fail(path, where, f"expected a number or a list of numbers, got {v!r}")
    return [float(x) for x in v] if isinstance(v, list) else float(v)


def _check_evolve(path: str, table) -> dict:
    """The ``[evolve]`` table checked and completed with the defaults."""
    if not isinstance(table, dict):
        _fail(path, "[evolve]", f"expected a table, got {table!r}")
    for k in table:
        if k not in EVOLVE_KEYS:
            _fail(path, f"[evolve] {k!r}", f"unknown key; allowed: {', '.join(EVOLVE_KEYS)}")
    if "fitness" not in table:
        _fail(path, "[evolve] fitness", f"missing; expected one of {', '.join(FITNESSES)}")
    ev = {k: _check_value(path, k, table.get(k, default), kind, lo)
          for k, (kind, lo, default) in EVOLVE_KEYS.items()}
    for other, keys in ONLY_FOR.items():
        for k in keys:
            if other != ev["fitness"] and k in table:
                _fail(path, f"[evolve] {k}", f"only read with fitness = {other!r}, "
                                             f"not {ev['fitness']!r}")
    target = ev["target"]
    if isinstance(target, list) and len(target) != ev["dim"]:
        _fail(path, "[evolve] target", f"expected {ev['dim']} numbers (dim), "
                                       f"got {len(target)}")
    return ev


def load_evolve_config(path) -> dict:
    """Read and check an evolve config; returns the spec :func:`run_evolve` runs:
    ``{"path", "evolve": {every key, defaults filled}, "model": {...}}``.  Errors are
    :class:`~ptncn.harness.ConfigError` naming the file, the key, what is expected
    and what was given."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    raw = read_toml(path)
    for k in raw:
        if k not in ("evolve", "model"):
            _fail(path, f"[{k}]", "unknown table; allowed: [evolve], [model]")
    if "evolve" not in raw:
        _fail(path, "[evolve]", "missing; the config needs an [evolve] table "
                                f"(fitness = {' or '.join(map(repr, FITNESSES))}, ...)")
    ev = _check_evolve(path, raw["evolve"])
    model = raw.get("model", {})
    if not isinstance(model, dict):
        _fail(path, "[model]", f"expected a table, got {model!r}")
    spec = {"path": path, "evolve": ev, "model": dict(model)}
    if ev["fitness"] == "bit_repetition":
        _check_model(spec)
    return spec


def _check_model(spec: dict) -> None:
    """Build the learner once with the start theta: any bad ``[model]`` option is a
    ConfigError naming the file."""
    path, model = spec["path"], spec["model"]
    for k in MODEL_SET_HERE:
        if k in model:
            _fail(path, f"[model] {k}", "set by evolution (the candidate, the task, the "
                                        "generation's seed); remove it")
    if model.get("neuron", "mlp") != "mlp":
        _fail(path, "[model] neuron", f"expected 'mlp' (the neuron evolution searches), "
                                      f"got {model['neuron']!r}")
    try:
        theta = theta0(spec)
        make_learner(spec, theta, seed=0)
    except (TypeError, ValueError, KeyError) as exc:
        _fail(path, "[model]", " ".join(str(exc).split()))


def spec_hash(spec: dict) -> str:
    """What a resumed run must share with the run it continues: everything but the
    number of generations (which a resume may raise) and the config's path."""
    same = {"evolve": {k: v for k, v in spec["evolve"].items() if k != "generations"},
            "model": spec["model"]}
    text = json.dumps(same, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------
# fitness (a pure function of theta, spec and the generation's seed)
# ---------------------------------------------------------------------------
def _neuron_module():
    from . import learned_neuron
    return learned_neuron


def _model_options(spec: dict) -> dict:
    """[model] as the learner takes it (TOML lists of hidden sizes as tuples)."""
    m = dict(spec["model"])
    if isinstance(m.get("hidden"), list):
        m["hidden"] = tuple(m["hidden"])
    return m


def _neuron_shape(spec: dict) -> tuple:
    """(variant, n_m, a_hidden) of the model: its options, else the learner's defaults."""
    from .learner import learner_class

    fields = learner_class("learned_neuron").Config.__dataclass_fields__
    m = spec["model"]
    return tuple(m.get(k, fields[k].default) for k in ("variant", "n_m", "a_hidden"))


def theta0(spec: dict) -> np.ndarray:
    """CMA-ES's start: ``init_theta`` seeded by ``[evolve] seed`` (bit_repetition), or
    zeros (sphere)."""
    ev = spec["evolve"]
    if ev["fitness"] == "sphere":
        return np.zeros(ev["dim"])
    variant, n_m, a_hidden = _neuron_shape(spec)
    rng = np.random.default_rng([ev["seed"], 0x7E7A])
    return np.asarray(_neuron_module().init_theta(variant, n_m, a_hidden, rng),
                      dtype=np.float64)


def make_learner(spec: dict, theta, seed: int):
    """A fresh ``learned_neuron`` learner with activation network ``theta`` and
    weights ``b`` drawn from ``seed``."""
    from .data.bitrecall import BitRecall
    from .learner import learner_class

    cls = learner_class("learned_neuron")
    return cls(x_dim=BitRecall.x_dim, theta_a=np.asarray(theta, np.float64), seed=int(seed),
               **_model_options(spec))


def generation_seed(seed: int, generation: int) -> int:
    """The seed of generation ``generation`` (1-based) of a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(generation)]).generate_state(1)[0])


def fitness(theta, spec: dict, gen_seed: int) -> float:
    """The fitness of candidate ``theta`` (lower is better) in the generation seeded
    ``gen_seed``, computed with one BLAS thread."""
    from threadpoolctl import threadpool_limits

    if spec["evolve"]["fitness"] == "sphere":         # no BLAS work to limit
        return sphere(theta, spec["evolve"]["target"])
    with threadpool_limits(limits=1, user_api="blas"):
        return bit_repetition(theta, spec, gen_seed)


def sphere(theta, target) -> float:
    """``sum((theta - target)**2)``: the toy with its optimum 0 at ``target``."""
    d = np.asarray(theta, np.float64) - np.asarray(target, np.float64)
    return float(d @ d)


def _batches(sequences: int, batch: int) -> int:
    return max(1, math.ceil(sequences / batch))


def bit_repetition(theta, spec: dict, gen_seed: int) -> float:
    """Mean bit error on held-out bit-recall sequences of a network with activation
    network ``theta`` whose weights ``b`` learned from scratch on the training ones;
    :data:`WORST` when training diverges."""
    from .data.bitrecall import BitRecall
    from .errors import DivergenceError, NonFiniteStepError
    from .simulate import simulate

    ev = spec["evolve"]
    data_seed, eval_seed, b_seed = np.random.SeedSequence(gen_seed).generate_state(3)
    train = BitRecall(ev["n_bits"], ev["batch"], seed=int(data_seed))
    held_out = BitRecall(ev["n_bits"], ev["batch"], seed=int(eval_seed))
    try:
        learner = make_learner(spec, theta, int(b_seed))
        for _ in simulate(learner, train, range(_batches(ev["train_sequences"], ev["batch"]))):
            pass
        err = 1.0 - held_out_accuracy(learner, held_out,
                                      _batches(ev["eval_sequences"], ev["batch"]))
    except (DivergenceError, NonFiniteStepError):
        return WORST
    return float(err) if math.isfinite(err) else WORST


def held_out_accuracy(learner, task, n_batches: int) -> float:
    """Bit accuracy of ``learner`` (not learning) on ``task``'s batches ``0..n-1``."""
    from .data.bitrecall import bit_accuracy
    from .simulate import simulate

    preds: list = []
    hits = total = 0.0
    for r in simulate(learner, task, range(n_batches), learn=False,
                      on_step=lambda s: preds.append(np.asarray(s.pred))):
        b = task.batch(r.index)
        w = float(b.score.sum())
        hits += bit_accuracy(np.stack(preds), b.x, b.score) * w
        total += w
        preds.clear()
    return hits / total


# ---------------------------------------------------------------------------
# CMA-ES and its random state
# ---------------------------------------------------------------------------
def _cma():
    try:
        import cma
    except ImportError:
        raise ImportError("ptncn evolve needs the cma package: pip install "
                          "'ptncn[evolve]'") from None
    return cma


@contextlib.contextmanager
def own_global_rng(state: dict):
    """Run the block with numpy's global random state set to ``state["np_random"]``
    (kept there afterwards), and give the caller's state back.  CMA-ES draws from
    numpy's global generator (its ``randn`` option and its seeding); this keeps its
    stream apart from anything else using it, and makes it part of the checkpoint."""
    outside = np.random.get_state()
    np.random.set_state(state["np_random"])
    try:
        yield
    finally:
        state["np_random"] = np.random.get_state()
        np.random.set_state(outside)


def new_state(spec: dict) -> dict:
    """A run's state before its first generation: the CMA-ES object and the random
    states it draws from, seeded from ``[evolve] seed``; no log yet.

    By default CMA-ES samples from numpy's global generator (option ``randn`` is
    ``np.random.randn``) and reseeds it; pickling it then copies whatever state the
    global generator has at that moment.  Here it samples from its own
    ``RandomState``, pickled with it, and any other use of the global generator
    inside ask/tell sees a state of its own (:func:`own_global_rng`), also saved."""
    cma, ev = _cma(), spec["evolve"]
    seeds = np.random.SeedSequence([ev["seed"], 0xC4A]).generate_state(2)
    state = {"np_random": np.random.RandomState(seeds[0]).get_state(), "generation": 0,
             "rows": [], "best": None, "spec_hash": spec_hash(spec)}
    x0 = theta0(spec)
    opts = {"popsize": ev["popsize"], "randn": np.random.RandomState(seeds[1]).randn,
            "seed": float("nan"), "verbose": -9, "verb_disp": 0, "verb_log": 0,
            "verb_filenameprefix": os.devnull}
    with own_global_rng(state):
        state["es"] = cma.CMAEvolutionStrategy(x0, ev["sigma0"], opts)
    return state


def _evaluate(client, thetas, spec: dict, gen_seed: int) -> list:
    """The fitness of every candidate, in order: here (``client`` None) or on Dask."""
    if client is None:
        return [fitness(t, spec, gen_seed) for t in thetas]
    n = len(thetas)
    futures = client.map(fitness, thetas, [spec] * n, [gen_seed] * n, pure=False)
    return [float(f) for f in client.gather(futures)]


def step_generation(state: dict, spec: dict, client) -> dict:
    """Ask CMA-ES for a population, evaluate it, tell; returns the generation's row
    and updates ``state`` (its best candidate so far included)."""
    es, g = state["es"], state["generation"] + 1
    t0 = time.perf_counter()
    sigma = float(es.sigma)
    with own_global_rng(state):
        thetas = [np.asarray(x, np.float64) for x in es.ask()]
    values = [v if math.isfinite(v) else WORST
              for v in _evaluate(client, thetas, spec, generation_seed(spec["evolve"]["seed"], g))]
    with own_global_rng(state):
        es.tell(thetas, values)
    i = int(np.argmin(values))
    if state["best"] is None or values[i] < state["best"]["fitness"]:
        state["best"] = {"fitness": values[i], "theta": thetas[i], "generation": g}
    row = {"generation": g, "best": values[i], "mean": float(np.mean(values)),
           "median": float(np.median(values)), "sigma": sigma,
           "evaluations": int(es.countevals), "seconds": time.perf_counter() - t0}
    state["rows"].append(row)
    state["generation"] = g
    return row


# ---------------------------------------------------------------------------
# the run folder
# ---------------------------------------------------------------------------
def save_checkpoint(out: str, state: dict) -> None:
    """``out``/evolve.ckpt.pkl, atomically (a reader sees the old or the new one)."""
    with replacing(os.path.join(out, CHECKPOINT)) as tmp, open(tmp, "wb") as f:
        pickle.dump({"format": 1, **state}, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_checkpoint(out: str, spec: dict) -> dict:
    """The state saved in ``out``; ConfigError when there is none, it is unreadable,
    or it belongs to another config."""
    path = os.path.join(out, CHECKPOINT)
    if not os.path.exists(path):
        raise ConfigError(f"--resume: {out} holds no evolution run (no {CHECKPOINT})")
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise ConfigError(f"{path}: unreadable checkpoint ({exc}); use another --out") from None
    if state.pop("format", None) != 1:
        raise ConfigError(f"{path}: not an evolve checkpoint of this version")
    if state["spec_hash"] != spec_hash(spec):
        raise ConfigError(f"{out} holds a run of another config (hash {state['spec_hash']}, "
                          f"{spec['path']}: {spec_hash(spec)}); only [evolve] generations "
                          "may change on --resume")
    return state


def check_out(out: str, resume: bool) -> None:
    """Refuse an existing, non-empty ``out`` unless resuming."""
    if not resume and os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"{out} exists and is not empty; use --resume to continue the run "
                          "there, or another --out")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"{out} exists and is not a folder")


def write_csv(out: str, rows: list) -> str:
    """``out``/generations.csv (atomically): one row per generation."""
    path = os.path.join(out, "generations.csv")
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(r[k]) if isinstance(r[k], float) else r[k]
                        for k in CSV_COLUMNS})
    return path


def read_csv(path) -> list:
    """The rows of a generations.csv, numbers parsed."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k in ("generation", "evaluations") else float(v))
                 for k, v in row.items()} for row in csv.DictReader(f)]


def theta_meta(spec: dict, best: dict) -> dict:
    """The ``meta`` of best_theta.npz."""
    ev = spec["evolve"]
    meta = {"fitness": ev["fitness"], "value": best["fitness"],
            "generation": best["generation"], "size": int(len(best["theta"]))}
    if ev["fitness"] == "bit_repetition":
        meta.update(zip(("variant", "n_m", "a_hidden"), _neuron_shape(spec)))
    return meta


def write_theta(out: str, spec: dict, best: dict) -> str:
    """``out``/best_theta.npz (atomically): ``theta`` and the JSON string ``meta``."""
    path = os.path.join(out, "best_theta.npz")
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, theta=np.asarray(best["theta"], np.float64),
                 meta=np.array(json.dumps(theta_meta(spec, best))))
    return path


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------
def run_evolve(config, out: str, *, workers: int = 0, scheduler: str | None = None,
               resume: bool = False, plots: bool = True, client=None) -> dict:
    """Evolve ``config`` (a path or a spec from :func:`load_evolve_config`) into the
    folder ``out`` up to ``[evolve] generations``; ``resume`` continues the run there
    from its last finished generation.  Candidates go to ``workers`` local Dask
    processes, a ``scheduler``, or a given ``client`` (left open); ``workers=0``
    evaluates them here.  Returns ``{"out", "generations", "best", "files"}``."""
    from .sweep.engine import connect, disconnect

    spec = config if isinstance(config, dict) else load_evolve_config(config)
    check_out(out, resume)
    state = load_checkpoint(out, spec) if resume else new_state(spec)
    total = spec["evolve"]["generations"]
    own = client is None and state["generation"] < total
    if own:
        client = connect(workers, scheduler)
    try:
        os.makedirs(out, exist_ok=True)
        while state["generation"] < total:
            row = step_generation(state, spec, client)
            save_checkpoint(out, state)
            _write_progress(out, spec, state)
            log.info("generation %d/%d: best %.6g, median %.6g, sigma %.3g (%.1f s)",
                     row["generation"], total, row["best"], row["median"], row["sigma"],
                     row["seconds"])
    finally:
        if own and client is not None:
            disconnect(client, scheduler)
    files = _write_progress(out, spec, state)
    if plots and state["rows"]:
        files += write_figures(out, spec, state)
    return {"out": out, "generations": state["generation"], "best": state["best"],
            "files": files}


def _write_progress(out: str, spec: dict, state: dict) -> list:
    """generations.csv, best_theta.npz and evolve.json of the generations so far."""
    files = [write_csv(out, state["rows"])]
    if state["best"] is not None:
        files.append(write_theta(out, spec, state["best"]))
    write_json(os.path.join(out, "evolve.json"),
               {"config": spec["path"], "spec_hash": state["spec_hash"],
                "evolve": spec["evolve"], "model": spec["model"],
                "generations_done": state["generation"],
                "best": None if state["best"] is None else theta_meta(spec, state["best"])},
               indent=2)
    return files


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def write_figures(out: str, spec: dict, state: dict) -> list:
    """fitness.png, and for bit_repetition neuron.png of the best candidate."""
    files = [plot_fitness(state["rows"], spec, os.path.join(out, "fitness.png"))]
    if spec["evolve"]["fitness"] == "bit_repetition" and state["best"] is not None:
        best = state["best"]
        files.append(plot_neuron(best["theta"], spec, os.path.join(out, "neuron.png"),
                                 note=f"best of generation {best['generation']}, "
                                      f"bit error {best['fitness']:.3g}"))
    return files


def plot_fitness(rows: list, spec: dict, path: str) -> str:
    """Best and median fitness of the population per generation."""
    ev = spec["evolve"]
    g = [r["generation"] for r in rows]
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    ax.plot(g, [r["median"] for r in rows], "o-", color="tab:gray", ms=3, label="median of the generation")
    ax.plot(g, [r["best"] for r in rows], "o-", color="tab:blue", ms=3, label="best of the generation")
    if ev["fitness"] == "sphere" and min(r["best"] for r in rows) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("generation")
    ax.set_ylabel("held-out bit error" if ev["fitness"] == "bit_repetition"
                  else "sum((theta - target)^2)")
    ax.set_title(f"CMA-ES on {ev['fitness']} (population {ev['popsize']}; lower is better)",
                 fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.savefig(path)
    return path


def _memory_states(n_m: int) -> list:
    """A few memory states to draw the neuron at: zero, all +0.5, all -0.5, +1/-1."""
    if n_m == 0:
        return [np.zeros(0)]
    states = [np.zeros(n_m), np.full(n_m, 0.5), np.full(n_m, -0.5)]
    if n_m > 1:
        states.append(np.where(np.arange(n_m) % 2 == 0, 1.0, -1.0))
    return states


def plot_neuron(theta, spec: dict, path: str, max_gates: int = 3, note: str = "") -> str:
    """The neuron ``theta`` encodes: output o and learning signal delta against the
    pre-activation s for a few memory states; the gates too (memory variant).
    ``note`` goes into the title."""
    ln = _neuron_module()
    variant, n_m, a_hidden = _neuron_shape(spec)
    net = ln.NeuronNet(variant, n_m, a_hidden, np.asarray(theta, np.float64))
    s = np.linspace(*NEURON_S, 241)
    gates = min(n_m, max_gates) if variant == "memory" else 0
    fig = _figure(3.2 * (2 + gates), 3.9)
    axes = fig.subplots(1, 2 + gates, squeeze=False)[0]
    for m in _memory_states(n_m):
        o, delta, _, g = net(s, np.broadcast_to(m, (len(s), n_m)))
        label = "m = [" + ", ".join(f"{v:g}" for v in m) + "]"
        line, = axes[0].plot(s, o, label=label)
        axes[1].plot(s, delta, color=line.get_color())
        for k in range(gates):
            axes[2 + k].plot(s, np.asarray(g)[:, k], color=line.get_color())
    titles = ["output o", "learning signal delta"] + [f"gate g{k + 1}" for k in range(gates)]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pre-activation s")
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_ylim(0, 1)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
               ncol=4, fontsize=8, frameon=False,
               title="carried state m" if variant == "recurrent" else "memory m",
               title_fontsize=8)
    fig.suptitle(f"evolved neuron ({variant}, n_m = {n_m}, a_hidden = {a_hidden})"
                 + (f": {note}" if note else ""), fontsize=11)
    fig.savefig(path)
    return path
