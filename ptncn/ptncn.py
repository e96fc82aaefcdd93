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

Local updates (descent directions; each clipped to Frobenius norm <= clip)::

    dW_1 = z_1.T @ e_0        dW_l = z_l.T @ eps_{l-1}  (l >= 2)
    dE_l = gamma * dW_l.T     (or, temporal rule, -gamma * e_{l-1}.T @ (eps_l - eps_l_prev))
    dM_l = s_{l-1}.T @ eps_l  dV_l = s_l.T @ eps_l      dU_l = s_{l+1}.T @ eps_l

divided by the batch size and handed to the optimizer; none on the first step
of a sequence.  Then ``x_prev = x, s_l = y_l``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import activations as acts
from .errors import DivergenceError, ModelFileError
from .fast import FactoredUpdates, FastEngine
from .learner import (FORMAT_NAME, Learner, ParamDict, check_step_input, pack_params,
                      read_model_file, unpack_params,
                      write_model_file)
from .optim import Optimizer, make_optimizer, resolve_optimizer

FORMAT_VERSION = 1
F32 = np.float32


# ---------------------------------------------------------------------------
# configuration and state
# ---------------------------------------------------------------------------
@dataclass
class PTNCNConfig:
    """Everything that defines a P-TNCN (the optimizer is configured separately).

    ``hidden`` lists the latent layer sizes h_1..h_L (L = len(hidden)).
    """

    x_dim: int
    hidden: tuple[int, ...] = (1000, 1000)
    act: Any = "tanh"
    out: Any = "softmax"
    beta: float = 0.1
    alpha: float = 0.001
    gamma: float = 1.0
    zeta: float = 1.0
    clip: float = 1.0
    wght_sd: float = 0.05
    err_wght_sd: float = 0.05
    K: int = 1
    temporal_error_rule: bool = False
    seed: int = 1234

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if int(self.x_dim) != self.x_dim or self.x_dim < 1:
            raise ValueError(f"x_dim must be a positive integer, got {self.x_dim!r}")
        self.x_dim = int(self.x_dim)
        if len(self.hidden) < 1 or min(self.hidden) < 1:
            raise ValueError(f"hidden must list >= 1 positive layer sizes, got {self.hidden!r}")
        if int(self.K) != self.K or self.K < 1:
            raise ValueError(f"K (correction iterations) must be an integer >= 1, got {self.K!r}")
        self.K = int(self.K)
        for name in ("beta", "alpha", "gamma", "zeta", "clip", "wght_sd", "err_wght_sd"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        if self.zeta < 0:
            raise ValueError(f"zeta must be >= 0 (0 switches top-down control off), got {self.zeta}")
        acts.get_activation(self.act)
        acts.get_output(self.out)

    @property
    def L(self) -> int:
        return len(self.hidden)

    @property
    def sizes(self) -> tuple[int, ...]:
        """(X, h_1, ..., h_L): the size of layer l is sizes[l]."""
        return (self.x_dim, *self.hidden)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["act"] = acts.name_of(self.act)
        d["out"] = acts.name_of(self.out)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PTNCNConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown P-TNCN config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


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


def _predictions(p, states, out_fn, rng, L):
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


def _perturbations(p, e, alpha, L):
    """d_1..d_L from the error units e_0..e_{L-1}."""
    d = []
    for l in range(1, L + 1):
        dl = e[l - 1] @ p[f"E{l}"]
        if l < L:
            dl -= F32(alpha) * e[l]
        d.append(dl)
    return d


def forward(p: dict, state: State, x: np.ndarray, m: np.ndarray, cfg: PTNCNConfig,
            phi, out_fn, rng, hs: list | None = None, tick=None) -> dict[str, np.ndarray]:
    """One inference step: every per-step quantity, by name.  Pure (no mutation).

    ``hs`` may pass in precomputed pre-activations (the fast engine's); ``tick``,
    if given, is called with "forward" after the predictions and "targets" at the
    end (used by benchmarks/throughput.py for its per-phase breakdown).
    """
    L = cfg.L
    if hs is None:
        hs = preactivations(p, state, cfg)
    zs = [phi(h, rng) for h in hs[::-1]][::-1]          # drawn top-down, as the reference
    x_mu, mus = _predictions(p, zs, out_fn, rng, L)
    if tick is not None:
        tick("forward")
    e = _errors(x_mu, mus, zs, x, m, L)
    d = _perturbations(p, e, cfg.alpha, L)
    ys = [phi(hs[l] - F32(cfg.beta) * d[l], rng) for l in reversed(range(L))][::-1]
    for _ in range(cfg.K - 1):   # K > 1: re-evaluate the error units at the corrected states
        xk, musk = _predictions(p, ys, out_fn, rng, L)
        d = _perturbations(p, _errors(xk, musk, ys, x, m, L), cfg.alpha, L)
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
    if tick is not None:
        tick("targets")
    return q


def clip_frobenius(g: np.ndarray, radius: float) -> np.ndarray:
    """Scale ``g`` in place so that its Frobenius norm is <= radius (radius <= 0: off)."""
    if radius > 0:
        norm = float(np.sqrt(np.vdot(g, g)))
        if norm > radius:
            g *= F32(radius / norm)
    return g


def local_updates(p: dict, state: State, q: dict, cfg: PTNCNConfig) -> dict[str, np.ndarray]:
    """The LRA descent directions (clipped, not yet divided by the batch size)."""
    L, r, g = cfg.L, cfg.clip, F32(cfg.gamma)
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


def _first_nonfinite(arrays: dict[str, np.ndarray], names) -> str | None:
    for name in names:
        a = arrays[name]
        # the sum is a cheap screen; confirm element-wise (a sum can overflow)
        if not np.isfinite(a.sum()) and not np.isfinite(a).all():
            return name
    return None


# ---------------------------------------------------------------------------
# the learner
# ---------------------------------------------------------------------------
class LayeredQuantities:
    """``quantity_shape`` and ``describe`` for learners whose recordable names are
    ``x, x_mu, e0``, the parameters, ``d<param>`` and per-layer ``<base><l>`` quantities
    with ``<base>`` a key of ``_MEANINGS`` (P-TNCN and the spiking P-TNCN).  Needs
    ``params``, ``config`` (``x_dim``, ``sizes``), ``recordable`` and ``_MEANINGS``."""

    _MEANINGS: dict = {}

    def quantity_shape(self, name: str, batch: int) -> tuple[int, ...]:
        if name in self.params:
            return self.params[name].shape
        if name.startswith("d") and name[1:] in self.params:
            return self.params[name[1:]].shape
        if name in ("x", "x_mu", "e0"):
            return (batch, self.config.x_dim)
        base = name.rstrip("0123456789")
        if name in self.recordable and base in self._MEANINGS:
            return (batch, self.config.sizes[int(name[len(base):])])
        raise KeyError(f"unknown quantity {name!r}; recordable: {', '.join(self.recordable)}")

    def describe(self, name: str) -> tuple[str, str]:
        if name in self.params:
            return (f"parameter {name} (see docs/model.md)", "weight")
        if name.startswith("d") and name[1:] in self.params:
            return (f"update direction applied to {name[1:]} at this step "
                    "(clipped, divided by the batch size)", "weight / step")
        if name in self._MEANINGS:
            return self._MEANINGS[name]
        base = name.rstrip("0123456789")
        if base in self._MEANINGS and name != base:
            l = int(name[len(base):])
            text, unit = self._MEANINGS[base]
            return (text.format(l=l, l1=l + 1), unit)
        return (name, "a.u.")


class PTNCN(LayeredQuantities, Learner):
    """A P-TNCN with its optimizer and the state of the current batch of sequences.

    Example::

        model = PTNCN(x_dim=49, hidden=(250, 250), optimizer="sgd", lr=0.1, seed=0)
        model.reset(batch=8)
        for x_t, m_t in sequence:          # x_t: (8, 49), m_t: (8, 1) of 0/1
            x_mu = model.step(x_t, m_t)    # learns online (learn=False to freeze)
            z1 = model.quantity("z1")      # or model.quantities["z1"]
    """

    def __init__(self, x_dim: int, hidden: int | Sequence[int] = 1000, *, layers: int = 2,
                 act="tanh", out="softmax", beta: float = 0.1, alpha: float = 0.001,
                 gamma: float = 1.0, zeta: float = 1.0, clip: float = 1.0,
                 wght_sd: float = 0.05, err_wght_sd: float = 0.05, K: int = 1,
                 temporal_error_rule: bool = False, seed: int = 1234,
                 optimizer: str | Optimizer = "nesterov", lr: float = 0.075,
                 momentum: float = 0.95, weight_decay: float = 0.0, max_norm: float = 0.0,
                 optimizer_options: dict | None = None, engine: str = "fast"):
        if isinstance(hidden, (int, np.integer)):
            hidden = (int(hidden),) * int(layers)
        cfg = PTNCNConfig(x_dim=x_dim, hidden=tuple(hidden), act=act, out=out, beta=beta,
                          alpha=alpha, gamma=gamma, zeta=zeta, clip=clip, wght_sd=wght_sd,
                          err_wght_sd=err_wght_sd, K=K,
                          temporal_error_rule=temporal_error_rule, seed=seed)
        opt = resolve_optimizer(optimizer, lr, momentum, weight_decay, max_norm,
                                optimizer_options)
        self._setup(cfg, opt, engine)

    def _setup(self, cfg: PTNCNConfig, opt: Optimizer, engine: str = "fast") -> None:
        if engine not in ("fast", "reference"):
            raise ValueError(f"engine must be 'fast' or 'reference', got {engine!r}")
        self.config = cfg
        self.engine = engine
        self.rng = np.random.default_rng(cfg.seed)
        self.phi = acts.get_activation(cfg.act)
        self.out_fn = acts.get_output(cfg.out)
        init = init_params(cfg, self.rng)
        # parameters live in the fast engine's stacked storage; params[...] are views
        self._fast = FastEngine(cfg, init)
        self.params = ParamDict({k: self._fast.views[k] for k in init})
        self.optimizer = opt
        self.state: State | None = None
        self.quantities: dict[str, np.ndarray] = {}
        self.updates: dict[str, np.ndarray] = {}
        self.steps_taken = 0
        self.extra_meta: dict = {}
        self.tick = None        # optional phase callback (benchmarks): tick(phase_name)
        L = cfg.L
        # causal order, so a DivergenceError names where the non-finite value first appears
        self._check_order = ([f"h{l}" for l in range(1, L + 1)] + [f"z{l}" for l in range(1, L + 1)]
                             + [f"mu{l}" for l in range(1, L)] + ["x_mu", "e0"]
                             + [f"e{l}" for l in range(1, L)] + [f"d{l}" for l in range(1, L + 1)]
                             + [f"y{l}" for l in range(1, L + 1)]
                             + [f"eps{l}" for l in range(1, L + 1)])

    # -- learner interface -------------------------------------------------------
    def reset(self, batch: int) -> None:
        if int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self.state = State.zeros(int(batch), self.config.sizes)
        self.quantities = {}
        self.updates = {}

    @property
    def recordable(self) -> tuple[str, ...]:
        L = self.config.L
        names = ["x", "x_mu", "e0"]
        for l in range(1, L + 1):
            names += [f"h{l}", f"z{l}", f"d{l}", f"y{l}", f"eps{l}"]
            if l < L:
                names += [f"mu{l}", f"e{l}"]
        names += list(self.params)
        names += [f"d{k}" for k in self.params]  # the last applied update directions
        return tuple(names)

    def quantity_norm(self, name: str) -> float:
        if isinstance(self.updates, FactoredUpdates) and name in self.updates:
            return self.updates.norm(name)
        return super().quantity_norm(name)

    _MEANINGS = {
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

    def _check_input(self, x, mask):
        x, m = check_step_input(x, mask, self.config.x_dim,
                                None if self.state is None else self.state.batch)
        if self.state is None:
            self.reset(x.shape[0])
        return x, m

    def transition(self, state: State, x: np.ndarray, m: np.ndarray) -> tuple[State, dict]:
        """Pure step without learning: (next state, quantities).  Inputs must be float32."""
        q, _ = self._forward(state, x, m)
        return self._carry(state, x, q), q

    def _forward(self, state, x, m):
        if self.engine == "fast":
            hs, inputs = self._fast.preactivations(state)
        else:
            hs, inputs = None, None
        q = forward(self.params, state, x, m, self.config, self.phi, self.out_fn, self.rng, hs,
                    tick=self.tick)
        return q, inputs

    def _carry(self, state, x, q):
        L = self.config.L
        return State(x, [q[f"y{l}"] for l in range(1, L + 1)],
                     [q[f"eps{l}"] for l in range(1, L + 1)], state.t + 1)

    def step(self, x, mask=None, learn: bool = True) -> np.ndarray:
        """Advance one step; learn (unless ``learn=False`` or first step); return x_mu."""
        x, m = self._check_input(x, mask)
        state = self.state
        rng_state = self.rng.bit_generator.state

        def diverged(quantity):
            self.rng.bit_generator.state = rng_state
            return DivergenceError(self.steps_taken, quantity, f"t={state.t} of the sequence")

        q, inputs = self._forward(state, x, m)
        bad = _first_nonfinite(q, self._check_order)
        if bad is not None:
            raise diverged(bad)
        self.updates = {}
        if learn and state.t > 0:
            B = x.shape[0]
            if self.engine == "fast":
                factors, table, norms = self._fast.factors(state, q, inputs, B)
                # the factors are finite quantities times finite scales; only a norm
                # (a sum of squares) can still overflow
                for name, nrm in norms.items():
                    if not np.isfinite(nrm):
                        raise diverged(f"d{name}")
                if self.tick is not None:
                    self.tick("updates")
                self._fast.apply(self.optimizer, factors)
                if self.tick is not None:
                    self.tick("optimizer")
                self.updates = FactoredUpdates(table)
            else:
                updates = local_updates(self.params, state, q, self.config)
                inv_b = F32(1.0 / B)
                for u in updates.values():
                    u *= inv_b
                bad = _first_nonfinite(updates, list(updates))
                if bad is not None:
                    raise diverged(f"d{bad}")
                self.updates = {f"d{k}": u.copy() for k, u in updates.items()}
                self.optimizer.step(self.params, updates)
        self.quantities = q
        self.state = self._carry(state, x, q)
        self.steps_taken += 1
        return q["x_mu"]

    # -- persistence -------------------------------------------------------------
    def save(self, path, include_state: bool = False, extra_meta: dict | None = None) -> None:
        """Write config, params, optimizer state and RNG state to ``path`` (.npz).

        ``include_state`` also stores the current sequences' state (a checkpoint
        taken mid-sequence resumes exactly); ``extra_meta`` is stored as JSON and
        comes back as ``model.extra_meta``.  The file is written beside the
        target and renamed over it, so an error never leaves a half-written file
        or destroys an earlier save.
        """
        path = os.fspath(path)
        opt_state = self.optimizer.state_dict()
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "class": type(self).__name__,
                "config": self.config.to_dict(), "optimizer": opt_state["hyperparams"],
                "optimizer_t": opt_state["t"], "steps_taken": self.steps_taken,
                "rng": self.rng.bit_generator.state}
        if extra_meta:
            meta["extra"] = extra_meta
        arrays = {}
        if include_state and self.state is not None:
            st = self.state
            meta["state_t"] = st.t
            arrays["state/x_prev"] = st.x_prev
            for l, (a, e) in enumerate(zip(st.s, st.eps_prev), start=1):
                arrays[f"state/s{l}"] = a
                arrays[f"state/eps_prev{l}"] = e
        arrays.update(pack_params(self.params, self.optimizer))
        write_model_file(path, meta, arrays)

    @classmethod
    def load(cls, path, engine: str = "fast", **overrides) -> "PTNCN":
        """Read a model written by :meth:`save` (``act=``/``out=`` restore callables)."""
        path = os.fspath(path)
        meta, arrays = read_model_file(path, FORMAT_VERSION)
        cfg_d = dict(meta["config"])
        cfg_d.update(overrides)
        for key in ("act", "out"):
            if str(cfg_d[key]).startswith("<callable:"):
                raise ValueError(f"{path}: the model was saved with a user callable {key} "
                                 f"{cfg_d[key]}; pass it again: load(path, {key}=function)")
        cfg = PTNCNConfig.from_dict(cfg_d)
        hp = dict(meta["optimizer"])
        opt = make_optimizer(hp.pop("name"), **hp)
        model = cls.__new__(cls)
        model._setup(cfg, opt, engine)
        unpack_params(path, arrays, model.params, opt, meta["optimizer_t"])
        model.rng.bit_generator.state = meta["rng"]
        model.steps_taken = int(meta["steps_taken"])
        model.extra_meta = meta.get("extra", {})
        if "state_t" in meta:
            L = cfg.L
            try:
                model.state = State(np.array(arrays["state/x_prev"], F32),
                                    [np.array(arrays[f"state/s{l}"], F32) for l in range(1, L + 1)],
                                    [np.array(arrays[f"state/eps_prev{l}"], F32)
                                     for l in range(1, L + 1)], int(meta["state_t"]))
            except KeyError as exc:
                raise ModelFileError(f"{path}: state array {exc} missing") from None
        return model


def load(path, engine: str = "fast", **overrides) -> PTNCN:
    """Load a model saved with ``PTNCN.save``."""
    return PTNCN.load(path, engine=engine, **overrides)
