"""Small built-in sequence tasks that need no data files."""

from __future__ import annotations

import numpy as np

from .base import Batch, OneHotTask, default_score


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


class CyclicSymbols(OneHotTask):
    """The cyclic-pattern task as a random-access batch source (see :func:`cyclic_symbols`).

    ``batch(i)`` depends only on (seed, i), so a run can resume at any batch.
    """

    def __init__(self, batch_size: int = 16, length: int = 20, vocab: int = 8, period: int = 5,
                 n_patterns: int = 3, ragged: bool = True, seed: int = 0, split: str = "train"):
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {split!r}")
        self.split = split
        self.batch_size, self.length, self.vocab = batch_size, length, vocab
        self.period, self.n_patterns, self.ragged, self.seed = period, n_patterns, ragged, seed
        self.patterns = np.random.default_rng(seed).integers(0, vocab, size=(n_patterns, period))
        self.x_dim = vocab

    n_batches = 1000

    def batch(self, i: int) -> Batch:
        # the same patterns in every split; each split draws its own rows
        code = {"train": 7, "valid": 8, "test": 9}[self.split]
        rng = np.random.default_rng([self.seed, code, int(i)])
        x, mask = _draw(rng, self.patterns, self.batch_size, self.length, self.vocab, self.ragged)
        return Batch(x, mask, default_score(mask))

    def identity(self) -> dict:
        return {"task": "cyclic_symbols", "batch_size": self.batch_size, "length": self.length,
                "vocab": self.vocab, "period": self.period, "n_patterns": self.n_patterns,
                "ragged": self.ragged, "seed": self.seed, "split": self.split}
