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

from dataclasses import dataclass

import numpy as np

from ..learner import Updates
from . import rnn
from .gradient import GradientConfig, GradientLearner, GradientState


class SensitivityTooLarge(MemoryError, ValueError):
    """RTRL's sensitivity tensor would exceed the configured memory limit."""


@dataclass
class RTRLConfig(GradientConfig):
    """The shared RNN's options and ``max_memory_gb``, the largest sensitivity tensor allowed."""

    max_memory_gb: float = 4.0
    cells = ("rnn",)

    def __post_init__(self):
        if not np.isfinite(self.max_memory_gb) or self.max_memory_gb <= 0:
            raise ValueError(f"max_memory_gb must be a positive number, got "
                             f"{self.max_memory_gb!r}")
        self.max_memory_gb = float(self.max_memory_gb)
        super().__post_init__()


@dataclass
class RTRLState(GradientState):
    """``S``: dh_{t-1}/dtheta_rec of every row, stored (H, B, P_rec)."""

    S: np.ndarray


def check_sensitivity_size(cfg: RTRLConfig, batch: int) -> None:
    """Raise :class:`SensitivityTooLarge` if the (H, batch, P_rec) tensor exceeds the limit."""
    P = rnn.rec_size(cfg)
    nbytes = int(batch) * cfg.hidden * P * cfg.np_dtype.itemsize
    limit = cfg.max_memory_gb
    if nbytes > limit * 1e9:
        raise SensitivityTooLarge(
            f"RTRL sensitivity tensor for batch {batch}, hidden {cfg.hidden}, x_dim "
            f"{cfg.x_dim} is B*H*P = {batch}*{cfg.hidden}*{P} {cfg.np_dtype.name} "
            f"= {nbytes / 1e9:.3g} GB, over the limit max_memory_gb = {limit:g} GB "
            "(raise max_memory_gb, or use UORO / TBPTT)")


class RTRL(GradientLearner):
    """Exact online gradient (real-time recurrent learning) on the shared vanilla RNN."""

    name = "rtrl"
    Config = RTRLConfig
    State = RTRLState

    def _build(self):
        check_sensitivity_size(self.config, 1)
        return super()._build()

    def _carry(self, batch: int) -> dict:
        check_sensitivity_size(self.config, batch)
        cfg = self.config
        return {"S": np.zeros((cfg.hidden, batch, rnn.rec_size(cfg)), self.dtype)}

    @property
    def sensitivity(self) -> np.ndarray:
        """dh_{t-1}/dtheta_rec per row, as a (B, H, P_rec) view of the carried S (H, B, P_rec)."""
        return self.state.S.transpose(1, 0, 2)

    def _learn(self, params, state, h_prev, x, m, do, g_h, tr, n):
        grads = None
        if n > 0:
            H, B, P = state.S.shape
            flat = np.ascontiguousarray(g_h.T).reshape(1, H * B) @ state.S.reshape(H * B, P)
            grads = Updates(rnn.unflatten_rec(self.config, flat[0]))
            grads["W_out"] = h_prev.T @ do
            grads["c"] = do.sum(axis=0)
        return grads, {"S": rnn.rtrl_update(self.config, params, tr, state.S)}
