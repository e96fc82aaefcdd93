"""Peak resident memory of online training vs sequence length (must stay flat).

    python benchmarks/memory.py [--hidden 250] [--batch 50] [--short 100] [--long 10000]

Each measurement runs in a fresh subprocess: build a P-TNCN (reference
hyperparameters, Nesterov), then step it online through one sequence of the
given length (one-hot inputs generated step by step, never held in memory) and
report the process's peak RSS (``VmHWM``).  The baselines are measured the
same way (vanilla RNN of width ``--hidden``, SGD): the online ones (UORO,
TBPTT) stay flat, while BPTT stores the whole sequence and grows with it.

    python benchmarks/memory.py --learners ptncn uoro tbptt bptt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

CHILD = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
import ptncn
learner, h, B, X, T = {learner!r}, {h}, {B}, {X}, {T}
if learner == "ptncn":
    model = ptncn.PTNCN(X, (h, h), seed=0)
else:
    from ptncn.harness import learner_cls
    model = learner_cls(learner)(X, hidden=h, out="softmax", seed=0, optimizer="sgd", lr=0.01)
rng = np.random.default_rng(0)
eye = np.eye(X, dtype=np.float32)
mask = np.ones((B, 1), np.float32)
model.reset(B)
for t in range(T):
    model.step(eye[rng.integers(0, X, B)], mask)
model.end_sequence()
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
print(hwm())
"""


def peak_rss(learner: str, h: int, B: int, X: int, T: int) -> int:
    code = CHILD.format(root=ROOT, learner=learner, h=h, B=B, X=X, T=T)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=250)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--inputs", type=int, default=49)
    ap.add_argument("--short", type=int, default=100)
    ap.add_argument("--long", type=int, default=10000)
    ap.add_argument("--learners", nargs="+", default=["ptncn", "uoro", "tbptt", "bptt"])
    a = ap.parse_args(argv)
    rows = []
    for learner in a.learners:
        short = peak_rss(learner, a.hidden, a.batch, a.inputs, a.short)
        long = peak_rss(learner, a.hidden, a.batch, a.inputs, a.long)
        rows.append({"learner": learner, "hidden": a.hidden, "batch": a.batch,
                     f"peak_rss_{a.short}_MiB": short / 2**20,
                     f"peak_rss_{a.long}_MiB": long / 2**20,
                     "ratio": long / short})
        print(f"{learner:>11}: peak RSS {short / 2**20:8.1f} MiB at {a.short} steps, "
              f"{long / 2**20:8.1f} MiB at {a.long} steps (ratio {long / short:.3f})")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
