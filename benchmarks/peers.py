"""ptncn beside a plain JAX P-TNCN step (benchmarks/jax_step.py): equality, then steps/s.

    .venv/bin/python benchmarks/peers.py [--hidden 1000 250 64] [--threads 1 2]
        [--runs 5] [--steps N] [--jax-python PATH] [--ptncn-threads auto] [--json PATH]

The JAX step runs in its own environment, found by ``--jax-python``, else
``$PTNCN_JAX_PYTHON``, else ``.venv-jax/bin/python`` in the repository; make it with
``python3 -m venv .venv-jax && .venv-jax/bin/pip install "jax[cpu]" numpy``.

1. Equality: a small model (12 inputs, layers of 8) learns 6 steps of the same
   inputs in ptncn and in JAX, once with a clipping radius small enough to clip
   and once with clipping off; x_mu and every parameter must agree to 1e-5
   after each step, or nothing is timed.
2. Quiet timing: for each hidden size h (B = 50, X = 49, the published
   hyperparameters) and each thread count n, a fresh process per implementation
   pinned to the first n cores (ptncn: ``OPENBLAS_NUM_THREADS=n``; JAX: XLA's
   pool follows the cores, and for n = 1 its multi-threaded Eigen kernels are
   off).  ptncn is timed by benchmarks/throughput.py's ``bench`` (``model.step``
   in a loop); JAX by the jitted step, waiting for each step's x_mu, compile
   excluded.  Median of ``--runs`` runs of ``--steps`` steps (default 100 steps,
   30 for h >= 1000).
3. Contention: a busy-looping process competes (placed by the OS); ptncn runs
   with the thread policy ``--ptncn-threads`` (default ``auto``, see
   :func:`ptncn_threads_setup`) and JAX with 2 threads.

Prints a table (steps/s, ratio ptncn/JAX, contention/quiet 1-thread) and, with
``--json``, writes every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JAX_STEP = os.path.join(HERE, "jax_step.py")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: the small model of the equality check (hyperparameters other than clip: published)
CHECK = dict(x_dim=12, hidden=(8, 8), batch=6, steps=6, seed=0)
TOLERANCE = 1e-5


# ---------------------------------------------------------------------------
# workers (run in a fresh process: python benchmarks/peers.py --worker ...)
# ---------------------------------------------------------------------------
def ptncn_threads_setup(mode: str) -> str:
    """ptncn's BLAS thread policy for a timed process: ``mode`` is a thread count or
    ``"auto"`` (ptncn.threads.set_threads).  Returns a line saying what was chosen."""
    from ptncn.threads import describe, parse_threads, set_threads
    return describe(set_threads(parse_threads(mode)))


def ptncn_bench_worker(h: int, runs: int, steps: int, mode: str) -> dict:
    """Steps/s of ptncn's model.step (benchmarks/throughput.py's bench) at B 50, X 49."""
    sys.path.insert(0, HERE)
    from throughput import bench
    threads = ptncn_threads_setup(mode)
    t0, c0 = time.perf_counter(), time.process_time()
    r = bench(h, 50, 49, runs=runs, steps=steps)
    busy = (time.process_time() - c0) / (time.perf_counter() - t0)
    return {"impl": "ptncn", "hidden": h, "steps_per_s": r["steps_per_s"],
            "steps_per_s_all": r["steps_per_s_all"], "cores_busy": round(busy, 2),
            "blas_threads": threads}


def reference_worker(out: str, clip: float) -> dict:
    """Run CHECK's model in ptncn and write its initial parameters, the inputs, and
    x_mu and the parameters after every step to ``out`` (.npz) for jax_step.check."""
    import numpy as np
    import ptncn
    sys.path.insert(0, HERE)
    from throughput import REFERENCE
    c = CHECK
    hyper = {**REFERENCE, "clip": clip, "zeta": 1.0}
    model = ptncn.PTNCN(c["x_dim"], c["hidden"], seed=c["seed"], **hyper)
    rng = np.random.default_rng(c["seed"] + 1)
    xs = np.eye(c["x_dim"], dtype=np.float32)[rng.integers(0, c["x_dim"], (c["steps"], c["batch"]))]
    ms = (rng.random((c["steps"], c["batch"], 1)) > 0.2).astype(np.float32)
    data = {f"init_{k}": v.copy() for k, v in model.params.items()}
    model.reset(c["batch"])
    for t in range(c["steps"]):
        data[f"xmu{t}"] = np.array(model.step(xs[t], ms[t]))
        data.update({f"p{t}_{k}": v.copy() for k, v in model.params.items()})
    meta = {k: hyper[k] for k in ("beta", "alpha", "gamma", "clip", "lr", "momentum")}
    meta.update(x_dim=c["x_dim"], hidden=list(c["hidden"]))
    np.savez(out, xs=xs, ms=ms, meta=np.array(json.dumps(meta)), **data)
    return {"written": out}


# ---------------------------------------------------------------------------
# launching workers
# ---------------------------------------------------------------------------
def find_python(peer: str, given: str | None = None) -> str | None:
    """A peer library's own interpreter (``peer`` "jax", "torch"): ``given``, else
    $PTNCN_<PEER>_PYTHON, else .venv-<peer>/bin/python in the repository; None when that
    file does not exist."""
    path = (given or os.environ.get(f"PTNCN_{peer.upper()}_PYTHON")
            or os.path.join(ROOT, f".venv-{peer}", "bin", "python"))
    return path if os.path.isfile(path) else None


def find_jax_python(given: str | None = None) -> str | None:
    """The JAX environment's interpreter (:func:`find_python`)."""
    return find_python("jax", given)


def first_cores(n: int) -> list[int]:
    """The first ``n`` cores this process may use (fewer where it has fewer)."""
    return sorted(os.sched_getaffinity(0))[:n]


def run_worker(cmd: list[str], cores: list[int] | None = None, env: dict | None = None) -> dict:
    """Run a worker, pinned to ``cores`` from its start (None: unpinned); its result is
    the JSON object on the last line of its output."""
    pin = None if cores is None else (lambda: os.sched_setaffinity(0, cores))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=pin, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def worker_env(blas_threads: int | None) -> dict:
    """The environment of a timed worker: the BLAS thread variables removed, then
    OPENBLAS_NUM_THREADS set to ``blas_threads`` (None: left unset)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if blas_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(blas_threads)
    return env


def equality_check(jax_python: str, clip: float, workdir: str,
                   jax_clip: float | None = None) -> dict:
    """ptncn writes CHECK's run, JAX replays it: per-step max |differences|.
    ``jax_clip`` gives the JAX step another clipping radius (None: the same)."""
    path = os.path.join(workdir, f"reference_clip{clip}.npz")
    run_worker([sys.executable, __file__, "--worker", "reference", "--out", path, "--clip", str(clip)],
               env=worker_env(1))
    cmd = [jax_python, JAX_STEP, "--worker", "check", "--npz", path]
    if jax_clip is not None:
        cmd += ["--clip", str(jax_clip)]
    res = run_worker(cmd, env=worker_env(1))
    res["clip"] = clip
    return res


def time_ptncn(h: int, runs: int, steps: int, threads: int | None, mode: str) -> dict:
    """ptncn's steps/s in a fresh process: ``threads`` cores and OPENBLAS_NUM_THREADS
    (None: unpinned, thread variables unset) and the policy ``mode``."""
    cores = None if threads is None else first_cores(threads)
    cmd = [sys.executable, __file__, "--worker", "ptncn", "--hidden", str(h), "--runs", str(runs),
           "--steps", str(steps), "--ptncn-threads", mode]
    res = run_worker(cmd, cores, worker_env(threads))
    res["cores"] = cores or sorted(os.sched_getaffinity(0))
    return res


def time_jax(jax_python: str, h: int, runs: int, steps: int, threads: int) -> dict:
    """The JAX step's steps/s in a fresh process pinned to the first ``threads`` cores."""
    cmd = [jax_python, JAX_STEP, "--worker", "bench", "--hidden", str(h), "--runs", str(runs),
           "--steps", str(steps), "--threads", str(threads)]
    return run_worker(cmd, first_cores(threads), worker_env(threads))


class Competitor:
    """A busy-looping process, placed by the OS, for the duration of a ``with`` block."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        return False


# ---------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------
def steps_for(h: int, given: int | None) -> int:
    """Steps per timed run: ``given``, else 30 for h >= 1000 and 100 below."""
    return given if given else (30 if h >= 1000 else 100)


def quiet_rows(jax_python, hidden, threads, runs, steps) -> list[dict]:
    """ptncn and JAX at each (h, threads), nothing else running."""
    rows = []
    for h in hidden:
        for n in threads:
            k = steps_for(h, steps)
            p = time_ptncn(h, runs, k, n, str(n))
            j = time_jax(jax_python, h, runs, k, n)
            rows.append({"case": "quiet", "hidden": h, "threads": n, "ptncn": p, "jax": j})
    return rows


def contention_rows(jax_python, hidden, runs, steps, mode) -> list[dict]:
    """ptncn (policy ``mode``) and JAX (2 threads) beside a busy process."""
    rows = []
    with Competitor():
        for h in hidden:
            k = steps_for(h, steps)
            p = time_ptncn(h, runs, k, None, mode)
            j = time_jax(jax_python, h, runs, k, 2)
            rows.append({"case": "contention", "hidden": h, "threads": f"{mode}/2", "ptncn": p,
                         "jax": j})
    return rows


def format_table(rows: list[dict]) -> str:
    """One line per row; contention rows add ptncn's (and JAX's) rate over the
    quiet 1-thread rate at the same h."""
    quiet1 = {r["hidden"]: r for r in rows if r["case"] == "quiet" and r["threads"] == 1}
    lines = [f"{'case':<10} {'h':>5} {'threads':>8} {'ptncn/s':>9} {'JAX/s':>9} {'ptncn/JAX':>9}"
             f" {'ptncn cont/q1':>13} {'JAX cont/q1':>11}"]
    for r in rows:
        p, j = r["ptncn"]["steps_per_s"], r["jax"]["steps_per_s"]
        line = (f"{r['case']:<10} {r['hidden']:>5} {str(r['threads']):>8} {p:>9.1f} {j:>9.1f}"
                f" {p / j:>9.2f}")
        q = quiet1.get(r["hidden"])
        if r["case"] == "contention" and q:
            line += (f" {p / q['ptncn']['steps_per_s']:>13.2f}"
                     f" {j / q['jax']['steps_per_s']:>11.2f}")
        lines.append(line)
    return "\n".join(lines)


def format_check(res: dict) -> str:
    steps = ", ".join(f"t{r['t']}: {max(r['x_mu'], r['params']):.1e} ({r['clipped']} clipped)"
                      for r in res["steps"])
    return f"clip {res['clip']}: max |ptncn - JAX| {res['max_diff']:.2e}  [{steps}]"


def run_checks(jax_python: str, clips=(0.05, 0.0)) -> list[dict]:
    """The equality check at each clipping radius; raises if any differs by > TOLERANCE."""
    with tempfile.TemporaryDirectory(prefix="ptncn-peers-") as d:
        results = [equality_check(jax_python, c, d) for c in clips]
    for r in results:
        print(format_check(r))
        if not r["max_diff"] <= TOLERANCE:
            raise SystemExit(f"ptncn and the JAX step differ by {r['max_diff']:.2e} > {TOLERANCE}")
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[1000, 250, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per run (default 100; 30 for h >= 1000)")
    ap.add_argument("--jax-python", default=None)
    ap.add_argument("--ptncn-threads", default="auto",
                    help="ptncn's thread policy under contention (a count or auto)")
    ap.add_argument("--json", default=None, help="write every row to this file")
    ap.add_argument("--worker", choices=["ptncn", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--clip", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        sys.path.insert(0, ROOT)
        res = (ptncn_bench_worker(args.hidden[0], args.runs, steps_for(args.hidden[0], args.steps),
                                  args.ptncn_threads) if args.worker == "ptncn"
               else reference_worker(args.out, args.clip))
        print(json.dumps(res))
        return
    jax_python = find_jax_python(args.jax_python)
    if jax_python is None:
        raise SystemExit("no JAX interpreter: pass --jax-python PATH or set PTNCN_JAX_PYTHON, or "
                         "make one: python3 -m venv .venv-jax && .venv-jax/bin/pip install "
                         "\"jax[cpu]\" numpy")
    checks = run_checks(jax_python)
    rows = quiet_rows(jax_python, args.hidden, args.threads, args.runs, args.steps)
    rows += contention_rows(jax_python, args.hidden, args.runs, args.steps, args.ptncn_threads)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checks": checks, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
