"""The influence-balancing task (after Tallec & Ollivier 2018, UORO, section "influence
balancing"): a linear recurrent model with one scalar parameter whose short-term and
long-term influences on the loss have opposite signs.

Model (state ``s`` in R^n, no input, one endless sequence)::

    s_t = A s_{t-1} + theta * c,      o_t = s_t[0],      loss_t = (o_t - target)^2 / 2

with ``A = a_diag I + a_sup N`` (N: ones on the first superdiagonal, so unit i+1 feeds
unit i) and ``c = (+1, ..., +1, -1, ..., -1)`` (``n - n_minus`` plus signs, then
``n_minus`` minus signs).  theta reaches the output at once through unit 0 (c_0 = +1:
positive influence), but through the minus units only after 1, 2, ... steps.  The
influence of theta on ``o_t`` through exactly j transitions is ``e_0 A^j c``; the total
at the fixed point is ``kappa = e_0 (I - A)^{-1} c``, which is negative when the minus
units dominate, while every truncation shorter than about the chain length sees a
positive sum.  The minimum of the stationary loss (0) is at ``theta* = target / kappa``.

Learners here update theta online with plain SGD (``theta -= lr * g`` every step, or
every k steps for TBPTT(k)):

* ``rtrl``        exact sensitivity ``G_t = ds_t/dtheta = A G_{t-1} + c``; g = (o_t - target) G_t[0]
* ``uoro``        rank-one estimate ``G ~ s~ th~`` (UORO's rho0, rho1 normalisers)
* ``nobacktrack`` the same with one normaliser per unit (here every |w_j| = |c_j| = 1)
* ``tbptt``       TBPTT(k): the gradient of the window's summed losses with the state at
                  the window start held constant (computed in forward mode, which for this
                  model gives exactly the backward pass's numbers), one update per window.

The loss reported per step is ``loss_t`` at the current theta; :func:`run` returns the
trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEARNERS = ("rtrl", "uoro", "nobacktrack", "tbptt")


@dataclass
class InfluenceBalancing:
    n: int = 20
    n_minus: int = 12
    a_diag: float = 0.5
    a_sup: float = 0.5
    target: float = 1.0

    def __post_init__(self):
        if self.n < 2 or not 0 < self.n_minus < self.n:
            raise ValueError("need n >= 2 and 0 < n_minus < n")
        self.A = self.a_diag * np.eye(self.n) + self.a_sup * np.eye(self.n, k=1)
        self.c = np.ones(self.n)
        self.c[self.n - self.n_minus:] = -1.0
        if np.max(np.abs(np.linalg.eigvals(self.A))) >= 1:
            raise ValueError("A must be stable (|a_diag| < 1)")

    @property
    def kappa(self) -> float:
        """Total (long-term) influence of theta on the stationary output."""
        return float(np.linalg.solve(np.eye(self.n) - self.A, self.c)[0])

    @property
    def theta_star(self) -> float:
        return self.target / self.kappa

    def truncated_influence(self, k: int) -> float:
        """sum_{j<k} e_0 A^j c: the influence seen through at most k-1 extra transitions."""
        v, tot = self.c.copy(), 0.0
        for _ in range(k):
            tot += v[0]
            v = self.A @ v
        return tot

    def window_influence(self, k: int) -> float:
        """What TBPTT(k) sees on average over its window (the i-th loss of a window sees
        ``truncated_influence(i)``): its update has the wrong sign when this is > 0."""
        return float(np.mean([self.truncated_influence(i) for i in range(1, k + 1)]))


def run(task: InfluenceBalancing, learner: str, steps: int, lr: float, *, k: int = 1,
        theta0: float = 0.0, seed: int = 0, eps: float = 1e-7,
        blowup: float = 1e12) -> np.ndarray:
    """Train theta online; returns the per-step loss (length ``steps``; after the loss
    exceeds ``blowup`` the run stops and the rest is filled with inf)."""
    if learner not in LEARNERS:
        raise ValueError(f"learner must be one of {', '.join(LEARNERS)}, got {learner!r}")
    n, A, c = task.n, task.A, task.c
    rng = np.random.default_rng(seed)
    theta = float(theta0)
    s = np.zeros(n)
    G = np.zeros(n)                    # rtrl / tbptt sensitivity ds/dtheta
    st, tht = np.zeros(n), 0.0         # uoro / nobacktrack: G ~ st * tht
    acc, in_window = 0.0, 0
    losses = np.full(steps, np.inf)
    for t in range(steps):
        if learner in ("uoro", "nobacktrack"):
            # advance the rank-one estimate with this step's transition (as G below)
            Js = A @ st
            nu = rng.integers(0, 2, n) * 2.0 - 1.0
            if learner == "uoro":
                vnu = float(nu @ c)                      # nu^T ds_t/dtheta (direct part)
                rho0 = np.sqrt(abs(tht) / (np.linalg.norm(Js) + eps)) + eps
                rho1 = np.sqrt(abs(vnu) / (np.linalg.norm(nu) + eps)) + eps
                st, tht = rho0 * Js + rho1 * nu, tht / rho0 + vnu / rho1
            else:
                rho0 = np.sqrt(abs(tht) / (np.linalg.norm(Js) + eps)) + eps
                rho = np.sqrt(np.abs(c) / (1 + eps)) + eps   # per unit: |w_j| = |c_j|, |e_j| = 1
                st, tht = rho0 * Js + nu * rho, tht / rho0 + float((nu / rho) @ c)
        else:
            G = A @ G + c
        s = A @ s + theta * c
        err = s[0] - task.target
        loss = 0.5 * err * err
        losses[t] = loss
        if not np.isfinite(loss) or loss > blowup:
            break
        if learner == "rtrl":
            theta -= lr * err * G[0]
        elif learner in ("uoro", "nobacktrack"):
            theta -= lr * err * st[0] * tht
        else:
            acc += err * G[0]
            in_window += 1
            if in_window == k:
                theta -= lr * acc
                acc, in_window = 0.0, 0
                G = np.zeros(n)                  # the next window starts from a constant state
    return losses
