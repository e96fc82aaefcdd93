"""ptncn's LSTM-BPTT beside a plain PyTorch LSTM: agreement, then training tokens/s.

    .venv/bin/python benchmarks/lstm_torch.py [--threads 1 2] [--runs 5] [--batches 4]
        [--warmup 1] [--hidden 250] [--lr 0.002] [--torch-python PATH] [--json PATH]

The PyTorch side (benchmarks/torch_lstm_step.py) runs in its own environment, found
by ``--torch-python``, else ``$PTNCN_TORCH_PYTHON``, else ``.venv-torch/bin/python`` in
the repository; make one with ``python3 -m venv .venv-torch && .venv-torch/bin/pip
install torch numpy`` (the CPU wheel is enough).

Both sides train on the same batches of the ``ptb_char`` task of
models/ptb_char_small.toml (50 lines a batch, padded at the end, masked; data under
``$PTNCN_DATA``), one update per batch: the gradient of the sum over the steps of the
masked batch-mean cross-entropy of the prediction of ``x_t`` made from ``h_{t-1}``,
back-propagated through the whole line.

1. Agreement: both start from ptncn's initial weights and make 3 updates on the first
   3 batches in float64 with SGD and no clipping; every parameter must agree to 1e-6
   after each update, or nothing is timed.
2. Timing: ptncn's ``BPTT(cell="lstm")`` (``reset``, ``step`` over the line,
   ``end_sequence``) and ``nn.LSTM`` + ``nn.Linear`` (one forward over the line, one
   backward), float32, Adam, global-norm clip 1, from the same initial weights.  For each
   thread count n, a fresh process per side pinned to the first n cores (ptncn:
   ``OPENBLAS_NUM_THREADS=n`` and :func:`ptncn.threads.set_threads`; PyTorch:
   ``torch.set_num_threads(n)``).  ``--warmup`` batches first, then ``--runs`` passes
   over the next ``--batches`` batches; the median rate.  Tokens are the scored
   (mask 1) characters of the timed batches.

The two Adams differ only in where epsilon enters (ptncn follows TensorFlow 1,
``lr_t m / (sqrt(v) + eps)``; PyTorch divides by ``sqrt(v_hat) + eps``), which costs
the same.  Prints the agreement, the load average, a table (tokens/s, ratio
ptncn/PyTorch) and, with ``--json``, writes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from peers import (find_python, first_cores, ptncn_threads_setup, run_worker,  # noqa: E402
                   worker_env)

TORCH_STEP = os.path.join(HERE, "torch_lstm_step.py")
CONFIG = os.path.join(ROOT, "models", "ptb_char_small.toml")
NAMES = ("W_in", "W_rec", "b", "W_out", "c")
TOLERANCE = 1e-6
CHECK_UPDATES = 3
#: the check's SGD step size: small, as the updates are not clipped
CHECK_LR = 2.0 ** -8
SEED = 1234


# ---------------------------------------------------------------------------
# batches and the ptncn side
# ---------------------------------------------------------------------------
def ptb_batches(first: int, n: int, data_dir: str | None = None):
    """(x_dim, [(idx (T, B) int32 with -1 on padding, mask (T, B) float32)]) for batches
    ``first .. first + n - 1`` of models/ptb_char_small.toml's training task."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from ptncn.harness import make_task
    with open(CONFIG, "rb") as f:
        cfg = tomllib.load(f)
    task = make_task(cfg, "train", data_dir)
    out = []
    for i in range(first, first + n):
        idx, mask, _ = task.indices(i)
        out.append((idx, mask[..., 0]))
    return task.x_dim, out


def random_lines(x_dim: int, batch: int, max_len: int, n: int, seed: int = 0):
    """``n`` batches of random symbol lines of lengths 2 .. ``max_len``, padded at the end
    (the layout of :func:`ptb_batches`)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lengths = rng.integers(2, max_len + 1, batch)
        valid = np.arange(lengths.max())[:, None] < lengths[None, :]
        idx = np.where(valid, rng.integers(0, x_dim, valid.shape), -1).astype(np.int32)
        out.append((idx, valid.astype(np.float32)))
    return out


def one_hot(idx: np.ndarray, mask: np.ndarray, x_dim: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(x (T, B, X) one-hot, zero on padding; m (T, B, 1)) as ``dtype``."""
    x = np.zeros((*idx.shape, x_dim), dtype)
    t, b = np.nonzero(idx >= 0)
    x[t, b, idx[t, b]] = 1
    return x, mask[..., None].astype(dtype)


def make_bptt(x_dim: int, hidden: int, dtype: str = "float32", optimizer: str = "adam",
              lr: float = 0.002, clip: float = 1.0, init: dict | None = None):
    """ptncn's BPTT with the LSTM cell; ``init`` replaces its initial parameters."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from ptncn.baselines.bptt import BPTT
    model = BPTT(x_dim, hidden=hidden, cell="lstm", dtype=dtype, optimizer=optimizer, lr=lr,
                 clip=clip, seed=SEED)
    if init is not None:
        model.params.update({k: init[k] for k in NAMES})
    return model


def train_line(model, x: np.ndarray, m: np.ndarray) -> None:
    """One BPTT update on a batch of lines (x (T, B, X), m (T, B, 1))."""
    model.reset(x.shape[1])
    for t in range(x.shape[0]):
        model.step(x[t], m[t])
    model.end_sequence()


def write_npz(path: str, batches, meta: dict, arrays: dict) -> str:
    """Batches (``idx_<i>``, ``mask_<i>``, ``n_batches``), ``meta`` as JSON and ``arrays``."""
    data = {f"idx_{i}": idx for i, (idx, _) in enumerate(batches)}
    data.update({f"mask_{i}": m for i, (_, m) in enumerate(batches)})
    np.savez(path, n_batches=np.array(len(batches)), meta=np.array(json.dumps(meta)),
             **data, **arrays)
    return path


def reference_run(batches, x_dim: int, hidden: int, lr: float) -> dict[str, np.ndarray]:
    """ptncn in float64, SGD, no clipping, one update per batch: the initial parameters
    (``init_<name>``) and those after each update (``p<u>_<name>``)."""
    model = make_bptt(x_dim, hidden, "float64", "sgd", lr, 0.0)
    out = {f"init_{k}": model.params[k].copy() for k in NAMES}
    for u, (idx, mask) in enumerate(batches):
        train_line(model, *one_hot(idx, mask, x_dim, np.float64))
        out.update({f"p{u}_{k}": model.params[k].copy() for k in NAMES})
    return out


def bench_ptncn(path: str, runs: int, warmup: int) -> dict:
    """Scored tokens/s of ptncn's float32 Adam BPTT on the batches in ``path`` (as
    torch_lstm_step.bench: ``warmup`` batches, then ``runs`` passes over the rest)."""
    ref = np.load(path)
    meta = json.loads(str(ref["meta"]))
    model = make_bptt(meta["x_dim"], meta["hidden"], "float32", "adam", meta["lr"], meta["clip"],
                      init={k: ref[f"init_{k}"] for k in NAMES})
    batches = [one_hot(ref[f"idx_{i}"], ref[f"mask_{i}"], meta["x_dim"], np.float32)
               for i in range(int(ref["n_batches"]))]
    for x, m in batches[:warmup]:
        train_line(model, x, m)
    timed = batches[warmup:]
    tokens = float(sum(float(m.sum()) for _, m in timed))
    rates, busy = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        for x, m in timed:
            train_line(model, x, m)
        wall = time.perf_counter() - t0
        rates.append(tokens / wall)
        busy.append((time.process_time() - c0) / wall)
    return {"impl": "ptncn", "tokens_per_s": float(np.median(rates)),
            "tokens_per_s_all": [round(r, 1) for r in rates], "tokens_per_run": tokens,
            "cores_busy": round(float(np.median(busy)), 2)}


# ---------------------------------------------------------------------------
# launching the sides
# ---------------------------------------------------------------------------
def find_torch_python(given: str | None = None) -> str | None:
    """The PyTorch environment's interpreter (:func:`peers.find_python`)."""
    return find_python("torch", given)


def agreement_check(torch_python: str, batches, x_dim: int, hidden: int, workdir: str,
                    lr: float = CHECK_LR) -> dict:
    """ptncn's float64 SGD run on ``batches``, replayed by PyTorch: per update, the
    largest |difference| of any parameter and how far the parameters moved."""
    arrays = reference_run(batches, x_dim, hidden, lr)
    path = write_npz(os.path.join(workdir, "reference.npz"), batches,
                     {"x_dim": x_dim, "hidden": hidden, "lr": lr}, arrays)
    res = run_worker([torch_python, TORCH_STEP, "--worker", "check", "--npz", path],
                     env=worker_env(1))
    res["hidden"] = hidden
    return res


def time_side(impl: str, torch_python: str, path: str, threads: int, runs: int,
              warmup: int) -> dict:
    """One side's tokens/s in a fresh process pinned to the first ``threads`` cores."""
    if impl == "ptncn":
        cmd = [sys.executable, __file__, "--worker", "ptncn", "--npz", path,
               "--threads", str(threads)]
    else:
        cmd = [torch_python, TORCH_STEP, "--worker", "bench", "--npz", path,
               "--threads", str(threads)]
    cmd += ["--runs", str(runs), "--warmup", str(warmup)]
    res = run_worker(cmd, first_cores(threads), worker_env(threads))
    res["threads"] = threads
    return res


# ---------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------
def format_check(res: dict) -> str:
    ups = ", ".join(f"u{r['update']}: {r['max_diff']:.1e} ({r['worst']})" for r in res["updates"])
    return (f"agreement (h {res['hidden']}, float64, SGD, no clip): max |ptncn - torch| "
            f"{res['max_diff']:.2e} [{ups}]; parameters moved up to {res['moved']:.2e}")


def format_table(rows: list[dict]) -> str:
    """One line per thread count: tokens/s of each side, their ratio, the cores each kept
    busy and the one-minute load average before and after the pair of runs."""
    lines = [f"{'threads':>7} {'ptncn tok/s':>12} {'torch tok/s':>12} {'ptncn/torch':>11}"
             f" {'ptncn cores':>11} {'torch cores':>11} {'load':>11}"]
    for r in rows:
        p, t = r["ptncn"], r["torch"]
        load = (f"{r['loadavg_before'][0]:.2f}->{r['loadavg_after'][0]:.2f}"
                if "loadavg_before" in r else "")
        lines.append(f"{r['threads']:>7} {p['tokens_per_s']:>12.0f} {t['tokens_per_s']:>12.0f}"
                     f" {p['tokens_per_s'] / t['tokens_per_s']:>11.3f}"
                     f" {p['cores_busy']:>11.2f} {t['cores_busy']:>11.2f} {load:>11}")
    return "\n".join(lines)


def run_check(torch_python: str, hidden: int, data_dir: str | None) -> dict:
    """The agreement check on the first batches of the task; exits if it fails."""
    x_dim, batches = ptb_batches(0, CHECK_UPDATES, data_dir)
    with tempfile.TemporaryDirectory(prefix="ptncn-lstm-torch-") as d:
        res = agreement_check(torch_python, batches, x_dim, hidden, d)
    print(format_check(res))
    if not res["max_diff"] <= TOLERANCE:
        raise SystemExit(f"ptncn and PyTorch differ by {res['max_diff']:.2e} > {TOLERANCE}")
    return res


def run_timing(torch_python: str, args) -> tuple[list[dict], dict]:
    """Both sides at each thread count on the same batches; (rows, what was timed)."""
    x_dim, batches = ptb_batches(0, args.warmup + args.batches, args.data_dir)
    model = make_bptt(x_dim, args.hidden, "float32", "adam", args.lr, args.clip)
    meta = {"x_dim": x_dim, "hidden": args.hidden, "lr": args.lr, "clip": args.clip}
    info = {**meta, "warmup": args.warmup, "batches": args.batches, "runs": args.runs,
            "lengths": [int(m.shape[0]) for _, m in batches],
            "timed_tokens": float(sum(m.sum() for _, m in batches[args.warmup:]))}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptncn-lstm-torch-") as d:
        path = write_npz(os.path.join(d, "batches.npz"), batches, meta,
                         {f"init_{k}": model.params[k] for k in NAMES})
        for n in args.threads:
            before = os.getloadavg()
            p = time_side("ptncn", torch_python, path, n, args.runs, args.warmup)
            t = time_side("torch", torch_python, path, n, args.runs, args.warmup)
            rows.append({"threads": n, "ptncn": p, "torch": t, "loadavg_before": before,
                         "loadavg_after": os.getloadavg()})
    return rows, info


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batches", type=int, default=4, help="timed batches per run")
    ap.add_argument("--warmup", type=int, default=1, help="batches before timing")
    ap.add_argument("--hidden", type=int, default=250)
    ap.add_argument("--lr", type=float, default=0.002, help="Adam's learning rate")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--data-dir", default=None, help="default: $PTNCN_DATA")
    ap.add_argument("--torch-python", default=None)
    ap.add_argument("--json", default=None, help="write the check and every row to this file")
    ap.add_argument("--worker", choices=["ptncn"], help=argparse.SUPPRESS)
    ap.add_argument("--npz", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.worker:
        threads = ptncn_threads_setup(str(args.threads[0]))
        res = bench_ptncn(args.npz, args.runs, args.warmup)
        res.update(blas_threads=threads, cores=sorted(os.sched_getaffinity(0)))
        print(json.dumps(res))
        return
    torch_python = find_torch_python(args.torch_python)
    if torch_python is None:
        raise SystemExit("no PyTorch interpreter: pass --torch-python PATH or set "
                         "PTNCN_TORCH_PYTHON, or make one: python3 -m venv .venv-torch && "
                         ".venv-torch/bin/pip install torch numpy")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    check = run_check(torch_python, args.hidden, args.data_dir)
    rows, info = run_timing(torch_python, args)
    print(f"h {info['hidden']}, batch 50, {info['batches']} timed batches "
          f"({info['timed_tokens']:.0f} scored tokens, lines of {info['lengths'][args.warmup:]} "
          f"steps) after {info['warmup']} warm-up, median of {info['runs']} runs")
    print(format_table(rows))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"check": check, "timing": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
