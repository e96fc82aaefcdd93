"""Your own data as a task: :class:`ArrayTask` turns an array of sequences (N, T, X)
(optionally with a mask (N, T)) into train / valid / test splits served as the task
interface of :mod:`ptncn.data.base` wants them.  See ``docs/tasks.md``.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np

from .base import TASK_KINDS, Batch, Task, default_score
from .files import DataError

SPLITS = ("train", "valid", "test")


def _fail(msg: str):
    raise ValueError(f"ArrayTask: {msg}")


class ArrayTask(Task):
    """Sequences given as an array, split deterministically into train / valid / test.

    ``x`` (N, T, X): N sequences of T steps of X numbers (real, finite).  ``mask``
    (N, T) or (N, T, 1) of 0/1 (default all ones): 0 marks padding after (or inside) a
    sequence; padded steps are zeroed and never scored.  ``kind``: "onehot" (every
    unmasked step one-hot; scored by NLL, bits per symbol) or "binary" (values in
    [0, 1]; per-unit Bernoulli, scored by BCE summed over units).

    The sequences are permuted from ``seed``; the first ``round(N * test_fraction)``
    are the test split, the next ``round(N * valid_fraction)`` the valid split, the rest
    the training split (every split must be non-empty).  A training epoch is
    ``n_train // batch_size`` batches (at least one) of ``batch_size`` sequences drawn
    in an order reshuffled from (seed, epoch); ``batch(i)`` for ``i >= n_batches``
    continues into later epochs.  The valid and test splits are served in a fixed
    order, all of their sequences (the last batch may be smaller).  Each batch is
    trimmed after its last unmasked step.

    ``identity()`` holds a sha256 of the data (after padding is zeroed), so a
    checkpoint refuses to resume on other data.
    """

    def __init__(self, x, mask=None, kind: str = "onehot", batch_size: int = 16,
                 split: str = "train", valid_fraction: float = 0.1,
                 test_fraction: float = 0.1, seed: int = 0):
        if kind not in TASK_KINDS:
            _fail(f"kind must be one of {', '.join(map(repr, TASK_KINDS))}, got {kind!r}")
        if split not in SPLITS:
            _fail(f"split must be 'train', 'valid' or 'test', got {split!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            _fail(f"batch_size must be an int >= 1, got {batch_size!r}")
        x = self._check_x(x)
        mask = self._check_mask(mask, x.shape)
        x = x * mask[..., None]                         # padding is zero
        if kind == "onehot":
            self._check_onehot(x, mask)
        elif x.min() < 0 or x.max() > 1:
            bad = np.argwhere((x < 0) | (x > 1))[0]
            _fail(f"kind='binary' needs values in [0, 1]; x{list(bad)} = {x[tuple(bad)]:g}")
        n = x.shape[0]
        n_test = self._split_size(n, test_fraction, "test")
        n_valid = self._split_size(n, valid_fraction, "valid")
        if n - n_test - n_valid < 1:
            _fail(f"valid_fraction={valid_fraction:g} and test_fraction={test_fraction:g} "
                  f"leave the train split of {n} sequences empty")
        self.kind, self._scorer = kind, TASK_KINDS[kind]
        self.split, self.batch_size, self.seed = split, int(batch_size), int(seed)
        self.valid_fraction, self.test_fraction = float(valid_fraction), float(test_fraction)
        self.x_dim = int(x.shape[2])
        self.n_sequences, self.length = n, int(x.shape[1])
        self.sha256 = _digest(x, mask)
        perm = np.random.default_rng([self.seed, 0x5EED]).permutation(n)
        parts = {"test": perm[:n_test], "valid": perm[n_test:n_test + n_valid],
                 "train": perm[n_test + n_valid:]}
        #: indices (into the full array) of this split's sequences
        self.indices = np.sort(parts[split])
        self._x = np.ascontiguousarray(x[self.indices])
        self._mask = np.ascontiguousarray(mask[self.indices])
        m = len(self.indices)
        self.n_batches = max(1, m // self.batch_size) if split == "train" \
            else math.ceil(m / self.batch_size)

    # -- input checks ------------------------------------------------------------
    @staticmethod
    def _check_x(x) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype.kind not in "fiub":
            _fail(f"x must hold real numbers, got dtype {a.dtype}")
        if a.ndim != 3:
            _fail(f"x must have shape (N, T, X) (sequences, steps, features), got {a.shape}")
        n, t, d = a.shape
        if n < 1 or t < 2 or d < 1:
            _fail(f"x needs at least 1 sequence, 2 steps and 1 feature, got shape {a.shape}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))
            _fail(f"x holds {len(bad)} NaN/inf value(s), the first at x{list(bad[0])}")
        return a

    @staticmethod
    def _check_mask(mask, shape) -> np.ndarray:
        if mask is None:
            return np.ones(shape[:2], np.float32)
        m = np.asarray(mask)
        if m.dtype.kind not in "fiub":
            _fail(f"mask must hold 0/1 numbers, got dtype {m.dtype}")
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[..., 0]
        if m.shape != shape[:2]:
            _fail(f"mask must have shape (N, T) = {shape[:2]} or (N, T, 1) to match x "
                  f"{shape}, got {np.shape(mask)}")
        m = m.astype(np.float32)
        bad = ~((m == 0) | (m == 1))
        if bad.any():
            where = np.argwhere(bad)[0]
            _fail(f"mask must be 0/1; {int(bad.sum())} value(s) are not, the first "
                  f"mask{list(where)} = {m[tuple(where)]!r}")
        return m

    @staticmethod
    def _check_onehot(x, mask) -> None:
        on = mask.astype(bool)
        rows = x[on]                                       # unmasked steps (K, X)
        ok = np.all((rows == 0) | (rows == 1), axis=1) & (rows.sum(axis=1) == 1)
        if not ok.all():
            where = np.argwhere(on)[np.flatnonzero(~ok)[0]]
            _fail(f"kind='onehot' needs every unmasked step one-hot (one 1, the rest 0); "
                  f"{int((~ok).sum())} step(s) are not, the first x[{where[0]}, {where[1]}] "
                  f"(sum {rows[~ok][0].sum():g}); use kind='binary' for other data")

    @staticmethod
    def _split_size(n: int, fraction, name: str) -> int:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
                or not 0 <= fraction < 1:
            _fail(f"{name}_fraction must be a number in [0, 1), got {fraction!r}")
        k = round(n * fraction)
        if k < 1:
            _fail(f"{name}_fraction={fraction:g} of {n} sequences leaves the {name} split "
                  f"empty (every split needs at least one sequence)")
        return k

    # -- the task interface ------------------------------------------------------
    def batch(self, i: int) -> Batch:
        i = int(i)
        m = len(self.indices)
        if self.split == "train":
            b = min(self.batch_size, m)
            epoch, j = divmod(i, self.n_batches)
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(m)
            rows = order[j * b:(j + 1) * b]
        else:
            j = i % self.n_batches
            rows = np.arange(j * self.batch_size, min(m, (j + 1) * self.batch_size))
        mask = self._mask[rows].T                          # (T, B)
        live = np.flatnonzero(mask.any(axis=1))
        t_end = max(2, int(live[-1]) + 1) if live.size else 2
        x = np.ascontiguousarray(self._x[rows, :t_end].transpose(1, 0, 2))
        mask = np.ascontiguousarray(mask[:t_end, :, None])
        return Batch(x, mask, default_score(mask))

    def identity(self) -> dict:
        out = {"task": "array", "kind": self.kind, "x_dim": self.x_dim,
               "n_sequences": self.n_sequences, "length": self.length, "sha256": self.sha256,
               "split": self.split, "split_sequences": len(self.indices),
               "batch_size": self.batch_size, "valid_fraction": self.valid_fraction,
               "test_fraction": self.test_fraction, "seed": self.seed}
        if self.kind == "onehot":
            out["vocab"] = self.x_dim
        return out

    # scoring: as tasks of ``kind`` are scored (OneHotTask / BinaryTask)
    def step_loss(self, pred, x, score) -> float:
        return self._scorer.step_loss(pred, x, score)

    def step_metrics(self, pred, x, score) -> dict:
        return self._scorer.step_metrics(self, pred, x, score)

    def loss_metrics(self, loss: float) -> dict:
        return self._scorer.loss_metrics(self, loss)

    def trivial_baselines(self, train_task: Task, n_batches: int) -> dict:
        return self._scorer.trivial_baselines(self, train_task, n_batches)

    # -- from a file -------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str, key: str = "x", mask_key: str = "mask", kind: str = "onehot",
                  batch_size: int = 16, split: str = "train", valid_fraction: float = 0.1,
                  test_fraction: float = 0.1, seed: int = 0,
                  data_dir: str | None = None) -> "ArrayTask":
        """An ArrayTask from an ``.npz`` file holding ``key`` (N, T, X) and, optionally,
        ``mask_key`` (N, T).  A relative ``path`` is looked up in the current directory,
        then in ``data_dir`` (the CLI's ``--data-dir``)."""
        path = os.fspath(path)
        found = path
        if not os.path.isabs(path) and not os.path.isfile(path) and data_dir:
            found = os.path.join(os.fspath(data_dir), path)
        if not os.path.isfile(found):
            where = "" if os.path.isabs(path) else \
                f" (looked in {os.getcwd()}" + (f" and {data_dir}" if data_dir else "") + ")"
            raise DataError(f"ArrayTask: data file {path} not found{where}")
        try:
            with np.load(found, allow_pickle=False) as f:
                if not hasattr(f, "files"):
                    raise DataError(f"ArrayTask: {found} is a .npy array, not an .npz archive "
                                    f"(save with np.savez(path, x=..., mask=...))")
                if key not in f.files:
                    raise DataError(f"ArrayTask: {found} has no array {key!r}; it holds "
                                    f"{', '.join(f.files) or 'nothing'}")
                x = f[key]
                mask = f[mask_key] if mask_key in f.files else None
        except DataError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"ArrayTask: {found} is not a readable .npz file ({exc})") from None
        return cls(x, mask, kind=kind, batch_size=batch_size, split=split,
                   valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed)


def _digest(x: np.ndarray, mask: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr((x.shape, str(x.dtype))).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(mask, dtype=np.float32).tobytes())
    return h.hexdigest()
