"""The Parallel Temporal Neural Coding Network (Ororbia & Mali, IEEE TNNLS 2020).

Row-vector convention: activities are (batch, units) float32 arrays and a
layer's input enters as ``a @ M``.  Layer 0 is the data ``x``; latent layers
are 1..L.  Every name below is the paper's and appears in docs/model.md.

One time step (all layers in parallel, from the previous step's state
``x_prev, s_1..s_L``; ``s_0 = x_prev``)::

    h_l   = s_{l-1} @ M_l + s_l @ V_l + s_{l+1} @ U_l     (U_l: l < L, zeta > 0)
            (zeta == 0: no U terms, and the top layer drops s_{L-1} @ M_L)
    z_l   = phi(h_l)
    mu_l  = z_{l+1} @ W_{l+1}          (l < L)        x_mu = out(z_1 @ W_1)
    e_0   = (x_mu - x) * m             e_l = (mu_l - z_l) * m
    d_L   = e_{L-1} @ E_L              d_l = e_{l-1} @ E_l - alpha * e_l   (l < L)
    y_l   = phi(h_l - beta * d_l)
    eps_l = (z_l - y_l) * m

Local updates (descent directions; each clipped to Frobenius norm <= clip, or
<= clip * batch with ``clip_mode = "mean"``)::

    dW_1 = z_1.T @ e_0        dW_l = z_l.T @ eps_{l-1}  (l >= 2)
    dE_l = gamma * dW_l.T     (or, temporal rule, -gamma * e_{l-1}.T @ (eps_l - eps_l_prev))
    dM_l = s_{l-1}.T @ eps_l  dV_l = s_l.T @ eps_l      dU_l = s_{l+1}.T @ eps_l

divided by the batch size and handed to the optimizer; none on the first step
of a sequence.  Then ``x_prev = x, s_l = y_l``.
"""

from __future__ import annotations

import os
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from . import activations as acts
from .fast import FastEngine
from .learner import (Learner, LearnerConfig, Quantity, Updates, check_finite_numbers,
                      check_positive_ints, int_list, rows)

F32 = np.float32
ENGINES = ("fast", "reference")


# ---------------------------------------------------------------------------
# configuration and state
# ---------------------------------------------------------------------------
#: the real-number options of :class:`LRAOptions`
LRA_NUMBERS = ("beta", "alpha", "gamma", "zeta", "clip", "wght_sd", "err_wght_sd")
#: what ``clip`` bounds: the update summed over the batch (the reference code) or its mean
CLIP_MODES = ("sum", "mean")


@dataclass(kw_only=True)
class LRAOptions:
    """What P-TNCN and the spiking P-TNCN share (docs/model.md): the input size, the
    latent layer sizes h_1..h_L, the correction step ``beta``, the error mixing
    ``alpha``, the error-weight rate ``gamma``, top-down control ``zeta`` (0: off), the
    update clipping radius ``clip`` and what it bounds (``clip_mode``: "sum", the
    reference code's, bounds each update summed over the batch rows, before it is
    divided by the batch size; "mean" bounds the batch-mean update the optimizer
    receives), the initial weight scales and the temporal error rule for E."""

    x_dim: int
    hidden: tuple[int, ...] = (1000, 1000)
    beta: float = 0.1
    alpha: float = 0.001
    gamma: float = 1.0
    zeta: float = 1.0
    clip: float = 1.0
    clip_mode: str = "sum"
    wght_sd: float = 0.05
    err_wght_sd: float = 0.05
    temporal_error_rule: bool = False

    @classmethod
    def shared_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(LRAOptions))

    @property
    def L(self) -> int:
        return len(self.hidden)

    def clip_radius(self, batch: int) -> float:
        """The Frobenius radius of the summed (not yet batch-divided) update: ``clip``, or
        ``clip * batch`` when ``clip_mode`` is "mean" (the same bound on the mean)."""
        return self.clip * batch if self.clip_mode == "mean" else self.clip

    @property
    def sizes(self) -> tuple[int, ...]:
        """(X, h_1, ..., h_L): the size of layer l is sizes[l]."""
        return (self.x_dim, *self.hidden)


@dataclass
class PTNCNConfig(LRAOptions, LearnerConfig):
    """Everything that defines a P-TNCN (the optimizer is configured separately).

    ``hidden`` lists the latent layer sizes h_1..h_L (L = len(hidden)); ``engine``
    picks the backend that computes the step ("fast" or the readable "reference";
    equal to 1e-6).
    """

    act: Any = "tanh"
    out: Any = "softmax"
    K: int = 1
    seed: int = 1234
    engine: str = "fast"
    label: ClassVar[str] = "P-TNCN"

    def __post_init__(self):
        self.hidden = int_list("hidden", self.hidden)
        check_positive_ints(self, "x_dim")
        if len(self.hidden) < 1 or min(self.hidden) < 1:
            raise ValueError(f"hidden must list >= 1 positive layer sizes, got {self.hidden!r}")
        if int(self.K) != self.K or self.K < 1:
            raise ValueError(f"K (correction iterations) must be an integer >= 1, got {self.K!r}")
        self.K = int(self.K)
        check_finite_numbers(self, *LRA_NUMBERS)
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {', '.join(CLIP_MODES)}, "
                             f"got {self.clip_mode!r}")
        if self.zeta < 0:
            raise ValueError(f"zeta must be >= 0 (0 switches top-down control off), got {self.zeta}")
        acts.get_activation(self.act)
        acts.get_output(self.out)
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be 'fast' or 'reference', got {self.engine!r}")

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["act"] = acts.name_of(self.act)
        d["out"] = acts.name_of(self.out)
        return d


@dataclass
class State:
    """What one sequence carries from step to step (all (batch, units) float32).

    ``s[l-1]`` is layer l's previous corrected state y_l; ``eps_prev[l-1]`` its
    previous temporal error (used only by the temporal error rule); ``t`` the
    number of steps taken in the current sequence.
    """

    x_prev: np.ndarray
    s: list[np.ndarray]
    eps_prev: list[np.ndarray]
    t: int = 0

    @property
    def batch(self) -> int:
        return self.x_prev.shape[0]

    def __getitem__(self, name: str) -> np.ndarray:
        if name == "x_prev":
            return self.x_prev
        for prefix, seq in (("eps_prev", self.eps_prev), ("s", self.s)):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                l = int(name[len(prefix):])
                if 1 <= l <= len(seq):
                    return seq[l - 1]
        raise KeyError(f"unknown state name {name!r}")

    def copy(self) -> "State":
        return State(self.x_prev.copy(), [a.copy() for a in self.s],
                     [a.copy() for a in self.eps_prev], self.t)

    @classmethod
    def zeros(cls, batch: int, sizes: Sequence[int]) -> "State":
        z = [np.zeros((batch, n), F32) for n in sizes[1:]]
        return cls(np.zeros((batch, sizes[0]), F32), z, [a.copy() for a in z], 0)


# ---------------------------------------------------------------------------
# the equations (pure functions of params, state and input)
# ---------------------------------------------------------------------------
def param_shapes(cfg: PTNCNConfig) -> dict[str, tuple[int, int]]:
    """Names and shapes of every parameter, in the reference's order."""
    n, L = cfg.sizes, cfg.L
    shapes: dict[str, tuple[int, int]] = {}
    for l in range(1, L + 1):
        shapes[f"W{l}"] = (n[l], n[l - 1])
        shapes[f"E{l}"] = (n[l - 1], n[l])
    if cfg.zeta > 0:
        for l in range(1, L):
            shapes[f"U{l}"] = (n[l + 1], n[l])
    for l in range(1, L + 1):
        shapes[f"M{l}"] = (n[l - 1], n[l])
    for l in range(1, L + 1):
        shapes[f"V{l}"] = (n[l], n[l])
    return shapes


def init_params(cfg: PTNCNConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """normal(0, wght_sd) for W, U, M, V and normal(0, err_wght_sd) for E."""
    out = {}
    for name, shape in param_shapes(cfg).items():
        sd = cfg.err_wght_sd if name[0] == "E" else cfg.wght_sd
        out[name] = rng.standard_normal(shape, dtype=F32) * F32(sd)
    return out


def preactivations(p: dict, state: State, cfg: PTNCNConfig) -> list[np.ndarray]:
    """h_1..h_L from the previous step's states (index l-1 holds h_l)."""
    L, on = cfg.L, cfg.zeta > 0
    s = [state.x_prev, *state.s]
    hs = []
    for l in range(1, L + 1):
        if l < L or on:
            h = s[l - 1] @ p[f"M{l}"]
            if l < L and on:
                h += s[l + 1] @ p[f"U{l}"]
            h += s[l] @ p[f"V{l}"]
        else:  # zeta == 0: the top layer runs on its own recurrence
            h = s[l] @ p[f"V{l}"]
        hs.append(h)
    return hs


def predictions(p, states, out_fn, rng, L):
    """x_mu = out(s_1 @ W_1) and mu_l = s_{l+1} @ W_{l+1} from the states ``states``."""
    x_mu = out_fn(states[0] @ p["W1"], rng)
    mus = [states[l] @ p[f"W{l + 1}"] for l in range(1, L)]
    return x_mu, mus


def _errors(x_mu, mus, states, x, m, L):
    """Error units e_0 = (x_mu - x) m and e_l = (mu_l - s_l) m."""
    e = [(x_mu - x) * m]
    for l in range(1, L):
        e.append((mus[l - 1] - states[l - 1]) * m)
    return e


def perturbations(p, e, alpha, L):
    """d_1..d_L from the error units e_0..e_{L-1}."""
    d = []
    for l in range(1, L + 1):
        dl = e[l - 1] @ p[f"E{l}"]
        if l < L:
            dl -= F32(alpha) * e[l]
        d.append(dl)
    return d


def forward(p: dict, state: State, x: np.ndarray, m: np.ndarray, cfg: PTNCNConfig,
            phi, out_fn, rng, hs: list | None = None) -> dict[str, np.ndarray]:
    """One inference step: every per-step quantity, by name.  Pure (no mutation).

    ``hs`` may pass in precomputed pre-activations (an engine's).
    """
    L = cfg.L
    if hs is None:
        hs = preactivations(p, state, cfg)
    zs = [phi(h, rng) for h in hs[::-1]][::-1]          # drawn top-down, as the reference
    x_mu, mus = predictions(p, zs, out_fn, rng, L)
    e = _errors(x_mu, mus, zs, x, m, L)
    d = perturbations(p, e, cfg.alpha, L)
    ys = [phi(hs[l] - F32(cfg.beta) * d[l], rng) for l in reversed(range(L))][::-1]
    for _ in range(cfg.K - 1):   # K > 1: re-evaluate the error units at the corrected states
        xk, musk = predictions(p, ys, out_fn, rng, L)
        d = perturbations(p, _errors(xk, musk, ys, x, m, L), cfg.alpha, L)
        ys = [phi(hs[l] - F32(cfg.beta) * d[l], rng) for l in reversed(range(L))][::-1]
    q = {"x": x, "x_mu": x_mu, "e0": e[0]}
    for l in range(1, L + 1):
        q[f"h{l}"] = hs[l - 1]
        q[f"z{l}"] = zs[l - 1]
        q[f"d{l}"] = d[l - 1]
        q[f"y{l}"] = ys[l - 1]
        q[f"eps{l}"] = (zs[l - 1] - ys[l - 1]) * m
        if l < L:
            q[f"mu{l}"] = mus[l - 1]
            q[f"e{l}"] = e[l]
    return q


def clip_frobenius(g: np.ndarray, radius: float) -> np.ndarray:
    """Scale ``g`` in place so that its Frobenius norm is <= radius (radius <= 0: off).

    An update whose norm is not finite (NaN/inf entries, or finite ones whose float32
    squares overflow) cannot be clipped: it is made NaN, so that the step's divergence
    check names it (``d<param>``, as the fast engine does) instead of applying zeros."""
    if radius > 0:
        norm = float(np.sqrt(np.vdot(g, g)))
        if not np.isfinite(norm):
            g.fill(np.nan)
        elif norm > radius:
            g *= F32(radius / norm)
    return g


def local_updates(p: dict, state: State, q: dict, cfg: PTNCNConfig) -> dict[str, np.ndarray]:
    """The LRA descent directions (clipped, not yet divided by the batch size)."""
    L, r, g = cfg.L, cfg.clip_radius(state.x_prev.shape[0]), F32(cfg.gamma)
    s = [state.x_prev, *state.s]
    d: dict[str, np.ndarray] = {}
    for l in range(1, L + 1):
        err_below = q["e0"] if l == 1 else q[f"eps{l - 1}"]
        dW = clip_frobenius(q[f"z{l}"].T @ err_below, r)
        d[f"W{l}"] = dW
        if cfg.temporal_error_rule:
            e_in = q[f"e{l - 1}"]
            dE = (e_in.T @ (q[f"eps{l}"] - state.eps_prev[l - 1])) * (-g)
        else:
            dE = dW.T * g
        d[f"E{l}"] = clip_frobenius(np.ascontiguousarray(dE), r)
    for l in range(1, L + 1):
        eps = q[f"eps{l}"]
        if cfg.zeta > 0 and l < L:
            d[f"U{l}"] = clip_frobenius(s[l + 1].T @ eps, r)
        d[f"M{l}"] = clip_frobenius(s[l - 1].T @ eps, r)
        d[f"V{l}"] = clip_frobenius(s[l].T @ eps, r)
    return d


def carry(state: State, x: np.ndarray, q: dict) -> State:
    """The next step's state: x_prev = x, s_l = y_l, eps_prev_l = eps_l."""
    L = len(state.s)
    return State(x, [q[f"y{l}"] for l in range(1, L + 1)],
                 [q[f"eps{l}"] for l in range(1, L + 1)], state.t + 1)


class ReferenceEngine:
    """The readable engine: the functions above, one parameter array per name.

    Interface shared with :class:`ptncn.fast.FastEngine` (interchangeable; equal to
    1e-6): ``params`` (the storage, by name), ``preactivations(state) -> (hs, ctx)``,
    ``updates(state, q, ctx, batch) -> Updates`` (clipped, divided by the batch size)
    and ``apply(optimizer, updates)``.
    """

    def __init__(self, cfg: PTNCNConfig, init: dict[str, np.ndarray]):
        self.cfg = cfg
        self.params = {k: np.array(v, F32) for k, v in init.items()}

    def preactivations(self, state: State):
        return preactivations(self.params, state, self.cfg), None

    def updates(self, state: State, q: dict, ctx, batch: int) -> Updates:
        u = local_updates(self.params, state, q, self.cfg)
        inv_b = F32(1.0 / batch)
        for a in u.values():
            a *= inv_b
        return Updates(u)

    def apply(self, optimizer, updates: Updates) -> None:
        optimizer.step(self.params, updates.scratch())


# ---------------------------------------------------------------------------
# the learner
# ---------------------------------------------------------------------------
def layered_table(sizes: Sequence[int], meanings: dict, order: Sequence[tuple[str, str]]
                  ) -> dict[str, Quantity]:
    """A quantity table for layered models (P-TNCN and the spiking P-TNCN).

    ``order`` lists ``(base, which)`` in causal order: ``which`` is "input" (one
    quantity named ``base`` of x_dim units), "all" (``base1..baseL``) or "below"
    (``base1..base{L-1}``); ``meanings[base]`` is ``(text, unit)`` with ``{l}`` and
    ``{l1}`` (= l + 1) filled in.
    """
    L = len(sizes) - 1
    table = {}
    for base, which in order:
        text, unit = meanings[base]
        if which == "input":
            table[base] = Quantity(rows(sizes[0]), text, unit)
            continue
        for l in range(1, L + 1 if which == "all" else L):
            table[f"{base}{l}"] = Quantity(rows(sizes[l]), text.format(l=l, l1=l + 1), unit)
    return table


MEANINGS = {
    "x": ("input x_t (the target of the prediction x_mu)", "input units"),
    "x_mu": ("prediction of x_t made before seeing it, out(z1 @ W1)", "output units"),
    "e0": ("error units of the input layer, (x_mu - x) * m", "output units"),
    "h": ("pre-activation of layer {l}", "a.u."),
    "z": ("free-running state of layer {l}, phi(h{l})", "activation"),
    "mu": ("top-down prediction of z{l}, z{l1} @ W{l1}", "activation"),
    "e": ("error units of layer {l}, (mu{l} - z{l}) * m", "activation"),
    "d": ("perturbation of layer {l} from the errors below/at it", "a.u."),
    "y": ("corrected state (target) of layer {l}, phi(h{l} - beta d{l})", "activation"),
    "eps": ("temporal error units of layer {l}, (z{l} - y{l}) * m", "activation"),
}
#: P-TNCN's quantities in causal order (a divergence is named by the first non-finite)
ORDER = (("x", "input"), ("h", "all"), ("z", "all"), ("mu", "below"), ("x_mu", "input"),
         ("e0", "input"), ("e", "below"), ("d", "all"), ("y", "all"), ("eps", "all"))


def refuse_callables(path, d: dict, keys=("act", "out")) -> None:
    """A config read from ``path`` naming a user callable (it cannot be stored) is an
    error asking for the function again."""
    for key in keys:
        if str(d.get(key, "")).startswith("<callable:"):
            raise ValueError(f"{os.fspath(path)}: the model was saved with a user callable "
                             f"{key} {d[key]}; pass it again: load(path, {key}=function)")


class LayeredLearner(Learner):
    """What P-TNCN and the spiking P-TNCN share: the layered state, ``hidden`` given as
    sizes or as one size repeated ``layers`` times, the published optimizer, the
    correction phase switched off by ``beta``."""

    State = State
    default_optimizer = {"optimizer": "nesterov", "lr": 0.075, "momentum": 0.95}
    correction_key = "beta"
    update_meaning = "update direction applied at this step (clipped, divided by the batch size)"

    def __init__(self, x_dim: int, hidden: int | Sequence[int] | None = None, *,
                 layers: int = 2, **options):
        if isinstance(hidden, (int, np.integer)):
            hidden = (int(hidden),) * int(layers)
        if hidden is not None:
            options["hidden"] = tuple(hidden)
        super().__init__(x_dim, **options)

    def init_state(self, batch: int) -> State:
        return State.zeros(batch, self.config.sizes)

    def param_shapes(self) -> dict[str, tuple[int, int]]:
        return param_shapes(self.config)


class PTNCN(LayeredLearner):
    """A P-TNCN with its optimizer and the state of the current batch of sequences.

    Example::

        model = PTNCN(x_dim=49, hidden=(250, 250), optimizer="sgd", lr=0.1, seed=0)
        model.reset(batch=8)
        for x_t, m_t in sequence:          # x_t: (8, 49), m_t: (8, 1) of 0/1
            x_mu = model.step(x_t, m_t)    # learns online (learn=False to freeze)
            z1 = model.quantity("z1")      # or model.quantities["z1"]

    ``hidden`` is a list of layer sizes, or one size repeated ``layers`` times; the
    other keywords are :class:`PTNCNConfig`'s and the optimizer's (``optimizer``,
    ``lr``, ``momentum``, ``weight_decay``, ``max_norm``, ``optimizer_options``;
    default the published Nesterov, lr 0.075, momentum 0.95).
    """

    name = "ptncn"
    Config = PTNCNConfig
    docs = "docs/model.md"

    def _build(self):
        cfg = self.config
        self.phi = acts.get_activation(cfg.act)
        self.out_fn = acts.get_output(cfg.out)
        init = init_params(cfg, self.rng)
        self.engine = (FastEngine if cfg.engine == "fast" else ReferenceEngine)(cfg, init)
        return self.engine.params

    def quantity_table(self):
        return layered_table(self.config.sizes, MEANINGS, ORDER)

    def _step(self, params, state, x, m, learn):
        hs, ctx = self.engine.preactivations(state)
        q = forward(params, state, x, m, self.config, self.phi, self.out_fn, self.rng, hs)
        updates = Updates()
        if learn and state.t > 0:
            updates = self.engine.updates(state, q, ctx, x.shape[0])
        return carry(state, x, q), q, updates

    def _apply(self, updates) -> None:
        self.engine.apply(self.optimizer, updates)

    def transition(self, state: State, x: np.ndarray, m: np.ndarray) -> tuple[State, dict]:
        """Pure step without learning: (next state, quantities).  Inputs must be float32."""
        state, q, _ = self._step(self.params, state, x, m, False)
        return state, q

    @classmethod
    def config_from_file(cls, path, meta, overrides):
        d = {**meta["config"], **overrides}
        refuse_callables(path, d)
        return cls.Config.from_dict(d)


def load(path, **overrides) -> PTNCN:
    """Load a model saved with ``PTNCN.save`` (``engine=`` picks the backend)."""
    return PTNCN.load(path, **overrides)
