"""The task interface every data source implements.

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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    x: np.ndarray          # (T, B, X) float32
    mask: np.ndarray       # (T, B, 1) float32, 0 = padding
    score: np.ndarray      # (T, B, 1) float32, 1 = this step's prediction is scored


def default_score(mask: np.ndarray) -> np.ndarray:
    """Score every unmasked step except each sequence's first prediction."""
    s = mask.copy()
    s[0] = 0.0
    return s
