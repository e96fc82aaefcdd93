"""Bouncing digits: the moving-glyph video task of Srivastava et al. (2015).

Each sequence shows ``digits`` 28x28 glyphs moving on a black ``canvas`` x
``canvas`` frame for ``frames`` frames.  The generator follows this
description (written for this package, not taken from other code):

* Every glyph starts at a position drawn uniformly from the unit square
  [0, 1]^2 (component 0 is the row, component 1 the column), with a
  direction angle drawn uniformly from [0, 2*pi) and ``speed`` units of the
  unit square per frame: velocity = speed * (cos angle, sin angle).
* Frame 0 shows the starting positions.  Between frames, position +=
  velocity; a coordinate that leaves [0, 1] is mirrored back
  (p < 0 -> -p, p > 1 -> 2 - p) and that velocity component is negated
  (:func:`reflect_step`).  ``speed`` <= 1 keeps one reflection enough.
* A glyph's top-left pixel corner is ``rint(position * (canvas - 28))``, so
  every glyph lies wholly inside the canvas.  Glyphs overlap by a
  pixel-wise maximum (:func:`render`).  Pixels are uint8 / 255 in [0, 1];
  ``binarize=True`` maps them to 1 where > 0.5, else 0.
* ``glyph`` < 28 (a divisor of 28) shrinks every glyph by averaging pixel blocks
  (:func:`shrink_glyphs`; 14 halves it), for small canvases such as 16 x 16;
  the corner rule then uses the glyph size instead of 28.

Glyph pools (:func:`glyph_pool`):

* ``mnist``: split "train" uses ``x_train`` (60,000 images), "test" uses
  ``x_test`` (10,000), from ``mnist.npz``.
* ``notmnist``: ``notmnist_small.npz`` has no predefined split, so one is
  fixed here (:func:`notmnist_split`): **test = for each letter A-J, the
  first 100 images of that letter in file order (the file is already
  shuffled): 1,000 images, 100 per class; train = every other image except
  those pixel-identical to some test image** (the file holds duplicate
  glyphs; dropping them keeps the pools disjoint in content, not only in
  index).  The rule uses no random numbers, so it cannot drift with numpy.
  With the stored file this gives 8,856 train images: 897-900 per letter,
  except 767 for "I" (a bar in many fonts, so many exact duplicates).

Every glyph of every sequence is drawn uniformly (with replacement) from the
split's pool.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Batch, BinaryTask, default_score
from .files import DataError, find

GLYPH = 28
EVAL_SEQUENCES = 1000          # size of the fixed test set (default n_batches)
_SPLIT_CODE = {"train": 0, "test": 1}
_SOURCE_FILE = {"mnist": "mnist.npz", "notmnist": "notmnist_small.npz"}
NOTMNIST_TEST_PER_CLASS = 100

_CACHE: dict[str, dict[str, np.ndarray]] = {}                 # path -> arrays
_POOLS: dict[tuple[str, str, str], np.ndarray] = {}           # (path, source, split) -> pool


# ----------------------------------------------------------------- glyph pools

def _load(source: str, data_dir: str | None) -> dict[str, np.ndarray]:
    path = find(_SOURCE_FILE[source], data_dir)
    if path not in _CACHE:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        keys = ("x_train", "x_test") if source == "mnist" else ("x", "y")
        for k in keys:
            if k not in arrays:
                raise DataError(f"{path} has no array {k!r} (has {sorted(arrays)})")
        for k in keys:
            if k.startswith("x") and (arrays[k].dtype != np.uint8 or arrays[k].shape[1:] != (28, 28)):
                raise DataError(f"{path}: {k} is {arrays[k].dtype} {arrays[k].shape}, "
                                f"expected uint8 (N, 28, 28)")
        _CACHE[path] = arrays
    return _CACHE[path]


def notmnist_split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of the notMNIST file: see the module docstring.

    Test: the first ``NOTMNIST_TEST_PER_CLASS`` images of each class in file
    order.  Train: the rest, minus images byte-identical to a test image.
    """
    y = np.asarray(y)
    test = np.sort(np.concatenate([np.flatnonzero(y == c)[:NOTMNIST_TEST_PER_CLASS]
                                   for c in np.unique(y)]))
    in_test = np.zeros(len(y), bool)
    in_test[test] = True
    test_bytes = {x[i].tobytes() for i in test}
    train = np.array([i for i in range(len(y))
                      if not in_test[i] and x[i].tobytes() not in test_bytes], dtype=np.int64)
    return train, test


def glyph_pool(source: str, split: str, data_dir: str | None = None) -> np.ndarray:
    """The (N, 28, 28) uint8 glyphs a task of this source and split draws from."""
    if source not in _SOURCE_FILE:
        raise ValueError(f"source must be one of {sorted(_SOURCE_FILE)}, not {source!r}")
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    arrays = _load(source, data_dir)
    if source == "mnist":
        return arrays["x_train" if split == "train" else "x_test"]
    path = find(_SOURCE_FILE[source], data_dir)
    if (path, source, split) not in _POOLS:
        train, test = notmnist_split(arrays["x"], arrays["y"])
        _POOLS[(path, source, "train")] = arrays["x"][train]
        _POOLS[(path, source, "test")] = arrays["x"][test]
    return _POOLS[(path, source, split)]


# ------------------------------------------------------------ motion and render

def reflect_step(pos: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame of motion in the unit square with mirror reflection at the walls.

    ``pos`` and ``vel`` are arrays of the same shape (any shape); returns new
    (pos, vel).  Assumes |vel| <= 1 so that a single reflection suffices.
    """
    p = pos + vel
    v = np.array(vel, dtype=np.float64, copy=True)
    low, high = p < 0.0, p > 1.0
    p = np.where(low, -p, np.where(high, 2.0 - p, p))
    v[low | high] *= -1.0
    return p, v


def trajectory(start: np.ndarray, vel: np.ndarray, frames: int) -> np.ndarray:
    """Positions over ``frames`` frames: (frames,) + start.shape; frame 0 = ``start``."""
    out = np.empty((frames,) + np.shape(start))
    p, v = np.asarray(start, np.float64), np.asarray(vel, np.float64)
    for t in range(frames):
        out[t] = p
        p, v = reflect_step(p, v)
    return out


def shrink_glyphs(glyphs: np.ndarray, size: int) -> np.ndarray:
    """(N, 28, 28) uint8 glyphs averaged over ``28 / size`` x ``28 / size`` pixel blocks
    (rounded) to (N, size, size); ``size`` must divide 28 (28, 14, 7, 4, 2, 1)."""
    size = int(size)
    if size < 1 or GLYPH % size:
        raise ValueError(f"glyph size must divide {GLYPH} (28, 14, 7, 4, 2, 1), not {size}")
    if size == GLYPH:
        return glyphs
    f = GLYPH // size
    blocks = glyphs.reshape(len(glyphs), size, f, size, f).astype(np.float32)
    return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)


def corners(positions: np.ndarray, canvas: int, glyph: int = GLYPH) -> np.ndarray:
    """Top-left pixel corners ``rint(position * (canvas - glyph))`` as int64."""
    return np.rint(positions * (canvas - glyph)).astype(np.int64)


def render(glyphs: np.ndarray, corner: np.ndarray, canvas: int) -> np.ndarray:
    """Paste glyphs onto black canvases with a pixel-wise max.

    ``glyphs`` (B, D, g, g) uint8 (g = 28 unless shrunk); ``corner`` (T, B, D, 2) int
    top-left (row, column) pixels, each in [0, canvas - g].  Returns (T, B, canvas,
    canvas) uint8.
    """
    T, B, D, _ = corner.shape
    g = glyphs.shape[-1]
    if corner.min(initial=0) < 0 or corner.max(initial=0) > canvas - g:
        raise ValueError(f"a glyph corner lies outside [0, canvas - {g}]")
    out = np.zeros((T, B, canvas, canvas), np.uint8)
    cr = corner.tolist()
    for t in range(T):
        for b in range(B):
            frame = out[t, b]
            for d in range(D):
                r, c = cr[t][b][d]
                win = frame[r:r + g, c:c + g]
                np.maximum(win, glyphs[b, d], out=win)
    return out


# ------------------------------------------------------------------------ task

class BouncingDigits(BinaryTask):
    """Bouncing MNIST / notMNIST glyphs as a random-access binary-video task.

    ``batch(i)`` depends only on (seed, split, i): its generator is
    ``np.random.default_rng([seed, split_code, i])`` (train 0, test 1) and
    draws, in order, glyph indices (B, D), start positions (B, D, 2) and
    angles (B, D).  ``x`` is (frames, B, canvas**2) float32 (row-major
    flattened frames), ``mask`` all ones and ``score`` =
    ``default_score(mask)``: the prediction at step t is of frame t from frames
    < t, frame 0 is not scored.

    Epoch length ``n_batches``: for split "test" it defaults to
    ``ceil(1000 / batch_size)`` batches holding a fixed evaluation set of
    exactly 1,000 sequences: when ``batch_size`` does not divide 1,000 the rows
    of the last batch past sequence 1,000 are padding (x 0, mask 0, score 0).
    For "train" it defaults to 1,000 batches; any ``i`` is valid and every
    ``i`` is a fresh draw.  Glyph pools and the notMNIST split: see the module
    docstring.
    """

    def __init__(self, source: str = "mnist", split: str = "train", batch_size: int = 16,
                 seed: int = 0, canvas: int = 64, digits: int = 2, frames: int = 20,
                 speed: float = 0.1, binarize: bool = False, n_batches: int | None = None,
                 data_dir: str | None = None, glyph: int = GLYPH):
        if int(glyph) < 1 or GLYPH % int(glyph):
            raise ValueError(f"glyph size must divide {GLYPH} (28, 14, 7, 4, 2, 1), not {glyph}")
        if canvas < glyph:
            raise ValueError(f"canvas must be at least the glyph size {glyph} pixels, "
                             f"not {canvas}")
        if digits < 1 or frames < 2 or batch_size < 1:
            raise ValueError("BouncingDigits needs digits >= 1, frames >= 2, batch_size >= 1")
        if not 0.0 <= speed <= 1.0:
            raise ValueError(f"speed must lie in [0, 1] (unit square per frame), not {speed}")
        self.source, self.split = source, split
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.canvas, self.digits, self.frames = int(canvas), int(digits), int(frames)
        self.speed, self.binarize = float(speed), bool(binarize)
        self.glyph = int(glyph)
        self.pool = shrink_glyphs(glyph_pool(source, split, data_dir),    # validates
                                  self.glyph)                             # source/split
        self.x_dim = self.canvas ** 2
        if n_batches is None:
            if split == "test":
                self.n_batches = math.ceil(EVAL_SEQUENCES / self.batch_size)
                self.n_sequences = EVAL_SEQUENCES
            else:
                self.n_batches = 1000
                self.n_sequences = self.n_batches * self.batch_size
        else:
            self.n_batches = int(n_batches)
            self.n_sequences = self.n_batches * self.batch_size

    # the random draws of batch i
    def _draw(self, i: int):
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], int(i)])
        B, D = self.batch_size, self.digits
        which = rng.integers(0, len(self.pool), size=(B, D))
        start = rng.random((B, D, 2))
        angle = rng.random((B, D)) * (2.0 * math.pi)
        vel = self.speed * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        return which, trajectory(start, vel, self.frames)

    def trajectories(self, i: int) -> np.ndarray:
        """(frames, B, digits, 2) unit-square (row, column) positions of batch ``i``."""
        return self._draw(i)[1]

    def glyph_indices(self, i: int) -> np.ndarray:
        """(B, digits) indices into ``self.pool`` of the glyphs of batch ``i``."""
        return self._draw(i)[0]

    def batch(self, i: int) -> Batch:
        which, pos = self._draw(i)
        frames = render(self.pool[which], corners(pos, self.canvas, self.glyph), self.canvas)
        T, B = self.frames, self.batch_size
        if self.binarize:
            x = (frames > 127).astype(np.float32)          # uint8/255 > 0.5
        else:
            x = frames.astype(np.float32) / np.float32(255.0)
        x = x.reshape(T, B, self.x_dim)
        mask = np.ones((T, B, 1), np.float32)
        if int(i) == self.n_batches - 1:
            n_real = self.n_sequences - int(i) * B
            if n_real < B:
                mask[:, n_real:] = 0.0
                x[:, n_real:] = 0.0
        return Batch(x, mask, default_score(mask))

    def identity(self) -> dict:
        ident = {"task": "bouncing_digits", "source": self.source, "split": self.split,
                "data_file": _SOURCE_FILE[self.source], "batch_size": self.batch_size,
                "seed": self.seed, "canvas": self.canvas, "digits": self.digits,
                "frames": self.frames, "speed": self.speed, "binarize": self.binarize,
                "n_batches": self.n_batches, "n_sequences": self.n_sequences,
                "notmnist_split": (f"test = first {NOTMNIST_TEST_PER_CLASS} per class in file "
                                   "order; train = rest minus test duplicates")
                if self.source == "notmnist" else None}
        if self.glyph != GLYPH:             # (absent at 28: older run files stay comparable)
            ident["glyph"] = self.glyph
        return ident

    def trivial_baselines(self, train_task, n_batches: int) -> dict:
        """The predictors "copy the last frame" and "the mean training frame"
        (:func:`copy_last_frame_bce`, :func:`mean_frame_bce`)."""
        cl = copy_last_frame_bce(self, n_batches=n_batches)
        mf = mean_frame_bce(self, train_task, n_batches=n_batches)
        return {"copy_last_frame": {"bce_per_frame": cl["bce"], "mse_per_frame": cl["mse"]},
                "mean_frame": {"bce_per_frame": mf["bce"], "mse_per_frame": mf["mse"]}}


# ---------------------------------------------------------- trivial predictors

EPS = 1e-7


def frame_metrics(pred: np.ndarray, x: np.ndarray, score: np.ndarray) -> tuple[float, float, float]:
    """(BCE sum, squared-error sum, number of scored frames) of one batch.

    ``pred`` and ``x`` (T, B, P), ``score`` (T, B, 1).  A frame's BCE is
    summed over its pixels with probabilities clipped to [1e-7, 1 - 1e-7]
    (targets may be grey: then it is a cross-entropy against soft targets);
    its squared error is summed over pixels.  Divide the sums by the frame
    count for per-frame means.
    """
    p = np.clip(np.asarray(pred, np.float64), EPS, 1.0 - EPS)
    x = np.asarray(x, np.float64)
    w = np.asarray(score, np.float64)[..., 0]
    bce = -(x * np.log(p) + (1.0 - x) * np.log1p(-p)).sum(-1)
    se = ((np.asarray(pred, np.float64) - x) ** 2).sum(-1)
    return float((w * bce).sum()), float((w * se).sum()), float(w.sum())


def _evaluate(task, predict, n_batches: int | None) -> dict:
    n = task.n_batches if n_batches is None else int(n_batches)
    bce = se = frames = 0.0
    for i in range(n):
        x, _, score = task.batch(i)
        b, s, f = frame_metrics(predict(x), x, score)
        bce, se, frames = bce + b, se + s, frames + f
    return {"bce": bce / frames, "mse": se / frames, "frames": frames}


def copy_last_frame_bce(task, n_batches: int | None = None) -> dict:
    """Predict each frame by the frame before it; ``{"bce", "mse", "frames"}``.

    Per-frame BCE (nats, summed over pixels) and squared error, averaged over
    the scored frames of the task's first ``n_batches`` batches (default all).
    """
    def predict(x):
        p = np.empty_like(x)
        p[0] = 0.5                       # never scored
        p[1:] = x[:-1]
        return p
    return _evaluate(task, predict, n_batches)


def mean_frame(train_task, n_batches: int = 20) -> np.ndarray:
    """Pixel-wise mean (P,) over every unmasked frame of ``train_task``'s first batches."""
    total, count = 0.0, 0.0
    for i in range(n_batches):
        x, mask, _ = train_task.batch(i)
        total = total + (x.astype(np.float64) * mask).sum((0, 1))
        count += float(mask.sum())
    return total / count


def mean_frame_bce(task, train_task, n_batches: int | None = None, train_batches: int = 20) -> dict:
    """Predict every frame by the train task's mean frame (a constant); see :func:`copy_last_frame_bce`."""
    m = mean_frame(train_task, train_batches).astype(np.float32)
    return _evaluate(task, lambda x: np.broadcast_to(m, x.shape), n_batches)


def constant_bce(task, p: float = 0.5, n_batches: int | None = None) -> dict:
    """Predict every pixel as ``p``; see :func:`copy_last_frame_bce`."""
    return _evaluate(task, lambda x: np.full_like(x, p), n_batches)
