"""Optimizers over dicts of named arrays (float32, or float64 where a learner computes in
it: every constant is taken in the parameter's precision), updated in place.

Every optimizer takes *directions of descent* ``g`` (for P-TNCN the local LRA
updates already divided by the batch size) and moves each parameter against
them.  The semantics follow TensorFlow 1's ``tf.compat.v1.train`` optimizers,
which the published P-TNCN code uses:

========  ==================================================================
sgd       p -= lr * g
momentum  a = mu * a + g;  p -= lr * a
nesterov  a = mu * a + g;  p -= lr * (g + mu * a)
adam      t += 1;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
          p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
rmsprop   ms = rho ms + (1-rho) g^2  (ms starts at 1, as in TF1);
          mom = mu * mom + lr * g / sqrt(ms + eps);  p -= mom
========  ==================================================================

Three optional extras apply to every optimizer:

* ``lr_schedule``: the learning rate of the update made after ``t`` updates is
  ``lr * lr_factor(schedule, t)`` (step, exponential or cosine decay; see
  :func:`check_schedule`); saved and resumed with ``t``.
* ``weight_decay`` (L2, coupled): ``g += weight_decay * p`` before the update.
* ``max_norm``: after the update each row of every 2-D parameter is rescaled
  so that its Euclidean norm is at most ``max_norm``:
  ``row *= max_norm / max(||row||, max_norm)``.

``step(params, grads)`` may overwrite the arrays in ``grads`` (they are
scratch space): that keeps the update free of large temporaries.

A step never leaves a parameter or a slot NaN or inf: one that would is undone
(parameters, slots and ``t`` as before it) and raises
:class:`~ptncn.errors.NonFiniteStepError` naming the parameter.  Checking every
value after every step would cost a pass over all parameters and slots, so each
optimizer keeps, per parameter (or stacked block), upper bounds on the magnitudes
of the parameter and of its slots, grown from a bound on the update's entries
(``||left|| ||right||`` for a factored update, ``||g||`` otherwise) by the
optimizer's own rule (:meth:`Optimizer._grow`).  Only a parameter whose bound
could reach overflow (:data:`SAFE`) is backed up, updated and checked
element-wise (then its bounds are measured again); the others cost a few scalar
operations.  The bounds assume that only the optimizer changes the parameters
between its steps: after changing them otherwise call :meth:`Optimizer.forget_bounds`
(``load_state_dict`` does).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from .errors import NonFiniteStepError

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "Adam", "RMSprop",
           "make_optimizer", "OPTIMIZERS", "apply_max_norm"]

#: magnitude bound below which a step cannot overflow float32 (nor can the squares
#: that Adam, RMSprop and max-norm form); a parameter whose bound reaches it is
#: backed up and checked
SAFE = 1e18


def _norm(a: np.ndarray) -> float:
    """Frobenius norm (inf when the float32 sum of squares overflows)."""
    return float(np.sqrt(np.vdot(a, a))) if a.size else 0.0


def _maxabs(a: np.ndarray) -> float:
    """Largest magnitude (NaN when ``a`` holds a NaN)."""
    return float(np.max(np.abs(a))) if a.size else 0.0


def _finite(a: np.ndarray) -> bool:
    # the sum is a cheap screen; confirm element-wise (a sum can overflow)
    return bool(np.isfinite(a.sum()) or np.isfinite(a).all())


class _Unit:
    """What one step updates as a whole: a parameter, or a stacked block of them.
    ``parts`` lists (parameter name, index of its entries in ``array``); ``gbound``
    bounds the update's entries; ``apply()`` performs the update."""

    __slots__ = ("key", "array", "parts", "gbound", "apply")

    def __init__(self, key, array, parts, gbound, apply):
        self.key, self.array, self.parts = key, array, parts
        self.gbound, self.apply = gbound, apply


def apply_max_norm(p: np.ndarray, radius: float) -> None:
    """Rescale, in place, each row of ``p`` to Euclidean norm <= radius."""
    if p.ndim < 2:
        return
    rows = p.reshape(p.shape[0], -1)
    f = p.dtype.type
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=p.dtype))
    scale = f(radius) / np.maximum(norms, f(radius))
    p *= scale.reshape((-1,) + (1,) * (p.ndim - 1))


#: learning-rate schedules: kind -> {key: default}; ``lr_factor`` gives the factor
SCHEDULES = {"step": {"every": None, "factor": 0.5},
             "exponential": {"half_life": None},
             "cosine": {"over": None, "floor": 0.0}}


def check_schedule(schedule) -> dict | None:
    """``lr_schedule`` checked and completed with its defaults (ValueError naming the
    problem): None, or ``{kind = "step", every, factor = 0.5}``, ``{kind =
    "exponential", half_life}`` or ``{kind = "cosine", over, floor = 0}`` (``every``,
    ``half_life``, ``over`` in updates, integers >= 1; ``factor``, ``floor`` in [0, 1])."""
    if schedule is None:
        return None
    kind = schedule.get("kind") if isinstance(schedule, dict) else None
    if kind not in SCHEDULES:
        raise ValueError(f"lr_schedule: expected a table with kind one of "
                         f"{', '.join(SCHEDULES)}, got {schedule!r}")
    keys = SCHEDULES[kind]
    out = {"kind": kind, **keys, **{k: v for k, v in schedule.items() if k != "kind"}}
    bad = [k for k, v in out.items() if k != "kind" and (
        k not in keys or v is None or isinstance(v, bool) or not isinstance(v, (int, float))
        or (keys[k] is None and (int(v) != v or v < 1))
        or (keys[k] is not None and not 0.0 <= v <= 1.0))]
    if bad:
        raise ValueError(f"lr_schedule: bad or missing {', '.join(bad)} for kind {kind!r} "
                         f"(keys: {', '.join(keys)}), got {schedule!r}")
    return out


def lr_factor(schedule: dict | None, t: int) -> float:
    """The factor on the learning rate of the update made after ``t`` updates."""
    if schedule is None:
        return 1.0
    kind = schedule["kind"]
    if kind == "step":
        return schedule["factor"] ** (t // schedule["every"])
    if kind == "exponential":
        return 0.5 ** (t / schedule["half_life"])
    floor, f = schedule["floor"], min(t, schedule["over"]) / schedule["over"]
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * f))


class Optimizer:
    """Base class: holds hyperparameters, per-parameter slots and a step count.  With
    an ``lr_schedule`` (:func:`check_schedule`) the learning rate ``lr`` of each update
    is the base rate times :func:`lr_factor` of the updates made before it."""

    name = "base"
    slot_names: tuple[str, ...] = ()
    #: slots whose values are never negative (a model file's are checked)
    nonnegative_slots: tuple[str, ...] = ()
    #: the value a new slot starts at (default 0)
    slot_fill: dict[str, float] = {}
    #: True where :meth:`_fused` updates a parameter in one kernel pass
    fused = False

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0,
                 max_norm: float = 0.0, lr_schedule: dict | None = None):
        if not np.isfinite(lr) or lr < 0:
            raise ValueError(f"learning rate must be a finite number >= 0, got {lr!r}")
        if not np.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        if not np.isfinite(max_norm) or max_norm < 0:
            raise ValueError(f"max_norm must be a finite number >= 0 (0 = off), got {max_norm!r}")
        self.lr = self.base_lr = float(lr)
        self.lr_schedule = check_schedule(lr_schedule)
        self.weight_decay = float(weight_decay)
        self.max_norm = float(max_norm)
        self.t = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slot_names}
        self._gbuf: np.ndarray | None = None              # scratch of step_dense
        self._stacks: dict[tuple[str, str], np.ndarray] = {}   # stacked_slot storage
        self._bounds: dict[str, dict[str, float]] = {}         # see the module doc

    # -- configuration -------------------------------------------------------
    def hyperparams(self) -> dict:
        hp = {"name": self.name, "lr": self.lr if self.lr_schedule is None else self.base_lr,
              "weight_decay": self.weight_decay,
              "max_norm": self.max_norm}
        if self.lr_schedule is not None:
            hp["lr_schedule"] = dict(self.lr_schedule)
        return hp

    def _count_step(self) -> None:
        """One more update (with a schedule, at the learning rate it gives)."""
        if self.lr_schedule is not None:
            self.lr = self.base_lr * lr_factor(self.lr_schedule, self.t)
        self.t += 1

    def _slot(self, slot: str, key: str, like: np.ndarray, fill: float = 0.0) -> np.ndarray:
        s = self.slots[slot].get(key)
        if s is None or s.shape != like.shape:
            s = np.full(like.shape, fill, dtype=like.dtype)
            self.slots[slot][key] = s
        elif s.dtype != like.dtype:                # loaded: in the parameter's precision
            s = self.slots[slot][key] = s.astype(like.dtype)
        return s

    # -- the update ------------------------------------------------------------
    def step(self, params: dict, grads: dict) -> None:
        """Count one step and update every parameter named in ``grads`` (in place).
        A step that would make a parameter or slot non-finite is undone and raises
        :class:`~ptncn.errors.NonFiniteStepError`."""
        self._count_step()
        self._checked([_Unit(k, params[k], [(k, ...)], _norm(g),
                             partial(self.apply, params, {k: g}))
                       for k, g in grads.items()])

    def apply(self, params: dict, grads: dict) -> None:
        """Update the parameters named in ``grads`` as part of the current step
        (``t`` unchanged; lets one step be applied block by block)."""
        for key, g in grads.items():
            p = params[key]
            if self.weight_decay > 0.0:
                g += p.dtype.type(self.weight_decay) * p
            self._update(key, p, g)
            if self.max_norm > 0.0:
                apply_max_norm(p, self.max_norm)

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- the finiteness guarantee (see the module doc) -----------------------------
    def _grow(self, b: dict[str, float], g: float) -> dict[str, float]:
        """Bounds on the magnitudes of the parameter (``"p"``) and of each slot after one
        update whose entries are at most ``g``, from their bounds ``b`` before it.
        An optimizer that does not say has every update checked."""
        return {k: math.inf for k in b}

    def forget_bounds(self) -> None:
        """Measure the magnitudes again before the next step (after the parameters or
        slots were changed other than by this optimizer)."""
        self._bounds.clear()

    def _measure(self, u: _Unit) -> dict[str, float]:
        b = {"p": _maxabs(u.array)}
        for s in self.slot_names:
            d, fill = self.slots[s], abs(self.slot_fill.get(s, 0.0))
            b[s] = float(np.max([fill] + [_maxabs(d[n]) for n, _ in u.parts if n in d]))
        return b

    def _checked(self, units: list[_Unit]) -> None:
        """Apply every unit.  Those whose bounds could reach overflow go first, each
        backed up and checked; a non-finite result undoes them all and the step."""
        risky, safe = [], []
        for u in units:
            b = self._bounds.get(u.key) or self._measure(u)
            grown = self._grow(b, u.gbound + self.weight_decay * b["p"])
            limit = SAFE
            if self.max_norm > 0.0 and u.array.ndim >= 2:   # its row norms are formed
                limit /= math.sqrt(u.array[0].size)
            (safe if all(v < limit for v in grown.values()) else risky).append((u, grown))
        backups = []
        try:
            for u, _ in risky:
                backups.append(self._backup(u))
                u.apply()
                bad = self._nonfinite(u)
                if bad is not None:
                    raise NonFiniteStepError(*bad)
        except NonFiniteStepError:
            for (u, _), saved in zip(risky, backups):
                self._restore(u, saved)
            self.t -= 1
            raise
        for u, _ in risky:
            self._bounds[u.key] = self._measure(u)
        for u, grown in safe:
            u.apply()
            self._bounds[u.key] = grown

    def _backup(self, u: _Unit):
        return u.array.copy(), {(s, n): (self.slots[s][n].copy() if n in self.slots[s]
                                         else None)
                                for s in self.slot_names for n, _ in u.parts}

    def _restore(self, u: _Unit, saved) -> None:
        array, slots = saved
        np.copyto(u.array, array)
        for (s, n), v in slots.items():
            if v is None:
                self.slots[s].pop(n, None)
                self._stacks.pop((s, u.key), None)
            else:
                np.copyto(self.slots[s][n], v)
        self._bounds.pop(u.key, None)

    def _nonfinite(self, u: _Unit) -> tuple[str, str | None] | None:
        """(parameter, slot or None) of the first non-finite value of ``u``, or None."""
        for n, idx in u.parts:
            if not _finite(u.array[idx]):
                return n, None
        for s in self.slot_names:
            for n, _ in u.parts:
                a = self.slots[s].get(n)
                if a is not None and not _finite(a):
                    return n, s
        return None

    # -- factored steps (the fast P-TNCN engine) ---------------------------------
    def step_dense(self, blocks, views: dict, kernels) -> None:
        """One step over stacked parameter blocks whose directions are formed products.

        ``blocks`` lists ``(block, parts)``: ``block.array`` is a stacked parameter
        array; each part ``(name, a, b, g, scale, bound)`` says that rows ``a:b`` hold
        the parameter ``name`` (``views[name]`` is that slice), that its direction is
        ``scale * g`` and that ``bound`` bounds that direction's entries.  Optimizers
        with an element-wise kernel (``fused``; :mod:`ptncn.kernels`) update each part
        in one pass; the others get ``scale * g`` formed in a reused buffer and take
        the ordinary update.  Checked like :meth:`step`.
        """
        self._count_step()
        fused = self.fused and self.weight_decay == 0.0 and self.max_norm == 0.0
        if not fused:
            size = max(blk.array.size for blk, _ in blocks)
            if self._gbuf is None or self._gbuf.size < size:
                self._gbuf = np.empty(size, np.float32)
        self._checked([_Unit(blk.name, blk.array, [(p[0], slice(p[1], p[2])) for p in parts],
                             max(p[5] for p in parts),
                             partial(self._apply_dense, fused, blk, parts, views, kernels))
                       for blk, parts in blocks])

    def _apply_dense(self, fused, blk, parts, views, kernels) -> None:
        if fused:
            self._fused(blk, parts, kernels)
            return
        grads = {}
        for name, a, b, g, scale, _ in parts:
            buf = self._gbuf[a * g.shape[1]:b * g.shape[1]].reshape(g.shape)
            grads[name] = np.multiply(g, np.float32(scale), out=buf)
        self.apply(views, grads)

    def _fused(self, blk, parts, kernels) -> None:  # pragma: no cover
        """Update the rows ``a:b`` of ``blk.array`` of each part ``(name, a, b, g, scale,
        bound)`` by the direction ``scale * g``, one kernel pass each (where ``fused``)."""
        raise NotImplementedError

    def stacked_slot(self, slot: str, blk) -> np.ndarray:
        """A slot stored stacked like ``blk.array``, whose rows are the per-parameter
        slots ``slots[slot][name]`` (views; earlier values, e.g. loaded ones, kept)."""
        d = self.slots.setdefault(slot, {})
        acc = self._stacks.get((slot, blk.name))
        if acc is not None and all(d.get(n) is not None and d[n].base is acc
                                   for n, _, _ in blk.parts):
            return acc
        acc = np.zeros_like(blk.array)
        for name, a, b in blk.parts:
            if name in d and d[name].shape == (b - a, acc.shape[1]):
                acc[a:b] = d[name]
            d[name] = acc[a:b]
        self._stacks[(slot, blk.name)] = acc
        return acc

    # -- persistence -----------------------------------------------------------
    def state_dict(self) -> dict:
        return {"hyperparams": self.hyperparams(), "t": self.t,
                "slots": {s: {k: v.copy() for k, v in d.items()} for s, d in self.slots.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.forget_bounds()
        self.t = int(state["t"])
        self.slots = {s: {k: np.array(v) for k, v in            # as saved; see _slot
                          state["slots"].get(s, {}).items()} for s in self.slot_names}


class SGD(Optimizer):
    name = "sgd"
    fused = True

    def _grow(self, b, g):
        return {"p": b["p"] + self.lr * g}

    def _fused(self, blk, parts, kernels):
        for _, a, b, g, scale, _ in parts:
            kernels.sgd(blk.array[a:b], g, scale, self.lr)

    def _update(self, key, p, g):
        f = p.dtype.type                # the parameter's precision
        g *= f(self.lr)
        p -= g


class Momentum(Optimizer):
    name = "momentum"
    slot_names = ("accum",)
    fused = True

    def __init__(self, lr=0.01, momentum=0.9, **kw):
        super().__init__(lr, **kw)
        self.momentum = float(momentum)

    def hyperparams(self):
        return {**super().hyperparams(), "momentum": self.momentum}

    def _grow(self, b, g):
        a = abs(self.momentum) * b["accum"] + g
        return {"p": b["p"] + self.lr * a, "accum": a}

    def _fused(self, blk, parts, kernels):
        acc = self.stacked_slot("accum", blk)
        for _, a, b, g, scale, _ in parts:
            kernels.momentum(blk.array[a:b], acc[a:b], g, scale, self.lr, self.momentum)

    def _update(self, key, p, g):
        f = p.dtype.type                # the parameter's precision
        a = self._slot("accum", key, p)
        a *= f(self.momentum)
        a += g
        np.multiply(a, f(self.lr), out=g)
        p -= g


class Nesterov(Momentum):
    """TensorFlow's Nesterov momentum: a = mu*a + g; p -= lr*(g + mu*a)."""

    name = "nesterov"

    def _grow(self, b, g):
        mu = abs(self.momentum)
        a = mu * b["accum"] + g
        step = g + mu * a              # p -= lr (g + mu a)
        return {"p": b["p"] + self.lr * step, "accum": a}

    def _fused(self, blk, parts, kernels):
        acc = self.stacked_slot("accum", blk)
        for _, a, b, g, scale, _ in parts:
            kernels.nesterov(blk.array[a:b], acc[a:b], g, scale, self.lr, self.momentum)

    def _update(self, key, p, g):
        f = p.dtype.type                # the parameter's precision
        a = self._slot("accum", key, p)
        mu, lr = f(self.momentum), f(self.lr)
        a *= mu
        a += g
        g *= lr
        p -= g                          # p -= lr * g
        np.multiply(a, lr * mu, out=g)  # g is scratch from here on
        p -= g                          # p -= lr * mu * a


class Adam(Optimizer):
    name = "adam"
    slot_names = ("m", "v")
    nonnegative_slots = ("v",)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, **kw):
        super().__init__(lr, **kw)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def hyperparams(self):
        return {**super().hyperparams(), "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps}

    def _grow(self, b, g):
        b1, b2 = abs(self.beta1), abs(self.beta2)
        m = b1 * b["m"] + abs(1.0 - self.beta1) * g
        v = b2 * b["v"] + abs(1.0 - self.beta2) * g * g
        den = 1.0 - self.beta1 ** self.t
        lr_t = abs(self.lr * math.sqrt(abs(1.0 - self.beta2 ** self.t)) / den) if den else 0.0
        eps = float(np.float32(self.eps))                            # as the update adds it
        ok = eps > 0 and den != 0 and 0.0 <= self.beta2 <= 1.0      # v stays >= 0
        step = lr_t * m / eps if ok else math.inf                   # |m / (sqrt v + eps)|
        return {"p": b["p"] + step, "m": m, "v": v}

    def _update(self, key, p, g):
        f = p.dtype.type                # the parameter's precision
        m = self._slot("m", key, p)
        v = self._slot("v", key, p)
        b1, b2 = f(self.beta1), f(self.beta2)
        lr_t = f(self.lr * np.sqrt(1.0 - self.beta2 ** self.t) / (1.0 - self.beta1 ** self.t))
        m *= b1
        m += (f(1) - b1) * g
        v *= b2
        np.square(g, out=g)
        g *= f(1) - b2
        v += g
        np.sqrt(v, out=g)
        g += f(self.eps)
        np.divide(m, g, out=g)
        g *= lr_t
        p -= g


class RMSprop(Optimizer):
    name = "rmsprop"
    slot_names = ("ms", "mom")
    nonnegative_slots = ("ms",)
    slot_fill = {"ms": 1.0}

    def __init__(self, lr=0.001, rho=0.9, momentum=0.0, eps=1e-10, **kw):
        super().__init__(lr, **kw)
        self.rho, self.momentum, self.eps = float(rho), float(momentum), float(eps)

    def hyperparams(self):
        return {**super().hyperparams(), "rho": self.rho, "momentum": self.momentum,
                "eps": self.eps}

    def _grow(self, b, g):
        ms = abs(self.rho) * b["ms"] + abs(1.0 - self.rho) * g * g
        eps = float(np.float32(self.eps))                            # as the update adds it
        ok = eps > 0 and 0.0 <= self.rho <= 1.0                      # ms stays >= 0
        step = self.lr * g / math.sqrt(eps) if ok else math.inf
        mom = abs(self.momentum) * b["mom"] + step
        return {"p": b["p"] + mom, "ms": ms, "mom": mom}

    def _update(self, key, p, g):
        f = p.dtype.type                # the parameter's precision
        ms = self._slot("ms", key, p, fill=1.0)
        mom = self._slot("mom", key, p)
        rho = f(self.rho)
        ms *= rho
        ms += (f(1) - rho) * np.square(g)
        # g <- lr * g / sqrt(ms + eps)
        g *= f(self.lr)
        g /= np.sqrt(ms + f(self.eps))
        mom *= f(self.momentum)
        mom += g
        p -= mom


OPTIMIZERS = {c.name: c for c in (SGD, Momentum, Nesterov, Adam, RMSprop)}


def make_optimizer(name: str = "sgd", **kwargs) -> Optimizer:
    """Build an optimizer by name; unknown names or options raise ValueError."""
    cls = OPTIMIZERS.get(name)
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad option for optimizer {name!r}: {exc}") from None


def resolve_optimizer(optimizer, lr: float, momentum: float, weight_decay: float,
                      max_norm: float, options: dict | None = None) -> Optimizer:
    """A learner's ``optimizer`` argument as an Optimizer: an instance is used as is; a
    name is built with the learner's lr / weight_decay / max_norm (and momentum for
    "momentum" and "nesterov"), ``options`` overriding them."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    kw = dict(lr=lr, weight_decay=weight_decay, max_norm=max_norm)
    if optimizer in ("momentum", "nesterov"):
        kw["momentum"] = momentum
    kw.update(options or {})
    return make_optimizer(optimizer, **kw)


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale every array in ``grads`` in place so that their global L2 norm (over all of
    them together) is at most ``max_norm`` (``max_norm <= 0``: no clipping).  Returns the
    norm before clipping (NaN or inf if a gradient is not finite; nothing is scaled then;
    finite gradients whose float32 squares overflow are clipped all the same)."""
    total = 0.0
    for g in grads.values():
        total += float(np.vdot(g, g))
    norm = float(np.sqrt(total))
    if not np.isfinite(norm) and all(np.isfinite(g).all() for g in grads.values()):
        # finite entries whose squares overflow float32: the norm, rescaled, in float64
        big = max(float(np.abs(g).max()) for g in grads.values())
        norm = big * float(np.sqrt(sum(float(np.vdot(g / big, g / big))
                                       for g in grads.values())))
    if max_norm > 0 and np.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm
