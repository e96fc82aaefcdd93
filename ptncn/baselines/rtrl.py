"""Real-time recurrent learning (Williams & Zipser 1989): the exact online gradient.

Each row b carries the sensitivity ``S[b] = dh_{t-1}[b] / dtheta_rec`` (H x P_rec,
dense, stored state-unit first as (H, B, P_rec); forward-mode differentiation through the
whole past of the sequence).
At step t::

    grad W_out, c  = h_{t-1}.T @ do,  sum_b do            (do: d L_t / d logits)
    grad theta_rec = sum_b g_h[b] @ S[b]                  (g_h = do @ W_out.T = dL_t/dh_{t-1})
    S[b] <- dh_t/dh_{t-1} S[b] + dh_t/dtheta_rec     (:func:`ptncn.baselines.rnn.rtrl_update`)

and one optimizer step per time step.  Memory B*H*P_rec numbers (P_rec = X*H + H*H + H),
time O(B H^2 P_rec) per step: only small networks.  A sensitivity tensor larger than
``max_memory_gb`` is refused (:class:`SensitivityTooLarge`).
"""

from __future__ import annotations

import numpy as np

from . import rnn
from .gradient import GradientLearner


class SensitivityTooLarge(MemoryError, ValueError):
    """RTRL's sensitivity tensor would exceed the configured memory limit."""


class RTRL(GradientLearner):
    """Exact online gradient (real-time recurrent learning) on the shared vanilla RNN."""

    method_keys = ("max_memory_gb",)

    def __init__(self, x_dim: int, *, hidden: int = 64, act: str = "tanh", leak: float = 1.0,
                 out: str = "softmax", init_scale: float = 1.0, clip: float = 1.0,
                 dtype: str = "float32", max_memory_gb: float = 4.0, seed: int = 1234,
                 optimizer="sgd", lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0, max_norm: float = 0.0,
                 optimizer_options: dict | None = None):
        if not np.isfinite(max_memory_gb) or max_memory_gb <= 0:
            raise ValueError(f"max_memory_gb must be a positive number, got {max_memory_gb!r}")
        self._setup(x_dim, hidden=hidden, act=act, leak=leak, out=out, init_scale=init_scale,
                    clip=clip, dtype=dtype, seed=seed, optimizer=optimizer, lr=lr,
                    momentum=momentum, weight_decay=weight_decay, max_norm=max_norm,
                    optimizer_options=optimizer_options, max_memory_gb=float(max_memory_gb))
        self.S: np.ndarray | None = None
        self._check_size(1)

    def sensitivity_bytes(self, batch: int) -> int:
        cfg = self.rnn_config
        return int(batch) * cfg.hidden * rnn.rec_size(cfg) * self.dtype.itemsize

    def _check_size(self, batch: int) -> None:
        nbytes = self.sensitivity_bytes(batch)
        limit = self.method["max_memory_gb"]
        if nbytes > limit * 1e9:
            cfg = self.rnn_config
            raise SensitivityTooLarge(
                f"RTRL sensitivity tensor for batch {batch}, hidden {cfg.hidden}, x_dim "
                f"{cfg.x_dim} is B*H*P = {batch}*{cfg.hidden}*{rnn.rec_size(cfg)} "
                f"{self.dtype.name} "
                f"= {nbytes / 1e9:.3g} GB, over the limit max_memory_gb = {limit:g} GB "
                "(raise max_memory_gb, or use UORO / TBPTT)")

    def _reset_carry(self, batch: int) -> None:
        self._check_size(batch)
        self.S = np.zeros((self.rnn_config.hidden, batch, rnn.rec_size(self.rnn_config)),
                          self.dtype)

    @property
    def sensitivity(self) -> np.ndarray:
        """dh_{t-1}/dtheta_rec per row, as a (B, H, P_rec) view of the carried S (H, B, P_rec)."""
        return self.S.transpose(1, 0, 2)

    def _online(self, h_prev, x, m, do, g_h, tr, n):
        grads = None
        if n > 0:
            H, B, P = self.S.shape
            flat = np.ascontiguousarray(g_h.T).reshape(1, H * B) @ self.S.reshape(H * B, P)
            grads = rnn.unflatten_rec(self.rnn_config, flat[0])
            grads["W_out"] = h_prev.T @ do
            grads["c"] = do.sum(axis=0)
        return grads, {"S": rnn.rtrl_update(self.rnn_config, self.params, tr, self.S)}

    def _carry_arrays(self):
        return {"S": self.S}

    def _load_carry(self, arrays, meta):
        self.S = np.array(arrays["S"], dtype=self.dtype)
