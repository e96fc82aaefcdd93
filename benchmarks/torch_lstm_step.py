"""Whole-line LSTM training in plain PyTorch: the peer of ptncn's BPTT with ``cell = "lstm"``.

    python benchmarks/torch_lstm_step.py --worker check --npz DIR/reference.npz
    python benchmarks/torch_lstm_step.py --worker bench --npz DIR/batches.npz --threads 1

``benchmarks/lstm_torch.py`` writes the .npz files and times both sides.  The model is
``nn.LSTM(X, H)`` and ``nn.Linear(H, X)``; one update per batch of lines:

* the prediction of ``x_t`` is read from ``h_{t-1}`` (``h_{-1} = 0``):
  ``logits_t = Linear(h_{t-1})``;
* the loss is the masked batch-mean cross-entropy of each step,
  ``L_t = sum_b m_tb CE(logits_tb, x_tb) / sum_b m_tb`` (0 where no row is scored),
  summed over the steps of the line;
* one backward pass over the whole line, ``clip_grad_norm_(clip)`` (0: off), one
  optimizer step (Adam, or SGD for the agreement check).

This equals ptncn's BPTT on batches whose padding is at the end of each row (lines of
different lengths, as PTB's): ptncn holds a padded row's state, ``nn.LSTM`` runs on over
the zero inputs, and neither touches a scored loss.

Parameters travel in ptncn's layout (row-vector convention, gates i, f, g, o as
PyTorch's): ``weight_ih = W_in.T``, ``weight_hh = W_rec.T``, ``bias_ih = b``,
``bias_hh = 0`` (frozen: a second trained bias would take the same gradient
twice), Linear ``weight = W_out.T``, ``bias = c``.

This file runs in its own environment (torch and numpy, no ptncn); make one with
``python3 -m venv /work/venvs/torch && /work/venvs/torch/bin/pip install torch numpy``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

NAMES = ("W_in", "W_rec", "b", "W_out", "c")


def limit_threads(n: int) -> None:
    """Keep PyTorch's intra-op pool to ``n`` threads and its inter-op pool to one."""
    import torch
    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)


def read_batches(data) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (idx (T, B) int, mask (T, B) float) pairs stored as ``idx_<i>``, ``mask_<i>``."""
    n = int(data["n_batches"])
    return [(data[f"idx_{i}"], data[f"mask_{i}"]) for i in range(n)]


def build(params: dict, dtype):
    """(lstm, linear) holding ``params`` (ptncn's layout) as ``dtype``."""
    import torch
    X, H4 = params["W_in"].shape
    lstm = torch.nn.LSTM(X, H4 // 4).to(dtype)
    linear = torch.nn.Linear(H4 // 4, X).to(dtype)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(t(params["W_in"].T))
        lstm.weight_hh_l0.copy_(t(params["W_rec"].T))
        lstm.bias_ih_l0.copy_(t(params["b"]))
        lstm.bias_hh_l0.zero_()
        linear.weight.copy_(t(params["W_out"].T))
        linear.bias.copy_(t(params["c"]))
    lstm.bias_hh_l0.requires_grad_(False)    # one bias, as ptncn's: bias_ih alone learns
    return lstm, linear


def trained(lstm, linear) -> list:
    """The parameters that learn (all but the frozen ``bias_hh``)."""
    return [p for p in (*lstm.parameters(), *linear.parameters()) if p.requires_grad]


def to_ptncn(lstm, linear) -> dict[str, np.ndarray]:
    """The parameters in ptncn's layout (``b`` = bias_ih + bias_hh)."""
    g = lambda p: p.detach().cpu().numpy()  # noqa: E731
    return {"W_in": g(lstm.weight_ih_l0).T, "W_rec": g(lstm.weight_hh_l0).T,
            "b": g(lstm.bias_ih_l0) + g(lstm.bias_hh_l0), "W_out": g(linear.weight).T,
            "c": g(linear.bias)}


def tensors(idx: np.ndarray, mask: np.ndarray, x_dim: int, dtype):
    """(one-hot x (T, B, X), targets (T, B) with -100 on padding, mask (T, B)) as tensors."""
    import torch
    import torch.nn.functional as F
    target = torch.as_tensor(idx.astype(np.int64))
    valid = target >= 0
    x = F.one_hot(target.clamp_min(0), x_dim).to(dtype) * valid.unsqueeze(-1).to(dtype)
    return x, torch.where(valid, target, torch.full_like(target, -100)), \
        torch.as_tensor(mask, dtype=dtype)


def line_loss(lstm, linear, x, target, mask):
    """Sum over the steps of the masked batch-mean cross-entropy of the prediction of
    ``x_t`` made from ``h_{t-1}``."""
    import torch
    import torch.nn.functional as F
    T, B, X = x.shape
    out, _ = lstm(x)
    h_prev = torch.cat([out.new_zeros(1, B, out.shape[2]), out[:-1]])
    logits = linear(h_prev)
    ce = F.cross_entropy(logits.reshape(T * B, X), target.reshape(T * B),
                         ignore_index=-100, reduction="none").reshape(T, B)
    n = mask.sum(dim=1).clamp_min(1.0)
    return ((ce * mask).sum(dim=1) / n).sum()


def train_line(lstm, linear, opt, batch, clip: float) -> float:
    """One update on a batch of lines; returns its loss."""
    import torch
    opt.zero_grad(set_to_none=True)
    loss = line_loss(lstm, linear, *batch)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(trained(lstm, linear), clip)
    opt.step()
    return float(loss.detach())


def check(path: str) -> dict:
    """Replay ptncn's float64 SGD run in ``path`` (no clipping): per update, the largest
    |difference| from ptncn's parameters, and how far the parameters moved."""
    import torch
    ref = np.load(path)
    meta = json.loads(str(ref["meta"]))
    init = {k: ref[f"init_{k}"] for k in NAMES}
    lstm, linear = build(init, torch.float64)
    opt = torch.optim.SGD(trained(lstm, linear), lr=meta["lr"])
    out = []
    for u, (idx, mask) in enumerate(read_batches(ref)):
        loss = train_line(lstm, linear, opt, tensors(idx, mask, meta["x_dim"], torch.float64), 0.0)
        p = to_ptncn(lstm, linear)
        diffs = {k: float(np.max(np.abs(p[k] - ref[f"p{u}_{k}"]))) for k in NAMES}
        moved = max(float(np.max(np.abs(p[k] - init[k]))) for k in NAMES)
        out.append({"update": u, "loss": loss, "max_diff": max(diffs.values()),
                    "worst": max(diffs, key=diffs.get), "moved": moved})
    return {"updates": out, "max_diff": max(r["max_diff"] for r in out),
            "moved": out[-1]["moved"], "torch": torch.__version__}


def bench(path: str, runs: int, warmup: int) -> dict:
    """Scored tokens/s of float32 Adam training on the batches in ``path``: ``warmup``
    updates on its first batches, then ``runs`` passes over the rest, median."""
    import torch
    ref = np.load(path)
    meta = json.loads(str(ref["meta"]))
    lstm, linear = build({k: ref[f"init_{k}"] for k in NAMES}, torch.float32)
    opt = torch.optim.Adam(trained(lstm, linear), lr=meta["lr"])
    batches = [tensors(i, m, meta["x_dim"], torch.float32) for i, m in read_batches(ref)]
    for b in batches[:warmup]:
        train_line(lstm, linear, opt, b, meta["clip"])
    timed = batches[warmup:]
    tokens = float(sum(float(b[2].sum()) for b in timed))
    rates, busy, losses = [], [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        losses = [train_line(lstm, linear, opt, b, meta["clip"]) for b in timed]
        wall = time.perf_counter() - t0
        rates.append(tokens / wall)
        busy.append((time.process_time() - c0) / wall)
    return {"impl": "torch", "tokens_per_s": float(np.median(rates)),
            "tokens_per_s_all": [round(r, 1) for r in rates], "tokens_per_run": tokens,
            "cores_busy": round(float(np.median(busy)), 2), "last_losses": losses,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["check", "bench"], required=True)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    limit_threads(args.threads)
    res = check(args.npz) if args.worker == "check" else bench(args.npz, args.runs, args.warmup)
    res["cores"] = sorted(os.sched_getaffinity(0))
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
