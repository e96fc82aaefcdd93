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

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..learner import Quantity, Updates, rows
from . import lstm, rnn
from .gradient import GradientConfig, GradientLearner, GradientState


@dataclass
class Record:
    """One taped step: ``do`` (None: no loss at this step) and the transition ``tr``."""

    do: np.ndarray | None
    tr: rnn.Transition


def backward(cell, params: dict, records: list[Record],
             n_window: int) -> dict[str, np.ndarray] | None:
    """Gradient of the summed losses of the last ``n_window`` records, back-propagated
    through the transitions (of ``cell``, :func:`~ptncn.baselines.gradient.cell_module`)
    of the records before each loss (all taped ones): see the module docstring.  None if
    no record of the window has a loss."""
    L = len(records)
    W_out, dtype = params["W_out"], params["W_out"].dtype
    H = W_out.shape[0]
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    u = None
    any_loss = False
    for i in range(L - 1, -1, -1):
        rec = records[i]
        if i >= L - n_window and rec.do is not None:
            any_loss = True
            grads["W_out"] += rec.tr.h_prev[:, :H].T @ rec.do
            grads["c"] += rec.do.sum(axis=0)
            if u is None:
                u = np.zeros_like(rec.tr.h_prev)
            u[:, :H] += rec.do @ W_out.T
        if u is None or i == 0:
            continue
        # through the transition that produced h_{i-1}
        g, u = cell.vjp(params, records[i - 1].tr, u, state=i - 1 > 0)
        for k, v in g.items():
            grads[k] += v
    if not any_loss:
        return None
    return {k: np.ascontiguousarray(g, dtype=dtype) for k, g in grads.items()}


@dataclass
class TapeState(GradientState):
    """``tape``: the records of the current window's ``pending`` steps, after the
    record of the step before the window (its transition produced the window's first
    ``h_{t-1}``) when there is one."""

    tape: list[Record]
    pending: int


def _positive_int(v) -> bool:
    return (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) and v >= 1


def check_k_schedule(schedule):
    """``schedule`` checked and normalised (ValueError naming the problem): None; a
    list of ``[update, k]`` steps (``k`` from that many updates on; the first at
    update 0, updates increasing); or ``{start, end, over, kind}``, k growing from
    ``start`` to ``end`` over ``over`` updates, ``kind`` "linear" (default) or
    "geometric"."""
    if schedule is None:
        return None
    if isinstance(schedule, dict):
        unknown = set(schedule) - {"start", "end", "over", "kind"}
        kind = schedule.get("kind", "linear")
        if unknown or kind not in ("linear", "geometric") or not all(
                _positive_int(schedule.get(k)) for k in ("start", "end", "over")):
            raise ValueError("k_schedule: expected {start, end, over} positive integers and "
                             f"kind 'linear' or 'geometric', got {schedule!r}")
        return {**schedule, "kind": kind}
    steps = [list(s) for s in schedule] if isinstance(schedule, (list, tuple)) else None
    if (not steps or any(len(s) != 2 or not _positive_int(s[1]) or isinstance(s[0], bool)
                         or not isinstance(s[0], (int, np.integer)) for s in steps)
            or steps[0][0] != 0 or any(a[0] >= b[0] for a, b in zip(steps, steps[1:]))):
        raise ValueError("k_schedule: expected a list of [update, k] (updates from 0, "
                         f"increasing; k integers >= 1), got {schedule!r}")
    return [[int(u), int(k)] for u, k in steps]


def k_at(schedule, updates: int, default: int) -> int:
    """The truncation after ``updates`` updates under ``schedule`` (None: ``default``)."""
    if schedule is None:
        return default
    if isinstance(schedule, dict):
        a, b, n = schedule["start"], schedule["end"], schedule["over"]
        f = min(updates, n) / n
        k = a * (b / a) ** f if schedule["kind"] == "geometric" else a + (b - a) * f
        return max(1, int(round(k)))
    return next(k for u, k in reversed(schedule) if updates >= u)


@dataclass
class TBPTTConfig(GradientConfig):
    """The shared RNN's options, the truncation ``k`` and, optionally, a schedule of
    it over the updates (``k_schedule``, see :func:`check_k_schedule`; it replaces
    ``k``)."""

    k: int = 10
    k_schedule: list | dict | None = None

    def __post_init__(self):
        if isinstance(self.k, bool) or int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k (truncation) must be an integer >= 1, got {self.k!r}")
        self.k = int(self.k)
        self.k_schedule = check_k_schedule(self.k_schedule)
        super().__post_init__()


@dataclass
class BPTTConfig(GradientConfig):
    """The shared RNN's options (BPTT has none of its own)."""


class _Taped(GradientLearner):
    """A learner that tapes its steps and back-propagates through them."""

    State = TapeState
    state_types = (Record, rnn.Transition, lstm.LSTMTransition)

    @property
    def window(self) -> int:
        """Steps per update inside a sequence."""
        raise NotImplementedError

    def _carry(self, batch: int) -> dict:
        return {"tape": [], "pending": 0}

    def _learn(self, params, state, h_prev, x, m, do, g_h, tr, n):
        tape = [*state.tape, Record(do if n > 0 else None, tr)]
        pending = state.pending + 1
        if pending < self.window:
            return None, {"tape": tape, "pending": pending}
        grads = backward(self.cell, params, tape, pending)
        return (None if grads is None else Updates(grads)), {"tape": tape[-1:], "pending": 0}

    def end_sequence(self, learn: bool = True) -> None:
        s = self.state
        if s is None:
            return
        if learn and s.pending > 0:
            grads = backward(self.cell, self.params, s.tape, s.pending)
            if grads is not None:
                self._commit_gradient(grads, "at the end of the sequence")
        self.state = dataclasses.replace(s, **self._carry(s.h.shape[0]))


class TBPTT(_Taped):
    """Truncated BPTT: an update every ``k`` steps through the last k transitions; with
    ``k_schedule``, k follows the number of updates made (the optimizer's step count,
    saved and resumed with the model)."""

    name = "tbptt"
    Config = TBPTTConfig

    @property
    def window(self) -> int:
        return k_at(self.config.k_schedule, self.optimizer.t, self.config.k)

    def quantity_table(self) -> dict[str, Quantity]:
        return {**super().quantity_table(),
                "k": Quantity(rows(1), "truncation k in force at this step", "steps")}

    def _step(self, params, state, x, m, learn):
        nxt, q, updates = super()._step(params, state, x, m, learn)
        q["k"] = np.full((x.shape[0], 1), self.window, self.dtype)
        return nxt, q, updates


class BPTT(_Taped):
    """Full back-propagation through time: one update per sequence, at ``end_sequence``."""

    name = "bptt"
    Config = BPTTConfig

    @property
    def window(self) -> int:
        return 1 << 62          # never inside a sequence
