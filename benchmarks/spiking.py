"""Milliseconds per sequence step of the spiking P-TNCN, per Brian2 code-generation target.

    .venv/bin/python benchmarks/spiking.py                  # (64, 256, 256), T = 50 ms
    .venv/bin/python benchmarks/spiking.py --targets cython --steps 40 --batch 4

For each target it reports

* ``persistent``: SpikingPTNCN.step() as the learner uses it: the whole sequence is
  ONE Network.run (in a worker thread; a network operation hands each window's
  prediction and input to step()), so code generation happens once;
* ``run per step``: the same network with a fresh Network.run for every step (what
  the issue warns about): step() then end_sequence() (which ends the run), so each
  step pays Brian2's per-run preparation; the ratio of the two is the speed-up;
* ``net.run overhead``: the wall time of ``net.run(dt)`` (one 0.1 ms step) on the
  built network: Brian2's fixed cost per run call.

cpp_standalone is listed as not implemented (docs/spiking.md says why).
Timings exclude the first (code generation / compilation) step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def bench(target, sizes, window_ms, batch, steps, seed=0, dt_ms=0.1):
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
    t0 = time.perf_counter()
    for t in range(1, steps + 1):
        m.step(xs[t])
    persistent = (time.perf_counter() - t0) / steps
    m.end_sequence()
    n_rps = max(2, steps // 4)
    t0 = time.perf_counter()
    for t in range(n_rps):
        m.step(xs[t])
        m.end_sequence()
    per_run = (time.perf_counter() - t0) / n_rps
    net = m._net
    t0 = time.perf_counter()
    for _ in range(3):
        net.run(m.options["dt_ms"] * b2.ms)
    overhead = (time.perf_counter() - t0) / 3
    return {"target": target, "first_s": first, "persistent_ms": 1e3 * persistent,
            "run_per_step_ms": 1e3 * per_run, "net_run_overhead_ms": 1e3 * overhead,
            "speedup": per_run / persistent}


def main(argv=None):
    ap = argparse.ArgumentParser(description="ms per step of SpikingPTNCN per codegen target")
    ap.add_argument("--targets", nargs="+", default=["numpy", "cython", "cpp_standalone"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 256])
    ap.add_argument("--window", type=float, default=50.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--dt", type=float, default=0.1, help="simulation step (ms)")
    a = ap.parse_args(argv)
    print(f"sizes {a.sizes}, T = {a.window} ms, batch {a.batch}, dt = {a.dt} ms")
    print(f"{'target':<15}{'first step s':>13}{'ms/step':>10}{'run/step ms':>13}"
          f"{'net.run ovh ms':>16}{'speed-up':>10}")
    for target in a.targets:
        if target == "cpp_standalone":
            print(f"{target:<15}  not implemented (network operations need a runtime target)")
            continue
        r = bench(target, a.sizes, a.window, a.batch, a.steps, dt_ms=a.dt)
        print(f"{target:<15}{r['first_s']:>13.1f}{r['persistent_ms']:>10.1f}"
              f"{r['run_per_step_ms']:>13.1f}{r['net_run_overhead_ms']:>16.1f}"
              f"{r['speedup']:>10.2f}")


if __name__ == "__main__":
    main()
