"""T-sweep: the spiking P-TNCN's decoded quantities converge to its rate twin.

For each window T the same SpikingPTNCN (fixed weights: SGD with lr = 0, so the
update directions are computed but never applied) and its rate twin
``PTNCN(act=lif_rate_dt)`` with identical weights run freely, step by step, on
the same random binary inputs from the zero state.  Reported per T: the max abs
difference (over steps, rows, units) of z, y, e0, e1, eps, and the max over
parameters and steps >= 1 of the relative Frobenius error of the update
directions, ||dP_spk - dP_rate|| / ||dP_rate||, split into the e0-driven ones
(W1, E1) and the eps-driven ones (M, V, U, W_l>=2, E_l>=2).  The fitted
log-log slope of each error against T and the bound ``c * tau_ref / T + b``.

    .venv/bin/python analysis/spiking_convergence.py --target cython \\
        --windows 50 100 200 400 800 --out runs/spiking_convergence
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

QUANTS = ("z", "y", "e0", "e1", "eps")
C_BOUND, B_BOUND = 4.0, 0.005




def sweep(windows, target="cython", hidden=(16, 16), x_dim=4, batch=4, steps=6, beta=0.5,
          seed=3, wght_sd=0.15, err_wght_sd=0.15, forced=True, log=print,
          dt_ms: float = 0.1) -> dict:
    from ptncn.spiking import SpikingPTNCN
    rng = np.random.default_rng(seed)
    xs = (rng.random((steps, batch, x_dim)) > 0.5).astype(np.float32)
    rows = []
    for T in windows:
        t0 = time.perf_counter()
        m = SpikingPTNCN(x_dim, hidden=hidden, window_ms=float(T), target=target, seed=seed,
                         beta=beta, wght_sd=wght_sd, err_wght_sd=err_wght_sd, clip=0.0,
                         optimizer="sgd", lr=0.0, dt_ms=dt_ms)
        tw = m.rate_twin()
        L = m.config.L
        m.reset(batch)
        tw.reset(batch)
        err = {k: 0.0 for k in QUANTS}
        upd_e0, upd_eps = 0.0, 0.0
        for t in range(steps):
            if forced:          # the twin steps from the spiking network's own state
                tw.state = m.state.copy()
            m.step(xs[t])
            tw.step(xs[t])
            qs, qr = m.quantities, tw.quantities
            err["z"] = max(err["z"], max(float(np.abs(qs[f"z{l}"] - qr[f"z{l}"]).max())
                                         for l in range(1, L + 1)))
            err["y"] = max(err["y"], max(float(np.abs(qs[f"y{l}"] - qr[f"y{l}"]).max())
                                         for l in range(1, L + 1)))
            err["eps"] = max(err["eps"], max(float(np.abs(qs[f"eps{l}"] - qr[f"eps{l}"]).max())
                                             for l in range(1, L + 1)))
            err["e0"] = max(err["e0"], float(np.abs(qs["e0"] - qr["e0"]).max()))
            err["e1"] = max(err["e1"], max(float(np.abs(qs[f"e{l}"] - qr[f"e{l}"]).max())
                                           for l in range(1, L)))
            if t >= 1:
                for k in m.params:
                    a, b = m.updates[k], np.asarray(tw.updates[k])
                    rel = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
                    if k in ("W1", "E1"):
                        upd_e0 = max(upd_e0, rel)
                    else:
                        upd_eps = max(upd_eps, rel)
        m.end_sequence()
        m.close()
        row = {"T": T, **err, "upd_rel_e0": upd_e0, "upd_rel_eps": upd_eps,
               "bound": C_BOUND * m.config.tau_ref / T + B_BOUND,
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        log("T %5g ms  " % T + "  ".join(f"{k} {row[k]:.4f}" for k in
                                          (*QUANTS, "upd_rel_e0", "upd_rel_eps", "bound"))
            + f"  ({row['seconds']:.1f} s)")
    Ts = np.array([r["T"] for r in rows], float)
    slopes = {}
    for k in (*QUANTS, "upd_rel_e0", "upd_rel_eps"):
        v = np.array([r[k] for r in rows], float)
        slopes[k] = float(np.polyfit(np.log(Ts), np.log(np.maximum(v, 1e-12)), 1)[0]) \
            if len(Ts) > 1 else float("nan")
    return {"rows": rows, "slopes": slopes, "c": C_BOUND, "b": B_BOUND,
            "setup": {"target": target, "hidden": list(hidden), "x_dim": x_dim,
                      "batch": batch, "steps": steps, "beta": beta, "seed": seed,
                      "wght_sd": wght_sd, "err_wght_sd": err_wght_sd, "forced": forced}}


def figure(res, path):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    Ts = [r["T"] for r in res["rows"]]
    for k in (*QUANTS, "upd_rel_e0"):
        ax.loglog(Ts, [max(r[k], 1e-6) for r in res["rows"]], "o-",
                  label=f"{k} (slope {res['slopes'][k]:.2f})")
    ax.loglog(Ts, [r["bound"] for r in res["rows"]], "k--",
              label=f"{res['c']:g} tau_ref/T + {res['b']:g}")
    ax.set_xlabel("window T (ms)")
    ax.set_ylabel("max abs error vs rate twin (rate x tau_ref)")
    ax.set_title("Spiking P-TNCN vs its lif_rate twin")
    ax.legend(fontsize=8)
    fig.savefig(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="cython", choices=("numpy", "cython", "cpp_standalone"))
    ap.add_argument("--windows", type=float, nargs="+", default=[50, 100, 200, 400, 800])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--dt", type=float, default=0.1, help="simulation step (ms)")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--free", action="store_true",
                    help="let the twin run on its own states (errors compound through the "
                         "recurrence) instead of stepping it from the spiking state")
    ap.add_argument("--out", default="runs/spiking_convergence")
    a = ap.parse_args(argv)
    res = sweep(a.windows, a.target, steps=a.steps, beta=a.beta, forced=not a.free, dt_ms=a.dt)
    os.makedirs(a.out, exist_ok=True)
    from ptncn.jsonio import dump_json
    with open(os.path.join(a.out, "convergence.json"), "w") as f:
        dump_json(res, f, indent=2)                             # NaN -> null
    figure(res, os.path.join(a.out, "convergence.png"))
    print("slopes:", {k: round(v, 2) for k, v in res["slopes"].items()})
    print("wrote", a.out)


if __name__ == "__main__":
    main()
