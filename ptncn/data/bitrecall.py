"""Bit recall: a small memory task for online learning.

Each sequence reads ``n_bits`` random bits, one per step, gets a recall cue,
and then sees the same bits again, one per step; the learner predicts the next
input, and only its predictions of the recalled bits are scored, so a good
score needs the bits held in memory across the cue.

Encoding (``x_dim = 3``; unit 0 holds the bit):

=====================  =========  ==========================  ===============
steps t                phase      x[t] = [bit, read, recall]   score[t]
=====================  =========  ==========================  ===============
0 .. n-1               read       [b_t, 1, 0]                  0
n                      cue        [0,   1, 1]                  0
n+1 .. 2n              recall     [b_(t-n-1), 0, 1]            1
=====================  =========  ==========================  ===============

Sequence length T = 2 * n_bits + 1.  The cue (both flags on) is the only
step of its kind, so it is unambiguous.  The prediction at step t is of x[t]
from steps < t, so the first scored prediction (t = n + 1) must give b_0
having seen only the read phase and the cue; during recall the true earlier
bits are fed in (teacher forcing), which helps nothing with the next bit.
The flags of scored steps are deterministic; :func:`bit_accuracy` counts
unit 0 only, while a BCE metric over all units also counts the (easy) flags.
"""

from __future__ import annotations

import numpy as np

from .base import Batch, BinaryTask

BIT, READ, RECALL = 0, 1, 2


class BitRecall(BinaryTask):
    """Random-access batches of the bit-recall task (see the module docstring).

    ``batch(i)`` depends only on (seed, i): the bits are drawn by
    ``np.random.default_rng([seed, i])``; every ``i`` is valid.  ``x`` is
    (2n+1, B, 3) float32, ``mask`` all ones, ``score`` 1 on the n recall
    steps.  Evaluation also reports ``bit_accuracy`` (:func:`bit_accuracy`).
    """

    x_dim = 3

    def __init__(self, n_bits: int = 8, batch_size: int = 32, seed: int = 0, n_batches: int = 1000):
        if n_bits < 1 or batch_size < 1:
            raise ValueError("BitRecall needs n_bits >= 1 and batch_size >= 1")
        self.n_bits, self.batch_size = int(n_bits), int(batch_size)
        self.seed, self.n_batches = int(seed), int(n_batches)
        self.length = 2 * self.n_bits + 1

    def bits(self, i: int) -> np.ndarray:
        """(B, n_bits) 0/1 int array: the bits of batch ``i``."""
        rng = np.random.default_rng([self.seed, int(i)])
        return rng.integers(0, 2, size=(self.batch_size, self.n_bits))

    def batch(self, i: int) -> Batch:
        n, B = self.n_bits, self.batch_size
        b = self.bits(i).T.astype(np.float32)            # (n, B)
        x = np.zeros((self.length, B, 3), np.float32)
        x[:n, :, BIT] = b
        x[:n, :, READ] = 1.0
        x[n, :, READ] = 1.0
        x[n:, :, RECALL] = 1.0
        x[n + 1:, :, BIT] = b
        mask = np.ones((self.length, B, 1), np.float32)
        score = np.zeros_like(mask)
        score[n + 1:] = 1.0
        return Batch(x, mask, score)

    def identity(self) -> dict:
        return {"task": "bit_recall", "n_bits": self.n_bits, "batch_size": self.batch_size,
                "seed": self.seed, "n_batches": self.n_batches,
                "encoding": "x = [bit, read flag, recall flag]; cue = [0, 1, 1]"}

    def step_metrics(self, pred, x, score) -> dict:
        acc = bit_accuracy(pred[None], x[None], score[None]) * float(score.sum())
        return {**super().step_metrics(pred, x, score), "bit_accuracy": acc}


def bit_accuracy(pred: np.ndarray, x: np.ndarray, score: np.ndarray) -> float:
    """Fraction of scored steps whose bit prediction (unit 0, > 0.5 means 1) is right.

    ``pred`` and ``x`` (T, B, 3), ``score`` (T, B, 1).  The flag units are
    ignored.  A prediction of exactly 0.5 counts as 0.
    """
    w = np.asarray(score, np.float64)[..., 0]
    hit = (np.asarray(pred)[..., BIT] > 0.5) == (np.asarray(x)[..., BIT] > 0.5)
    total = w.sum()
    if total <= 0:
        raise ValueError("bit_accuracy: no scored steps")
    return float((w * hit).sum() / total)
