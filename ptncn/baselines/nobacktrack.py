"""NoBackTrack (Ollivier, Tallec & Charpiat 2015, "Training recurrent networks online
without backtracking").

Like UORO (its later simplification), each row carries a rank-one unbiased estimate
``s~ (x) th~`` of ``dh/dtheta_rec``.  The difference is the reduction of the new
term ``dh_t/dtheta_rec``: in a recurrent network it is a sum over state units j of
``e_j (x) w_j``, where ``w_j = D_j [x_t, h_{t-1}, 1]`` involves only the incoming
parameters of unit j (column j of W_in and W_rec, and b_j).  The rank-one trick is
applied to the whole sum ``Js (x) th~ + sum_j e_j (x) w_j`` with one random sign
per unit and one norm-balancing factor per term::

    rho0 = sqrt(|th~| / (|Js| + eps)) + eps,      rho_j = sqrt(|w_j| / (|e_j| + eps)) + eps
    s~  <- rho0 Js + sum_j eps_j rho_j e_j        th~ <- th~ / rho0 + sum_j eps_j w_j / rho_j

(``|e_j| = 1``).  Since ``E[eps_j eps_k] = delta_jk`` the update is unbiased;
rho_j minimises the variance term by term, where UORO uses one factor for all units.
The readout gradient (W_out, c) is exact.  One optimizer step per time step.

``kalman=True`` switches on the smoothing of the gradient estimate before it reaches
the optimizer: ``g_bar <- (1 - smoothing) g_bar + smoothing g`` (per coordinate;
this is the steady-state gain of a scalar Kalman filter tracking a random-walk
gradient observed with independent noise), and ``g_bar`` is the update direction.
This is a simplified stand-in for the paper's "Kalman-like" filter, not a
reproduction of it -- see docs/baselines.md.  ``g_bar`` persists across sequences
(``extra["g_bar/<param>"]``) and is saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..learner import Updates
from . import rnn
from .uoro import UOROConfig, _RankOne


@dataclass
class NoBackTrackConfig(UOROConfig):
    """UORO's options, ``kalman`` (smooth the gradient estimate) and its ``smoothing`` gain."""

    kalman: bool = False
    smoothing: float = 0.1

    def __post_init__(self):
        if not isinstance(self.kalman, (bool, np.bool_)):
            raise ValueError(f"kalman must be true or false, got {self.kalman!r}")
        if not np.isfinite(self.smoothing) or not 0 < self.smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing!r}")
        self.kalman = bool(self.kalman)
        self.smoothing = float(self.smoothing)
        super().__post_init__()


class NoBackTrack(_RankOne):
    """NoBackTrack on the shared vanilla RNN (optionally with smoothed gradients)."""

    name = "nobacktrack"
    Config = NoBackTrackConfig

    def _build(self):
        params = super()._build()
        # g_bar outlives sequences (like an optimizer slot): kept in extra, always saved
        self.extra = {f"g_bar/{k}": np.zeros_like(v) for k, v in params.items()}
        return params

    def _noise(self, tr):
        eps = self.config.eps
        sgn = self._signs(tr.D.shape)
        # |w_j| = |D_j| * |[x, h_prev, 1]|  (the same input vector for every unit of a row)
        nin = np.sqrt(np.einsum("bx,bx->b", tr.x, tr.x)
                      + np.einsum("bh,bh->b", tr.h_prev, tr.h_prev) + 1)[:, None]
        rho = np.sqrt(np.abs(tr.D) * nin / (1 + eps)) + eps          # (B, H)
        return sgn * rho, rnn.vjp_params_rows(tr, sgn / rho)

    def _learn(self, params, state, h_prev, x, m, do, g_h, tr, n):
        grads, carry = super()._learn(params, state, h_prev, x, m, do, g_h, tr, n)
        if grads is None or not self.config.kalman:
            return grads, carry
        k = self.config.smoothing
        out = {name: (1 - k) * self.extra[f"g_bar/{name}"] + k * g for name, g in grads.items()}
        # g_bar is the smoothed direction before clipping (the update is clipped in place)
        return Updates(out, extra={f"g_bar/{name}": v.copy() for name, v in out.items()}), carry
