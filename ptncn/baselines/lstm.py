"""The LSTM cell of the gradient baselines (``cell = "lstm"``), in the pieces of
:mod:`ptncn.baselines.rnn`: ``transition``, ``vjp_state``, ``vjp_params``.

The carried state is ``s = [h, c]`` (B, 2H): the output ``h`` first (the readout
reads ``s[:, :H]``), then the memory cell ``c``.  One step, row-vector convention,
gate columns in the order input, forget, candidate, output::

    a = x W_in + h_{t-1} W_rec + b                  (B, 4H) = [a_i, a_f, a_g, a_o]
    i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
    c' = f * c_{t-1} + i * g                        h' = o * tanh(c')
    s_t = m * [h', c'] + (1 - m) * s_{t-1}          (rows with mask 0 hold their state)

Its vector-Jacobian products, for a cotangent ``u = [u_h, u_c]`` of ``s_t``
(``k = tanh(c')``)::

    dc  = m (u_c + u_h o (1 - k^2))
    da  = [dc g i(1-i),  dc c_{t-1} f(1-f),  dc i (1-g^2),  m u_h k o(1-o)]
    u_{t-1} = [(1-m) u_h + da W_rec.T,  (1-m) u_c + dc f]
    dW_in = x.T da,  dW_rec = h_{t-1}.T da,  db = sum_b da

The forget gate's bias starts at 1 (the usual choice, so the cell remembers at
first); the weights are drawn as the vanilla cell's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def state_size(cfg) -> int:
    """Width of the carried state: [h, c]."""
    return 2 * cfg.hidden


def param_shapes(cfg) -> dict[str, tuple[int, ...]]:
    X, H = cfg.x_dim, cfg.hidden
    return {"W_in": (X, 4 * H), "W_rec": (H, 4 * H), "b": (4 * H,), "W_out": (H, X),
            "c": (X,)}


def init_params(cfg, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """W_in ~ N(0, 1/X), W_rec ~ N(0, init_scale^2 / H), W_out ~ N(0, 1/H); the forget
    gate's bias 1, the other biases and c 0."""
    X, H, dt = cfg.x_dim, cfg.hidden, cfg.np_dtype
    b = np.zeros(4 * H)
    b[H:2 * H] = 1.0
    p = {"W_in": rng.standard_normal((X, 4 * H)) / np.sqrt(X),
         "W_rec": rng.standard_normal((H, 4 * H)) * (cfg.init_scale / np.sqrt(H)),
         "b": b,
         "W_out": rng.standard_normal((H, X)) / np.sqrt(H),
         "c": np.zeros(X)}
    return {k: np.ascontiguousarray(v, dtype=dt) for k, v in p.items()}


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * a))


@dataclass
class LSTMTransition:
    """What an LSTM step keeps for its derivatives."""

    h_prev: np.ndarray      # (B, 2H) the state before the step, [h, c]
    x: np.ndarray           # (B, X)
    m: np.ndarray           # (B, 1)
    gates: np.ndarray       # (B, 4H) [i, f, g, o] after their nonlinearities
    k: np.ndarray           # (B, H)  tanh(c')


def transition(cfg, p: dict, s_prev: np.ndarray, x: np.ndarray,
               m: np.ndarray) -> tuple[np.ndarray, LSTMTransition]:
    """s_t and the step's record (see the module docstring)."""
    H = cfg.hidden
    a = x @ p["W_in"]
    a += s_prev[:, :H] @ p["W_rec"]
    a += p["b"]
    gates = _sigmoid(a)
    gates[:, 2 * H:3 * H] = np.tanh(a[:, 2 * H:3 * H])
    i, f, g, o = (gates[:, j * H:(j + 1) * H] for j in range(4))
    c_new = f * s_prev[:, H:] + i * g
    k = np.tanh(c_new)
    s = np.concatenate([o * k, c_new], axis=1)
    s *= m
    s += (1 - m) * s_prev
    return s, LSTMTransition(s_prev, x, m, gates, k)


def _gate_cotangent(tr: LSTMTransition, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(da (B, 4H), dc (B, H)) for the cotangent ``u`` of s_t."""
    H = tr.k.shape[1]
    i, f, g, o = (tr.gates[:, j * H:(j + 1) * H] for j in range(4))
    u_h, u_c = u[:, :H] * tr.m, u[:, H:] * tr.m
    dc = u_c + u_h * o * (1 - tr.k * tr.k)
    da = np.concatenate([dc * g * i * (1 - i), dc * tr.h_prev[:, H:] * f * (1 - f),
                         dc * i * (1 - g * g), u_h * tr.k * o * (1 - o)], axis=1)
    return da, dc


def vjp(p: dict, tr: LSTMTransition, u: np.ndarray,
        state: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(u ds_t/dtheta_rec summed over the rows; u ds_t/ds_{t-1}, or None when not
    ``state``) for a (B, 2H) cotangent ``u``."""
    H = tr.k.shape[1]
    da, dc = _gate_cotangent(tr, u)
    grads = {"W_in": tr.x.T @ da, "W_rec": tr.h_prev[:, :H].T @ da, "b": da.sum(axis=0)}
    if not state:
        return grads, None
    keep = 1 - tr.m
    return grads, np.concatenate([keep * u[:, :H] + da @ p["W_rec"].T,
                                  keep * u[:, H:] + dc * tr.gates[:, H:2 * H]], axis=1)


def vjp_state(p: dict, tr: LSTMTransition, u: np.ndarray) -> np.ndarray:
    """u (ds_t/ds_{t-1}) for a (B, 2H) cotangent."""
    return vjp(p, tr, u)[1]


def vjp_params(tr: LSTMTransition, u: np.ndarray) -> dict[str, np.ndarray]:
    """u (ds_t/dtheta_rec), summed over the batch rows."""
    return vjp(None, tr, u, state=False)[0]
