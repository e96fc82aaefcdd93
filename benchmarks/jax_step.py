"""One P-TNCN learning step in plain JAX, written from the equations of docs/model.md.

    python benchmarks/jax_step.py --worker bench --hidden 250 --threads 1 --runs 5 --steps 100
    python benchmarks/jax_step.py --worker check --npz DIR/reference.npz

A peer for ptncn's own engine (``benchmarks/peers.py`` times both): the
published two-layer model (tanh, softmax output, beta 0.1, alpha 0.001, gamma 1,
top-down control on, each update clipped to Frobenius norm ``clip`` and then
divided by the batch size, TensorFlow's Nesterov momentum).  Parameters, the
optimizer's accumulators and the carried state are pytrees passed explicitly;
the whole learning step is one ``jax.jit`` that updates the parameters and the
accumulators in place (donated buffers)::

    step(params, slots, state, x, m) -> (params, slots, state, x_mu)

The first step of a sequence does not learn (as ptncn): it is ``infer``.
This file runs in its own environment (jax and numpy, no ptncn); make one with
``python3 -m venv .venv-jax && .venv-jax/bin/pip install "jax[cpu]" numpy``.

``--threads N`` keeps XLA to N cores: the process is pinned to the first N of
its cores before JAX starts, and XLA sizes its intra-op thread pool from the
cores the process may run on (measured with jax 0.10.2: 1 core busy with N = 1,
about 2 with N = 2).  For N = 1 XLA's multi-threaded Eigen kernels are also
switched off (``--xla_cpu_multi_thread_eigen=false``), which older XLA versions
need; jax 0.10.2 accepts the flag but has no other thread limit among its flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

#: the published hyperparameters (ptncn's benchmarks/throughput.py REFERENCE)
HYPER = dict(beta=0.1, alpha=0.001, gamma=1.0, clip=1.0, lr=0.075, momentum=0.95)


# ---------------------------------------------------------------------------
# threads (before the first JAX computation, which starts XLA's CPU client)
# ---------------------------------------------------------------------------
def xla_thread_flags(n: int) -> str:
    """XLA_FLAGS that keep XLA's CPU kernels to ``n`` threads (with the affinity)."""
    return "--xla_cpu_multi_thread_eigen=false" if n == 1 else ""


def limit_threads(n: int) -> list[int]:
    """Pin this process to its first ``n`` cores and set the XLA flags; returns the
    cores.  Must run before JAX creates its CPU client (the first computation)."""
    cores = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cores)
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_cpu_multi_thread_eigen")]
    os.environ["XLA_FLAGS"] = " ".join(flags + xla_thread_flags(n).split())
    return cores


# ---------------------------------------------------------------------------
# the model: pure functions of pytrees
# ---------------------------------------------------------------------------
def param_shapes(x_dim: int, hidden) -> dict[str, tuple[int, int]]:
    """Names and shapes, in ptncn's order (W1 E1 W2 E2 .. U1 .. M1 .. V1 ..)."""
    n, L = (x_dim, *hidden), len(hidden)
    shapes = {}
    for l in range(1, L + 1):
        shapes[f"W{l}"] = (n[l], n[l - 1])
        shapes[f"E{l}"] = (n[l - 1], n[l])
    for l in range(1, L):
        shapes[f"U{l}"] = (n[l + 1], n[l])
    for l in range(1, L + 1):
        shapes[f"M{l}"] = (n[l - 1], n[l])
    for l in range(1, L + 1):
        shapes[f"V{l}"] = (n[l], n[l])
    return shapes


def init_params(x_dim: int, hidden, seed: int = 0, sd: float = 0.05) -> dict:
    """normal(0, sd) float32 parameters (numpy), by name."""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) * np.float32(sd)
            for k, s in param_shapes(x_dim, hidden).items()}


def zero_state(batch: int, x_dim: int, hidden) -> dict:
    """The state at the start of a sequence: x_prev and s1..sL, all zero."""
    state = {"x_prev": jnp.zeros((batch, x_dim), jnp.float32)}
    for l, h in enumerate(hidden, 1):
        state[f"s{l}"] = jnp.zeros((batch, h), jnp.float32)
    return state


def zero_slots(params: dict) -> dict:
    """Nesterov accumulators, zero, one per parameter."""
    return {k: jnp.zeros_like(v) for k, v in params.items()}


def n_layers(state: dict) -> int:
    """L, from the state (x_prev and s1..sL)."""
    return len(state) - 1


def preactivations(p: dict, state: dict) -> list:
    """h_l = s_{l-1} M_l + s_{l+1} U_l + s_l V_l  (s_0 = x_prev; no U for the top)."""
    L = n_layers(state)
    s = [state["x_prev"]] + [state[f"s{l}"] for l in range(1, L + 1)]
    hs = []
    for l in range(1, L + 1):
        h = s[l - 1] @ p[f"M{l}"]
        if l < L:
            h = h + s[l + 1] @ p[f"U{l}"]
        hs.append(h + s[l] @ p[f"V{l}"])
    return hs


def softmax(a):
    """Row-wise softmax, the row maximum subtracted first."""
    e = jnp.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(p: dict, state: dict, x, m, beta: float, alpha: float) -> dict:
    """States z, prediction x_mu, error units e, perturbations d, targets y, eps."""
    hs = preactivations(p, state)
    L = len(hs)
    z = [jnp.tanh(h) for h in hs]
    q = {"x_mu": softmax(z[0] @ p["W1"])}
    e = [(q["x_mu"] - x) * m] + [(z[l] @ p[f"W{l + 1}"] - z[l - 1]) * m for l in range(1, L)]
    for l in range(1, L + 1):
        d = e[l - 1] @ p[f"E{l}"]
        if l < L:
            d = d - alpha * e[l]
        y = jnp.tanh(hs[l - 1] - beta * d)
        q[f"z{l}"], q[f"y{l}"], q[f"eps{l}"] = z[l - 1], y, (z[l - 1] - y) * m
    q["e0"] = e[0]
    return q


def clip_norm(g, radius: float):
    """Scale ``g`` to Frobenius norm ``radius`` when its norm is larger (radius <= 0: off)."""
    if radius <= 0:
        return g
    norm = jnp.sqrt(jnp.sum(g * g))
    return g * jnp.where(norm > radius, radius / norm, 1.0).astype(g.dtype)


def local_updates(q: dict, state: dict, clip: float, gamma: float) -> dict:
    """The clipped LRA descent directions (not yet divided by the batch size)."""
    L = n_layers(state)
    s = [state["x_prev"]] + [state[f"s{l}"] for l in range(1, L + 1)]
    u = {}
    for l in range(1, L + 1):
        below = q["e0"] if l == 1 else q[f"eps{l - 1}"]
        u[f"W{l}"] = clip_norm(q[f"z{l}"].T @ below, clip)
        u[f"E{l}"] = clip_norm(gamma * u[f"W{l}"].T, clip)
    for l in range(1, L + 1):
        eps = q[f"eps{l}"]
        if l < L:
            u[f"U{l}"] = clip_norm(s[l + 1].T @ eps, clip)
        u[f"M{l}"] = clip_norm(s[l - 1].T @ eps, clip)
        u[f"V{l}"] = clip_norm(s[l].T @ eps, clip)
    return u


def nesterov(p: dict, a: dict, g: dict, lr: float, mu: float) -> tuple[dict, dict]:
    """TensorFlow's Nesterov momentum: a = mu a + g;  p -= lr (g + mu a)."""
    a = {k: mu * a[k] + g[k] for k in p}
    p = {k: p[k] - lr * (g[k] + mu * a[k]) for k in p}
    return p, a


def next_state(x, q: dict, L: int) -> dict:
    """x_prev = x, s_l = y_l."""
    return {"x_prev": x, **{f"s{l}": q[f"y{l}"] for l in range(1, L + 1)}}


def learning_step(params, slots, state, x, m, *, beta, alpha, gamma, clip, lr, momentum):
    """Forward pass, local updates (clipped, / batch), Nesterov, carried state."""
    q = forward(params, state, x, m, beta, alpha)
    inv_b = 1.0 / x.shape[0]
    g = {k: v * inv_b for k, v in local_updates(q, state, clip, gamma).items()}
    params, slots = nesterov(params, slots, g, lr, momentum)
    return params, slots, next_state(x, q, n_layers(state)), q["x_mu"]


def inference_step(params, state, x, m, *, beta, alpha):
    """The first step of a sequence: no learning; (next state, x_mu)."""
    q = forward(params, state, x, m, beta, alpha)
    return next_state(x, q, n_layers(state)), q["x_mu"]


def make_step(**hyper):
    """(step, infer): the jitted learning step (params and slots donated) and the
    jitted first step of a sequence, for the hyperparameters ``hyper`` (HYPER's keys)."""
    h = {**HYPER, **hyper}
    step = jax.jit(partial(learning_step, **h), donate_argnums=(0, 1))
    infer = jax.jit(partial(inference_step, beta=h["beta"], alpha=h["alpha"]))
    return step, infer


# ---------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------
def one_hot_inputs(x_dim: int, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    """(steps, batch, x_dim) random one-hot float32 inputs."""
    rng = np.random.default_rng(seed)
    return np.eye(x_dim, dtype=np.float32)[rng.integers(0, x_dim, (steps, batch))]


def bench(h: int, batch: int, x_dim: int, runs: int, steps: int, seed: int = 0) -> dict:
    """Steps/s of the jitted step (median of ``runs`` runs of ``steps`` steps), after a
    warm-up that compiles it; each step waits for its x_mu."""
    step, infer = make_step()
    params = {k: jnp.asarray(v) for k, v in init_params(x_dim, (h, h), seed).items()}
    slots = zero_slots(params)
    xs = [jnp.asarray(a) for a in one_hot_inputs(x_dim, batch, steps, seed)]
    m = jnp.ones((batch, 1), jnp.float32)
    state, x_mu = infer(params, zero_state(batch, x_dim, (h, h)), xs[0], m)
    for t in range(5):
        params, slots, state, x_mu = step(params, slots, state, xs[t % steps], m)
    x_mu.block_until_ready()
    rates, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        for t in range(steps):
            params, slots, state, x_mu = step(params, slots, state, xs[t], m)
            x_mu.block_until_ready()
        wall = time.perf_counter() - t0
        rates.append(steps / wall)
        cpu.append((time.process_time() - c0) / wall)
    return {"impl": "jax", "hidden": h, "batch": batch, "inputs": x_dim,
            "steps_per_s": float(np.median(rates)), "steps_per_s_all": [round(r, 2) for r in rates],
            "cores_busy": round(float(np.median(cpu)), 2), "jax": jax.__version__}


def check(path: str, clip: float | None = None) -> dict:
    """Run the step on the inputs and initial parameters in ``path`` (written by
    peers.py from ptncn) and report, per step, the largest |difference| from ptncn's
    x_mu and parameters, and how many updates were clipped.  ``clip`` replaces the
    reference's clipping radius (a check that the comparison sees a difference)."""
    ref = np.load(path)
    meta = json.loads(str(ref["meta"]))
    hyper = {k: meta[k] for k in HYPER}
    if clip is not None:
        hyper["clip"] = clip
    step, infer = make_step(**hyper)
    names = list(param_shapes(meta["x_dim"], meta["hidden"]))
    params = {k: jnp.asarray(ref[f"init_{k}"]) for k in names}
    slots = zero_slots(params)
    xs, ms = ref["xs"], ref["ms"]
    state = zero_state(xs.shape[1], meta["x_dim"], meta["hidden"])
    out = []
    for t in range(len(xs)):
        x, m = jnp.asarray(xs[t]), jnp.asarray(ms[t])
        clipped = 0 if t == 0 else count_clipped(params, state, x, m, hyper)
        if t == 0:
            state, x_mu = infer(params, state, x, m)
        else:
            params, slots, state, x_mu = step(params, slots, state, x, m)
        diffs = {k: float(np.max(np.abs(np.asarray(params[k]) - ref[f"p{t}_{k}"]))) for k in names}
        out.append({"t": t, "x_mu": float(np.max(np.abs(np.asarray(x_mu) - ref[f"xmu{t}"]))),
                    "params": max(diffs.values()), "worst": max(diffs, key=diffs.get),
                    "clipped": clipped})
    return {"steps": out, "max_diff": max(max(r["x_mu"], r["params"]) for r in out)}


def count_clipped(params, state, x, m, hyper) -> int:
    """How many of the step's updates have a norm above ``clip`` (0 when clip is off)."""
    if hyper["clip"] <= 0:
        return 0
    q = forward(params, state, x, m, hyper["beta"], hyper["alpha"])
    raw = local_updates(q, state, 0.0, hyper["gamma"])
    return sum(int(np.sqrt(np.sum(np.square(np.asarray(g)))) > hyper["clip"])
               for g in raw.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["bench", "check"], required=True)
    ap.add_argument("--hidden", type=int, default=250)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--inputs", type=int, default=49)
    ap.add_argument("--threads", type=int, default=0, help="cores to use (0: all)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--npz", help="check: the reference written by peers.py")
    ap.add_argument("--clip", type=float, default=None,
                    help="check: this clipping radius instead of the reference's")
    args = ap.parse_args(argv)
    if args.threads > 0:
        limit_threads(args.threads)
    if args.worker == "check":
        res = check(args.npz, args.clip)
    else:
        res = bench(args.hidden, args.batch, args.inputs, args.runs, args.steps)
    res["cores"] = sorted(os.sched_getaffinity(0))
    res["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
