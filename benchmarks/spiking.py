"""Milliseconds per sequence step of the spiking P-TNCN, per Brian2 code-generation target.

    .venv/bin/python benchmarks/spiking.py                  # (64, 256, 256), T = 50 ms
    .venv/bin/python benchmarks/spiking.py --targets cython --steps 40 --batch 4

For each target it reports

* ``ms/step``: SpikingPTNCN.step() as the learner uses it.  Runtime targets (numpy,
  cython): the whole sequence is ONE Network.run (in a worker thread; a network
  operation at every half-window boundary hands the counts over and takes the next
  half's currents), so code generation happens once.  cpp_standalone: one compiled
  server process for the whole run, fed half-window by half-window through a pipe
  (ptncn/spiking/standalone.py);
* ``run/step ms`` (runtime targets): the same network with a fresh Network.run for
  every step: step() then end_sequence() (which ends the run), so each step pays
  Brian2's per-run preparation;
* ``net.run ovh ms``: the wall time of ``net.run(dt)`` (one time step) on the built
  network: Brian2's fixed cost per run call;
* ``speed-up``: the fastest measured "one net.run per step" time divided by this
  target's ms/step (each statistic is the median of ``--repeats`` timed blocks).

Timings exclude the first step (code generation / compilation; the standalone binary
is compiled once per network shape and cached).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def bench(target, sizes, window_ms, batch, steps, seed=0, dt_ms=0.1, repeats=3):
    from ptncn.spiking import SpikingPTNCN, import_brian2
    b2 = import_brian2()
    x_dim, *hidden = sizes
    m = SpikingPTNCN(x_dim, hidden=tuple(hidden), window_ms=window_ms, target=target,
                     seed=seed, optimizer="sgd", lr=0.01, dt_ms=dt_ms)
    rng = np.random.default_rng(seed)
    xs = (rng.random((steps + 1, batch, x_dim)) > 0.5).astype(np.float32)
    m.reset(batch)
    t0 = time.perf_counter()
    m.step(xs[0])
    first = time.perf_counter() - t0
    blocks = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for t in range(1, steps + 1):
            m.step(xs[t])
        blocks.append((time.perf_counter() - t0) / steps)
    persistent = float(np.median(blocks))
    m.end_sequence()
    out = {"target": target, "first_s": first, "persistent_ms": 1e3 * persistent,
           "run_per_step_ms": None, "net_run_overhead_ms": None}
    if target != "cpp_standalone":
        n_rps = max(2, steps // 4)
        per = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for t in range(n_rps):
                m.step(xs[t])
                m.end_sequence()
            per.append((time.perf_counter() - t0) / n_rps)
        net = m.backend.net
        t0 = time.perf_counter()
        for _ in range(3):
            net.run(m.config.dt_ms * b2.ms)
        out["run_per_step_ms"] = 1e3 * float(np.median(per))
        out["net_run_overhead_ms"] = 1e3 * (time.perf_counter() - t0) / 3
    m.close()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="ms per step of SpikingPTNCN per codegen target")
    ap.add_argument("--targets", nargs="+", default=["numpy", "cython", "cpp_standalone"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 256])
    ap.add_argument("--window", type=float, default=50.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--dt", type=float, default=0.1, help="simulation step (ms)")
    ap.add_argument("--repeats", type=int, default=3, help="timed blocks (median)")
    a = ap.parse_args(argv)
    print(f"sizes {a.sizes}, T = {a.window} ms, batch {a.batch}, dt = {a.dt} ms, "
          f"{a.steps} steps x {a.repeats} blocks")
    rows = [bench(t, a.sizes, a.window, a.batch, a.steps, dt_ms=a.dt, repeats=a.repeats)
            for t in a.targets]
    rps = [r["run_per_step_ms"] for r in rows if r["run_per_step_ms"] is not None]
    ref = min(rps) if rps else None
    print(f"{'target':<15}{'first step s':>13}{'ms/step':>10}{'run/step ms':>13}"
          f"{'net.run ovh ms':>16}{'speed-up':>10}")
    fmt = (lambda v: f"{v:.1f}" if v is not None else "-")
    for r in rows:
        sp = f"{ref / r['persistent_ms']:.1f}x" if ref else "-"
        print(f"{r['target']:<15}{r['first_s']:>13.1f}{r['persistent_ms']:>10.2f}"
              f"{fmt(r['run_per_step_ms']):>13}{fmt(r['net_run_overhead_ms']):>16}{sp:>10}")
    if ref:
        print(f"speed-up = fastest one-net.run-per-step time ({ref:.1f} ms) / ms per step")


if __name__ == "__main__":
    main()
