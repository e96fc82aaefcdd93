"""Sweep: can the LIF rate twin (PTNCN with act = lif_rate, dt-rounded) learn bit recall?

Trains ``ptncn.PTNCN`` online on ``ptncn.data.bitrecall.BitRecall`` and evaluates,
like ``ptncn.harness.evaluate``, the bit accuracy of the recall-phase predictions
(x_mu at step t predicts x[t]; weights frozen) on a held-out stream
(task seed + 10007, as the harness does for tasks without splits).

Only knobs the spiking model (``ptncn.spiking.SpikingPTNCN``) also has are varied:
hidden, beta, alpha, gamma, zeta, clip, wght_sd, err_wght_sd, temporal_error_rule,
optimizer/lr/momentum, the LIF operating point (tau_m, tau_ref, gain, bias), n_bits,
batch size.  "steps" are sequence steps (``learner.step`` calls, each on a batch).

Usage (from the repository root)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python analysis/lif_twin_bitrecall_sweep.py \
        --grid baseline --out /tmp/sweep/results.jsonl
    OPENBLAS_NUM_THREADS=1 .venv/bin/python analysis/lif_twin_bitrecall_sweep.py \
        --config '{"beta": 1.0, "gain": 2.0, "bias": 2.0}' --seeds 1234 4321

Each run appends one JSON line (config, accuracy at each checkpoint, diagnostics).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ptncn import PTNCN, harness
from ptncn import activations as acts
from ptncn.data.bitrecall import BitRecall
from ptncn.errors import DivergenceError

#: defaults: the failing setup (models/spiking_bit_recall.toml with the rate twin)
DEFAULTS = dict(act="lif", n_bits=8, batch_size=32, hidden=[32, 32], beta=0.1, alpha=0.001,
                gamma=1.0, zeta=1.0, clip=1.0, wght_sd=0.05, err_wght_sd=0.05,
                temporal_error_rule=False, optimizer="nesterov", lr=0.075, momentum=0.95,
                tau_m=10.0, tau_ref=2.0, gain=2.0, bias=2.0, dt=0.1,
                steps=20000, checkpoints=[2000, 5000, 10000, 20000], eval_seqs=320,
                task_seed=1234, stop_below=None)

MODEL_KEYS = ("hidden", "beta", "alpha", "gamma", "zeta", "clip", "wght_sd", "err_wght_sd",
              "temporal_error_rule", "optimizer", "lr", "momentum")


def make_act(c):
    if c["act"] == "lif":
        return acts.make_lif_rate(c["tau_m"], c["tau_ref"], 1.0, 1.0, c["gain"], c["bias"],
                                  c["dt"])
    return c["act"]          # a registry name, e.g. "tanh"


def build(c, seed):
    kw = {k: c[k] for k in MODEL_KEYS}
    kw["hidden"] = tuple(kw["hidden"])
    if kw["optimizer"] not in ("momentum", "nesterov"):
        kw.pop("momentum")
    return PTNCN(3, act=make_act(c), out="sigmoid", seed=seed, **kw)


def evaluate(model, task, n_batches):
    """Bit accuracy on the recall steps (weights frozen): ``harness.evaluate``'s."""
    return harness.evaluate(model, task, n_batches)["bit_accuracy"]


def run(c, seed):
    c = {**DEFAULTS, **c}
    model = build(c, seed)
    train = BitRecall(c["n_bits"], c["batch_size"], seed=c["task_seed"], n_batches=10**9)
    eval_bs = 64
    n_eval = max(1, -(-c["eval_seqs"] // eval_bs))
    held = BitRecall(c["n_bits"], eval_bs, seed=c["task_seed"] + 10_007, n_batches=n_eval)
    T = train.length
    cps = sorted(c["checkpoints"])
    res = {"config": {k: c[k] for k in c}, "seed": seed, "acc": {}, "diag": {}}
    t0 = time.perf_counter()
    steps, b, ci = 0, 0, 0
    diag = {"eps1_abs": [], "eps1_zero": [], "z1_mean": [], "z1_silent": [], "z1_sat": []}
    try:
        while steps < c["steps"]:
            x, m, _ = train.batch(b)
            model.reset(x.shape[1])
            for t in range(T):
                model.step(x[t], m[t])
                if b % 20 == 0 and t > 0:
                    q = model.quantities
                    e, z = q["eps1"], q["z1"]
                    diag["eps1_abs"].append(float(np.abs(e).mean()))
                    diag["eps1_zero"].append(float((e == 0).mean()))
                    diag["z1_mean"].append(float(z.mean()))
                    lo = 0.0 if c["act"] == "lif" else -0.99
                    diag["z1_silent"].append(float((z <= lo).mean()))
                    diag["z1_sat"].append(float((np.abs(z) > 0.9).mean()))
            steps += T
            b += 1
            while ci < len(cps) and steps >= cps[ci]:
                res["acc"][cps[ci]] = round(evaluate(model, held, n_eval), 4)
                ci += 1
                stop = c.get("stop_below")       # [steps, acc]: give up on a dead run
                if stop and cps[ci - 1] == stop[0] and res["acc"][cps[ci - 1]] < stop[1]:
                    res["stopped"] = True
                    raise StopIteration
    except DivergenceError as exc:
        res["diverged"] = f"step {steps}: {exc}"
    except StopIteration:
        pass
    res["steps"] = steps
    res["seconds"] = round(time.perf_counter() - t0, 1)
    n = len(diag["eps1_abs"])
    for k, v in diag.items():   # first and last fifth of training
        if v:
            f = max(1, n // 5)
            res["diag"][k] = [round(float(np.mean(v[:f])), 4), round(float(np.mean(v[-f:])), 4)]
    return res


# -- grids -----------------------------------------------------------------------------
def grid(name):
    g = []
    if name == "baseline":
        g = [{}, {"act": "tanh"}]
    elif name == "beta":
        g = [{"beta": b} for b in (0.3, 1.0, 3.0)]
    elif name == "opt":
        for beta in (1.0,):
            for lr in (0.02, 0.075, 0.2):
                g.append({"beta": beta, "lr": lr})
    return g


SPACE = dict(hidden=[[32, 32], [64, 64], [64], [128], [32]], wght_sd=[0.1, 0.2, 0.3, 0.5, 0.8],
             err_wght_sd=[0.05, 0.2, 0.5], beta=[0.1, 0.3, 1.0, 3.0],
             alpha=[0.001, 0.1], gamma=[1.0, 0.1], clip=[1.0, 5.0, 0.0],
             lr=[0.003, 0.01, 0.03, 0.075, 0.2], optimizer=["nesterov", "sgd", "adam"],
             gain=[1.0, 2.0, 4.0, 8.0], bias=[1.5, 2.0, 3.0], batch_size=[8, 16, 32],
             temporal_error_rule=[False, True], zeta=[1.0, 0.0])


def random_configs(n, seed):
    """n random draws from SPACE (adam gets lr / 25: its steps are normalised)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = {k: v[rng.integers(len(v))] for k, v in SPACE.items()}
        if c["optimizer"] == "adam":
            c["lr"] = c["lr"] / 25
        out.append(c)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid")
    ap.add_argument("--config", action="append", default=[],
                    help="JSON dict of overrides (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234])
    ap.add_argument("--out", default="/tmp/sweep/results.jsonl")
    ap.add_argument("--tag", default="")
    ap.add_argument("--random", type=int, default=0, help="this many random configs")
    ap.add_argument("--random-seed", type=int, default=0)
    ap.add_argument("--common", default="{}", help="JSON overrides added to every config")
    ap.add_argument("--base", default="{}",
                    help="JSON config under every --config (a --config only changes it)")
    a = ap.parse_args(argv)
    cfgs = (grid(a.grid) if a.grid else []) + [json.loads(s) for s in a.config]
    cfgs += random_configs(a.random, a.random_seed)
    common = json.loads(a.common)
    base = json.loads(a.base)
    cfgs = [{**base, **c, **common} for c in cfgs]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    for c in cfgs:
        for seed in a.seeds:
            r = run(c, seed)
            r["overrides"], r["tag"] = c, a.tag
            with open(a.out, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(json.dumps({"ov": c, "seed": seed, "acc": r["acc"], "s": r["seconds"],
                              "div": r.get("diverged") is not None, "diag": r["diag"]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
