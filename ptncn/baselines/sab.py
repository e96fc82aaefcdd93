"""Sparse attentive backtracking (SAB, Ke et al. 2018) on the gradient baselines' cells.

A recurrent cell (``cell = "rnn" | "lstm"``, :func:`~ptncn.baselines.gradient.cell_module`)
with an attention over stored past states, trained by truncated back-propagation
whose gradient also jumps, through the attention, into the few memories a step
attends and back a short way from each.  Step semantics, loss, clipping and
updates are the gradient baselines' (:mod:`ptncn.baselines.gradient`).  Row-vector
convention; B rows, H hidden units, A = ``att_hidden``.  One step ``t`` (counted from
0 in the sequence) with input ``x_t`` and mask ``m_t``::

    prediction of x_t:   l_t = h_{t-1} W_out + c                 (h = s[:, :H])
    provisional state:   s^_t = cell(s_{t-1}, x_t, m_t)          h^_t = s^_t[:, :H]
    scores:              a_i = tanh(h^_t Wq + mem_i Wk + b_att) v     i = 1 .. n
    weights (n > k_top): tau = the (k_top+1)-th largest a_i (per row)
                         w_i = relu(a_i - tau) / (sum_j relu(a_j - tau) + 1e-7)
            (n <= k_top): w = softmax(a) over all memories (nothing to select)
    summary:             sum_t = sum_i w_i mem_i
    state:               h_t = h^_t + m_t sum_t,   s_t = s^_t with h^_t replaced by h_t

With no memory (n = 0) the attention is skipped: s_t = s^_t.  Rows with mask 0 hold
their state (the cell holds them and the summary is not added).  For the LSTM the
memory cell c is not touched by the attention.  The memory ``M = [mem_1 .. mem_n]``
is empty at the start of a sequence; after every step with ``(t + 1) % k_att == 0``
its final ``h_t`` (all rows, masked ones holding theirs) is appended.

Learning: an update every ``k_trunc`` steps inside a sequence and one for a shorter
last window at ``end_sequence``, on the window losses ``L_{t-p+1} + ... + L_t`` (p
steps since the last update), as TBPTT(k_trunc) (:mod:`ptncn.baselines.bptt`).  The
*window steps* are the p transitions that produced ``s_{t-p} .. s_{t-1}`` (those of
the whole tape that exist).  A memory is *selected* when a window step gives it
``w_i > 0`` on some row with mask 1.  The live steps ``S`` are the window steps and,
for every selected memory stored at step ``t_i``, the ``k_trunc`` steps
``t_i - k_trunc + 1 .. t_i``.  One reverse sweep over the taped steps, newest
first, with ``u`` the cotangent of ``s_tau``:

* at the step that stored a selected memory, its collected cotangent is added to
  ``u[:, :H]``;
* a live step back-propagates ``u`` through its attention (parameters, ``h^``; at a
  window step also into the memories it attends with ``w_i > 0``, row by row) and its
  cell; at a step that is not live the cotangent of ``s_{tau-1}`` is cut to zero;
* the window's loss of step tau adds ``do W_out.T`` to the cotangent of ``s_{tau-1}``.

So the gradient is that of the window losses with, held constant: the state after
every step that is not live, every memory at the steps that are not window steps
(no recursion to older memories), at a window step the memories a row does not
attend (``w_i = 0``, so the memory that sets ``tau`` too), and the selection itself
(which memories rank in the top ``k_top`` and which sets ``tau``).  ``tau`` is
differentiated as the score ``a_j`` of its memory (an ordinary function of the
parameters and of ``h^``); a weight at a tie with ``tau`` is zero and stays so.
Two live ranges that touch (``k_att <= k_trunc``) pass the cotangent from one into
the other, as one sweep does.  The tape keeps the whole sequence (memories may be
old) and is dropped at ``end_sequence`` and by ``learn=False``, which also keeps
memories from before it constant.

With no memory (``k_att`` longer than the sequence) every step is TBPTT(k_trunc)'s,
bit for bit: the cell's parameters are drawn from the seed first, the attention's
(``Wq, Wk ~ N(0, 1/H)``, ``v ~ N(0, 1/A)``, ``b_att = 0``) after them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..learner import Quantity, Updates, check_positive_ints, rows
from ..optim import clip_grad_norm
from . import lstm, rnn
from .gradient import GradientConfig, GradientLearner, GradientState

#: added to the sum of the shifted scores (the denominator of the sparse weights)
EPS = 1e-7


@dataclass
class SABConfig(GradientConfig):
    """The shared RNN's options (either cell), the truncation ``k_trunc``, the memory
    period ``k_att``, the number of attended memories ``k_top`` and the attention
    MLP's width ``att_hidden``."""

    k_trunc: int = 10
    k_att: int = 10
    k_top: int = 5
    att_hidden: int = 16

    def __post_init__(self):
        check_positive_ints(self, "k_trunc", "k_att", "k_top", "att_hidden")
        super().__post_init__()


@dataclass
class AttentionStep:
    """What a step's attention keeps for its derivatives: the provisional ``h_hat``
    (B, H), the mask ``m`` (B, 1), the weights ``w`` (B, n) over the first n memories
    and ``tau`` (B,), the memory whose score is the threshold (None: softmax)."""

    h_hat: np.ndarray
    m: np.ndarray
    w: np.ndarray
    tau: np.ndarray | None


@dataclass
class SABRecord:
    """One taped step: ``do`` (None: no loss), the cell's transition ``tr`` and the
    attention ``att`` (None: no memory yet)."""

    do: np.ndarray | None
    tr: rnn.Transition | lstm.LSTMTransition
    att: AttentionStep | None


@dataclass
class SABState(GradientState):
    """``tape``: the records of the sequence's steps since learning (re)started;
    ``pending``: steps since the last update; ``memory``: the stored states (B, H)
    and ``memory_steps`` the steps that stored them."""

    tape: list
    pending: int
    memory: list
    memory_steps: list


# ---------------------------------------------------------------------------
# the attention, forward
# ---------------------------------------------------------------------------
def attention_shapes(cfg: SABConfig) -> dict[str, tuple[int, ...]]:
    H, A = cfg.hidden, cfg.att_hidden
    return {"Wq": (H, A), "Wk": (H, A), "b_att": (A,), "v": (A,)}


def init_attention(cfg: SABConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Wq, Wk ~ N(0, 1/H), v ~ N(0, 1/A) (drawn in that order), b_att = 0."""
    H, A, dt = cfg.hidden, cfg.att_hidden, cfg.np_dtype
    p = {"Wq": rng.standard_normal((H, A)) / np.sqrt(H),
         "Wk": rng.standard_normal((H, A)) / np.sqrt(H),
         "b_att": np.zeros(A),
         "v": rng.standard_normal(A) / np.sqrt(A)}
    return {k: np.ascontiguousarray(v, dtype=dt) for k, v in p.items()}


def scores(p: dict, h_hat: np.ndarray, mems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P = tanh(h_hat Wq + mem_i Wk + b_att) (B, n, A), the scores a = P v (B, n)) for
    the memories ``mems`` stacked (B, n, H)."""
    q = h_hat @ p["Wq"]
    q += p["b_att"]
    P = np.tanh(q[:, None, :] + mems @ p["Wk"])
    return P, P @ p["v"]


def sparsify(a: np.ndarray, k_top: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(weights (B, n), the index of the threshold's memory per row or None).  More than
    ``k_top`` memories: ``relu(a - tau) / (sum relu(a - tau) + EPS)`` with ``tau`` the
    (k_top+1)-th largest score (ties ranked by index), so at most k_top are nonzero;
    otherwise the softmax of all the scores (nothing to select)."""
    if a.shape[1] <= k_top:
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), None
    tau_idx = np.argsort(-a, axis=1, kind="stable")[:, k_top]
    r = np.maximum(a - np.take_along_axis(a, tau_idx[:, None], axis=1), 0)
    return r / (r.sum(axis=1, keepdims=True) + a.dtype.type(EPS)), tau_idx


def attend(cfg: SABConfig, p: dict, s_hat: np.ndarray, memory: list,
           m: np.ndarray) -> tuple[np.ndarray, AttentionStep | None]:
    """(s_t, the step's attention record) from the provisional state ``s_hat``; with no
    memory ``s_hat`` itself and None."""
    if not memory:
        return s_hat, None
    H = cfg.hidden
    h_hat = np.ascontiguousarray(s_hat[:, :H])
    mems = np.stack(memory, axis=1)
    _, a = scores(p, h_hat, mems)
    w, tau = sparsify(a, cfg.k_top)
    s = s_hat.copy()
    s[:, :H] += m * np.einsum("bn,bnh->bh", w, mems)
    return s, AttentionStep(h_hat, m, w, tau)


def ranked_weights(att: AttentionStep | None, k_top: int, batch: int, dtype) -> np.ndarray:
    """The nonzero weights applied, largest first, zero-padded to (B, k_top) (rows with
    mask 0: zeros)."""
    out = np.zeros((batch, k_top), dtype)
    if att is not None:
        w = -np.sort(-att.w, axis=1)[:, :k_top] * att.m
        out[:, :w.shape[1]] = w
    return out


# ---------------------------------------------------------------------------
# the attention, backward
# ---------------------------------------------------------------------------
def sparsify_vjp(a: np.ndarray, w: np.ndarray, tau: np.ndarray | None,
                 dw: np.ndarray) -> np.ndarray:
    """da from dw through :func:`sparsify`, the selection held (through tau's score)."""
    if tau is None:
        return w * (dw - (w * dw).sum(axis=1, keepdims=True))
    a_tau = np.take_along_axis(a, tau[:, None], axis=1)
    z = np.maximum(a - a_tau, 0).sum(axis=1, keepdims=True) + a.dtype.type(EPS)
    dr = np.where(w > 0, (dw - (w * dw).sum(axis=1, keepdims=True)) / z, 0)
    da = dr.copy()
    da[np.arange(a.shape[0]), tau] -= dr.sum(axis=1)
    return da


def attend_vjp(p: dict, att: AttentionStep, memory: list, u: np.ndarray, collect: bool):
    """(attention parameter grads, the cotangent of s^ from ``u`` of s_t, the memories'
    cotangents (B, n, H) on the rows attending them, or None unless ``collect``)."""
    B, H = att.h_hat.shape
    n = att.w.shape[1]
    mems = np.stack(memory[:n], axis=1)
    P, a = scores(p, att.h_hat, mems)
    ds = att.m * u[:, :H]
    da = sparsify_vjp(a, att.w, att.tau, np.einsum("bnh,bh->bn", mems, ds))
    dpre = (da[:, :, None] * p["v"]) * (1 - P * P)
    dq = dpre.sum(axis=1)
    A = dq.shape[1]
    grads = {"Wq": att.h_hat.T @ dq,
             "Wk": mems.reshape(B * n, H).T @ dpre.reshape(B * n, A),
             "b_att": dq.sum(axis=0),
             "v": da.reshape(B * n).T @ P.reshape(B * n, A)}
    u_hat = u.copy()
    u_hat[:, :H] += dq @ p["Wq"].T
    dmem = None
    if collect:
        dmem = att.w[:, :, None] * ds[:, None, :] + dpre @ p["Wk"].T
        dmem *= (att.w > 0)[:, :, None]
    return grads, u_hat, dmem


def live_steps(tape: list, t0: int, memory_steps: list, window: range,
               k_trunc: int) -> tuple[set, set]:
    """(the live steps, the selected memories): tape indices, memory indices (only those
    whose storing step is taped; see the module docstring)."""
    live, chosen = set(window), set()
    for j in window:
        att = tape[j].att
        if att is None:
            continue
        for i in np.flatnonzero(((att.w > 0) & (att.m > 0)).any(axis=0)):
            j_i = memory_steps[i] - t0
            if j_i >= 0:
                chosen.add(int(i))
                live.update(range(max(0, j_i - k_trunc + 1), j_i + 1))
    return live, chosen


def backward(cell, p: dict, tape: list, t0: int, memory: list, memory_steps: list,
             pending: int, k_trunc: int) -> dict[str, np.ndarray] | None:
    """The SAB gradient of the last ``pending`` losses of ``tape`` (whose first record is
    step ``t0`` of the sequence): the sweep of the module docstring.  None if no record
    of the window has a loss."""
    L, W_out = len(tape), p["W_out"]
    H = W_out.shape[0]
    window = range(max(0, L - 1 - pending), L - 1)
    live, chosen = live_steps(tape, t0, memory_steps, window, k_trunc)
    stored = {memory_steps[i] - t0: i for i in chosen}
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    mem_u: dict[int, np.ndarray] = {}
    u, any_loss = None, False
    for j in range(L - 1, -1, -1):
        rec = tape[j]
        if j in stored and stored[j] in mem_u:
            u = np.zeros_like(rec.tr.h_prev) if u is None else u
            u[:, :H] += mem_u.pop(stored[j])
        u_prev = None
        if u is not None and j in live:
            if rec.att is not None:
                g, u, dmem = attend_vjp(p, rec.att, memory, u, j in window)
                for k, v in g.items():
                    grads[k] += v
                for i in (chosen if dmem is not None else ()):
                    if i < dmem.shape[1]:
                        mem_u[i] = dmem[:, i] + mem_u[i] if i in mem_u else dmem[:, i]
            g, u_prev = cell.vjp(p, rec.tr, u)
            for k, v in g.items():
                grads[k] += v
        if j >= L - pending and rec.do is not None:
            any_loss = True
            grads["W_out"] += rec.tr.h_prev[:, :H].T @ rec.do
            grads["c"] += rec.do.sum(axis=0)
            u_prev = np.zeros_like(rec.tr.h_prev) if u_prev is None else u_prev
            u_prev[:, :H] += rec.do @ W_out.T
        u = u_prev
    if not any_loss:
        return None
    return {k: np.ascontiguousarray(g, dtype=W_out.dtype) for k, g in grads.items()}


# ---------------------------------------------------------------------------
# the learner
# ---------------------------------------------------------------------------
class SAB(GradientLearner):
    """Sparse attentive backtracking: a recurrent cell (vanilla or LSTM) that attends
    its k_top most relevant stored states, trained by TBPTT(k_trunc) plus gradient
    paths into the attended memories and k_trunc steps back from each."""

    name = "sab"
    Config = SABConfig
    State = SABState
    state_types = (SABRecord, AttentionStep, rnn.Transition, lstm.LSTMTransition)

    def _build(self) -> dict[str, np.ndarray]:
        p = self.cell.init_params(self.config, self.rng)
        return {**p, **init_attention(self.config, self.rng)}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**self.cell.param_shapes(self.config), **attention_shapes(self.config)}

    def quantity_table(self) -> dict[str, Quantity]:
        k = self.config.k_top
        return {**super().quantity_table(),
                "att": Quantity(rows(k), "attention weights applied at this step, largest "
                                "first (zeros: none, fewer memories, or mask 0)", "weight"),
                "n_mem": Quantity(rows(1), "memories held before this step", "memories")}

    def _carry(self, batch: int) -> dict:
        return {"tape": [], "pending": 0}

    def init_state(self, batch: int) -> SABState:
        return SABState(h=np.zeros((batch, self.cell.state_size(self.config)), self.dtype),
                        t=0, tape=[], pending=0, memory=[], memory_steps=[])

    def _backward(self, params, state_t: int, tape, memory, memory_steps, pending):
        return backward(self.cell, params, tape, state_t - len(tape) + 1, memory,
                        memory_steps, pending, self.config.k_trunc)

    def _step(self, params, state, x, m, learn):
        cfg = self.config
        logits = state.h[:, :cfg.hidden] @ params["W_out"]
        logits += params["c"]
        y = rnn.output(cfg.out, logits)
        s_hat, tr = self.cell.transition(cfg, params, state.h, x, m)
        s, att = attend(cfg, params, s_hat, state.memory, m)
        memory, steps = state.memory, state.memory_steps
        if (state.t + 1) % cfg.k_att == 0:
            memory, steps = [*memory, s[:, :cfg.hidden].copy()], [*steps, state.t]
        updates, carry = Updates(), self._carry(x.shape[0])
        if learn:
            n = float(m.sum())
            do = rnn.logit_grad(cfg.out, y, x, m, n) if n > 0 else None
            tape, pending = [*state.tape, SABRecord(do, tr, att)], state.pending + 1
            if pending >= cfg.k_trunc:
                grads = self._backward(params, state.t, tape, memory, steps, pending)
                if grads is not None:
                    clip_grad_norm(grads, cfg.clip)   # non-finite: left as is, named d<param>
                    updates = Updates(grads)
                pending = 0
            carry = {"tape": tape, "pending": pending}
        q = self._quantities(x, y, s)
        q["att"] = ranked_weights(att, cfg.k_top, x.shape[0], self.dtype)
        q["n_mem"] = np.full((x.shape[0], 1), len(state.memory), self.dtype)
        return SABState(h=s, t=state.t + 1, memory=memory, memory_steps=steps, **carry), \
            q, updates

    def end_sequence(self, learn: bool = True) -> None:
        """The update of a shorter last window, if any; then the tape and the memory
        are dropped."""
        s = self.state
        if s is None:
            return
        if learn and s.pending > 0:
            grads = self._backward(self.params, s.t - 1, s.tape, s.memory, s.memory_steps,
                                   s.pending)
            if grads is not None:
                self._commit_gradient(grads, "at the end of the sequence")
        self.state = dataclasses.replace(s, tape=[], pending=0, memory=[], memory_steps=[])
