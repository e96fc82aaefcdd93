"""Small built-in sequence tasks that need no data files."""

from __future__ import annotations

import numpy as np


def cyclic_symbols(batch: int, length: int, vocab: int = 8, period: int = 5,
                   seed: int = 0, n_patterns: int = 3, ragged: bool = True):
    """A batch of one-hot symbol sequences, each repeating one of a few patterns.

    ``n_patterns`` fixed random patterns of ``period`` symbols (drawn from
    ``vocab``) are made from ``seed``; each row repeats one of them from a random
    phase.  With ``ragged`` the rows get random lengths in [length//2, length]
    and are padded with zeros, mask 0.  Predicting the next symbol is learnable
    once the pattern is recognised, so the loss should fall well below
    log2(vocab) bits.

    Returns ``x`` (length, batch, vocab) float32 and ``mask`` (length, batch, 1).
    """
    if vocab < 2 or period < 1 or length < 2 or batch < 1:
        raise ValueError("cyclic_symbols needs vocab >= 2, period >= 1, length >= 2, batch >= 1")
    patterns = np.random.default_rng(seed).integers(0, vocab, size=(n_patterns, period))
    rng = np.random.default_rng([seed, batch, length])
    return _draw(rng, patterns, batch, length, vocab, ragged)


def cyclic_symbol_stream(batch: int, length: int, vocab: int = 8, period: int = 5,
                         seed: int = 0, n_patterns: int = 3, ragged: bool = True):
    """An endless generator of :func:`cyclic_symbols` batches (same patterns, new draws)."""
    patterns = np.random.default_rng(seed).integers(0, vocab, size=(n_patterns, period))
    rng = np.random.default_rng([seed, 1])
    while True:
        yield _draw(rng, patterns, batch, length, vocab, ragged)


def _draw(rng, patterns, batch, length, vocab, ragged):
    n_patterns, period = patterns.shape
    which = rng.integers(0, n_patterns, size=batch)
    phase = rng.integers(0, period, size=batch)
    t = np.arange(length)
    idx = patterns[which[None, :], (phase[None, :] + t[:, None]) % period]   # (T, B)
    x = np.eye(vocab, dtype=np.float32)[idx]
    if ragged:
        lengths = rng.integers(max(2, length // 2), length + 1, size=batch)
    else:
        lengths = np.full(batch, length)
    mask = (t[:, None] < lengths[None, :]).astype(np.float32)[..., None]
    x *= mask
    return x, mask
