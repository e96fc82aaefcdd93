"""The vanilla recurrent network shared by the gradient-based baselines.

Row-vector convention (batch rows), as P-TNCN.  One step from ``h_{t-1}``
with input ``x_t`` (shape (B, X)) and mask ``m_t`` (B, 1) of 0/1::

    prediction of x_t:   l_t  = h_{t-1} W_out + c          x_mu_t = out(l_t)
    loss of x_t:         L_t  = (1/n_t) sum_b m_b loss(l_t[b], x_t[b])    n_t = sum_b m_b
    transition:          a_t  = x_t W_in + h_{t-1} W_rec + b
                         h_t  = r * h_{t-1} + lam * m * act(a_t),   r = 1 - lam * m

(``lam`` is the leak; rows with m = 0 keep their state: r = 1).  ``loss`` is
summed over units: cross-entropy for ``out = softmax`` (``-sum x log x_mu``),
binary cross-entropy for ``sigmoid``, squared error / 2 for ``identity``; in
all three the gradient with respect to the logits is ``m (x_mu * sum(x) - x) / n``
(``sum(x) = 1`` for one-hot data; for sigmoid/identity it is ``m (x_mu - x) / n``).

Jacobian products (``D = lam * m * act'(a)``, all (B, H))::

    state JVP   (dh_t/dh_{t-1}) v   = r * v + D * (v @ W_rec)
    state VJP   u (dh_t/dh_{t-1})   = r * u + (D * u) @ W_rec.T
    param VJP   u (dh_t/dtheta):      dW_in = x.T @ (D*u),  dW_rec = h_{t-1}.T @ (D*u),
                                      db = sum_b D*u

The recurrent parameters ``theta_rec = (W_in, W_rec, b)`` are flattened in that
order (row-major) when a method carries dense or rank-one sensitivities
(``P_rec = X*H + H*H + H``); ``W_out`` and ``c`` only act through the readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..learner import check_positive_ints

ACTS = ("tanh", "identity", "relu", "sigmoid")
OUTS = ("softmax", "sigmoid", "identity")
#: the recurrent cells: this module's vanilla one and :mod:`ptncn.baselines.lstm`
CELLS = ("rnn", "lstm")


@dataclass
class RNNConfig:
    x_dim: int
    hidden: int = 64
    act: str = "tanh"
    leak: float = 1.0
    out: str = "softmax"
    init_scale: float = 1.0
    dtype: str = "float32"
    cell: str = "rnn"

    #: the cells a learner's method is written for (forward-mode ones: the vanilla cell)
    cells = CELLS

    def __post_init__(self):
        check_positive_ints(self, "x_dim", "hidden")
        if self.act not in ACTS:
            raise ValueError(f"act must be one of {', '.join(ACTS)} (the gradient methods need "
                             f"its derivative), got {self.act!r}")
        if self.out not in OUTS:
            raise ValueError(f"out must be one of {', '.join(OUTS)}, got {self.out!r}")
        self.leak = float(self.leak)
        if not 0.0 < self.leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {self.leak}")
        self.init_scale = float(self.init_scale)
        if not np.isfinite(self.init_scale) or self.init_scale < 0:
            raise ValueError(f"init_scale must be a finite number >= 0, got {self.init_scale}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        self._check_cell()

    def _check_cell(self):
        if self.cell in CELLS and self.cell not in self.cells:
            raise ValueError(f"cell = {self.cell!r} is not available for this learner: its "
                             f"method is written for {', '.join(self.cells)}; tbptt, bptt "
                             "and sab run every cell")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.cell == "lstm" and (self.act != "tanh" or self.leak != 1.0):
            raise ValueError("the lstm cell has its own fixed nonlinearities and no leak: "
                             f"leave act = 'tanh' and leak = 1, got act = {self.act!r}, "
                             f"leak = {self.leak!r}")

    @property
    def np_dtype(self):
        return np.dtype(self.dtype)


def state_size(cfg: RNNConfig) -> int:
    """Width of the carried state: h."""
    return cfg.hidden


def param_shapes(cfg: RNNConfig) -> dict[str, tuple[int, ...]]:
    X, H = cfg.x_dim, cfg.hidden
    return {"W_in": (X, H), "W_rec": (H, H), "b": (H,), "W_out": (H, X), "c": (X,)}


def rec_size(cfg: RNNConfig) -> int:
    """P_rec: the number of recurrent parameters (W_in, W_rec, b)."""
    X, H = cfg.x_dim, cfg.hidden
    return X * H + H * H + H


def init_params(cfg: RNNConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """W_in ~ N(0, 1/X), W_rec ~ N(0, init_scale^2 / H) (spectral radius ~ init_scale),
    W_out ~ N(0, 1/H), b = c = 0."""
    X, H, dt = cfg.x_dim, cfg.hidden, cfg.np_dtype
    p = {"W_in": rng.standard_normal((X, H)) / np.sqrt(X),
         "W_rec": rng.standard_normal((H, H)) * (cfg.init_scale / np.sqrt(H)),
         "b": np.zeros(H),
         "W_out": rng.standard_normal((H, X)) / np.sqrt(H),
         "c": np.zeros(X)}
    return {k: np.ascontiguousarray(v, dtype=dt) for k, v in p.items()}


# ---------------------------------------------------------------------------
# elementwise pieces
# ---------------------------------------------------------------------------
def activation(name: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(act(a), act'(a))."""
    if name == "tanh":
        z = np.tanh(a)
        return z, 1 - z * z
    if name == "identity":
        return a.copy(), np.ones_like(a)
    if name == "relu":
        return np.maximum(a, 0), (a > 0).astype(a.dtype)
    if name == "sigmoid":
        z = 0.5 * (1 + np.tanh(0.5 * a))
        return z, z * (1 - z)
    raise ValueError(f"unknown activation {name!r}")


def output(name: str, logits: np.ndarray) -> np.ndarray:
    if name == "softmax":
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "sigmoid":
        return 0.5 * (1 + np.tanh(0.5 * logits))
    return logits.copy()


def row_loss(name: str, logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-row loss summed over units, from the logits (numerically stable), (B,)."""
    if name == "softmax":
        mx = logits.max(axis=-1, keepdims=True)
        lse = mx + np.log(np.exp(logits - mx).sum(axis=-1, keepdims=True))
        return -(x * (logits - lse)).sum(axis=-1)
    if name == "sigmoid":   # softplus(l) - x l
        sp = np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits)))
        return (sp - x * logits).sum(axis=-1)
    d = logits - x
    return 0.5 * (d * d).sum(axis=-1)


def logit_grad(name: str, y: np.ndarray, x: np.ndarray, m: np.ndarray, n: float) -> np.ndarray:
    """d(batch-mean masked loss)/d(logits): m (y*sum(x) - x) / n (softmax), m (y - x) / n else."""
    if n <= 0:
        return np.zeros_like(y)
    if name == "softmax":
        g = y * x.sum(axis=-1, keepdims=True) - x
    else:
        g = y - x
    return g * (m / y.dtype.type(n))


# ---------------------------------------------------------------------------
# one step and its derivatives
# ---------------------------------------------------------------------------
@dataclass
class Transition:
    """What a transition keeps for its derivatives: inputs and local slopes."""

    h_prev: np.ndarray      # (B, H)
    x: np.ndarray           # (B, X)
    r: np.ndarray           # (B, 1)  1 - lam*m
    D: np.ndarray           # (B, H)  lam * m * act'(a)


def transition(cfg: RNNConfig, p: dict, h_prev: np.ndarray, x: np.ndarray,
               m: np.ndarray) -> tuple[np.ndarray, Transition]:
    """h_t and the transition record (see module docstring)."""
    lam = h_prev.dtype.type(cfg.leak)
    a = x @ p["W_in"]
    a += h_prev @ p["W_rec"]
    a += p["b"]
    z, dz = activation(cfg.act, a)
    lm = lam * m
    r = 1 - lm
    h = r * h_prev + lm * z
    return h, Transition(h_prev, x, r, lm * dz)


def jvp_state(p: dict, tr: Transition, v: np.ndarray) -> np.ndarray:
    """(dh_t/dh_{t-1}) v for a (B, H) tangent (or (B, H, K) batch of tangents along axis 1)."""
    return tr.r * v + tr.D * (v @ p["W_rec"])


def vjp_state(p: dict, tr: Transition, u: np.ndarray) -> np.ndarray:
    """u (dh_t/dh_{t-1}) for a (B, H) cotangent."""
    return tr.r * u + (tr.D * u) @ p["W_rec"].T


def vjp_params(tr: Transition, u: np.ndarray) -> dict[str, np.ndarray]:
    """u (dh_t/dtheta_rec), summed over the batch rows."""
    da = tr.D * u
    return {"W_in": tr.x.T @ da, "W_rec": tr.h_prev.T @ da, "b": da.sum(axis=0)}


def vjp(p: dict, tr: Transition, u: np.ndarray,
        state: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(:func:`vjp_params`, :func:`vjp_state` or None when not ``state``) sharing D*u."""
    da = tr.D * u
    grads = {"W_in": tr.x.T @ da, "W_rec": tr.h_prev.T @ da, "b": da.sum(axis=0)}
    return grads, (tr.r * u + da @ p["W_rec"].T) if state else None


def vjp_params_rows(tr: Transition, u: np.ndarray) -> np.ndarray:
    """u_b (dh_t[b]/dtheta_rec) for every row b, flattened: (B, P_rec)."""
    da = tr.D * u
    B = da.shape[0]
    return np.concatenate([(tr.x[:, :, None] * da[:, None, :]).reshape(B, -1),
                           (tr.h_prev[:, :, None] * da[:, None, :]).reshape(B, -1),
                           da], axis=1)


def unflatten_rec(cfg: RNNConfig, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Split a flat P_rec vector into W_in, W_rec, b (copies)."""
    X, H = cfg.x_dim, cfg.hidden
    i1, i2 = X * H, X * H + H * H
    return {"W_in": flat[:i1].reshape(X, H).copy(), "W_rec": flat[i1:i2].reshape(H, H).copy(),
            "b": flat[i2:].copy()}


def rtrl_update(cfg: RNNConfig, p: dict, tr: Transition, S: np.ndarray) -> np.ndarray:
    """Exact sensitivity recursion: from ``S`` = dh_{t-1}/dtheta_rec return a new array
    dh_t/dtheta_rec (``S`` is not modified).  Layout (H, B, P_rec), state unit first, so
    that the propagation is one GEMM ``W_rec.T @ S.reshape(H, B * P_rec)``::

        S_t[j, b, :] = r_b S[j, b, :] + D[b, j] (sum_i W_rec[i, j] S[i, b, :] + dA_j/dtheta)

    where the immediate term dA_j/dtheta is x_i at W_in[i, j], h_{t-1,i} at W_rec[i, j]
    and 1 at b[j].  Peak memory about twice ``S``.
    """
    X, H = cfg.x_dim, cfg.hidden
    _, B, P = S.shape
    new = (p["W_rec"].T @ S.reshape(H, B * P)).reshape(H, B, P)
    j = np.arange(H)
    # immediate terms, added before scaling by D (the reshapes split the last axis: views)
    Sin = new[:, :, :X * H].reshape(H, B, X, H)
    Sin[j, :, :, j] += tr.x[None, :, :]          # advanced dims first: (H, B, X)
    Srec = new[:, :, X * H:X * H + H * H].reshape(H, B, H, H)
    Srec[j, :, :, j] += tr.h_prev[None, :, :]
    new[j, :, X * H + H * H + j] += 1
    new *= tr.D.T[:, :, None]
    for b in range(B):                           # + r_b S[:, b], row by row (no full temporary)
        rb = tr.r[b, 0]
        if rb != 0:
            new[:, b] += S[:, b] if rb == 1 else rb * S[:, b]
    return new
