"""Sweep engine throughput: a 16-run sweep on 1 and on 2 Dask workers.

    OPENBLAS_NUM_THREADS=1 python benchmarks/sweep.py [--repeats 1] [--batches 220]
        [--workers 2] [--worker-saturation S] [--out DIR]

Builds a sweep spec of 16 runs (``optimizer.lr`` over 8 values x 2 seeds) of a small
cyclic-task config (2 layers of 64, batches of 16 x 20 steps; ``--batches`` sets its
length, about 5 s of training with one BLAS thread on a 2-core machine) and runs the
whole sweep with ``ptncn.sweep.run_sweep`` on a LocalCluster of 1 worker and of
``--workers`` workers, alternately, each time into a fresh folder.  Reports the median
wall time of ``--repeats`` sweeps of each and the speed-up (1-worker time / N-worker
time).

How the engine's own costs are measured, without touching the engine: the sweep runs
in this process, with three of ``ptncn.sweep.engine``'s names wrapped here.

- ``connect``: timed (the LocalCluster's start); the client it returns gets a
  ``submit`` that notes each run's submission time and submits, instead of
  ``run_one``, a thin wrapper that calls ``run_one`` on the worker and adds to its
  outcome the worker's pid and the wall-clock times just before and just after
  ``run_one`` (same machine, same clock as this process).
- ``make_row`` (called in this process with each outcome) collects those times.
- ``_write_rows`` notes when each run's row is first in ``results.csv``.

From these, per run (ms):

- submit -> start: ``run_one`` starting on the worker minus its submission.  All 16
  runs are submitted at once, so this is mostly waiting in the queue; the engine's
  part is the *dispatch gap*: start minus the later of submission and the end of the
  previous run on the same worker (the worker's first run is counted in the startup).
- end -> row: the run's row in ``results.csv`` minus ``run_one`` returning (the result
  back to the client, ``as_completed``, the row, the CSV rewritten).
- overhead per run, all in: (sweep wall time x workers - sum of ``run_one`` times) /
  runs (startup, shutdown, idle workers at the end, dispatch and rows together).

Startup: from the ``run_sweep`` call to the first run starting on a worker, split into
planning (every config validated), the LocalCluster's start and the first dispatch
(which includes the fresh worker importing ptncn).  Shutdown: the last row to
``run_sweep`` returning (results.nc, the cluster closed).

The run's own time is also split: ``run_one`` time against the training loop's
seconds (the rest: tasks built, evaluations, files written).  On a machine that
others also use, runs that get slower with N workers point at contention, not at the
engine; to tell which, the wrapper also takes the worker's CPU seconds in
``run_one`` (its share of the run's wall time: below 100%, the worker waited for a
core), and each sweep prints the cores that other processes kept busy meanwhile
(``/proc/stat``'s busy time less this process's and its ended children's, the
workers') and the idle tail (one worker done while another still runs).  "Speed-up
if the engine cost nothing" is the sum of the runs' times on 1 worker over that on
N workers divided by N.  ``--worker-saturation`` sets Dask's
``distributed.scheduler.worker-saturation`` for the sweeps (Dask's default, 1.1, gives
each one-thread worker a second run in reserve, which can leave one worker idle at the
end while another still has two runs; 1.0 keeps every waiting run on the scheduler).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
from ptncn.sweep import engine, run_sweep  # noqa: E402

BASE = """name = "bench"
[task]
name = "cyclic"
batch_size = 16
length = 20
vocab = 10
[model]
hidden = [64, 64]
[train]
batches = {batches}
eval_every = {eval_every}
eval_batches = 4
final_eval_batches = 4
"""

SPEC = """base = "base.toml"
[sweep]
seeds = 2
metric = "valid.bpc"
[sweep.grid]
"optimizer.lr" = [0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2]
"""


def write_spec(folder: str, batches: int) -> str:
    """The spec (16 runs) and its base config in ``folder``; returns the spec's path."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "base.toml"), "w") as f:
        f.write(BASE.format(batches=batches, eval_every=max(1, batches // 2)))
    path = os.path.join(folder, "spec.toml")
    with open(path, "w") as f:
        f.write(SPEC)
    return path


def timed_run_one(run_dir, cfg, data_dir=None, max_attempts=3):
    """``run_one`` on the worker, its outcome with the worker's pid, the times just
    before and after it and the worker process's CPU seconds in it (``_bench``)."""
    import os as _os
    import time as _time

    from ptncn.sweep.engine import run_one
    t0, c0 = _time.time(), _time.process_time()
    out = run_one(run_dir, cfg, data_dir, max_attempts)
    out["_bench"] = {"start": t0, "end": _time.time(), "pid": _os.getpid(),
                     "cpu": _time.process_time() - c0}
    return out


class Probe:
    """Client-side times of one sweep, gathered through wrapped engine functions."""

    def __init__(self):
        self.t = {}
        self.submit, self.worker, self.row, self.train_s = {}, {}, {}, {}

    def install(self):
        """Wrap ``connect``, ``make_row`` and ``_write_rows``; returns the originals."""
        orig = (engine.connect, engine.make_row, engine._write_rows)
        connect, make_row, write_rows = orig

        def connect_(*a, **kw):
            self.t["connect0"] = time.time()
            client = connect(*a, **kw)
            self.t["connect1"] = time.time()
            if client is not None:
                client.submit = self._submit(client.submit)
            return client

        def make_row_(plan, outcome):
            if "_bench" in outcome:
                self.worker[plan.run_id] = outcome["_bench"]
                m = (outcome.get("metrics") or {}).get("train") or {}
                self.train_s[plan.run_id] = m.get("seconds", float("nan"))
            return make_row(plan, outcome)

        def write_rows_(*a, **kw):
            rows = write_rows(*a, **kw)
            t = time.time()
            for r in rows:
                self.row.setdefault(r["run_id"], t)
            return rows

        engine.connect, engine.make_row, engine._write_rows = connect_, make_row_, write_rows_
        return orig

    def _submit(self, submit):
        def submit_(fn, run_dir, *a, **kw):
            self.submit[os.path.basename(run_dir)] = time.time()
            return submit(timed_run_one, run_dir, *a, **kw)
        return submit_


def one_sweep(spec: str, out: str, workers: int, saturation=None) -> dict:
    """Run the sweep once into ``out`` with the engine wrapped (and Dask's
    ``distributed.scheduler.worker-saturation`` set, when given); its figures."""
    import importlib

    import dask
    importlib.import_module("distributed")     # its config defaults, before config.set

    conf = {} if saturation is None else {"distributed.scheduler.worker-saturation":
                                          saturation}
    probe = Probe()
    orig = probe.install()
    load0, cpu0, mine0 = os.getloadavg()[0], machine_cpu_s(), own_cpu_s()
    try:
        probe.t["call"] = time.time()
        with dask.config.set(conf):
            res = run_sweep(spec, out, workers=workers, progress=False)
        probe.t["return"] = time.time()
    finally:
        engine.connect, engine.make_row, engine._write_rows = orig
    fig = figures(probe, workers)
    others = (machine_cpu_s() - cpu0) - (own_cpu_s() - mine0)
    fig.update(failed=len(res.failed), runs=len(res.rows),
               load=(load0 + os.getloadavg()[0]) / 2, others_cpu=others / fig["wall"])
    return fig


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``; NaN elsewhere)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    busy = sum(v[:8]) - v[3] - v[4]                  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its ended children (the workers, once closed)."""
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def dispatch_gaps(probe: Probe) -> tuple[list, list]:
    """Per run: start minus the later of its submission and the previous run's end on
    the same worker; (first runs of each worker, the others)."""
    first, rest, free = [], [], {}
    for rid, w in sorted(probe.worker.items(), key=lambda kv: kv[1]["start"]):
        ready = max(probe.submit[rid], free.get(w["pid"], probe.submit[rid]))
        (rest if w["pid"] in free else first).append(w["start"] - ready)
        free[w["pid"]] = w["end"]
    return first, rest


def tail_idle(worker: dict) -> float:
    """Seconds between the first and the last worker's last run ending."""
    last = {}
    for v in worker.values():
        last[v["pid"]] = max(last.get(v["pid"], 0.0), v["end"])
    return max(last.values()) - min(last.values())


def figures(probe: Probe, workers: int) -> dict:
    """Wall time, run times, startup, dispatch and row latencies of one sweep."""
    t, w = probe.t, probe.worker
    wall = t["return"] - t["call"]
    dur = [v["end"] - v["start"] for v in w.values()]
    first, rest = dispatch_gaps(probe)
    start0 = min(v["start"] for v in w.values())
    return {
        "workers": workers, "wall": wall, "run_s": statistics.median(dur),
        "sum_run_s": sum(dur),
        "cpu_share": statistics.median(v["cpu"] / (v["end"] - v["start"]) for v in w.values()),
        "cpu_s": statistics.median(v["cpu"] for v in w.values()),
        "tail_s": tail_idle(w),
        "per_worker": sorted(collections.Counter(v["pid"] for v in w.values()).values()),
        "train_s": statistics.median(probe.train_s.values()),
        "queue_ms": 1e3 * statistics.mean(v["start"] - probe.submit[k] for k, v in w.items()),
        "gap_ms": 1e3 * statistics.median(rest) if rest else float("nan"),
        "gap_max_ms": 1e3 * max(rest) if rest else float("nan"),
        "row_ms": 1e3 * statistics.median(probe.row[k] - v["end"] for k, v in w.items()),
        "row_max_ms": 1e3 * max(probe.row[k] - v["end"] for k, v in w.items()),
        "overhead_ms": 1e3 * (wall * workers - sum(dur)) / len(dur),
        "plan_s": t["connect0"] - t["call"], "cluster_s": t["connect1"] - t["connect0"],
        "first_dispatch_s": start0 - t["connect1"], "to_first_start_s": start0 - t["call"],
        "first_gap_s": max(first), "teardown_s": t["return"] - max(probe.row.values()),
    }


def print_sweep(k: int, f: dict) -> None:
    print(f"[{k}] workers {f['workers']}: wall {f['wall']:.2f} s, {f['runs']} runs "
          f"({f['failed']} failed), run_one median {f['run_s']:.2f} s (training loop "
          f"{f['train_s']:.2f} s), load avg {f['load']:.2f}")
    print(f"    CPU: run_one {f['cpu_s']:.2f} CPU-s median, {100 * f['cpu_share']:.0f}% of its "
          f"wall time on a core; other processes used {f['others_cpu']:.2f} cores; "
          f"idle tail (one worker done, another busy) {f['tail_s']:.2f} s; runs per "
          f"worker {f['per_worker']}")
    print(f"    startup: to first run start {f['to_first_start_s']:.2f} s = planning "
          f"{f['plan_s']:.2f} + LocalCluster {f['cluster_s']:.2f} + first dispatch "
          f"{f['first_dispatch_s']:.2f}; teardown {f['teardown_s']:.2f} s")
    print(f"    per run: submit->start {f['queue_ms']:.0f} ms mean (queue included), "
          f"dispatch gap {f['gap_ms']:.1f} ms median ({f['gap_max_ms']:.1f} max), "
          f"end->row {f['row_ms']:.1f} ms median ({f['row_max_ms']:.1f} max), "
          f"all-in overhead {f['overhead_ms']:.0f} ms", flush=True)


def med(figs: list, key: str) -> float:
    return statistics.median(f[key] for f in figs)


def summary(one: list, many: list, workers: int) -> None:
    w1, wn = med(one, "wall"), med(many, "wall")
    ideal = med(one, "sum_run_s") / (med(many, "sum_run_s") / workers)
    print(f"\nmedian of {len(one)}: 1 worker {w1:.2f} s, {workers} workers {wn:.2f} s, "
          f"speed-up {w1 / wn:.2f}x")
    print(f"run_one median: {med(one, 'run_s'):.2f} s on 1 worker, "
          f"{med(many, 'run_s'):.2f} s on {workers} (speed-up if the engine cost nothing: "
          f"{ideal:.2f}x)")
    print(f"run_one CPU-s median: {med(one, 'cpu_s'):.2f} on 1 worker, "
          f"{med(many, 'cpu_s'):.2f} on {workers}; on a core {100 * med(one, 'cpu_share'):.0f}% "
          f"/ {100 * med(many, 'cpu_share'):.0f}% of the time; other processes' load "
          f"{med(one, 'others_cpu'):.2f} / {med(many, 'others_cpu'):.2f} cores")
    for label, figs in (("1 worker", one), (f"{workers} workers", many)):
        print(f"{label}: startup {med(figs, 'to_first_start_s'):.2f} s (LocalCluster "
              f"{med(figs, 'cluster_s'):.2f} s), dispatch gap {med(figs, 'gap_ms'):.1f} ms, "
              f"end->row {med(figs, 'row_ms'):.1f} ms, all-in overhead "
              f"{med(figs, 'overhead_ms'):.0f} ms per run, teardown "
              f"{med(figs, 'teardown_s'):.2f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="sweeps of each (median)")
    ap.add_argument("--batches", type=int, default=220, help="train.batches of each run")
    ap.add_argument("--workers", type=int, default=2, help="workers to compare with 1")
    ap.add_argument("--worker-saturation", type=float, default=None,
                    help="Dask's distributed.scheduler.worker-saturation (default: "
                    "Dask's, 1.1: each one-thread worker holds a second run in reserve)")
    ap.add_argument("--out", default=None, help="folder for the sweeps (default: a temp "
                    "folder, removed at the end)")
    args = ap.parse_args(argv)
    root = args.out or tempfile.mkdtemp(prefix="ptncn-sweep-bench-")
    print(f"16 runs (8 lr x 2 seeds), cyclic task, hidden 64x64, batch 16x20, "
          f"{args.batches} batches; worker-saturation "
          f"{args.worker_saturation or 'default'}; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs")
    try:
        spec = write_spec(os.path.join(root, "spec"), args.batches)
        one, many = [], []
        for k in range(args.repeats):
            for workers, figs in ((1, one), (args.workers, many)):
                f = one_sweep(spec, os.path.join(root, f"{k}-w{workers}"), workers,
                              args.worker_saturation)
                print_sweep(k, f)
                figs.append(f)
        summary(one, many, args.workers)
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
