"""The windowed control: a stateless feed-forward network on the last ``w`` inputs.

A control for the recurrent baselines: it predicts ``x_t`` from a fixed window of
the ``w`` inputs before it and carries nothing else, so whatever a recurrent
learner does better than it comes from its recurrence.  Step semantics are those
of the gradient baselines (:mod:`ptncn.baselines.gradient`); row-vector
convention, batch rows.  One step with input ``x_t`` (B, X) and mask ``m_t`` (B, 1)::

    window:              u_t  = [x_{t-1}, x_{t-2}, ..., x_{t-w}]       (B, w X)
                         (most recent first; x_s = 0 for s < 0)
    hidden layer:        a_t  = u_t W1 + b1        z_t = act(a_t)      (B, H)
    prediction of x_t:   l_t  = z_t W_out + c      x_mu_t = out(l_t)
    loss of x_t:         L_t  = (1/n_t) sum_b m_b loss(l_t[b], x_t[b])    n_t = sum_b m_b
    window shift:        u_{t+1} = m * [x_t, x_{t-1}, ..., x_{t-w+1}] + (1 - m) * u_t

(``hidden = 0``: no hidden layer, ``z_t = u_t`` and ``l_t = u_t W_out + c``, a
linear / softmax regression on the window).  ``loss``, ``out`` and ``act`` are those
of :mod:`ptncn.baselines.rnn`.  Rows with m = 0 add no loss and keep their window.

Learning: after every step with at least one row of mask 1, one update, the exact
gradient of ``L_t`` (``do = dL_t/dl_t`` from :func:`ptncn.baselines.rnn.logit_grad`)::

    dW_out = z_t.T do      dc = sum_b do
    g      = (do W_out.T) * act'(a_t)
    dW1    = u_t.T g       db1 = sum_b g

clipped to global L2 norm ``clip`` (0 = off) and handed to the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..learner import Learner, LearnerConfig, Quantity, Updates, check_positive_ints, rows
from ..optim import clip_grad_norm
from . import rnn

DTYPES = ("float32", "float64")


@dataclass
class WindowConfig(LearnerConfig):
    """The window length ``w`` (inputs), the hidden layer's size ``hidden`` (0: none) and
    activation ``act``, the output function ``out``, the gradient clipping ``clip``
    (0 = off), the ``seed`` of the initial weights and the ``dtype`` of the computation."""

    x_dim: int
    w: int = 2
    hidden: int = 64
    act: str = "tanh"
    out: str = "softmax"
    clip: float = 1.0
    seed: int = 1234
    dtype: str = "float32"

    def __post_init__(self):
        check_positive_ints(self, "x_dim", "w")
        h = self.hidden
        if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) \
                or int(h) != h or h < 0:
            raise ValueError(f"hidden must be an integer >= 0 (0: no hidden layer), got {h!r}")
        self.hidden = int(h)
        for key, allowed in (("act", rnn.ACTS), ("out", rnn.OUTS), ("dtype", DTYPES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(map(repr, allowed))}, "
                                 f"got {getattr(self, key)!r}")
        c = self.clip
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) \
                or not np.isfinite(c) or c < 0:
            raise ValueError(f"clip must be a finite number >= 0 (0 = off), got {c!r}")
        self.clip = float(c)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def u_dim(self) -> int:
        """Width of the window, w * x_dim."""
        return self.w * self.x_dim


@dataclass
class WindowState:
    """The window ``u`` of the current sequences (B, w X), most recent input first, and
    the step ``t``."""

    window: np.ndarray
    t: int


@dataclass
class Cache:
    """What the forward pass keeps for the gradient: the window ``u``, the hidden
    activations ``z`` and their slopes ``dz`` (both None without a hidden layer)."""

    u: np.ndarray
    z: np.ndarray | None
    dz: np.ndarray | None


# ---------------------------------------------------------------------------
# pure pieces
# ---------------------------------------------------------------------------
def param_shapes(cfg: WindowConfig) -> dict[str, tuple[int, ...]]:
    """W1 (w X, H), b1 (H,), W_out (H, X), c (X,); without a hidden layer W_out (w X, X), c."""
    U, H, X = cfg.u_dim, cfg.hidden, cfg.x_dim
    if H == 0:
        return {"W_out": (U, X), "c": (X,)}
    return {"W1": (U, H), "b1": (H,), "W_out": (H, X), "c": (X,)}


def init_params(cfg: WindowConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every weight matrix ~ N(0, 1 / fan_in) (drawn in the order W1, W_out), biases 0."""
    p = {}
    for name, shape in param_shapes(cfg).items():
        p[name] = rng.standard_normal(shape) / np.sqrt(shape[0]) if len(shape) == 2 \
            else np.zeros(shape)
    return {k: np.ascontiguousarray(v, dtype=cfg.np_dtype) for k, v in p.items()}


def shift(window: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The next window: ``x`` in front, the oldest input dropped, on the rows with mask 1;
    rows with mask 0 keep ``window``.  A new array."""
    X = x.shape[1]
    moved = np.concatenate([x, window[:, :window.shape[1] - X]], axis=1)
    return np.where(m > 0, moved, window)


def forward(cfg: WindowConfig, p: dict, u: np.ndarray) -> tuple[np.ndarray, Cache]:
    """The logits of the prediction from the window ``u`` (B, w X), and the cache."""
    if cfg.hidden == 0:
        z = dz = None
        feat = u
    else:
        a = u @ p["W1"]
        a += p["b1"]
        z, dz = rnn.activation(cfg.act, a)
        feat = z
    logits = feat @ p["W_out"]
    logits += p["c"]
    return logits, Cache(u, z, dz)


def gradient(cfg: WindowConfig, p: dict, cache: Cache, do: np.ndarray) -> dict[str, np.ndarray]:
    """The gradient of the loss whose derivative on the logits is ``do`` (B, X), by
    back-propagation through the network: one array per parameter."""
    feat = cache.u if cfg.hidden == 0 else cache.z
    g = {"W_out": feat.T @ do, "c": do.sum(axis=0)}
    if cfg.hidden:
        ga = (do @ p["W_out"].T) * cache.dz
        g["W1"] = cache.u.T @ ga
        g["b1"] = ga.sum(axis=0)
    return {k: np.ascontiguousarray(g[k], dtype=p[k].dtype) for k in p}


def batch_loss(cfg: WindowConfig, p: dict, u: np.ndarray, x: np.ndarray,
               m: np.ndarray) -> float:
    """The batch-mean masked loss ``L_t`` of the prediction from ``u`` (0 without rows)."""
    n = float(m.sum())
    if n <= 0:
        return 0.0
    logits, _ = forward(cfg, p, u)
    return float((m[:, 0] * rnn.row_loss(cfg.out, logits, x)).sum() / n)


# ---------------------------------------------------------------------------
# the learner
# ---------------------------------------------------------------------------
class Window(Learner):
    """A feed-forward network on the last ``w`` inputs, trained online on each step's
    loss: the stateless control of the recurrent baselines."""

    name = "window"
    Config = WindowConfig
    State = WindowState
    docs = "docs/baselines.md"

    @property
    def update_meaning(self) -> str:
        return ("gradient of the batch-mean loss handed to the optimizer at this step "
                "(Window; clipped)")

    @property
    def dtype(self) -> np.dtype:
        return self.config.np_dtype

    def _build(self) -> dict[str, np.ndarray]:
        return init_params(self.config, self.rng)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return param_shapes(self.config)

    def quantity_table(self) -> dict[str, Quantity]:
        cfg = self.config
        table = {"x": Quantity(rows(cfg.x_dim), "input x_t (the target of the prediction x_mu)",
                               "input units"),
                 "window": Quantity(rows(cfg.u_dim), "the network's input [x_{t-1}, ..., "
                                    "x_{t-w}] (zeros before the start)", "input units")}
        if cfg.hidden:
            table["z"] = Quantity(rows(cfg.hidden), "hidden activations act(window W1 + b1)",
                                  "activation")
        table["x_mu"] = Quantity(rows(cfg.x_dim), "prediction of x_t from the window before "
                                 "seeing it", "output units")
        return table

    def init_state(self, batch: int) -> WindowState:
        return WindowState(window=np.zeros((batch, self.config.u_dim), self.dtype), t=0)

    def _step(self, params, state, x, m, learn):
        cfg = self.config
        logits, cache = forward(cfg, params, state.window)
        y = rnn.output(cfg.out, logits)
        updates = Updates()
        n = float(m.sum())
        if learn and n > 0:
            grads = gradient(cfg, params, cache, rnn.logit_grad(cfg.out, y, x, m, n))
            clip_grad_norm(grads, cfg.clip)   # non-finite: left as is, named d<param>
            updates = Updates(grads)
        q = {"x": x, "window": state.window, "x_mu": y}
        if cfg.hidden:
            q["z"] = cache.z
        return WindowState(window=shift(state.window, x, m), t=state.t + 1), q, updates
