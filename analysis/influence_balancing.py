"""Influence balancing (Tallec & Ollivier 2018, UORO): RTRL, UORO and NoBackTrack converge,
TBPTT diverges unless its truncation is much longer than the chain.

The task and the learners are in :mod:`ptncn.baselines.influence`: a linear recurrent
model ``s_t = A s_{t-1} + theta c`` with one scalar parameter whose short-term influence
on the output is positive and its long-term influence negative.  Every learner starts at
theta = 0 (loss 0.5) with plain SGD at the same learning rate.

Run (about 30 s on one core)::

    .venv/bin/python analysis/influence_balancing.py --out influence_balancing.png

It prints a table (learner, k, the influence of theta on the output that the learner's
gradient accounts for -- the exact kappa for the online methods, the window average
for TBPTT(k), whose updates have the wrong sign when it is positive -- and the final
loss = mean of the last 1000 steps, "diverged" when the loss blew past 1e12) and
writes the loss-versus-step figure (log scale, running mean over 200 steps)
to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ptncn.baselines.influence import InfluenceBalancing, run  # noqa: E402

RUNS = [("rtrl", 1), ("uoro", 1), ("nobacktrack", 1), ("tbptt", 1), ("tbptt", 10),
        ("tbptt", 50), ("tbptt", 100), ("tbptt", 200)]


def running_mean(x: np.ndarray, w: int) -> np.ndarray:
    x = np.where(np.isfinite(x), x, np.nan)
    c = np.nancumsum(np.concatenate([[0.0], x]))
    out = (c[w:] - c[:-w]) / w
    out[np.isnan(x[w - 1:])] = np.nan
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="figure path (.png or .pdf)")
    ap.add_argument("--n", type=int, default=23, help="state size")
    ap.add_argument("--n-minus", type=int, default=13, help="units with a -theta input")
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0, help="seed of UORO/NoBackTrack's signs")
    args = ap.parse_args(argv)

    task = InfluenceBalancing(n=args.n, n_minus=args.n_minus)
    print(f"influence balancing: n = {task.n}, n_minus = {task.n_minus}, A = "
          f"{task.a_diag} I + {task.a_sup} N, long-term influence kappa = {task.kappa:g}, "
          f"theta* = {task.theta_star:g}; lr = {args.lr:g}, {args.steps} steps, theta0 = 0")
    print(f"{'learner':<12} {'k':>4} {'influence seen':>15} {'final loss':>12} {'seconds':>8}")
    curves = {}
    for learner, k in RUNS:
        t0 = time.perf_counter()
        losses = run(task, learner, args.steps, args.lr, k=k, seed=args.seed)
        dt = time.perf_counter() - t0
        tail = losses[-1000:]
        final = "diverged" if not np.all(np.isfinite(tail)) else f"{tail.mean():.3g}"
        seen = task.window_influence(k) if learner == "tbptt" else task.kappa
        kk = str(k) if learner == "tbptt" else "-"
        print(f"{learner:<12} {kk:>4} {seen:>15.3g} {final:>12} {dt:>8.1f}")
        curves[(learner, k)] = losses

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (learner, k), losses in curves.items():
        label = f"TBPTT(k={k})" if learner == "tbptt" else {"rtrl": "RTRL", "uoro": "UORO",
                                                            "nobacktrack": "NoBackTrack"}[learner]
        y = running_mean(losses, 200)
        ax.plot(np.arange(len(y)) + 200, y, label=label,
                lw=2 if learner != "tbptt" else 1, ls="-" if learner != "tbptt" else "--")
    ax.set_yscale("log")
    ax.set_ylim(1e-20, 1e8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (running mean, 200 steps)")
    ax.set_title(f"influence balancing, n = {task.n}, n_minus = {task.n_minus}, lr = {args.lr:g}")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
