"""Penn Treebank language-modelling tasks (Mikolov's ``simple-examples`` preprocessing).

Two tasks, both following the interface in :mod:`ptncn.data.base`:

* :class:`PTBChar`: character level, 49 symbols (the ContinualPTNCN vocabulary
  ``ptb_char/contptncn_vocab.txt``, line i = symbol of index i).
* :class:`PTBWord`: word level, 10,000 words (the 9,999 train word types plus
  ``<eos>``, which ends every line).

One line of a split file is one sequence; its tokens are ``line.split()`` (for
characters ``<unk>`` is spelled ``< u n k >``, five symbols, and ``_`` marks a
word boundary).  Lines with no tokens (the file's trailing ``" "`` element) are
dropped.  Token counts of the full splits (see the data's PROVENANCE.md):

==========  ============  =====================================
split       characters    words (+ one ``<eos>`` per line)
==========  ============  =====================================
train       4,975,414     887,521 + 42,068 = 929,589
valid       389,672       70,390 + 3,370 = 73,760
test        438,662       78,669 + 3,761 = 82,430
==========  ============  =====================================

Batch ``i`` holds ``batch_size`` consecutive lines of the epoch's order: for
train a permutation drawn from ``np.random.default_rng([seed, epoch])`` with
``epoch = i // n_batches``; for valid/test the file order (``seed`` unused).
The last batch of an epoch holds the remaining lines (it may be narrower).
Rows are padded to the batch's longest line with mask 0; ``score`` is
:func:`~ptncn.data.base.default_score` (every real token but each line's first
is predicted and scored).

Tokenised splits are cached per process (keyed by file path, size and mtime),
so a second task over the same file costs nothing.
"""

from __future__ import annotations

import lzma
import os

import numpy as np

from .base import Batch, OneHotTask, default_score
from .files import DataError, find, read_manifest

SPLITS = ("train", "valid", "test")
EOS = "<eos>"

CHAR_VOCAB_FILE = "ptb_char/contptncn_vocab.txt"
CHAR_FILE = "ptb_char/{split}.txt.xz"
WORD_FILE = "ptb_word/ptb.{split}.txt.xz"

# Python's str.split() separators in ASCII
_ASCII_WS = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"

_CACHE: dict[tuple, "_Lines"] = {}


class _Lines:
    """A tokenised split: line k is ``tokens[starts[k]:starts[k] + lengths[k]]``.

    ``line_numbers`` are the 1-based line numbers in the source file of the kept
    (non-empty) lines.
    """

    __slots__ = ("tokens", "starts", "lengths", "line_numbers")

    def __init__(self, tokens, lengths, line_numbers):
        self.tokens = tokens
        self.lengths = np.asarray(lengths, np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.line_numbers = np.asarray(line_numbers, np.int64)


def _file_key(kind: str, path: str) -> tuple:
    st = os.stat(path)
    return (kind, os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _read_text(path: str) -> str:
    try:
        if path.endswith(".xz"):
            with lzma.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
        return raw.decode("utf-8")
    except (lzma.LZMAError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"data file {path} cannot be read as text: {e}") from e


def _oov(tok: str, line_no: int, source: str, vocab_name: str) -> DataError:
    return DataError(f"symbol {tok!r} on line {line_no} of {source} is not in the "
                     f"{vocab_name} vocabulary")


def _tokenise_slow(text: str, tok2idx: dict, source: str, eos: str | None,
                   vocab_name: str) -> _Lines:
    """Reference tokeniser: per line, ``line.split()`` (+ ``eos``), looked up in ``tok2idx``."""
    dtype = np.int16 if len(tok2idx) < 2 ** 15 else np.int32
    chunks, lengths, numbers = [], [], []
    eos_id = tok2idx[eos] if eos is not None else None
    for n, line in enumerate(text.split("\n"), start=1):
        toks = line.split()
        if not toks:
            continue
        try:
            ids = [tok2idx[t] for t in toks]
        except KeyError:
            bad = next(t for t in toks if t not in tok2idx)
            raise _oov(bad, n, source, vocab_name) from None
        if eos_id is not None:
            ids.append(eos_id)
        chunks.append(np.asarray(ids, dtype))
        lengths.append(len(ids))
        numbers.append(n)
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
    return _Lines(tokens, lengths, numbers)


def _tokenise(text: str, tok2idx: dict, source: str = "<string>", eos: str | None = None,
              vocab_name: str = "task") -> _Lines:
    """Tokenise ``text``: one line (split on ``\\n``) = one sequence, tokens = ``line.split()``.

    ``eos`` (if given, a vocabulary entry) is appended to every non-empty line.
    An out-of-vocabulary token raises :class:`DataError` naming the token, the
    line number and ``source``.  When every vocabulary entry is a single ASCII
    character and the text is ASCII, the work is done with numpy on the whole
    text (a few hundred ms for 10 MB); otherwise line by line.
    """
    single = all(len(t) == 1 and t.isascii() and not t.isspace() for t in tok2idx)
    if eos is not None or not single or not text.isascii():
        return _tokenise_slow(text, tok2idx, source, eos, vocab_name)
    b = np.frombuffer(text.encode("ascii"), np.uint8)
    is_ws = np.zeros(256, bool)
    is_ws[list(_ASCII_WS)] = True
    lut = np.full(256, -1, np.int32)
    for t, i in tok2idx.items():
        lut[ord(t)] = i
    pos = np.flatnonzero(~is_ws[b])
    codes = lut[b[pos]]
    if (codes < 0).any() or (np.diff(pos) == 1).any():
        # an unknown symbol or a multi-character token: let the reference path
        # find it and name its line
        return _tokenise_slow(text, tok2idx, source, eos, vocab_name)
    newline = b == 10
    line_of = np.cumsum(newline)[pos]          # 0-based line index of each token
    n_lines = int(newline.sum()) + 1
    counts = np.bincount(line_of, minlength=n_lines)
    keep = np.flatnonzero(counts)
    dtype = np.int16 if len(tok2idx) < 2 ** 15 else np.int32
    return _Lines(codes.astype(dtype), counts[keep], keep + 1)


def read_char_vocab(data_dir: str | None = None) -> list[str]:
    """The 49 PTB character symbols in index order (first field of each non-empty line)."""
    path = find(CHAR_VOCAB_FILE, data_dir)
    with open(path, encoding="utf-8") as f:
        vocab = [line.strip().split()[0] for line in f if line.strip()]
    if len(set(vocab)) != len(vocab):
        raise DataError(f"vocabulary file {path} lists a symbol twice")
    return vocab


_WORD_VOCAB: dict[tuple, list[str]] = {}


def build_word_vocab(data_dir: str | None = None) -> list[str]:
    """The PTB word vocabulary: ``sorted(set(train words) | {"<eos>"})`` (10,000 entries)."""
    path = find(WORD_FILE.format(split="train"), data_dir)
    key = _file_key("word-vocab", path)
    if key not in _WORD_VOCAB:
        words = set(_read_text(path).split())
        words.add(EOS)
        _WORD_VOCAB[key] = sorted(words)
    return _WORD_VOCAB[key]


class _PTBTask(OneHotTask):
    """Shared machinery of :class:`PTBChar` and :class:`PTBWord` (see the module docstring)."""

    name = "ptb"
    default_eval_split = "valid"      # PTB has a validation split for model selection
    _file = ""
    _sep = ""
    _eos = False           # append <eos> to every line

    def __init__(self, split: str = "train", batch_size: int = 50, seed: int = 0,
                 data_dir: str | None = None, max_lines: int | None = None,
                 max_len: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if max_lines is not None and int(max_lines) < 1:
            raise ValueError(f"max_lines must be >= 1 or None, not {max_lines}")
        if max_len is not None and int(max_len) < 1:
            raise ValueError(f"max_len must be >= 1 or None, not {max_len}")
        self.split, self.batch_size, self.seed = split, int(batch_size), int(seed)
        self.max_lines = None if max_lines is None else int(max_lines)
        self.max_len = None if max_len is None else int(max_len)
        self.data_dir = data_dir
        self.file = self._file.format(split=split)
        self.path = find(self.file, data_dir)
        self.vocab = self._load_vocab()
        self.x_dim = len(self.vocab)
        self._tok2idx = {t: i for i, t in enumerate(self.vocab)}
        lines = self._load_lines()
        n = len(lines.lengths) if self.max_lines is None else min(self.max_lines,
                                                                  len(lines.lengths))
        self._tokens = lines.tokens
        self._starts = lines.starts[:n]
        self.lengths = lines.lengths[:n] if self.max_len is None else \
            np.minimum(lines.lengths[:n], self.max_len)
        self.n_lines = n
        self.n_tokens = int(self.lengths.sum())
        self.n_batches = -(-n // self.batch_size)
        self._order_epoch, self._order = None, None

    # -- loading ---------------------------------------------------------------

    def _load_vocab(self) -> list[str]:
        raise NotImplementedError

    def _load_lines(self) -> _Lines:
        key = _file_key(self.name, self.path) + (tuple(self.vocab),)
        if key not in _CACHE:
            _CACHE[key] = _tokenise(_read_text(self.path), self._tok2idx, self.path,
                                    eos=EOS if self._eos else None, vocab_name=self.name)
        return _CACHE[key]

    # -- batches ---------------------------------------------------------------

    def order(self, epoch: int) -> np.ndarray:
        """Line order of ``epoch``: shuffled from (seed, epoch) for train, file order otherwise."""
        if self.split != "train":
            return np.arange(self.n_lines)
        if self._order_epoch != epoch:
            self._order = np.random.default_rng([self.seed, int(epoch)]).permutation(self.n_lines)
            self._order_epoch = epoch
        return self._order

    def rows(self, i: int) -> np.ndarray:
        """Line numbers (indices into the kept lines) of batch ``i``."""
        i = int(i)
        if i < 0:
            raise IndexError(f"batch index must be >= 0, not {i}")
        epoch, j = divmod(i, self.n_batches)
        return self.order(epoch)[j * self.batch_size:(j + 1) * self.batch_size]

    def indices(self, i: int):
        """Batch ``i`` as symbol indices: ``(idx, mask, score)``.

        ``idx`` is (T, B) int32 with -1 on padded steps; ``mask`` and ``score``
        are (T, B, 1) float32 as in :class:`~ptncn.data.base.Batch`.  T is the
        longest line of the batch (after ``max_len``); B is ``batch_size``
        except possibly for the last batch of an epoch.
        """
        rows = self.rows(i)
        lengths = self.lengths[rows]
        T = int(lengths.max())
        t = np.arange(T)[:, None]
        valid = t < lengths[None, :]
        src = np.where(valid, self._starts[rows][None, :] + t, 0)
        idx = np.where(valid, self._tokens[src], -1).astype(np.int32)
        mask = valid.astype(np.float32)[..., None]
        return idx, mask, default_score(mask)

    def batch(self, i: int) -> Batch:
        """Batch ``i``: one-hot ``x`` (T, B, x_dim) float32, zero on padded steps."""
        idx, mask, score = self.indices(i)
        T, B = idx.shape
        x = np.zeros((T, B, self.x_dim), np.float32)
        tt, bb = np.nonzero(idx >= 0)
        x[tt, bb, idx[tt, bb]] = 1.0
        return Batch(x, mask, score)

    # -- helpers ---------------------------------------------------------------

    def decode(self, indices, sep: str | None = None) -> str:
        """Symbols of ``indices`` joined by ``sep`` (default: "" for chars, " " for words).

        ``indices`` is a sequence of ints (negative = padding, skipped) or a
        one-hot / probability array (..., x_dim), decoded by argmax with all-zero
        rows skipped.
        """
        a = np.asarray(indices)
        if a.ndim >= 2 or (a.ndim == 1 and a.dtype.kind == "f" and a.shape[-1] == self.x_dim):
            a = a.reshape(-1, self.x_dim)
            a = np.where(a.any(axis=-1), a.argmax(axis=-1), -1)
        sep = self._sep if sep is None else sep
        return sep.join(self.vocab[int(k)] for k in a.reshape(-1) if k >= 0)

    def line_number(self, k: int) -> int:
        """1-based line number in the split file of kept line ``k``."""
        return int(self._load_lines().line_numbers[k])

    def _vocab_sha256(self) -> str:
        raise NotImplementedError

    def identity(self) -> dict:
        return {"task": self.name, "split": self.split, "batch_size": self.batch_size,
                "seed": self.seed, "max_lines": self.max_lines, "max_len": self.max_len,
                "file": self.file, "sha256": read_manifest()[self.file].sha256,
                "vocab_sha256": self._vocab_sha256(), "x_dim": self.x_dim,
                "n_lines": self.n_lines, "n_tokens": self.n_tokens}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, batch_size={self.batch_size}, "
                f"seed={self.seed}, max_lines={self.max_lines}, max_len={self.max_len}; "
                f"{self.n_lines} lines, {self.n_tokens} tokens, {self.n_batches} batches)")


class PTBChar(_PTBTask):
    """Character-level PTB: 49 one-hot symbols, one line per sequence.

    ``PTBChar(split="train", batch_size=50, seed=0, data_dir=None, max_lines=None,
    max_len=None)``: ``max_lines`` keeps only the first N non-empty lines of the
    split (before shuffling), ``max_len`` truncates every line to N symbols
    (both for CPU-sized variants; ``n_tokens`` counts what is kept).  Lines run
    up to a few hundred symbols, so a batch of 50 is ~(T≈400, 50, 49) float32,
    about 4 MB.  Attributes: ``kind``, ``x_dim`` (49), ``vocab``, ``n_batches``,
    ``n_lines``, ``n_tokens``, ``lengths``.
    """

    name = "ptb_char"
    _file = CHAR_FILE
    _sep = ""

    def _load_vocab(self):
        return read_char_vocab(self.data_dir)

    def _vocab_sha256(self):
        return read_manifest()[CHAR_VOCAB_FILE].sha256


class PTBWord(_PTBTask):
    """Word-level PTB: 10,000 one-hot words, ``<eos>`` ending each line.

    Same arguments and attributes as :class:`PTBChar`.  The vocabulary is
    ``sorted(set(train words) | {"<eos>"})``, built from the train file whatever
    the split (valid and test have no out-of-vocabulary words; one raises
    :class:`DataError`).

    Memory: a one-hot batch is (T, B, 10000) float32, i.e. 40 kB per step and
    row: T≈80, B=50 gives about 160 MB.  ``batch(i)`` builds it on each call
    (nothing is kept); use ``indices(i)`` -> ``(idx (T, B) int32, -1 = padding,
    mask, score)`` for memory-light work.
    """

    name = "ptb_word"
    _file = WORD_FILE
    _sep = " "
    _eos = True

    def _load_vocab(self):
        return build_word_vocab(self.data_dir)

    def _vocab_sha256(self):
        return read_manifest()[WORD_FILE.format(split="train")].sha256


__all__ = ["PTBChar", "PTBWord", "read_char_vocab", "build_word_vocab", "EOS", "SPLITS"]
