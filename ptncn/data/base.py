"""The task interface every data source implements, and the base classes that give
every task what the harness asks of it.

A task yields batches of masked sequences, deterministically from its seed:

* ``batch(i) -> Batch``: batch number ``i`` (``i`` may exceed
  ``n_batches``: training tasks then start a new epoch, reshuffled from
  (seed, epoch)); a ``Batch`` is ``(x, mask, score)`` with ``x`` (T, B, X)
  float32, ``mask`` (T, B, 1) with 0 on padded steps, and ``score`` (T, B, 1):
  which predictions count in the metric (the prediction at step t is of
  ``x[t]`` made from steps < t; by default every unmasked step but t = 0).
* ``n_batches``: batches per epoch (for generated data: the size of a fixed
  evaluation set, or an arbitrary epoch length for training).
* ``x_dim``, ``kind`` ("onehot": categorical, scored by NLL; "binary":
  per-unit Bernoulli, scored by BCE summed over units), ``identity() -> dict``
  (JSON-serialisable; written into recordings and checkpoints).

What the harness asks besides batches (defaults in :class:`Task`, the two kinds
in :class:`OneHotTask` and :class:`BinaryTask`): ``default_eval_split``,
``step_loss`` (one step's loss summed over scored rows), ``step_metrics`` (further
per-step sums, e.g. bit accuracy), ``loss_metrics`` (what follows from the mean
loss, e.g. bits per character) and ``trivial_baselines`` (scores of predictors
that learn nothing).
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar, NamedTuple

import numpy as np

from ..metrics import bce_nats_sum, nll_nats_sum, sq_error_sum


class Batch(NamedTuple):
    x: np.ndarray          # (T, B, X) float32
    mask: np.ndarray       # (T, B, 1) float32, 0 = padding
    score: np.ndarray      # (T, B, 1) float32, 1 = this step's prediction is scored


def default_score(mask: np.ndarray) -> np.ndarray:
    """Score every unmasked step except each sequence's first prediction."""
    s = mask.copy()
    s[0] = 0.0
    return s


class Task(abc.ABC):
    """Base of every task: the interface above, with the harness's defaults."""

    kind: ClassVar[str]
    x_dim: int
    n_batches: int
    #: the split evaluated when a config names none
    default_eval_split: ClassVar[str] = "valid"

    @abc.abstractmethod
    def batch(self, i: int) -> Batch:
        """Batch number ``i`` (deterministic in ``i``)."""

    @abc.abstractmethod
    def identity(self) -> dict:
        """What identifies the data (JSON-serialisable)."""

    @staticmethod
    @abc.abstractmethod
    def step_loss(pred: np.ndarray, x: np.ndarray, score: np.ndarray) -> float:
        """One step's loss (nats) summed over the scored rows."""

    def step_metrics(self, pred: np.ndarray, x: np.ndarray, score: np.ndarray) -> dict:
        """Further metrics of one step with scored rows, each summed over those rows
        (evaluation reports the sums divided by the number of scored rows)."""
        return {}

    def loss_metrics(self, loss: float) -> dict:
        """Metrics that follow from the mean loss per scored row."""
        return {}

    def trivial_baselines(self, train_task: "Task", n_batches: int) -> dict:
        """``{predictor: metrics}`` of predictors that learn nothing, scored on this
        task's first ``n_batches`` batches (fitted, where they fit, on ``train_task``)."""
        return {}


class OneHotTask(Task):
    """A categorical task: scored by NLL; bits per symbol, perplexity and the unigram."""

    kind = "onehot"
    step_loss = staticmethod(nll_nats_sum)

    def loss_metrics(self, loss: float) -> dict:
        return {"bpc": loss / math.log(2), "ppl": math.exp(min(loss, 700))}

    def trivial_baselines(self, train_task: Task, n_batches: int) -> dict:
        """The unigram: symbol frequencies (add-one) of the training data's first
        20 batches."""
        counts = np.ones(self.x_dim)
        for i in range(min(20, train_task.n_batches)):
            x, m, _ = train_task.batch(i)
            counts += (x * m).sum(axis=(0, 1))
        p = counts / counts.sum()
        loss = cnt = 0.0
        for i in range(n_batches):
            x, m, sc = self.batch(i)
            loss -= float((np.log(p)[None, None, :] * x * sc).sum())
            cnt += float(sc.sum())
        return {"unigram": {"bpc": loss / cnt / math.log(2), "loss": loss / cnt}}


class BinaryTask(Task):
    """A per-unit Bernoulli task: scored by BCE summed over units, also squared error."""

    kind = "binary"
    step_loss = staticmethod(bce_nats_sum)

    def step_metrics(self, pred: np.ndarray, x: np.ndarray, score: np.ndarray) -> dict:
        return {"mse_per_frame": sq_error_sum(pred, x, score)}

    def loss_metrics(self, loss: float) -> dict:
        return {"bce_per_frame": loss}


#: ``kind`` -> the base class that scores it
TASK_KINDS: dict[str, type[Task]] = {"onehot": OneHotTask, "binary": BinaryTask}
