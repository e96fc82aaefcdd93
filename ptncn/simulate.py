"""The time-stepped loop: run a learner over a batch of masked sequences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .learner import Learner
from .metrics import nll_nats_sum


@dataclass
class BatchResult:
    """Summed loss and token count of one batch (first prediction of each sequence skipped)."""

    loss_sum: float
    tokens: float

    @property
    def mean(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else float("nan")


def run_batch(learner: Learner, x: np.ndarray, mask: np.ndarray, learn: bool = True,
              skip_first: bool = True) -> BatchResult:
    """Reset ``learner`` and step it through ``x`` (T, B, X) with ``mask`` (T, B, 1).

    The prediction returned at step t was made before seeing ``x[t]`` and is
    scored against it with the categorical NLL in nats.  Step 0's prediction
    comes from an all-zero state and is skipped unless ``skip_first=False``.
    """
    x = np.asarray(x)
    mask = np.asarray(mask, dtype=np.float32)
    if x.ndim != 3 or mask.shape != (*x.shape[:2], 1):
        raise ValueError(f"expected x (T, B, X) and mask (T, B, 1); got {x.shape} and {mask.shape}")
    learner.reset(x.shape[1])
    loss, tokens = 0.0, 0.0
    for t in range(x.shape[0]):
        pred = learner.step(x[t], mask[t], learn=learn)
        if t > 0 or not skip_first:
            loss += nll_nats_sum(pred, x[t], mask[t])
            tokens += float(mask[t].sum())
    return BatchResult(loss, tokens)
