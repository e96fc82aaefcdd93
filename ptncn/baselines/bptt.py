"""Back-propagation through time: truncated (TBPTT(k)) and over whole sequences (BPTT).

Both keep a *tape* of steps; each record holds the step's loss gradient on the
logits ``do`` (the prediction of ``x_t`` read ``h_{t-1}``) and its transition
``h_{t-1} -> h_t`` (inputs and local slopes, :class:`ptncn.baselines.rnn.Transition`).
The hand-written backward pass (:func:`backward`) runs from the last record to the
first::

    u  <- u + do_t @ W_out.T                   (u: cotangent of h_{t-1})
    grad W_out += h_{t-1}.T @ do_t,  grad c += sum_b do_t
    grad theta_rec += u (dh_{t-1}/dtheta)      (through the transition of the record before)
    u  <- u (dh_{t-1}/dh_{t-2})

**TBPTT(k)** updates every k steps, on non-overlapping windows: at the end of step t
(when k steps have passed since the last update) the gradient is that of the sum
of the window's per-step batch-mean losses ``L_{t-k+1} + ... + L_t``, back-propagated
through the k transitions that produced ``h_{t-k} .. h_{t-1}`` and no further (the state
before them is a constant).  So the first loss of a window sees 1 transition, the last
sees k; k = 1 updates after every step through one transition.  The first transition
of a window was computed before the previous update (it belongs to the previous
window's forward pass, as in any online TBPTT).  At ``end_sequence`` a shorter last
window, if any, is used for one more update.

**BPTT** makes one update per sequence, at ``end_sequence``: the gradient of the sum of
all the sequence's per-step losses, through the whole sequence (TBPTT(T) = BPTT for
sequences of T steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rnn
from .gradient import GradientLearner


@dataclass
class Record:
    """One taped step: ``do`` (None: no loss at this step) and the transition ``tr``."""

    do: np.ndarray | None
    tr: rnn.Transition


def backward(params: dict, records: list[Record], n_window: int) -> dict[str, np.ndarray] | None:
    """Gradient of the summed losses of the last ``n_window`` records, back-propagated
    through the transitions of the records before each loss (all taped ones): see the
    module docstring.  None if no record of the window has a loss."""
    L = len(records)
    W_out, dtype = params["W_out"], params["W_out"].dtype
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    u = None
    any_loss = False
    for i in range(L - 1, -1, -1):
        rec = records[i]
        if i >= L - n_window and rec.do is not None:
            any_loss = True
            h_prev = rec.tr.h_prev
            grads["W_out"] += h_prev.T @ rec.do
            grads["c"] += rec.do.sum(axis=0)
            gh = rec.do @ W_out.T
            u = gh if u is None else u + gh
        if u is None or i == 0:
            continue
        prev = records[i - 1].tr            # the transition that produced h_{i-1}
        for k, g in rnn.vjp_params(prev, u).items():
            grads[k] += g
        if i - 1 > 0:
            u = rnn.vjp_state(params, prev, u)
    if not any_loss:
        return None
    return {k: np.ascontiguousarray(g, dtype=dtype) for k, g in grads.items()}


class _Taped(GradientLearner):
    """A learner that tapes its steps and back-propagates through them."""

    def _reset_carry(self, batch: int) -> None:
        self.tape: list[Record] = []
        self.pending = 0            # steps (records) in the current window

    def _window(self) -> int:
        raise NotImplementedError

    def _online(self, h_prev, x, m, do, g_h, tr, n):
        rec = Record(do if n > 0 else None, tr)
        pending = self.pending + 1
        if pending < self._window():
            return None, {"rec": rec, "pending": pending, "trim": False}
        grads = backward(self.params, self.tape + [rec], pending)
        return grads, {"rec": rec, "pending": 0, "trim": True}

    def _commit(self, carry):
        if carry["trim"]:
            self.tape = [carry["rec"]]
        else:
            self.tape.append(carry["rec"])
        self.pending = carry["pending"]

    def end_sequence(self, learn: bool = True) -> None:
        if learn and self.h is not None and self.pending > 0:
            grads = backward(self.params, self.tape, self.pending)
            if grads is not None:
                self._apply(grads)
        if self.h is not None:
            self._reset_carry(self.h.shape[0])

    def _carry_arrays(self):
        if not self.tape:
            return {}
        dt = self.dtype
        B, X = self.tape[0].tr.x.shape
        return {"h_prev": np.stack([r.tr.h_prev for r in self.tape]),
                "x": np.stack([r.tr.x for r in self.tape]),
                "r": np.stack([r.tr.r for r in self.tape]),
                "D": np.stack([r.tr.D for r in self.tape]),
                "do": np.stack([r.do if r.do is not None else np.zeros((B, X), dt)
                                for r in self.tape])}

    def _carry_meta(self):
        return {"pending": self.pending, "has_loss": [r.do is not None for r in self.tape]}

    def _load_carry(self, arrays, meta):
        self.pending = int(meta.get("pending", 0))
        has = meta.get("has_loss", [])
        dt = self.dtype
        self.tape = []
        for i, h in enumerate(has):
            tr = rnn.Transition(np.array(arrays["h_prev"][i], dt), np.array(arrays["x"][i], dt),
                                np.array(arrays["r"][i], dt), np.array(arrays["D"][i], dt))
            self.tape.append(Record(np.array(arrays["do"][i], dt) if h else None, tr))


class TBPTT(_Taped):
    """Truncated BPTT: an update every ``k`` steps through the last k transitions."""

    method_keys = ("k",)

    def __init__(self, x_dim: int, *, hidden: int = 64, act: str = "tanh", leak: float = 1.0,
                 out: str = "softmax", init_scale: float = 1.0, clip: float = 1.0,
                 dtype: str = "float32", k: int = 10, seed: int = 1234, optimizer="sgd",
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 max_norm: float = 0.0, optimizer_options: dict | None = None):
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k (truncation) must be an integer >= 1, got {k!r}")
        self._setup(x_dim, hidden=hidden, act=act, leak=leak, out=out, init_scale=init_scale,
                    clip=clip, dtype=dtype, seed=seed, optimizer=optimizer, lr=lr,
                    momentum=momentum, weight_decay=weight_decay, max_norm=max_norm,
                    optimizer_options=optimizer_options, k=int(k))
        self._reset_carry(1)

    def _window(self) -> int:
        return self.method["k"]


class BPTT(_Taped):
    """Full back-propagation through time: one update per sequence, at ``end_sequence``."""

    def __init__(self, x_dim: int, *, hidden: int = 64, act: str = "tanh", leak: float = 1.0,
                 out: str = "softmax", init_scale: float = 1.0, clip: float = 1.0,
                 dtype: str = "float32", seed: int = 1234, optimizer="sgd", lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 0.0, max_norm: float = 0.0,
                 optimizer_options: dict | None = None):
        self._setup(x_dim, hidden=hidden, act=act, leak=leak, out=out, init_scale=init_scale,
                    clip=clip, dtype=dtype, seed=seed, optimizer=optimizer, lr=lr,
                    momentum=momentum, weight_decay=weight_decay, max_norm=max_norm,
                    optimizer_options=optimizer_options)
        self._reset_carry(1)

    def _window(self) -> int:
        return 1 << 62          # never inside a sequence
