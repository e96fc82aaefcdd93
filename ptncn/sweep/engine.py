"""Running a sweep: every run of a spec on Dask workers, resumable, fault tolerant.

``DIR/sweep.json`` holds the spec (and its hash); ``DIR/runs/<run_id>/`` is each
run's ordinary run folder (``ptncn train``'s outputs); a run is done when its
``metrics.json`` exists (the harness writes it last, atomically).  ``DIR/results.csv``
is rewritten after every finished run, ``DIR/results.nc`` at the end.

Where the runs go: ``workers=0`` in this process, one after another (no Dask
needed); ``workers=N`` a ``distributed.LocalCluster`` of N one-thread worker
processes; ``scheduler="tcp://host:port"`` any running Dask scheduler (its workers
must see DIR, e.g. on a shared file system, and the data).

Faults: a run that raises (divergence, a bad value) is a failed row with its
error, and the sweep goes on.  A worker that dies takes its run with it; the
scheduler gives the run to another worker, which resumes it from its last
checkpoint (the harness's exact resume).  Each run counts its attempts in
``attempts.json`` in its folder and gives up after ``1 + retries``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field

from ..harness import ConfigError
from ..jsonio import write_json
from .spec import RunPlan, Spec, plan_runs

SCHEDULER_TIMEOUT_S = 10
#: entries of an evaluation's scores that are not metrics (counts, where, when)
NOT_METRICS = ("batches", "scored", "batch", "step", "tokens", "seconds")


@dataclass
class SweepResult:
    """The rows of every run of a sweep (see :mod:`ptncn.sweep.results`)."""
    out: str
    rows: list = field(default_factory=list)

    @property
    def failed(self) -> list:
        return [r for r in self.rows if r["status"] != "done"]


# ---------------------------------------------------------------------------
# one run (on a worker)
# ---------------------------------------------------------------------------
def _read_json(path: str):
    """The JSON in ``path``; None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _attempts(run_dir: str, default: int = 0) -> int:
    """How often the run in ``run_dir`` was started in this invocation (attempts.json)."""
    data = _read_json(os.path.join(run_dir, "attempts.json"))
    try:
        return int(data["attempts"])
    except (TypeError, KeyError, ValueError):
        return default


def _bump_attempts(run_dir: str) -> int:
    n = _attempts(run_dir) + 1
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "attempts.json"), {"attempts": n})
    return n


def run_one(run_dir: str, cfg: dict, data_dir=None, max_attempts: int = 3) -> dict:
    """Train (or resume, when a checkpoint is there) one run into ``run_dir`` with one
    BLAS thread; returns ``{"status", "error", "attempts", "metrics"}`` and never
    raises for the run's own errors."""
    from threadpoolctl import threadpool_limits

    from ..harness import train

    attempts = _bump_attempts(run_dir)
    out = {"status": "failed", "error": "", "attempts": attempts, "metrics": None}
    if attempts > max_attempts:
        out["error"] = f"gave up after {max_attempts} attempts (workers died running it)"
        return out
    _take_over_from_dead_worker(run_dir)
    resume = os.path.exists(os.path.join(run_dir, "run.ckpt.npz"))
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            out["metrics"] = train(cfg, out_dir=run_dir, data_dir=data_dir, quiet=True,
                                   resume=resume, plots=False, log=lambda msg: None)
        out["status"] = "done"
    except Exception as exc:     # noqa: BLE001 - recorded as the run's failure
        out["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return out


def _dask_worker():
    """(this Dask worker's address, a client to its scheduler), or None outside one."""
    try:
        from distributed import get_client, get_worker
        return get_worker().address, get_client()
    except (ImportError, ValueError):
        return None


def _take_over_from_dead_worker(run_dir: str) -> None:
    """Note this worker in ``run_dir``/worker.json; and when the run's lock is held by
    the worker noted there before and the scheduler no longer has that worker, remove
    the lock.  A worker that died on another machine leaves a lock whose process this
    machine cannot check; the scheduler is the one that knows it is gone."""
    from ..runlock import LOCK_NAME, lock_owner

    here = _dask_worker()
    if here is None:
        return
    path = os.path.join(run_dir, "worker.json")
    before = _read_json(path)
    owner = lock_owner(run_dir)
    if (before and owner and [owner.get("host"), owner.get("pid")] == before["process"]
            and before["worker"] not in here[1].nthreads()):
        os.remove(os.path.join(run_dir, LOCK_NAME))
    write_json(path, {"worker": here[0], "process": [socket.gethostname(), os.getpid()]})


# ---------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------
def _metric_columns(metrics: dict | None) -> dict:
    """``valid.<m>``: the best model (selected on validation) scored there;
    ``test.<m>``: the same model on test."""
    if not metrics:
        return {}
    test = metrics.get("test") or {}
    cols = {f"{split}.{k}": v
            for split, scores in (("valid", metrics.get("best") or {}),
                                  ("test", test.get("best") or test.get("final") or {}))
            for k, v in scores.items()
            if isinstance(v, (int, float)) and k not in NOT_METRICS}
    return {k: (float("nan") if v is None else float(v)) for k, v in cols.items()}


def make_row(plan: RunPlan, outcome: dict) -> dict:
    """The results row of a run: its plan, how it ended, its metrics."""
    m = outcome.get("metrics") or {}
    train = m.get("train") or {}
    return {"run_id": plan.run_id, "config_index": plan.config_index,
            "seed_index": plan.seed_index, "seed": plan.seed, **plan.values,
            "status": outcome["status"], "attempts": outcome.get("attempts", 0),
            "seconds": float(train.get("seconds", math.nan)),
            "steps": int(train.get("steps", 0)), **_metric_columns(m),
            "error": outcome.get("error", "")}


def done_outcome(run_dir: str) -> dict | None:
    """The outcome of a run finished earlier (its metrics.json), else None."""
    metrics = _read_json(os.path.join(run_dir, "metrics.json"))
    if metrics is None:
        return None
    return {"status": "done", "error": "", "attempts": _attempts(run_dir, default=1),
            "metrics": metrics}


# ---------------------------------------------------------------------------
# the sweep folder
# ---------------------------------------------------------------------------
def sweep_meta(spec: Spec, plans) -> dict:
    """What ``sweep.json`` holds: the spec, its hash, and each configuration's values."""
    configs = {p.config_index: p.values for p in plans}
    return {"spec_hash": spec.hash(), **spec.meta(), "n_configs": len(configs),
            "configs": [configs[i] for i in sorted(configs)], "spec": spec.path}


def check_out(out: str, meta: dict, resume: bool) -> None:
    """Refuse an ``out`` that holds another spec's sweep (or, with ``resume``, none)."""
    path = os.path.join(out, "sweep.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable ({exc}); use another --out") from None
        if old.get("spec_hash") != meta["spec_hash"]:
            raise ConfigError(f"{out} holds a sweep of another spec (hash "
                              f"{old.get('spec_hash')}, this one {meta['spec_hash']}); "
                              "use another --out")
    elif resume:
        raise ConfigError(f"--resume: {out} holds no sweep (no sweep.json)")


def write_meta(out: str, meta: dict) -> None:
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    write_json(os.path.join(out, "sweep.json"), meta, indent=2)


# ---------------------------------------------------------------------------
# where the runs go
# ---------------------------------------------------------------------------
def _dask():
    try:
        import distributed
    except ImportError:
        raise ImportError("running a sweep on workers needs Dask: pip install "
                          "'ptncn[sweep]' (or --workers 0 to run in this process)") from None
    return distributed


def connect(workers: int = 0, scheduler: str | None = None, max_attempts: int = 3):
    """A ``distributed.Client``: to ``scheduler`` (refused when it does not answer
    within :data:`SCHEDULER_TIMEOUT_S`), else to a new LocalCluster of ``workers``
    one-thread processes whose scheduler re-runs a dead worker's run ``max_attempts``
    times.  None for ``workers=0`` without a scheduler."""
    if not scheduler and not workers:
        return None
    distributed = _dask()
    import dask
    if scheduler:
        try:
            return distributed.Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise OSError(f"Dask scheduler {scheduler} did not answer within "
                          f"{SCHEDULER_TIMEOUT_S} s ({type(exc).__name__})") from None
    import logging
    with dask.config.set({"distributed.scheduler.allowed-failures": max_attempts}):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.ERROR)
    return distributed.Client(cluster)


def _serial_outcomes(todo, out, data_dir, max_attempts):
    for plan in todo:
        yield plan, run_one(run_dir(out, plan), plan.config, data_dir, max_attempts)


def _dask_outcomes(client, todo, out, data_dir, max_attempts):
    distributed = _dask()
    futures = {client.submit(run_one, run_dir(out, p), p.config, data_dir, max_attempts,
                             key=f"ptncn-run-{p.run_id}-{time.time_ns()}", pure=False): p
               for p in todo}
    for fut in distributed.as_completed(list(futures)):
        plan = futures[fut]
        try:
            outcome = fut.result()
        except Exception as exc:     # noqa: BLE001 - e.g. KilledWorker: the run failed
            outcome = {"status": "failed", "attempts": _attempts(run_dir(out, plan)),
                       "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
        yield plan, outcome


def _forget_attempts(folder: str) -> None:
    try:
        os.remove(os.path.join(folder, "attempts.json"))
    except FileNotFoundError:
        pass


def run_dir(out: str, plan: RunPlan) -> str:
    return os.path.join(out, "runs", plan.run_id)


# ---------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------
def run_sweep(spec, out: str, *, workers: int = 0, scheduler: str | None = None,
              resume: bool = False, retries: int = 2, overrides=(), data_dir=None,
              progress=None, client=None) -> SweepResult:
    """Run every run of ``spec`` (a :class:`~ptncn.sweep.spec.Spec` or the path of a
    spec file, with ``overrides`` for its base config) into ``out``; done runs are
    kept, partial ones resumed.  Returns the rows (ordered by configuration, then
    seed); ``results.csv`` and ``results.nc`` are written into ``out``.  ``client``:
    a ``distributed.Client`` to use (and leave open) instead of ``workers`` /
    ``scheduler``."""
    from ..progress import progress_or_none
    from .spec import load_spec

    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    plans = plan_runs(spec, data_dir)                     # validates before any run
    meta = sweep_meta(spec, plans)
    check_out(out, meta, resume)
    max_attempts = 1 + int(retries)
    rows, todo = {}, []
    for p in plans:
        old = done_outcome(run_dir(out, p))
        if old is not None:
            rows[p.run_id] = make_row(p, old)
        else:
            todo.append(p)
            _forget_attempts(run_dir(out, p))          # retries count per invocation
    own = client is None
    if own:
        client = connect(workers, scheduler, max_attempts) if todo else None
    bar = None
    try:
        write_meta(out, meta)
        bar = progress_or_none(len(plans), desc="sweep", unit="run", initial=len(rows),
                               mode=progress)
        outcomes = (_dask_outcomes(client, todo, out, data_dir, max_attempts) if client
                    else _serial_outcomes(todo, out, data_dir, max_attempts))
        slots = sum(client.nthreads().values()) if client is not None else 1
        for left, (plan, outcome) in zip(range(len(todo) - 1, -1, -1), outcomes):
            rows[plan.run_id] = make_row(plan, outcome)
            _write_rows(out, plans, rows, meta)
            if bar is not None:
                failed = sum(r["status"] != "done" for r in rows.values())
                bar.update(1, done=len(rows) - failed, failed=failed,
                           running=min(slots, left))
    finally:
        if bar is not None:
            bar.close()
        if own and client is not None:
            disconnect(client, scheduler)
    return SweepResult(out, _write_rows(out, plans, rows, meta, final=True))


def _write_rows(out: str, plans, rows: dict, meta: dict, final: bool = False) -> list:
    """``results.csv`` (and at the end ``results.nc``) of the rows so far, in plan order."""
    from .results import to_dataset, write_csv, write_netcdf

    ordered = [rows[p.run_id] for p in plans if p.run_id in rows]
    write_csv(ordered, meta, os.path.join(out, "results.csv"))
    if final:
        write_netcdf(to_dataset(ordered, meta), os.path.join(out, "results.nc"))
    return ordered


def disconnect(client, scheduler) -> None:
    """Close the client, and the LocalCluster it started (not a user's scheduler)."""
    cluster = None if scheduler else client.cluster
    client.close()
    if cluster is not None:
        cluster.close()
