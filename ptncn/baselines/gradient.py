"""Shared base of the gradient-based baselines (RTRL, UORO, NoBackTrack, TBPTT, BPTT).

Step semantics are P-TNCN's (see :mod:`ptncn.learner`): ``step(x_t, mask_t, learn)``
returns the prediction of ``x_t`` made from ``h_{t-1}`` before seeing it (at
t = 0 from the zero state), the batch-mean loss ``L_t`` of that prediction on the
rows with mask 1 is what the methods minimise, then the state advances
``h_t = f(h_{t-1}, x_t)`` (rows with mask 0: no loss, state held).

Every quantity of a step (prediction, loss gradient, transition, carried
sensitivities) is computed with the parameters as they are at the start of the
step; a parameter update, when the method makes one at this step, is applied
at its end.  One update = one optimizer step on the gradient of the method's
batch-mean loss, clipped to global L2 norm ``clip`` (0 = off).  Steps with no
unmasked row make no update.

A step with ``learn=False`` does only the forward pass and drops whatever the
method carries for learning (sensitivities, tape): if learning resumes in the
same sequence it starts again from zero there (a truncation).

A method is a config (:class:`GradientConfig` plus its options), a state dataclass
(``h``, ``t`` and what it carries) and two hooks: :meth:`GradientLearner._carry`
(the carried learning state at the start of a sequence) and
:meth:`GradientLearner._learn` (one step's gradient and next carried state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..learner import Learner, LearnerConfig, Quantity, Updates, rows
from ..optim import clip_grad_norm
from . import lstm, rnn


def cell_module(cfg: rnn.RNNConfig):
    """The module of ``cfg.cell``'s equations: :mod:`~ptncn.baselines.rnn` or
    :mod:`~ptncn.baselines.lstm` (the same functions: ``state_size``, ``param_shapes``,
    ``init_params``, ``transition``, ``vjp``)."""
    return lstm if cfg.cell == "lstm" else rnn


@dataclass
class GradientConfig(rnn.RNNConfig, LearnerConfig):
    """The shared vanilla RNN (:class:`ptncn.baselines.rnn.RNNConfig`), the clipping
    norm ``clip`` (0 = off) and the ``seed`` of the initial weights and of any noise."""

    clip: float = 1.0
    seed: int = 1234

    def __post_init__(self):
        super().__post_init__()
        if not np.isfinite(self.clip) or self.clip < 0:
            raise ValueError(f"clip must be a finite number >= 0 (0 = off), got {self.clip!r}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed:
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self.clip = float(self.clip)
        self.seed = int(self.seed)


@dataclass
class GradientState:
    """What every method carries: the state ``h`` and the step ``t`` of the current
    sequences; subclasses add the method's learning state.  ``h`` is the cell's whole
    state: (B, H) for the vanilla cell, (B, 2H) = [h, c] for the LSTM; the readout
    reads its first H columns."""

    h: np.ndarray
    t: int


class GradientLearner(Learner):
    """Base class: the forward pass, loss gradient and clipping of every method."""

    Config = GradientConfig
    State = GradientState
    docs = "docs/baselines.md"

    @property
    def update_meaning(self) -> str:
        return ("gradient of the batch-mean loss handed to the optimizer at this step "
                f"({type(self).__name__}; clipped)")

    @property
    def dtype(self) -> np.dtype:
        return self.config.np_dtype

    @property
    def cell(self):
        """The cell's equations (:func:`cell_module`)."""
        return cell_module(self.config)

    def _build(self) -> dict[str, np.ndarray]:
        return self.cell.init_params(self.config, self.rng)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.cell.param_shapes(self.config)

    def quantity_table(self) -> dict[str, Quantity]:
        X, H = self.config.x_dim, self.config.hidden
        return {"x": Quantity(rows(X), "input x_t (the target of the prediction x_mu)",
                              "input units"),
                "x_mu": Quantity(rows(X), "prediction of x_t made from h_{t-1} before seeing it",
                                 "output units"),
                "h": Quantity(rows(H), "recurrent state h_t after the step", "activation"),
                **({"cell": Quantity(rows(H), "LSTM memory cell c_t after the step",
                                     "activation")} if self.config.cell == "lstm" else {})}

    def init_state(self, batch: int):
        return self.State(h=np.zeros((batch, self.cell.state_size(self.config)), self.dtype),
                          t=0, **self._carry(batch))

    def _quantities(self, x, y, s) -> dict[str, np.ndarray]:
        H = self.config.hidden
        q = {"x": x, "x_mu": y, "h": s[:, :H]}
        if s.shape[1] > H:
            q["cell"] = s[:, H:]
        return q

    # -- what a method writes ----------------------------------------------------------
    def _carry(self, batch: int) -> dict:
        """The method's carried learning state at the start of a sequence: every field of
        ``State`` but ``h`` and ``t`` (name -> value)."""
        return {}

    def _learn(self, params, state, h_prev, x, m, do, g_h, tr, n) -> tuple[Updates | None, dict]:
        """Given the step's loss gradients (``do`` on the logits, ``g_h = dL_t/dh_{t-1}``,
        ``n`` scored rows) and its transition ``tr``: (this step's update before clipping,
        or None; the next carried learning state, every field that :meth:`_carry` gives).
        Pure, like ``_step``."""
        raise NotImplementedError

    # -- the step ----------------------------------------------------------------------
    def _step(self, params, state, x, m, learn):
        cfg = self.config
        h_prev = state.h
        logits = h_prev[:, :cfg.hidden] @ params["W_out"]
        logits += params["c"]
        y = rnn.output(cfg.out, logits)
        h, tr = self.cell.transition(cfg, params, h_prev, x, m)
        updates = Updates()
        if learn:
            n = float(m.sum())
            do = rnn.logit_grad(cfg.out, y, x, m, n)
            g_h = do @ params["W_out"].T
            grads, carry = self._learn(params, state, h_prev, x, m, do, g_h, tr, n)
            if grads is not None:
                clip_grad_norm(grads, cfg.clip)   # non-finite: left as is, named d<param>
                updates = grads
        else:
            carry = self._carry(x.shape[0])
        return self.State(h=h, t=state.t + 1, **carry), self._quantities(x, y, h), updates

    def _commit_gradient(self, grads: dict[str, np.ndarray], where: str) -> None:
        """Clip and apply an update made outside ``step`` (whole-sequence methods);
        a non-finite gradient raises the DivergenceError naming ``d<param>``."""
        clip_grad_norm(grads, self.config.clip)
        updates = Updates(grads)
        bad = updates.first_nonfinite()
        if bad is not None:
            raise self.diverged(f"d{bad}", where)
        self.commit(updates)
