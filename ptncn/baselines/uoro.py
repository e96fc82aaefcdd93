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

from dataclasses import dataclass

import numpy as np

from ..learner import Updates
from . import rnn
from .gradient import GradientConfig, GradientLearner, GradientState


@dataclass
class UOROConfig(GradientConfig):
    """The shared RNN's options and ``eps``, the normalisers' regulariser."""

    eps: float = 1e-7
    cells = ("rnn",)

    def __post_init__(self):
        if not np.isfinite(self.eps) or self.eps <= 0:
            raise ValueError(f"eps must be a positive number, got {self.eps!r}")
        self.eps = float(self.eps)
        super().__post_init__()


@dataclass
class RankOneState(GradientState):
    """The rank-one estimate ``s~[b] (x) th~[b]`` of dh_{t-1}[b]/dtheta_rec of every row:
    ``s_tilde`` (B, H), ``th_tilde`` (B, P_rec)."""

    s_tilde: np.ndarray
    th_tilde: np.ndarray


def estimate(state: RankOneState, g_h: np.ndarray) -> np.ndarray:
    """sum_b (g_h[b] . s~[b]) th~[b]: the current estimate of g_h . dh/dtheta_rec (P_rec,)."""
    return np.einsum("bh,bh->b", g_h, state.s_tilde) @ state.th_tilde


class _RankOne(GradientLearner):
    """Shared machinery of UORO and NoBackTrack: a rank-one estimate per row."""

    State = RankOneState

    def _carry(self, batch: int) -> dict:
        cfg = self.config
        return {"s_tilde": np.zeros((batch, cfg.hidden), self.dtype),
                "th_tilde": np.zeros((batch, rnn.rec_size(cfg)), self.dtype)}

    def _signs(self, shape) -> np.ndarray:
        return (self.rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(self.dtype)

    def _noise(self, tr) -> tuple[np.ndarray, np.ndarray]:
        """(state-space noise term, its parameter-space partner): see the subclasses."""
        raise NotImplementedError

    def _learn(self, params, state, h_prev, x, m, do, g_h, tr, n):
        grads = None
        if n > 0:
            grads = Updates(rnn.unflatten_rec(self.config, estimate(state, g_h)))
            grads["W_out"] = h_prev.T @ do
            grads["c"] = do.sum(axis=0)
        eps = self.config.eps
        Js = rnn.jvp_state(params, tr, state.s_tilde)
        state_noise, param_noise = self._noise(tr)
        nth = np.sqrt(np.einsum("bp,bp->b", state.th_tilde, state.th_tilde))
        nJs = np.sqrt(np.einsum("bh,bh->b", Js, Js))
        rho0 = (np.sqrt(nth / (nJs + eps)) + eps)[:, None]
        s_new = rho0 * Js + state_noise
        th_new = state.th_tilde / rho0 + param_noise
        keep = m[:, 0] == 0                      # held rows keep their estimate
        if keep.any():
            s_new[keep] = state.s_tilde[keep]
            th_new[keep] = state.th_tilde[keep]
        return grads, {"s_tilde": s_new, "th_tilde": th_new}


class UORO(_RankOne):
    """Unbiased Online Recurrent Optimization on the shared vanilla RNN."""

    name = "uoro"
    Config = UOROConfig

    def _noise(self, tr):
        eps = self.config.eps
        nu = self._signs(tr.D.shape)
        Vnu = rnn.vjp_params_rows(tr, nu)
        nV = np.sqrt(np.einsum("bp,bp->b", Vnu, Vnu))
        nnu = np.sqrt(np.einsum("bh,bh->b", nu, nu))
        rho1 = (np.sqrt(nV / (nnu + eps)) + eps)[:, None]
        return rho1 * nu, Vnu / rho1
