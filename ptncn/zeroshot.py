"""Zero-shot adaptation: train on sequence family A, run on a new family B.

``ptncn zero-shot models/zeroshot_bouncing.toml`` (or :func:`run_zeroshot`)
runs the protocol of ``docs/zero-shot.md`` for every learner and seed listed
in the config and writes ``results.json``, ``zeroshot.md`` (the table) and
``zeroshot.png`` into the output folder:

1. train theta_A on A and theta_B on B (upper reference); a fresh init is the floor;
2. on B's held-out sequences, the per-frame loss (each frame scored before it
   is seen) under (i) theta_A frozen with correction, (ii) theta_A frozen
   without correction (P-TNCN's beta = 0, so y = z), the upper reference and the floor;
   (iii) theta_A with online updates on B's training stream, scored on B's
   test set after each count of adaptation sequences in ``adapt``;
3. forgetting: A's test loss under (i) before and after the adaptation.

A zero-shot config names the two task configs and what to vary::

    name = "zeroshot_bouncing"
    [zeroshot]
    a = "bouncing_mnist_small.toml"      # paths relative to this file
    b = "bouncing_notmnist_small.toml"
    seeds = [1, 2, 3, 4, 5]
    adapt = [0, 1, 5, 20, 100]           # adaptation sequences seen before each score
    adapt_batch = 1                      # sequences per online update in (iii)
    adapt_lr = 0.01                      # learning rate in (iii) (0 = the trained one)
    test_batches = 0                     # B/A test batches scored (0 = all)
    learners = ["ptncn"]
    set = ["train.batches=400"]          # overrides applied to A and B for every learner
    set_b = []                           # overrides for one family only (set_a, set_b),
                                         # e.g. b = a's config with set_b = ["task.n_bits=12"]
    [learner.tbptt]                      # options of another learner on these tasks
    set = ["model.hidden=256", "model.k=10"]
    adapt_lr = 0.0001                    # its own (iii) learning rate (else zeroshot.adapt_lr)

A learner other than the task config's own keeps only the config's output
function (``out``) from its ``[model]``; its options come from ``[learner.<name>]``.
Correction only exists in learners with an error-correction phase (those that name
the config key switching it off, ``correction_key``: P-TNCN and its spiking twin, whose
``beta`` it is); the others run (ii) and (iii).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import time

import numpy as np

from .harness import (ConfigError, _check_keys, apply_overrides, first_batches, make_learner,
                      make_task, read_toml, train, validate)
from .jsonio import write_json
from .learner import REGISTRY, load_learner
from .simulate import Simulation, simulate

ZS_TOP = {"name": str, "description": str, "zeroshot": dict, "learner": dict}
ZS_KEYS = {"a": str, "b": str, "seeds": list, "adapt": list, "adapt_batch": int,
           "test_batches": int, "learners": list, "set": list, "set_a": list, "set_b": list,
           "adapt_lr": (int, float)}
ZS_DEFAULTS = {"seeds": [1, 2, 3, 4, 5], "adapt": [0, 1, 5, 20, 100], "adapt_batch": 1,
               "test_batches": 0, "learners": ["ptncn"], "set": [], "set_a": [], "set_b": [],
               "adapt_lr": 0.0}
#: per-step quantities whose magnitudes explain what correction does
ERROR_UNITS = ("e0", "e1", "e2", "e3", "eps1", "eps2", "eps3")


class ZeroShotError(ValueError):
    """A zero-shot protocol that cannot run (bad config, incompatible families)."""


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
def load_zeroshot_config(path, overrides=()) -> dict:
    """Read a zero-shot TOML; returns the protocol and, per learner, validated A/B configs.

    ``overrides`` are ``zeroshot.key=value`` items (or ``section.key=value`` items
    applied to both task configs, e.g. ``train.batches=50``).
    """
    raw = read_toml(path)
    task_overrides = []
    for item in overrides:
        if item.startswith("zeroshot."):
            raw = apply_overrides(raw, [item])
        else:
            task_overrides.append(item)
    _check_keys("", raw, ZS_TOP)
    if "name" not in raw or "zeroshot" not in raw:
        raise ConfigError(f"{path}: a zero-shot config needs name = ... and [zeroshot]")
    zs = _protocol_section(raw["zeroshot"])
    learner_tables = _learner_tables(raw.get("learner", {}))
    base = os.path.dirname(os.path.abspath(path))
    cfgs = {}
    for name in zs["learners"]:
        table = learner_tables.get(name, {})
        sets = [*zs["set"], *table.get("set", []), *task_overrides]
        pair = {fam: validate(apply_overrides(_task_config(base, zs, fam, name),
                                              [*zs[f"set_{fam}"], *sets]))
                for fam in ("a", "b")}
        pair["adapt_lr"] = table.get("adapt_lr", zs["adapt_lr"])
        cfgs[name] = pair
    return {"name": raw["name"], "description": raw.get("description", ""),
            "protocol": {k: zs[k] for k in ("a", "b", "seeds", "adapt", "adapt_batch",
                                            "adapt_lr", "test_batches", "learners")},
            "configs": cfgs}


def _protocol_section(section: dict) -> dict:
    """The ``[zeroshot]`` table with its defaults filled in, checked."""
    zs = {**ZS_DEFAULTS, **section}
    _check_keys("zeroshot.", zs, ZS_KEYS)
    for k in ("a", "b"):
        if k not in zs:
            raise ConfigError(f"[zeroshot] needs {k} = <task config path>")
    if not zs["seeds"] or not all(isinstance(s, int) for s in zs["seeds"]):
        raise ConfigError(f"zeroshot.seeds = {zs['seeds']!r}: expected a non-empty list of ints")
    adapt = zs["adapt"]
    if not all(isinstance(n, int) and n >= 0 for n in adapt) or sorted(set(adapt)) != adapt:
        raise ConfigError(f"zeroshot.adapt = {adapt!r}: expected increasing counts >= 0")
    if zs["adapt_batch"] < 1:
        raise ConfigError("zeroshot.adapt_batch must be >= 1")
    return zs


def _learner_tables(tables: dict) -> dict:
    """The ``[learner.<name>]`` tables, checked (tables of unlisted learners are kept for
    ``--set``)."""
    for name, table in tables.items():
        _check_keys(f"learner.{name}.", table, {"set": list, "adapt_lr": (int, float)})
        if name not in REGISTRY:
            raise ConfigError(f"[learner.{name}]: unknown learner; allowed: {', '.join(REGISTRY)}")
    return tables


def _task_config(base: str, zs: dict, fam: str, learner: str) -> dict:
    """Family ``fam``'s task config (path relative to ``base``), made to run ``learner``."""
    p = zs[fam] if os.path.isabs(zs[fam]) else os.path.join(base, zs[fam])
    try:
        c = read_toml(p)
    except FileNotFoundError:
        raise ConfigError(f"zeroshot.{fam} = {zs[fam]!r}: no such file {p}") from None
    if c.get("model", {}).get("learner", "ptncn") == learner:
        return c
    # another learner on this task: keep only the task's output function
    # (the [model] options are the task config learner's) and record the loss
    model = {"learner": learner}
    if "out" in c.get("model", {}):
        model["out"] = c["model"]["out"]
    return {**c, "model": model, "record": {**c.get("record", {}), "traces": ["loss"]}}


# ---------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------
def frame_losses(learner, task, max_batches: int = 0, errors=()) -> dict:
    """Per-frame loss of ``learner`` (weights frozen) on ``task``'s batches.

    Every frame is scored by the prediction made before it is seen (the
    harness's metric).  Returns ``loss_t`` (mean loss of frame t over scored
    rows), ``count_t``, ``mean`` (over all scored frames after the first) and,
    for each name in ``errors``, ``err_t[name]``: the mean over rows of the
    squared norm of that error unit at frame t.  The state is reset for every
    batch, so each sequence starts from zero whatever was evaluated before.
    """
    acc = {k: {} for k in ("loss", "count", "rows")}      # name -> {t: sum over rows}
    err = {e: {} for e in errors}

    def add(d, t, v):
        d[t] = d.get(t, 0.0) + v

    def on_step(s):
        if s.scored:
            add(acc["loss"], s.t, s.loss)
            add(acc["count"], s.t, s.scored)
        mt = np.asarray(s.mask, np.float64).reshape(-1, 1)
        add(acc["rows"], s.t, float(mt.sum()))
        for e in errors:
            q = np.asarray(learner.quantity(e), np.float64)
            add(err[e], s.t, float(((q * q).sum(axis=-1, keepdims=True) * mt).sum()))
    for _ in simulate(learner, task, first_batches(task, max_batches), learn=False,
                      on_step=on_step):
        pass
    T = 1 + max(acc["rows"], default=-1)

    def per_t(d):
        return np.array([d.get(t, 0.0) for t in range(T)])
    loss, count, rows = (per_t(acc[k]) for k in ("loss", "count", "rows"))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"loss_t": loss / count, "count_t": count,
                "mean": float(loss[1:].sum() / count[1:].sum()),
                "err_t": {e: per_t(d) / rows for e, d in err.items()}}


def has_correction(learner) -> bool:
    """True for learners with an error-correction phase (``correction_key`` names the
    config key that switches it off)."""
    return learner.correction_key is not None


def load_frozen(path, correction: bool = True):
    """Load a trained learner; ``correction=False`` switches its correction phase off
    (``correction_key`` = 0, e.g. P-TNCN's beta = 0, so y = z) in learners that have
    one (the others load unchanged)."""
    learner = load_learner(path)
    if correction or not has_correction(learner):
        return learner
    return load_learner(path, **{learner.correction_key: 0.0})


def adapt_curve(learner, adapt_task, test_task, counts, test_batches: int = 0, lr: float = 0):
    """(iii): continue learning ``learner`` online on ``adapt_task``'s stream.

    ``lr`` > 0 replaces the optimizer's learning rate (learners without a gradient
    optimizer, such as the ESN's least-squares readout, ignore it).  Returns
    ``[(n_sequences, test loss)]``: the test loss (weights frozen) after each
    count in ``counts`` (sequences are consumed a whole batch at a time, so a
    count is reached or passed by the stream's batch size).
    """
    if lr and learner.optimizer is not None:
        learner.optimizer.lr = learner.optimizer.base_lr = float(lr)
    stream = simulate(learner, adapt_task, itertools.count(), learn=True)
    curve, seen = [], 0
    for target in counts:
        while seen < target:
            seen += next(stream).rows
        curve.append((seen, frame_losses(learner, test_task, test_batches)["mean"]))
    return curve


def mean_ci(values) -> dict:
    """Mean and 95% Student-t interval half-width over seeds (nan width for one seed)."""
    from scipy import stats
    v = np.asarray(values, np.float64)
    n = v.shape[0]
    mean = v.mean(axis=0)
    if n < 2:
        half = np.full_like(mean, np.nan)
    else:
        half = stats.t.ppf(0.975, n - 1) * v.std(axis=0, ddof=1) / math.sqrt(n)
    return {"mean": mean.tolist() if v.ndim > 1 else float(mean),
            "ci95": half.tolist() if v.ndim > 1 else float(half), "n": int(n)}


# ---------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------
def run_seed(cfg_a: dict, cfg_b: dict, seed: int, protocol: dict, out_dir: str,
             data_dir=None, log=print, traces: bool = False) -> dict:
    """One seed of the protocol for one learner; returns its raw numbers."""
    cfg_a = copy.deepcopy(cfg_a)
    cfg_b = copy.deepcopy(cfg_b)
    cfg_a["seed"] = cfg_b["seed"] = seed
    tb = protocol["test_batches"]
    task_a, test_a, test_b = _family_tasks(cfg_a, cfg_b, data_dir)
    t0 = time.perf_counter()
    theta_a, theta_b, seconds = _train_families(cfg_a, cfg_b, out_dir, data_dir, log)
    probe = load_learner(theta_a)
    corr = has_correction(probe)
    errors = tuple(e for e in ERROR_UNITS if e in probe.recordable)
    res = {"seed": seed, "correction": corr, "errors": list(errors), "train_seconds": seconds}
    floor = make_learner(cfg_a, task_a.x_dim)
    cond = _frozen_conditions(theta_a, theta_b, floor, test_a, test_b, tb, errors)
    res["conditions"] = {k: {"mean": v["mean"], "loss_t": v["loss_t"].tolist(),
                             "err_t": {e: a.tolist() for e, a in v["err_t"].items()}}
                         for k, v in cond.items()}
    if corr:
        res["zero_shot_gain"] = (cond["ii_frozen_uncorrected"]["mean"]
                                 - cond["i_frozen_corrected"]["mean"])
    adapted = load_learner(theta_a)
    res["adaptation"] = _adaptation(adapted, cfg_a, cfg_b, task_a.x_dim, test_b, protocol,
                                    data_dir)
    # forgetting: A's test loss under (i) before and after the adaptation
    before = cond["A_on_A"]["mean"]
    after = frame_losses(adapted, test_a, tb)["mean"]
    res["forgetting"] = {"loss_A_before": before, "loss_A_after": after,
                         "backward_transfer": before - after}
    if traces:
        res["traces"] = record_traces(theta_a, test_b, os.path.join(out_dir, "traces_B.h5"))
    res["seconds"] = time.perf_counter() - t0
    return res


def _family_tasks(cfg_a: dict, cfg_b: dict, data_dir) -> tuple:
    """A's training task and the test tasks of A and B; the two families must match."""
    task_a, task_b = make_task(cfg_a, "train", data_dir), make_task(cfg_b, "train", data_dir)
    if task_a.x_dim != task_b.x_dim or task_a.kind != task_b.kind:
        raise ZeroShotError(f"families A ({type(task_a).__name__}, x_dim {task_a.x_dim}, "
                            f"{task_a.kind}) and B ({type(task_b).__name__}, x_dim "
                            f"{task_b.x_dim}, {task_b.kind}) need the same input size and kind")
    # zero-shot reports, it selects nothing: always the test split (not default_eval_split,
    # which names the selection split)
    test_a = make_task(cfg_a, "test", data_dir)
    test_b = make_task(cfg_b, "test", data_dir)
    return task_a, test_a, test_b


def _train_families(cfg_a: dict, cfg_b: dict, out_dir: str, data_dir, log) -> tuple:
    """Train theta_A and theta_B into ``out_dir``/A and /B; their final model files and the
    training time of each."""
    dirs = {k: os.path.join(out_dir, k) for k in ("A", "B")}
    quiet_log = (lambda msg: None)
    m_a = train(cfg_a, dirs["A"], data_dir, quiet=True, plots=False, log=quiet_log)
    m_b = train(cfg_b, dirs["B"], data_dir, quiet=True, plots=False, log=quiet_log)
    theta_a, theta_b = (os.path.join(dirs[k], "final.npz") for k in ("A", "B"))
    seconds = {"A": m_a["train"]["seconds"], "B": m_b["train"]["seconds"]}
    log(_trained_line(seconds))
    return theta_a, theta_b, seconds


def _trained_line(seconds: dict) -> str:
    """The progress line of a seed's two training runs."""
    return f"    trained A ({seconds['A']:.0f} s) and B ({seconds['B']:.0f} s)"


def _adaptation(adapted, cfg_a: dict, cfg_b: dict, x_dim: int, test_b, protocol: dict,
                data_dir) -> list:
    """(iii): ``adapted`` (theta_A) learns online on B's training stream; B's test loss after
    each count of ``protocol["adapt"]``, and that of the same learning from a random init."""
    cfg_stream = copy.deepcopy(cfg_b)
    cfg_stream["task"]["batch_size"] = protocol["adapt_batch"]
    stream = make_task(cfg_stream, "train", data_dir)
    counts, tb, lr = protocol["adapt"], protocol["test_batches"], protocol["adapt_lr"]
    curve = adapt_curve(adapted, stream, test_b, counts, tb, lr)
    # the same online learning from a random init: what transfer from A is worth
    scratch = adapt_curve(make_learner(cfg_a, x_dim), stream, test_b, counts, tb, lr)
    return [{"sequences": n, "loss_B": v, "loss_B_from_scratch": w}
            for (n, v), (_, w) in zip(curve, scratch)]


def _frozen_conditions(theta_a, theta_b, floor, test_a, test_b, tb: int, errors) -> dict:
    """Frame losses on B of (i) theta_A with correction (learners that have it), (ii)
    without, the upper reference theta_B, the ``floor`` and theta_A on A's own test set."""
    cond = {}
    if has_correction(load_learner(theta_a)):
        cond["i_frozen_corrected"] = frame_losses(load_frozen(theta_a, True), test_b, tb, errors)
    cond["ii_frozen_uncorrected"] = frame_losses(load_frozen(theta_a, False), test_b, tb, errors)
    cond["upper_trained_on_B"] = frame_losses(load_learner(theta_b), test_b, tb, errors)
    cond["floor_random_init"] = frame_losses(floor, test_b, tb, errors)
    # the same trained model on its own family, for the error-unit comparison
    cond["A_on_A"] = frame_losses(load_learner(theta_a), test_a, tb, errors)
    return cond


def record_traces(theta_a, test_b, path) -> str:
    """Record theta_A's first B test batch (weights frozen, with correction) with its
    neural quantities."""
    from .record import Recorder
    learner = load_frozen(theta_a, True)
    rec = Recorder(path)
    for name in ("x", "x_mu", *ERROR_UNITS, "z1", "y1", "z2", "y2", "h"):
        if name in learner.recordable:
            rec.add(name, rows=[0])
    rec.add("loss")
    Simulation(learner, test_b, 1, recorder=rec, learn=False, progress=False,
               attrs={"what": "theta_A on family B, frozen, with correction"}).run()
    return path


def summarise(per_seed: list[dict]) -> dict:
    """Mean and 95% interval over seeds of every number of :func:`run_seed`."""
    out = {"seeds": [r["seed"] for r in per_seed], "correction": per_seed[0]["correction"]}
    conds = {}
    for k in per_seed[0]["conditions"]:
        conds[k] = {"mean_after_first": mean_ci([r["conditions"][k]["mean"] for r in per_seed]),
                    "loss_t": mean_ci([r["conditions"][k]["loss_t"] for r in per_seed]),
                    "err_t": {e: mean_ci([r["conditions"][k]["err_t"][e] for r in per_seed])
                              for e in per_seed[0]["conditions"][k]["err_t"]}}
    out["conditions"] = conds
    if "zero_shot_gain" in per_seed[0]:
        out["zero_shot_gain"] = mean_ci([r["zero_shot_gain"] for r in per_seed])
    out["adaptation"] = [
        {"sequences": a["sequences"],
         **{k: mean_ci([r["adaptation"][i][k] for r in per_seed])
            for k in ("loss_B", "loss_B_from_scratch")}}
        for i, a in enumerate(per_seed[0]["adaptation"])]
    out["forgetting"] = {k: mean_ci([r["forgetting"][k] for r in per_seed])
                         for k in per_seed[0]["forgetting"]}
    return out


def run_zeroshot(cfg: dict, out_dir: str, data_dir=None, log=print,
                 quiet: bool = False, workers: int = 0, scheduler: str | None = None) -> dict:
    """Run the whole protocol (every learner, every seed); write results, table, figure.

    ``log`` receives the progress lines (each seed, its training time; none with
    ``quiet``), the results table and the names of the files written.  Families that
    cannot share a model are refused before anything is written; the protocol then owns
    ``out_dir`` (:class:`ptncn.runlock.RunLock`) until it ends.

    ``workers=0`` runs the seeds in this process, one after another.  ``workers=N``
    (a LocalCluster of N one-thread processes) or ``scheduler`` (a running Dask
    scheduler's address; its workers must see ``out_dir`` and the data) runs each
    (learner, seed) as one task (:func:`seed_task`); the results are combined in
    seed order, so ``results.json`` is the in-process one but for its timings."""
    from .runlock import RunLock

    for pair in cfg["configs"].values():
        _family_tasks(pair["a"], pair["b"], data_dir)
    progress = (lambda msg: None) if quiet else log
    with RunLock(out_dir, "zero-shot"):
        if not workers and not scheduler:
            return _run_protocol(cfg, out_dir, data_dir, log, progress,
                                 _serial_seeds(cfg, out_dir, data_dir, progress))
        from .sweep.engine import connect, disconnect
        client = connect(workers, scheduler)
        seeds = _dask_seeds(client, cfg, out_dir, data_dir, progress)
        try:
            return _run_protocol(cfg, out_dir, data_dir, log, progress, seeds)
        finally:
            seeds.close()                       # cancels what is still running
            disconnect(client, scheduler)


def _seed_jobs(cfg: dict, out_dir: str, data_dir) -> list:
    """``(learner, label, run_seed arguments)`` of every seed of every learner, in
    the order of the results; each seed writes only into ``out_dir/<learner>/seed<k>``."""
    seeds = cfg["protocol"]["seeds"]
    jobs = []
    for name, pair in cfg["configs"].items():
        proto = {**cfg["protocol"], "adapt_lr": pair["adapt_lr"]}
        for k, seed in enumerate(seeds):
            seed_dir = os.path.join(out_dir, name, f"seed{seed}")
            jobs.append((name, f"[{name}] seed {seed} ({k + 1}/{len(seeds)})",
                         (pair["a"], pair["b"], seed, proto, seed_dir, data_dir, k == 0)))
    return jobs


def _serial_seeds(cfg: dict, out_dir: str, data_dir, progress):
    """``(learner, run_seed result)`` of every seed, run here one after another."""
    for name, label, (a, b, seed, proto, seed_dir, dd, traces) in _seed_jobs(cfg, out_dir,
                                                                            data_dir):
        progress(label)
        yield name, run_seed(a, b, seed, proto, seed_dir, dd, log=progress, traces=traces)


def seed_task(cfg_a: dict, cfg_b: dict, seed: int, protocol: dict, seed_dir: str,
              data_dir=None, traces: bool = False) -> dict:
    """:func:`run_seed` on a worker: one BLAS thread, no progress lines; plain data
    in (configs, paths), plain data out."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return run_seed(cfg_a, cfg_b, seed, protocol, seed_dir, data_dir,
                        log=lambda msg: None, traces=traces)


def _dask_seeds(client, cfg: dict, out_dir: str, data_dir, progress):
    """``(learner, run_seed result)`` of every seed, all submitted to ``client`` at once
    and gathered in order; a seed's exception is raised as the in-process run raises it."""
    jobs = _seed_jobs(cfg, out_dir, data_dir)
    futures = [client.submit(seed_task, *args, pure=False,
                             key=f"ptncn-zeroshot-{name}-seed{args[2]}-{time.time_ns()}")
               for name, _, args in jobs]
    try:
        for (name, label, _), fut in zip(jobs, futures):
            progress(label)
            res = fut.result()
            progress(_trained_line(res["train_seconds"]))
            yield name, res
    finally:
        client.cancel(futures)


def _run_protocol(cfg: dict, out_dir: str, data_dir, log, progress, seed_results) -> dict:
    """Collect ``seed_results`` (``(learner, run_seed result)`` in seed order), writing
    the partial results after each; then the summaries, table and figure."""
    proto = cfg["protocol"]
    results = {"name": cfg["name"], "description": cfg["description"], "protocol": proto,
               "learners": {}}
    t0 = time.perf_counter()
    per_seed = {name: [] for name in cfg["configs"]}
    for name, res in seed_results:
        per_seed[name].append(res)
        _write_json(os.path.join(out_dir, "results.json"),
                    {**results, "partial": {name: per_seed[name]}})
        if len(per_seed[name]) == len(proto["seeds"]):
            pair = cfg["configs"][name]
            results["learners"][name] = {"summary": summarise(per_seed[name]),
                                         "per_seed": per_seed[name],
                                         "adapt_lr": pair["adapt_lr"],
                                         "task_a": pair["a"]["task"],
                                         "task_b": pair["b"]["task"],
                                         "kind": make_task(pair["a"], "train", data_dir).kind}
    results["seconds"] = time.perf_counter() - t0
    _write_json(os.path.join(out_dir, "results.json"), results)
    table = markdown_table(results)
    with open(os.path.join(out_dir, "zeroshot.md"), "w") as f:
        f.write(table)
    log(table)
    plot_zeroshot(results, os.path.join(out_dir, "zeroshot.png"))
    log(f"wrote {out_dir}/results.json, zeroshot.md, zeroshot.png "
        f"({results['seconds'] / 60:.1f} min)")
    return results


def _write_json(path, obj) -> None:
    write_json(path, obj, indent=1, default=float)          # NaN (no CI of one seed) -> null


def _fmt(d) -> str:
    if isinstance(d, dict):
        m, h = d["mean"], d["ci95"]
        return f"{m:.3f} ± {h:.3f}" if np.isfinite(h) else f"{m:.3f}"
    return f"{d:.3f}"


#: condition -> its row in the results table
_TABLE_LABELS = {"i_frozen_corrected": "(i) θ_A frozen, with correction, on B",
                 "ii_frozen_uncorrected": "(ii) θ_A frozen, no correction (β=0), on B",
                 "upper_trained_on_B": "upper: θ_B (trained on B), on B",
                 "floor_random_init": "floor: random init, on B",
                 "A_on_A": "θ_A on A's own test set"}
#: condition -> (legend label, colour, line style) in the figure
_PLOT_STYLES = {"i_frozen_corrected": ("(i) θ_A frozen, correction", "C0", "-"),
                "ii_frozen_uncorrected": ("(ii) θ_A frozen, β = 0", "C1", "--"),
                "upper_trained_on_B": ("upper: θ_B", "C2", "-"),
                "floor_random_init": ("floor: random init", "C3", ":")}


def _loss_unit(learner_results: dict) -> str:
    return "nats/frame" if learner_results["kind"] == "binary" else "nats/token"


def _error_condition(conditions: dict) -> str:
    """The frozen condition whose error units are compared with A's: (i), else (ii)."""
    return "i_frozen_corrected" if "i_frozen_corrected" in conditions else "ii_frozen_uncorrected"


def markdown_table(results: dict) -> str:
    """The results table: every number is mean ± 95% half-width over seeds."""
    lines = [f"## {results['name']}: zero-shot adaptation "
             f"(mean ± 95% CI over {len(results['protocol']['seeds'])} seeds)", ""]
    for name, r in results["learners"].items():
        lines.append(f"### {name}: A = {r['task_a']}, B = {r['task_b']} "
                     f"(loss in {_loss_unit(r)}, mean over frames after the first; "
                     "lower is better)")
        lines += ["", "| quantity | value |", "|---|---|", *_table_rows(r["summary"]), ""]
    return "\n".join(lines) + "\n"


def _table_rows(s: dict) -> list[str]:
    """The rows of one learner's table, from its :func:`summarise` output ``s``."""
    c = s["conditions"]
    rows = [f"| {label} | {_fmt(c[k]['mean_after_first'])} |"
            for k, label in _TABLE_LABELS.items() if k in c]
    if "zero_shot_gain" in s:
        rows.append(f"| zero-shot gain L(ii) − L(i) | {_fmt(s['zero_shot_gain'])} |")
    for a in s["adaptation"]:
        rows.append(f"| (iii) after {a['sequences']} adaptation sequences, on B "
                    f"(same updates from random init) | {_fmt(a['loss_B'])} "
                    f"({_fmt(a['loss_B_from_scratch'])}) |")
    f = s["forgetting"]
    rows.append(f"| L_A before adaptation | {_fmt(f['loss_A_before'])} |")
    rows.append(f"| L_A after adaptation | {_fmt(f['loss_A_after'])} |")
    rows.append(f"| backward transfer L_A(before) − L_A(after) | "
                f"{_fmt(f['backward_transfer'])} |")
    cond = _error_condition(c)
    for e in c[cond]["err_t"]:
        on_b = float(np.nanmean(c[cond]["err_t"][e]["mean"][1:]))
        on_a = float(np.nanmean(c["A_on_A"]["err_t"][e]["mean"][1:]))
        rows.append(f"| mean ‖{e}‖² per sequence row: θ_A on B / on A | "
                    f"{on_b:.4g} / {on_a:.4g} |")
    return rows


def plot_zeroshot(results: dict, path: str) -> str:
    """Loss vs frame index, adaptation curves and error-unit magnitudes, one row per learner."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["learners"])
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 5.0 * len(names)), squeeze=False,
                             layout="constrained")
    for row, name in enumerate(names):
        r = results["learners"][name]
        _plot_frame_losses(axes[row, 0], name, r["summary"], _loss_unit(r))
        _plot_adaptation(axes[row, 1], name, r["summary"], _loss_unit(r))
        _plot_error_units(axes[row, 2], name, r["summary"])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_frame_losses(ax, name: str, s: dict, unit: str) -> None:
    """Loss on B against the frame index, for every frozen condition."""
    for k, (label, color, ls) in _PLOT_STYLES.items():
        if k not in s["conditions"]:
            continue
        m = np.asarray(s["conditions"][k]["loss_t"]["mean"], float)
        h = np.asarray(s["conditions"][k]["loss_t"]["ci95"], float)
        t = np.arange(m.shape[0])
        ax.plot(t, m, ls, color=color, label=label)
        if np.isfinite(h).any():
            ax.fill_between(t, m - h, m + h, color=color, alpha=0.2)
    ax.set(xlabel="frame index t within the sequence", ylabel=f"loss on B ({unit})",
           title=f"{name}: loss on new family B, frame by frame")
    _legend_below(ax)


def _plot_adaptation(ax, name: str, s: dict, unit: str) -> None:
    """(iii): loss on B against the adaptation sequences seen, from theta_A and from scratch,
    between the upper reference and the floor."""
    xs = np.array([a["sequences"] for a in s["adaptation"]], float) + 1

    def bars(key, **style):
        m = np.array([a[key]["mean"] for a in s["adaptation"]])
        h = np.array([a[key]["ci95"] for a in s["adaptation"]])
        ax.errorbar(xs, m, yerr=np.where(np.isfinite(h), h, 0), capsize=3, **style)
    bars("loss_B", marker="o", label="(iii) θ_A + online updates on B")
    bars("loss_B_from_scratch", marker="s", ls="--", color="C4",
         label="same online updates from random init")
    for k in ("upper_trained_on_B", "floor_random_init"):
        label, color, ls = _PLOT_STYLES[k]
        ax.axhline(s["conditions"][k]["mean_after_first"]["mean"], color=color, ls=ls,
                   label=label)
    ax.set_xscale("log")
    ax.set(xlabel="adaptation sequences seen + 1 (log)", ylabel=f"loss on B ({unit})",
           title=f"{name}: online adaptation to B")
    _legend_below(ax)


def _plot_error_units(ax, name: str, s: dict) -> None:
    """Squared norms of the error units of frozen theta_A per frame, on B and on A."""
    cond = _error_condition(s["conditions"])
    errs = s["conditions"][cond]["err_t"]
    if not errs:
        ax.text(0.5, 0.5, f"{name} has no error units", ha="center", va="center")
        ax.set_axis_off()
        return
    for j, e in enumerate(errs):
        for k, ls, where in ((cond, "-", "on B"), ("A_on_A", "--", "on A")):
            v = np.asarray(s["conditions"][k]["err_t"][e]["mean"], float)
            ax.plot(np.arange(v.shape[0]), v, ls, color=f"C{j}", label=f"‖{e}‖² {where}")
    ax.set_yscale("log")
    ax.set(xlabel="frame index t", ylabel="mean squared norm per row",
           title=f"{name}: error units of θ_A (frozen)")
    _legend_below(ax)


def _legend_below(ax) -> None:
    """The axes' legend under its x label, clear of the curves."""
    ax.legend(fontsize=8, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.14),
              frameon=False)
