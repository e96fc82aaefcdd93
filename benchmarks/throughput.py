"""P-TNCN throughput at the published shapes (prints a table and JSON).

    python benchmarks/throughput.py [--runs 7] [--steps 40] [--shapes 1000,50,49 250,50,49]

For each (hidden h, batch B, inputs X): the reference hyperparameters
(2 layers of h, tanh, softmax, beta 0.1, alpha 0.001, gamma 1, clip 1.0,
Nesterov lr 0.075 momentum 0.95) on one-hot inputs; one step = forward,
targets, local updates and the Nesterov update of all 9 matrices.  Reports the
median over ``--runs`` timed runs of ``--steps`` steps each (after warm-up):
steps/s, tokens/s (= steps/s x B), GFLOP/s achieved by the step's matrix
products, the same machine's measured float32 GEMM peak, and the time per
phase (pre-activations, forward pass with corrected states, updates, optimizer;
timed in a separate pass, so the timers do not touch the rates).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
import ptncn  # noqa: E402
from ptncn.blas import get_backend  # noqa: E402
from ptncn.ptncn import carry, forward  # noqa: E402
from ptncn.threads import step_done  # noqa: E402

REFERENCE = dict(act="tanh", out="softmax", beta=0.1, alpha=0.001, gamma=1.0, clip=1.0,
                 wght_sd=0.05, err_wght_sd=0.05, optimizer="nesterov", lr=0.075,
                 momentum=0.95)


def step_flops(h: int, B: int, X: int) -> float:
    """Matrix-product FLOPs of one learning step of the 2-layer model."""
    fwd = 2 * B * ((X + h + h) * h + (h + h) * h + h * X + h * h + X * h + h * h)
    upd = 2 * B * ((X + h + h) * h + (h + h) * h + h * X + X * h + h * h + h * h)
    return float(fwd + upd)


def gemm_peak(n: int = 1000, repeats: int = 7) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.copy()
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        ts.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / min(ts) / 1e9


def phase_times(model, xs, mask) -> dict:
    """Seconds spent in each piece of the step, summed over ``xs``: the engine's
    pre-activations (``preact``), the rest of the forward pass with the error units
    and corrected states (``forward``), the local updates and the optimizer."""
    acc = {"preact": 0.0, "forward": 0.0, "updates": 0.0, "optimizer": 0.0}
    cfg, eng, p = model.config, model.engine, model.params
    for x in xs:
        t0 = time.perf_counter()
        state = model.state
        hs, ctx = eng.preactivations(state)
        t1 = time.perf_counter()
        q = forward(p, state, x, mask, cfg, model.phi, model.out_fn, model.rng, hs)
        t2 = time.perf_counter()
        upd = eng.updates(state, q, ctx, x.shape[0])
        t3 = time.perf_counter()
        eng.apply(model.optimizer, upd)
        t4 = time.perf_counter()
        model.state = carry(state, x, q)
        acc["preact"] += t1 - t0
        acc["forward"] += t2 - t1
        acc["updates"] += t3 - t2
        acc["optimizer"] += t4 - t3
    return acc


def bench(h: int, B: int, X: int, runs: int, steps: int, seed: int = 0) -> dict:
    model = ptncn.PTNCN(X, (h, h), seed=seed, **REFERENCE)
    rng = np.random.default_rng(seed)
    xs = np.eye(X, dtype=np.float32)[rng.integers(0, X, (steps, B))]
    mask = np.ones((B, 1), np.float32)
    model.reset(B)
    for t in range(5):                       # warm-up (and leave the first-step branch)
        model.step(xs[t % steps], mask)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for t in range(steps):
            started = time.perf_counter()
            model.step(xs[t], mask)
            # as ptncn's simulation loop: the step's time to the thread tuner, if any
            step_done(time.perf_counter() - started, h)
        rates.append(steps / (time.perf_counter() - t0))
    # phase breakdown: a separate pass through the step's pieces, timed one by one
    acc = phase_times(model, xs, mask)
    med = float(np.median(rates))
    flops = step_flops(h, B, X)
    return {"hidden": h, "batch": B, "inputs": X, "runs": runs, "steps_per_run": steps,
            "steps_per_s": med, "steps_per_s_all": [round(r, 2) for r in rates],
            "tokens_per_s": med * B, "ms_per_step": 1e3 / med,
            "gflop_per_step": flops / 1e9, "gflops_achieved": flops * med / 1e9,
            "phase_ms": {k: 1e3 * v / steps for k, v in acc.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--shapes", nargs="+", default=["1000,50,49", "250,50,49"])
    args = ap.parse_args(argv)
    peak = gemm_peak()
    rows = [bench(*map(int, s.split(",")), runs=args.runs, steps=args.steps) for s in args.shapes]
    print(f"float32 GEMM peak (1000^3, best of 7): {peak:.1f} GFLOP/s; "
          f"BLAS backend: {get_backend().name}; numpy {np.__version__}; {platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    hdr = (f"{'h':>5} {'B':>3} {'X':>3} {'steps/s':>8} {'tokens/s':>9} {'ms/step':>8} "
           f"{'GFLOP/s':>8} {'%peak':>6} | {'preact':>6} {'forward':>7} {'updates':>7} {'optim':>6} ms")
    print(hdr)
    for r in rows:
        ph = r["phase_ms"]
        print(f"{r['hidden']:>5} {r['batch']:>3} {r['inputs']:>3} {r['steps_per_s']:>8.1f} "
              f"{r['tokens_per_s']:>9.0f} {r['ms_per_step']:>8.2f} {r['gflops_achieved']:>8.1f} "
              f"{100 * r['gflops_achieved'] / peak:>5.0f}% | {ph['preact']:>6.2f} "
              f"{ph['forward']:>7.2f} {ph['updates']:>7.2f} {ph['optimizer']:>6.2f}")
    print(json.dumps({"gemm_peak_gflops": peak, "blas_backend": get_backend().name,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
