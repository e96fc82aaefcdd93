"""Cost of recording: memory over a long run and time overhead per step.

    python benchmarks/recording.py memory   [--steps 100000] [--hidden 256]
    python benchmarks/recording.py overhead [--steps 300] [--hidden 1000] [--runs 5]

memory: peak RSS (VmHWM) of an online P-TNCN run (batch 50, 49 one-hot inputs)
with z1, e0, eps1 recorded for 8 batch rows every step, minus the same run
unrecorded (each in a fresh process).  overhead: median time per step
unrecorded, recorded without checksums and recorded with them (the default),
alternating runs, in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

CHILD = r"""
import os, sys, time, numpy as np
sys.path.insert(0, {root!r})
import ptncn
from ptncn.record import Recorder
h, B, X, T, path = {h}, 50, 49, {T}, {path!r}
model = ptncn.PTNCN(X, (h, h), seed=0)
rec = None
if path:
    rec = Recorder(path)
    for name in ("z1", "e0", "eps1"):
        rec.add(name, rows=list(range(8)))
    rec.start(model, batch=B)
rng = np.random.default_rng(0)
eye = np.eye(X, dtype=np.float32)
mask = np.ones((B, 1), np.float32)
model.reset(B)
t0 = time.perf_counter()
for t in range(T):
    if t % 1000 == 0:
        model.reset(B)
    model.step(eye[rng.integers(0, X, B)], mask)
    if rec is not None:
        rec.after_step(t, model)
if rec is not None:
    rec.close()
dt = time.perf_counter() - t0
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(hwm, dt)
"""


def child(h, T, path):
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, h=h, T=T, path=path)],
                         capture_output=True, text=True, check=True)
    hwm, dt = out.stdout.split()
    return int(hwm), float(dt)


def memory(a):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rec.h5")
        base, t_base = child(a.hidden, a.steps, "")
        rec, t_rec = child(a.hidden, a.steps, path)
        size = os.path.getsize(path)
    res = {"steps": a.steps, "hidden": a.hidden, "peak_rss_unrecorded_MiB": base / 2**20,
           "peak_rss_recorded_MiB": rec / 2**20, "extra_MiB": (rec - base) / 2**20,
           "file_MiB": size / 2**20, "seconds_unrecorded": t_base, "seconds_recorded": t_rec}
    print(f"{a.steps} steps, h={a.hidden}: peak RSS {base / 2**20:.1f} MiB unrecorded, "
          f"{rec / 2**20:.1f} MiB recorded (+{(rec - base) / 2**20:.1f} MiB); "
          f"file {size / 2**20:.1f} MiB")
    print(json.dumps(res))


MODES = {"unrecorded": None, "recorded, no checksum": False, "recorded": True}


def _time_per_step(a, mode, path):
    """Seconds per step of one run (after 5 warm-up steps) in ``mode`` (see MODES)."""
    import numpy as np

    import ptncn
    from ptncn.record import Recorder
    B, X = 50, 49
    eye = np.eye(X, dtype=np.float32)
    mask = np.ones((B, 1), np.float32)
    model = ptncn.PTNCN(X, (a.hidden, a.hidden), seed=0)
    rec = None
    if MODES[mode] is not None:
        rec = Recorder(path, checksum=MODES[mode])
        for name in ("z1", "e0", "eps1"):
            rec.add(name, rows=list(range(8)))
        rec.start(model, batch=B)
    rng = np.random.default_rng(0)
    model.reset(B)
    for t in range(5):
        model.step(eye[rng.integers(0, X, B)], mask)
    t0 = time.perf_counter()
    for t in range(a.steps):
        model.step(eye[rng.integers(0, X, B)], mask)
        if rec is not None:
            rec.after_step(t, model)
    if rec is not None:
        rec.close()
    return (time.perf_counter() - t0) / a.steps


def overhead(a):
    """Median time per step unrecorded, recorded without and with checksums (fletcher32),
    the three alternating in one process."""
    sys.path.insert(0, ROOT)
    import numpy as np
    times = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.runs):
            for k, mode in enumerate(MODES):
                times[mode].append(_time_per_step(a, mode, os.path.join(d, f"r{r}_{k}.h5")))
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = med["unrecorded"]
    frac = {k: v / base - 1 for k, v in med.items() if k != "unrecorded"}
    cost = med["recorded"] / med["recorded, no checksum"] - 1
    print(f"h={a.hidden}, B=50, recording z1, e0, eps1 (8 rows), medians of {a.runs}: "
          f"{1e3 * base:.2f} ms/step unrecorded, "
          f"{1e3 * med['recorded, no checksum']:.2f} recorded without checksums "
          f"({100 * frac['recorded, no checksum']:+.1f}%), {1e3 * med['recorded']:.2f} "
          f"with checksums ({100 * frac['recorded']:+.1f}%); checksums cost {100 * cost:+.1f}%")
    print(json.dumps({"hidden": a.hidden, "ms_per_step": {k: 1e3 * v for k, v in med.items()},
                      "overhead_fraction": frac, "checksum_cost_fraction": cost}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["memory", "overhead"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args(argv)
    if a.what == "memory":
        a.steps, a.hidden = a.steps or 100_000, a.hidden or 256
        memory(a)
    else:
        a.steps, a.hidden = a.steps or 300, a.hidden or 1000
        overhead(a)


if __name__ == "__main__":
    main()
