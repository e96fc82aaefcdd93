"""Metrics over masked batches, each with its convention spelled out.

All take ``pred`` and ``target`` of shape (B, X) (or (T, B, X)) and a mask of
shape (B, 1) (or (T, B, 1)); masked-out rows count for nothing.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-8   # probabilities are floored here before the log, as in the P-TNCN reference


def nll_nats_sum(probs, target_onehot, mask) -> float:
    """Summed negative log-likelihood (nats) of the one-hot targets, masked rows skipped."""
    p = np.sum(np.asarray(probs, np.float64) * target_onehot, axis=-1, keepdims=True)
    return float(-np.sum(np.log(np.maximum(p, _TINY)) * mask))


def bits_per_symbol(probs, target_onehot, mask) -> float:
    """Mean NLL in bits over unmasked rows (BPC for characters)."""
    n = float(np.sum(mask))
    if n == 0:
        return float("nan")
    return nll_nats_sum(probs, target_onehot, mask) / n / np.log(2.0)
