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
and is saved with the model.
"""

from __future__ import annotations

import numpy as np

from . import rnn
from .uoro import _RankOne


class NoBackTrack(_RankOne):
    """NoBackTrack on the shared vanilla RNN (optionally with smoothed gradients)."""

    method_keys = ("eps", "kalman", "smoothing")

    def __init__(self, x_dim: int, *, hidden: int = 64, act: str = "tanh", leak: float = 1.0,
                 out: str = "softmax", init_scale: float = 1.0, clip: float = 1.0,
                 dtype: str = "float32", eps: float = 1e-7, kalman: bool = False,
                 smoothing: float = 0.1, seed: int = 1234, optimizer="sgd", lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 0.0, max_norm: float = 0.0,
                 optimizer_options: dict | None = None):
        if not np.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if not isinstance(kalman, (bool, np.bool_)):
            raise ValueError(f"kalman must be true or false, got {kalman!r}")
        if not np.isfinite(smoothing) or not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self._setup(x_dim, hidden=hidden, act=act, leak=leak, out=out, init_scale=init_scale,
                    clip=clip, dtype=dtype, seed=seed, optimizer=optimizer, lr=lr,
                    momentum=momentum, weight_decay=weight_decay, max_norm=max_norm,
                    optimizer_options=optimizer_options, eps=float(eps), kalman=bool(kalman),
                    smoothing=float(smoothing))
        self.g_bar = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _noise(self, tr):
        eps = self.method["eps"]
        sgn = self._signs(tr.D.shape)
        # |w_j| = |D_j| * |[x, h_prev, 1]|  (the same input vector for every unit of a row)
        nin = np.sqrt(np.einsum("bx,bx->b", tr.x, tr.x)
                      + np.einsum("bh,bh->b", tr.h_prev, tr.h_prev) + 1)[:, None]
        rho = np.sqrt(np.abs(tr.D) * nin / (1 + eps)) + eps          # (B, H)
        return sgn * rho, rnn.vjp_params_rows(tr, sgn / rho)

    def _postprocess(self, grads):
        self._pending_gbar = None
        if grads is None or not self.method["kalman"]:
            return grads
        k = self.method["smoothing"]
        out = {name: (1 - k) * self.g_bar[name] + k * g for name, g in grads.items()}
        self._pending_gbar = {n: v.copy() for n, v in out.items()}   # out is clipped in place
        return out

    def _commit(self, carry):
        super()._commit(carry)
        if getattr(self, "_pending_gbar", None) is not None:
            self.g_bar = self._pending_gbar
            self._pending_gbar = None

    # g_bar is learning state that outlives sequences (like an optimizer slot): always saved
    def _persistent_arrays(self):
        return {f"gbar/{k}": v for k, v in self.g_bar.items()}

    def _load_persistent(self, arrays):
        for k in self.g_bar:
            if f"gbar/{k}" in arrays:
                self.g_bar[k] = np.array(arrays[f"gbar/{k}"], dtype=self.dtype)
