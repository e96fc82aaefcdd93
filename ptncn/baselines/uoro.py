"""Unbiased Online Recurrent Optimization (Tallec & Ollivier, ICLR 2018).

Instead of RTRL's dense ``dh_{t-1}/dtheta`` (H x P per row), each row b carries a
rank-one estimate ``s~[b] (x) th~[b]`` (a state-space vector and a parameter-space
vector) with ``E[s~ th~^T] = dh/dtheta`` exactly.  At step t (row b)::

    grad theta_rec = sum_b (g_h[b] . s~[b]) th~[b]        (g_h = dL_t/dh_{t-1})
    nu             = independent random signs (+-1), one per state unit
    Js             = (dh_t/dh_{t-1}) s~                  (forward-mode product)
    Vnu            = nu^T (dh_t/dtheta_rec)              (reverse-mode product)
    rho0 = sqrt(|th~| / (|Js| + eps)) + eps,   rho1 = sqrt(|Vnu| / (|nu| + eps)) + eps
    s~  <- rho0 Js + rho1 nu,                  th~ <- th~ / rho0 + Vnu / rho1

``E[nu nu^T] = I`` makes the new product unbiased given the old one; rho0 and rho1
balance the norms of the two factors of each term, which minimises the variance
of the estimate among such rescalings (the paper's variance-reducing normalisers).
The readout gradient (W_out, c) is exact.  One optimizer step per time step.
Rows with mask 0 keep their s~, th~ (their state is held, so dh/dtheta is unchanged).
"""

from __future__ import annotations

import numpy as np

from . import rnn
from .gradient import GradientLearner


class _RankOne(GradientLearner):
    """Shared machinery of UORO and NoBackTrack: a rank-one estimate per row."""

    def _reset_carry(self, batch: int) -> None:
        cfg = self.rnn_config
        self.s_tilde = np.zeros((batch, cfg.hidden), self.dtype)
        self.th_tilde = np.zeros((batch, rnn.rec_size(cfg)), self.dtype)

    def _signs(self, shape) -> np.ndarray:
        return (self.rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(self.dtype)

    def _noise(self, tr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(state-space noise term, its parameter-space partner, ...) -- see subclasses."""
        raise NotImplementedError

    def estimate(self, g_h: np.ndarray) -> np.ndarray:
        """sum_b (g_h[b] . s~[b]) th~[b]: the current estimate of g_h . dh/dtheta_rec (P_rec,)."""
        return np.einsum("bh,bh->b", g_h, self.s_tilde) @ self.th_tilde

    def _online(self, h_prev, x, m, do, g_h, tr, n):
        grads = None
        if n > 0:
            grads = rnn.unflatten_rec(self.rnn_config, self.estimate(g_h))
            grads["W_out"] = h_prev.T @ do
            grads["c"] = do.sum(axis=0)
        eps = self.method["eps"]
        Js = rnn.jvp_state(self.params, tr, self.s_tilde)
        state_noise, param_noise = self._noise(tr)
        nth = np.sqrt(np.einsum("bp,bp->b", self.th_tilde, self.th_tilde))
        nJs = np.sqrt(np.einsum("bh,bh->b", Js, Js))
        rho0 = (np.sqrt(nth / (nJs + eps)) + eps)[:, None]
        s_new = rho0 * Js + state_noise
        th_new = self.th_tilde / rho0 + param_noise
        keep = m[:, 0] == 0                      # held rows keep their estimate
        if keep.any():
            s_new[keep] = self.s_tilde[keep]
            th_new[keep] = self.th_tilde[keep]
        return self._postprocess(grads), {"s_tilde": s_new, "th_tilde": th_new}

    def _postprocess(self, grads):
        return grads

    def _carry_arrays(self):
        return {"s_tilde": self.s_tilde, "th_tilde": self.th_tilde}

    def _load_carry(self, arrays, meta):
        self.s_tilde = np.array(arrays["s_tilde"], dtype=self.dtype)
        self.th_tilde = np.array(arrays["th_tilde"], dtype=self.dtype)


class UORO(_RankOne):
    """Unbiased Online Recurrent Optimization on the shared vanilla RNN."""

    method_keys = ("eps",)

    def __init__(self, x_dim: int, *, hidden: int = 64, act: str = "tanh", leak: float = 1.0,
                 out: str = "softmax", init_scale: float = 1.0, clip: float = 1.0,
                 dtype: str = "float32", eps: float = 1e-7, seed: int = 1234,
                 optimizer="sgd", lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, max_norm: float = 0.0,
                 optimizer_options: dict | None = None):
        if not np.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self._setup(x_dim, hidden=hidden, act=act, leak=leak, out=out, init_scale=init_scale,
                    clip=clip, dtype=dtype, seed=seed, optimizer=optimizer, lr=lr,
                    momentum=momentum, weight_decay=weight_decay, max_norm=max_norm,
                    optimizer_options=optimizer_options, eps=float(eps))

    def _noise(self, tr):
        eps = self.method["eps"]
        nu = self._signs(tr.D.shape)
        Vnu = rnn.vjp_params_rows(tr, nu)
        nV = np.sqrt(np.einsum("bp,bp->b", Vnu, Vnu))
        nnu = np.sqrt(np.einsum("bh,bh->b", nu, nu))
        rho1 = (np.sqrt(nV / (nnu + eps)) + eps)[:, None]
        return rho1 * nu, Vnu / rho1
