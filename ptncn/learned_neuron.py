"""The learned neuron: a network ``b`` whose every unit is a small shared network ``a``.

Row-vector convention (batch rows), as P-TNCN.  Each unit of ``b`` computes its
pre-activation ``s`` as usual and hands it, with ``n_m`` values it carries, to
the activation network ``a`` (parameters ``theta_a``, fixed: not trained here)::

    a(s, m):   z = [s, m_1..m_nm]            hid = tanh(z W1_a + b1_a)   (a_hidden units)
               r = hid W2_a + b2_a           (2 + n_m outputs)
               o = tanh(r_0)                 the unit's output
               delta = r_1                   used by learning in place of do/ds
    memory:    g = sigmoid(r_2..)            new_m = (1 - g) m + g s
    recurrent: g = none                      new_m = tanh(r_2..)   (a's own hidden state)

``neuron = "tanh"`` replaces ``a`` by the fixed neuron ``o = tanh(s)``,
``delta = 1 - o^2`` with nothing carried (a control; with one recurrent layer it
is the vanilla RNN of :mod:`ptncn.baselines.rnn`).

Network ``b``: layers 1..L (sizes ``hidden``).  One step with input ``x_t`` and
mask ``m_t`` (B, 1) of 0/1, from the state ``o^l_{t-1}``, ``mem^l_{t-1}``::

    prediction of x_t:   l_t = o^L_{t-1} W_out + c        x_mu_t = out(l_t)
    loss of x_t:         L_t = (1/n_t) sum_b m_b loss(l_t[b], x_t[b])
    layer l:             v_l = [o^{l-1}_t  (x_t for l = 1),  o^l_{t-1} (recurrent_b only)]
                         s_l = v_l W_l + b_l
                         (o, delta_l, new_m, g) = a(s_l, mem^l_{t-1})
                         o^l_t   = (1 - m) o^l_{t-1}   + m o
                         mem^l_t = (1 - m) mem^l_{t-1} + m new_m

(rows with mask 0: no loss, state held), exactly the step semantics of the
gradient baselines (:mod:`ptncn.baselines.gradient`).  ``out``, ``loss`` and the
logits' gradient are :mod:`ptncn.baselines.rnn`'s.

Learning is one-step back-propagation (TBPTT(1)) with ``delta`` standing in for the
activation's derivative.  The state keeps, from the transition that produced
``o_{t-1}``, every layer's input ``v_l`` and masked slope ``D_l = m * delta_l``;
earlier outputs and memory are constants.  At step t (``do = dL_t/dl_t``)::

    grad W_out = o^L_{t-1}.T do          grad c = sum_b do
    u_L  = do W_out.T
    ds_l = u_l * D_l                     grad W_l = v_l.T ds_l      grad b_l = sum_b ds_l
    u_{l-1} = ds_l (W_l's rows of o^{l-1}).T

The gradient is clipped to global L2 norm ``clip`` (0 = off) and handed to the
optimizer.  As in the gradient baselines: everything of a step uses the parameters
as they are at its start; a step with no unmasked row makes no update; the first
step of a sequence, and the first after a ``learn=False`` step, has no kept
transition, so only ``W_out`` and ``c`` get a gradient (the others zero).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .baselines import rnn
from .learner import (Learner, LearnerConfig, Quantity, Updates, check_finite_numbers,
                      check_positive_ints, int_list, rows)
from .optim import clip_grad_norm

VARIANTS = ("memory", "recurrent")
NEURONS = ("mlp", "tanh")
#: the stream of ``np.random.default_rng([seed, THETA_STREAM])`` that draws theta_a when
#: none is given (apart from the weights of b, which are the same for every neuron)
THETA_STREAM = 1


# ---------------------------------------------------------------------------
# the activation network a
# ---------------------------------------------------------------------------
def check_shape(variant: str, n_m, a_hidden) -> tuple[int, int]:
    """``(n_m, a_hidden)`` as ints after checking ``variant``, ``n_m >= 0`` and
    ``a_hidden >= 1``; a ValueError names the key, what it expects and what it got."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, "
                         f"got {variant!r}")
    for key, v, lo in (("n_m", n_m, 0), ("a_hidden", a_hidden, 1)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{key} must be an integer >= {lo}, got {v!r}")
    return int(n_m), int(a_hidden)


def _layout(n_m: int, a_hidden: int) -> list[tuple[str, tuple[int, ...]]]:
    """The arrays of theta_a in order (each flattened row-major): W1 (1 + n_m, a_hidden),
    b1 (a_hidden), W2 (a_hidden, 2 + n_m), b2 (2 + n_m)."""
    return [("W1", (1 + n_m, a_hidden)), ("b1", (a_hidden,)),
            ("W2", (a_hidden, 2 + n_m)), ("b2", (2 + n_m,))]


def theta_size(variant: str, n_m: int, a_hidden: int) -> int:
    """Number of entries of theta_a: (1 + n_m) A + A + A (2 + n_m) + 2 + n_m."""
    n_m, a_hidden = check_shape(variant, n_m, a_hidden)
    return sum(int(np.prod(shape)) for _, shape in _layout(n_m, a_hidden))


def init_theta(variant: str, n_m: int, a_hidden: int, rng: np.random.Generator,
               scale: float = 0.5) -> np.ndarray:
    """A random theta_a: every entry ~ N(0, scale^2) (float64, 1-D)."""
    return scale * rng.standard_normal(theta_size(variant, n_m, a_hidden))


def check_theta(theta, variant: str, n_m: int, a_hidden: int,
                what: str = "theta_a") -> np.ndarray:
    """``theta`` as a float64 1-D array of theta_size(...) finite entries, else a
    ValueError naming ``what``, the expected and the given size."""
    n = theta_size(variant, n_m, a_hidden)
    a = np.asarray(theta)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64).ravel() if a.ndim <= 1 else None
    if a is None or a.size != n:
        got = f"shape {np.shape(theta)}" if a is None else f"{a.size} entries"
        raise ValueError(f"{what} must have theta_size({variant!r}, n_m={n_m}, "
                         f"a_hidden={a_hidden}) = {n} entries, got {got}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf")
    return a


def load_theta(path, variant: str, n_m: int, a_hidden: int) -> np.ndarray:
    """theta_a from a file written by ``ptncn evolve`` (.npz: the array ``theta`` and the
    JSON string ``meta`` with variant, n_m, a_hidden); a ValueError names the file, the
    expected and the stored variant / shape."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            theta, meta = np.array(f["theta"]), json.loads(str(f["meta"]))
    except (KeyError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a theta file (arrays 'theta' and 'meta'): {exc}") \
            from None
    want = {"variant": variant, "n_m": n_m, "a_hidden": a_hidden}
    got = {k: meta.get(k) for k in want} if isinstance(meta, dict) else meta
    if got != want:
        raise ValueError(f"{path}: theta_a for {got}, expected {want}")
    return check_theta(theta, variant, n_m, a_hidden, what=f"{path}: theta")


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * a))


class NeuronNet:
    """The activation network ``a`` shared by every unit (see the module docstring)."""

    def __init__(self, variant: str, n_m: int, a_hidden: int, theta, dtype=np.float64):
        self.n_m, self.a_hidden = check_shape(variant, n_m, a_hidden)
        self.variant = variant
        self.theta = check_theta(theta, variant, n_m, a_hidden)
        flat = self.theta.astype(dtype)
        self.arrays, i = {}, 0
        for name, shape in _layout(self.n_m, self.a_hidden):
            n = int(np.prod(shape))
            self.arrays[name] = flat[i:i + n].reshape(shape)
            i += n

    def __call__(self, s: np.ndarray, m: np.ndarray):
        """``(o, delta, new_m, g)`` for pre-activations ``s`` (any shape S) and carried
        values ``m`` (S + (n_m,)); ``g`` is None for the recurrent variant."""
        p, k = self.arrays, self.n_m
        if m.shape != s.shape + (k,):
            raise ValueError(f"m has shape {m.shape}, expected {s.shape + (k,)}")
        hid = s.reshape(-1, 1) * p["W1"][0]
        hid += p["b1"]
        if k:
            hid += m.reshape(-1, k) @ p["W1"][1:]
        np.tanh(hid, out=hid)
        r = hid @ p["W2"]
        r += p["b2"]
        o = np.tanh(r[:, 0]).reshape(s.shape)
        delta = r[:, 1].reshape(s.shape)
        rest = r[:, 2:].reshape(m.shape)
        if self.variant == "recurrent":
            return o, delta, np.tanh(rest), None
        g = _sigmoid(rest)
        return o, delta, (1 - g) * m + g * s[..., None], g


def tanh_neuron(s: np.ndarray, m: np.ndarray):
    """The fixed neuron of ``neuron = "tanh"``: ``(tanh(s), 1 - tanh(s)^2, m, None)``."""
    o = np.tanh(s)
    return o, 1 - o * o, m, None


# ---------------------------------------------------------------------------
# network b: config and state
# ---------------------------------------------------------------------------
@dataclass
class LearnedNeuronConfig(LearnerConfig):
    """Network b's layer sizes ``hidden``, its neuron (``neuron = "mlp"``: the network
    ``a`` of ``variant``, ``n_m``, ``a_hidden`` and ``theta_a``; ``"tanh"``: the fixed
    neuron), ``out``, ``recurrent_b``, the initial weight scale ``wght_sd``, the
    gradient clipping ``clip`` (0 = off), ``dtype`` and ``seed``.

    ``theta_a``: None (drawn by :func:`init_theta` from the seed), numbers, or the path of
    a theta file (read by :func:`load_theta`); the config keeps the numbers, so a model
    file holds theta_a itself.  With ``neuron = "tanh"`` it is not used.
    """

    x_dim: int
    hidden: tuple[int, ...] = (10, 10)
    variant: str = "memory"
    n_m: int = 2
    a_hidden: int = 8
    neuron: str = "mlp"
    theta_a: tuple[float, ...] | str | None = None
    out: str = "sigmoid"
    recurrent_b: bool = False
    wght_sd: float = 1.0
    clip: float = 1.0
    dtype: str = "float32"
    seed: int = 1234
    label: ClassVar[str] = "learned neuron"

    def __post_init__(self):
        check_positive_ints(self, "x_dim")
        self.hidden = int_list("hidden", self.hidden)
        if len(self.hidden) < 1 or min(self.hidden) < 1:
            raise ValueError(f"hidden must list >= 1 positive layer sizes, got {self.hidden!r}")
        self.n_m, self.a_hidden = check_shape(self.variant, self.n_m, self.a_hidden)
        for key, value, allowed in (("neuron", self.neuron, NEURONS), ("out", self.out, rnn.OUTS),
                                    ("dtype", self.dtype, ("float32", "float64"))):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(map(repr, allowed))}, "
                                 f"got {value!r}")
        if not isinstance(self.recurrent_b, (bool, np.bool_)):
            raise ValueError(f"recurrent_b must be true or false, got {self.recurrent_b!r}")
        self.recurrent_b = bool(self.recurrent_b)
        check_finite_numbers(self, "wght_sd", "clip")
        if self.wght_sd < 0 or self.clip < 0:
            raise ValueError(f"wght_sd and clip must be >= 0, got {self.wght_sd}, {self.clip}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed:
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)
        self.theta_a = self._resolve_theta(self.theta_a)

    def _resolve_theta(self, theta):
        """theta_a as a tuple of floats (read from its file when it is a path), checked
        against variant, n_m and a_hidden; None stays None; unused with the tanh neuron."""
        if theta is None:
            return None
        if isinstance(theta, (str, os.PathLike)):
            if self.neuron == "tanh":
                return os.fspath(theta)
            try:
                theta = load_theta(theta, self.variant, self.n_m, self.a_hidden)
            except ValueError as exc:
                raise ValueError(f"theta_a: {exc}") from None
        elif self.neuron == "mlp":
            theta = check_theta(theta, self.variant, self.n_m, self.a_hidden)
        return tuple(float(v) for v in np.asarray(theta, np.float64).ravel())

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def memory_size(self) -> int:
        """Values each unit carries: n_m, or 0 for the tanh neuron."""
        return self.n_m if self.neuron == "mlp" else 0

    def fan_in(self, layer: int) -> int:
        """Rows of W_layer (layer 1..L): the layer below's size, plus its own if
        recurrent_b."""
        below = self.x_dim if layer == 1 else self.hidden[layer - 2]
        return below + (self.hidden[layer - 1] if self.recurrent_b else 0)


@dataclass
class LearnedNeuronState:
    """What a sequence carries: each layer's output ``o[l-1]`` (B, H_l) and carried values
    ``mem[l-1]`` (B, H_l, n_m); of the transition that produced them, each layer's input
    ``v[l-1]`` and masked slope ``d[l-1] = m * delta_l`` (empty lists: none kept); ``t``
    the steps taken in the current sequences."""

    o: list[np.ndarray]
    mem: list[np.ndarray]
    v: list[np.ndarray]
    d: list[np.ndarray]
    t: int


# ---------------------------------------------------------------------------
# the learner
# ---------------------------------------------------------------------------
class LearnedNeuron(Learner):
    """Network b whose units share a small learned activation network a (theta_a, fixed),
    trained online by one-step back-propagation with a's delta in place of the
    activation's derivative."""

    name = "learned_neuron"
    Config = LearnedNeuronConfig
    State = LearnedNeuronState
    docs = "docs/learned-neuron.md"
    update_meaning = ("one-step back-propagated gradient of the batch-mean loss, with a's "
                      "delta for the derivative, handed to the optimizer (clipped)")

    @property
    def dtype(self) -> np.dtype:
        return self.config.np_dtype

    @property
    def theta(self) -> np.ndarray | None:
        """theta_a in use (float64), None with the tanh neuron."""
        return None if self.neuron_net is None else self.neuron_net.theta

    def _build(self) -> dict[str, np.ndarray]:
        """W_l ~ N(0, wght_sd^2 / fan_in), W_out ~ N(0, wght_sd^2 / H_L), b_l = c = 0; the
        neuron from theta_a (drawn from the seed's own stream when None)."""
        cfg = self.config
        self.neuron_net = None
        if cfg.neuron == "mlp":
            theta = cfg.theta_a
            if theta is None:
                theta = init_theta(cfg.variant, cfg.n_m, cfg.a_hidden,
                                   np.random.default_rng([cfg.seed, THETA_STREAM]))
            self.neuron_net = NeuronNet(cfg.variant, cfg.n_m, cfg.a_hidden, theta, cfg.np_dtype)
        p = {}
        for name, shape in self.param_shapes().items():
            if name.startswith("W"):
                p[name] = self.rng.standard_normal(shape) * (cfg.wght_sd / np.sqrt(shape[0]))
            else:
                p[name] = np.zeros(shape)
        return {k: np.ascontiguousarray(v, dtype=cfg.np_dtype) for k, v in p.items()}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        cfg = self.config
        out = {}
        for l, H in enumerate(cfg.hidden, 1):
            out[f"W{l}"], out[f"b{l}"] = (cfg.fan_in(l), H), (H,)
        out["W_out"], out["c"] = (cfg.hidden[-1], cfg.x_dim), (cfg.x_dim,)
        return out

    def quantity_table(self) -> dict[str, Quantity]:
        cfg, k = self.config, self.config.memory_size
        t = {"x": Quantity(rows(cfg.x_dim), "input x_t (the target of the prediction x_mu)",
                           "input units"),
             "x_mu": Quantity(rows(cfg.x_dim), "prediction of x_t made from o^L_{t-1} before "
                              "seeing it", "output units")}
        for l, H in enumerate(cfg.hidden, 1):
            t[f"s{l}"] = Quantity(rows(H), f"pre-activation s of layer {l}", "a.u.")
            t[f"o{l}"] = Quantity(rows(H), f"output o of layer {l} after the step (held on "
                                  "masked rows)", "activation")
            t[f"delta{l}"] = Quantity(rows(H), f"delta of layer {l}: the neuron's stand-in "
                                      "for do/ds", "a.u.")
            if k and cfg.variant == "memory":
                t[f"g{l}"] = Quantity(rows(H * k), f"gates g of layer {l}, (unit, memory) "
                                      "flattened row-major", "gate")
            if k:
                what = "memory m" if cfg.variant == "memory" else "a's hidden state"
                t[f"m{l}"] = Quantity(rows(H * k), f"{what} of layer {l} after the step, "
                                      "(unit, memory) flattened row-major", "a.u.")
        return t

    def init_state(self, batch: int) -> LearnedNeuronState:
        cfg, dt = self.config, self.dtype
        return LearnedNeuronState(o=[np.zeros((batch, H), dt) for H in cfg.hidden],
                                  mem=[np.zeros((batch, H, cfg.memory_size), dt)
                                       for H in cfg.hidden], v=[], d=[], t=0)

    # -- the step ----------------------------------------------------------------------
    def _neuron(self, s: np.ndarray, mem: np.ndarray):
        return tanh_neuron(s, mem) if self.neuron_net is None else self.neuron_net(s, mem)

    def _forward(self, params, state, x, m):
        """Every layer's transition: (outputs, carried values, inputs v_l, masked slopes
        D_l, recordable quantities)."""
        cfg, r, mm = self.config, 1 - m, m[..., None]
        o_all, mem_all, v_all, d_all, q = [], [], [], [], {}
        below = x
        for l in range(1, len(cfg.hidden) + 1):
            o_prev, mem_prev = state.o[l - 1], state.mem[l - 1]
            v = np.concatenate([below, o_prev], axis=1) if cfg.recurrent_b else below
            s = v @ params[f"W{l}"]
            s += params[f"b{l}"]
            o, delta, new_m, g = self._neuron(s, mem_prev)
            o = r * o_prev + m * o
            mem = (1 - mm) * mem_prev + mm * new_m
            o_all.append(o), mem_all.append(mem), v_all.append(v), d_all.append(m * delta)
            q.update(self._layer_quantities(l, s, o, delta, mem, g))
            below = o
        return o_all, mem_all, v_all, d_all, q

    def _layer_quantities(self, l, s, o, delta, mem, g) -> dict[str, np.ndarray]:
        B = s.shape[0]
        q = {f"s{l}": s, f"o{l}": o, f"delta{l}": delta}
        if g is not None and mem.shape[2]:
            q[f"g{l}"] = g.reshape(B, -1)
        if mem.shape[2]:
            q[f"m{l}"] = mem.reshape(B, -1)
        return q

    def _gradient(self, params, state, do) -> Updates:
        """The one-step gradient (module docstring) before clipping."""
        cfg = self.config
        grads = {k: np.zeros_like(v) for k, v in params.items()}
        grads["W_out"] = state.o[-1].T @ do
        grads["c"] = do.sum(axis=0)
        if state.v:
            u = do @ params["W_out"].T
            for l in range(len(cfg.hidden), 0, -1):
                ds = u * state.d[l - 1]
                grads[f"W{l}"] = state.v[l - 1].T @ ds
                grads[f"b{l}"] = ds.sum(axis=0)
                if l > 1:
                    u = ds @ params[f"W{l}"][:cfg.hidden[l - 2]].T
        return Updates({k: np.ascontiguousarray(g, dtype=self.dtype) for k, g in grads.items()})

    def _step(self, params, state, x, m, learn):
        cfg = self.config
        logits = state.o[-1] @ params["W_out"]
        logits += params["c"]
        y = rnn.output(cfg.out, logits)
        o, mem, v, d, q = self._forward(params, state, x, m)
        updates = Updates()
        n = float(m.sum())
        if learn and n > 0:
            updates = self._gradient(params, state, rnn.logit_grad(cfg.out, y, x, m, n))
            clip_grad_norm(updates, cfg.clip)     # non-finite: left as is, named d<param>
        if not learn:
            v, d = [], []
        nxt = LearnedNeuronState(o=o, mem=mem, v=v, d=d, t=state.t + 1)
        return nxt, {"x": x, "x_mu": y, **q}, updates
