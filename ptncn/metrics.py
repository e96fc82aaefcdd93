"""Metrics over masked batches, each with its convention spelled out.

All take ``pred`` and ``target`` of shape (B, X) (or (T, B, X)) and a mask of
shape (B, 1) (or (T, B, 1)); masked-out rows count for nothing.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-8   # probabilities are floored here before the log, as in the P-TNCN reference
_BCE_EPS = 1e-7   # Bernoulli probabilities are clipped to [eps, 1 - eps]


def nll_nats_sum(probs, target_onehot, mask) -> float:
    """Summed negative log-likelihood (nats) of the one-hot targets, masked rows skipped."""
    p = np.sum(np.asarray(probs, np.float64) * target_onehot, axis=-1, keepdims=True)
    return float(-np.sum(np.log(np.maximum(p, _TINY)) * mask))


def bce_nats_sum(probs, target, mask) -> float:
    """Binary cross-entropy (nats) summed over units and unmasked rows, probabilities
    clipped to [1e-7, 1 - 1e-7] (targets may be grey: a cross-entropy to soft targets)."""
    p = np.clip(np.asarray(probs, np.float64), _BCE_EPS, 1 - _BCE_EPS)
    bce = -(target * np.log(p) + (1 - target) * np.log1p(-p)).sum(axis=-1, keepdims=True)
    return float((bce * mask).sum())


def sq_error_sum(pred, target, mask) -> float:
    """Squared error summed over units and unmasked rows."""
    d = np.asarray(pred, np.float64) - target
    return float(((d * d).sum(axis=-1, keepdims=True) * mask).sum())
