"""Optimizers over dicts of named float32 arrays, updated in place.

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

Two optional extras apply to every optimizer:

* ``weight_decay`` (L2, coupled): ``g += weight_decay * p`` before the update.
* ``max_norm``: after the update each row of every 2-D parameter is rescaled
  so that its Euclidean norm is at most ``max_norm``:
  ``row *= max_norm / max(||row||, max_norm)``.

``step(params, grads)`` may overwrite the arrays in ``grads`` (they are
scratch space): that keeps the update free of large temporaries.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "Adam", "RMSprop",
           "make_optimizer", "OPTIMIZERS", "apply_max_norm"]


def apply_max_norm(p: np.ndarray, radius: float) -> None:
    """Rescale, in place, each row of ``p`` to Euclidean norm <= radius."""
    if p.ndim < 2:
        return
    rows = p.reshape(p.shape[0], -1)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float32))
    scale = np.float32(radius) / np.maximum(norms, np.float32(radius))
    p *= scale.reshape((-1,) + (1,) * (p.ndim - 1))


class Optimizer:
    """Base class: holds hyperparameters, per-parameter slots and a step count."""

    name = "base"
    slot_names: tuple[str, ...] = ()

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0,
                 max_norm: float = 0.0):
        if not np.isfinite(lr) or lr < 0:
            raise ValueError(f"learning rate must be a finite number >= 0, got {lr!r}")
        if not np.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        if not np.isfinite(max_norm) or max_norm < 0:
            raise ValueError(f"max_norm must be a finite number >= 0 (0 = off), got {max_norm!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.max_norm = float(max_norm)
        self.t = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slot_names}
        self._gbuf: np.ndarray | None = None              # scratch of step_factored
        self._stacks: dict[tuple[str, str], np.ndarray] = {}   # stacked_slot storage

    # -- configuration -------------------------------------------------------
    def hyperparams(self) -> dict:
        return {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay,
                "max_norm": self.max_norm}

    def _slot(self, slot: str, key: str, like: np.ndarray, fill: float = 0.0) -> np.ndarray:
        s = self.slots[slot].get(key)
        if s is None or s.shape != like.shape:
            s = np.full(like.shape, fill, dtype=like.dtype)
            self.slots[slot][key] = s
        return s

    # -- the update ------------------------------------------------------------
    def step(self, params: dict, grads: dict) -> None:
        """Count one step and update every parameter named in ``grads`` (in place)."""
        self.t += 1
        self.apply(params, grads)

    def apply(self, params: dict, grads: dict) -> None:
        """Update the parameters named in ``grads`` as part of the current step
        (``t`` unchanged; lets one step be applied block by block)."""
        for key, g in grads.items():
            p = params[key]
            if self.weight_decay > 0.0:
                g += np.float32(self.weight_decay) * p
            self._update(key, p, g)
            if self.max_norm > 0.0:
                apply_max_norm(p, self.max_norm)

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- factored steps (the fast P-TNCN engine) ---------------------------------
    def step_factored(self, factors, views: dict, blas) -> None:
        """One step whose direction for each block is ``G = left.T @ right``.

        ``factors`` lists ``(block, left, right)``: ``block.array`` is a stacked
        parameter array whose rows ``a:b`` hold the parameter ``name`` for each
        ``(name, a, b)`` in ``block.parts`` (``views[name]`` is that slice).  The
        base materialises one block's ``G`` at a time and applies the ordinary
        update; optimizers whose update is a GEMM override :meth:`_fused`.
        """
        self.t += 1
        if self.weight_decay == 0.0 and self.max_norm == 0.0 and self._fused(factors, blas):
            return
        size = max(blk.array.size for blk, _, _ in factors)
        if self._gbuf is None or self._gbuf.size < size:
            self._gbuf = np.empty(size, np.float32)
        for blk, left, right in factors:
            g = self._gbuf[:blk.array.size].reshape(blk.array.shape)
            np.matmul(left.T, right, out=g)
            self.apply(views, {name: g[a:b] for name, a, b in blk.parts})

    def _fused(self, factors, blas) -> bool:
        """Apply the factored step with BLAS calls only; False: not supported here."""
        return False

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
        self.t = int(state["t"])
        self.slots = {s: {k: np.array(v, dtype=np.float32) for k, v in
                          state["slots"].get(s, {}).items()} for s in self.slot_names}


class SGD(Optimizer):
    name = "sgd"

    def _fused(self, factors, blas):
        for blk, left, right in factors:                    # p -= lr G
            blas.gemm(-self.lr, left, True, right, False, 1.0, blk.array)
        return True

    def _update(self, key, p, g):
        g *= np.float32(self.lr)
        p -= g


class Momentum(Optimizer):
    name = "momentum"
    slot_names = ("accum",)

    def __init__(self, lr=0.01, momentum=0.9, **kw):
        super().__init__(lr, **kw)
        self.momentum = float(momentum)

    def hyperparams(self):
        return {**super().hyperparams(), "momentum": self.momentum}

    def _fused(self, factors, blas):
        for blk, left, right in factors:
            a = self.stacked_slot("accum", blk)
            blas.gemm(1.0, left, True, right, False, self.momentum, a)    # a = mu a + G
            blas.axpy(-self.lr, a, blk.array)                              # p -= lr a
        return True

    def _update(self, key, p, g):
        a = self._slot("accum", key, p)
        a *= np.float32(self.momentum)
        a += g
        np.multiply(a, np.float32(self.lr), out=g)
        p -= g


class Nesterov(Momentum):
    """TensorFlow's Nesterov momentum: a = mu*a + g; p -= lr*(g + mu*a)."""

    name = "nesterov"

    def _fused(self, factors, blas):
        # p += lr mu a_old;  a = mu a + G;  p -= lr (1 + mu) a   (= p -= lr (G + mu a_new))
        lr, mu = self.lr, self.momentum
        for blk, left, right in factors:
            a, p = self.stacked_slot("accum", blk), blk.array
            blas.axpy(lr * mu, a, p)
            blas.gemm(1.0, left, True, right, False, mu, a)
            blas.axpy(-lr * (1.0 + mu), a, p)
        return True

    def _update(self, key, p, g):
        a = self._slot("accum", key, p)
        mu, lr = np.float32(self.momentum), np.float32(self.lr)
        a *= mu
        a += g
        g *= lr
        p -= g                          # p -= lr * g
        np.multiply(a, lr * mu, out=g)  # g is scratch from here on
        p -= g                          # p -= lr * mu * a


class Adam(Optimizer):
    name = "adam"
    slot_names = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, **kw):
        super().__init__(lr, **kw)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def hyperparams(self):
        return {**super().hyperparams(), "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps}

    def _update(self, key, p, g):
        m = self._slot("m", key, p)
        v = self._slot("v", key, p)
        b1, b2 = np.float32(self.beta1), np.float32(self.beta2)
        lr_t = np.float32(self.lr * np.sqrt(1.0 - self.beta2 ** self.t)
                          / (1.0 - self.beta1 ** self.t))
        m *= b1
        m += (np.float32(1) - b1) * g
        v *= b2
        np.square(g, out=g)
        g *= np.float32(1) - b2
        v += g
        np.sqrt(v, out=g)
        g += np.float32(self.eps)
        np.divide(m, g, out=g)
        g *= lr_t
        p -= g


class RMSprop(Optimizer):
    name = "rmsprop"
    slot_names = ("ms", "mom")

    def __init__(self, lr=0.001, rho=0.9, momentum=0.0, eps=1e-10, **kw):
        super().__init__(lr, **kw)
        self.rho, self.momentum, self.eps = float(rho), float(momentum), float(eps)

    def hyperparams(self):
        return {**super().hyperparams(), "rho": self.rho, "momentum": self.momentum,
                "eps": self.eps}

    def _update(self, key, p, g):
        ms = self._slot("ms", key, p, fill=1.0)
        mom = self._slot("mom", key, p)
        rho = np.float32(self.rho)
        ms *= rho
        ms += (np.float32(1) - rho) * np.square(g)
        # g <- lr * g / sqrt(ms + eps)
        g *= np.float32(self.lr)
        g /= np.sqrt(ms + np.float32(self.eps))
        mom *= np.float32(self.momentum)
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
