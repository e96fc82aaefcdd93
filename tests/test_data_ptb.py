"""Penn Treebank tasks: counts, vocabularies, batch layout, ordering, errors.

Tests that need the data files skip (with the reason) when they cannot be
found: set PTNCN_DATA to the data directory (see datasets/README.md).
"""

import lzma
import os
import shutil

import numpy as np
import pytest

from ptncn.data.base import default_score
from ptncn.data.files import REPO_DATASETS, DataError, find
from ptncn.data.ptb import PTBChar, PTBWord, _tokenise, read_char_vocab
from ptncn.metrics import nll_nats_sum

CHAR_COUNTS = {"train": 4_975_414, "valid": 389_672, "test": 438_662}
LINES = {"train": 42_068, "valid": 3_370, "test": 3_761}
WORD_COUNTS = {"train": 887_521, "valid": 70_390, "test": 78_669}   # without <eos>


def _need(name):
    try:
        return find(name)
    except DataError as e:
        pytest.skip(f"PTB data not available (set PTNCN_DATA): {e}")


@pytest.fixture(scope="module")
def char_data():
    _need("ptb_char/contptncn_vocab.txt")
    for s in ("train", "valid", "test"):
        _need(f"ptb_char/{s}.txt.xz")


@pytest.fixture(scope="module")
def word_data():
    for s in ("train", "valid", "test"):
        _need(f"ptb_word/ptb.{s}.txt.xz")


def _first_line(path):
    with lzma.open(path, "rt") as f:
        for line in f:
            if line.split():
                return line


# -- counts and vocabularies ------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_char_token_counts(char_data, split):
    task = PTBChar(split)
    assert task.n_tokens == CHAR_COUNTS[split] == int(task.lengths.sum())
    assert task.n_lines == LINES[split]
    assert task.n_batches == -(-LINES[split] // 50)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_word_token_counts_and_eos(word_data, split):
    task = PTBWord(split)
    assert task.n_lines == LINES[split]
    assert task.n_tokens == WORD_COUNTS[split] + LINES[split]
    eos = task.vocab.index("<eos>")
    idx, mask, _ = task.indices(0)
    last = idx[(mask[..., 0].sum(0) - 1).astype(int), np.arange(idx.shape[1])]
    assert (last == eos).all()                      # every line ends with <eos>


def test_word_vocab(word_data):
    task = PTBWord("valid", batch_size=7)
    assert len(task.vocab) == 10_000 == task.x_dim
    assert task.vocab == sorted(task.vocab) and "<eos>" in task.vocab and "<unk>" in task.vocab
    assert PTBWord("test").vocab == task.vocab == PTBWord("train").vocab
    b = task.batch(3)
    assert b.x.shape == (b.mask.shape[0], 7, 10_000) and b.x.dtype == np.float32
    idx, mask, score = task.indices(3)
    np.testing.assert_array_equal(b.x.argmax(-1)[mask[..., 0] > 0], idx[mask[..., 0] > 0])
    np.testing.assert_array_equal(b.mask, mask)
    np.testing.assert_array_equal(b.score, score)
    first = _first_line(task.path)
    assert task.decode(task.indices(0)[0][:, 0]) == " ".join(first.split() + ["<eos>"])


def test_char_vocab_is_the_file_order(char_data):
    path = find("ptb_char/contptncn_vocab.txt")
    with open(path) as f:
        expected = [line.split()[0] for line in f if line.strip()]
    task = PTBChar("valid")
    assert task.vocab == expected == read_char_vocab()
    assert len(task.vocab) == 49 == task.x_dim and task.kind == "onehot"
    assert task.vocab[:4] == ["#", "$", "'", "&"] and task.vocab.index("_") == 22


# -- batch layout -----------------------------------------------------------------

def test_char_batches_onehot_mask_and_score(char_data):
    task = PTBChar("train", batch_size=16, seed=3)
    for i in (0, 5, task.n_batches - 1):
        x, mask, score = task.batch(i)
        T, B, X = x.shape
        assert X == 49 and mask.shape == score.shape == (T, B, 1)
        assert x.dtype == mask.dtype == score.dtype == np.float32
        rowsum = x.sum(-1)
        np.testing.assert_array_equal(rowsum, mask[..., 0])     # 1 on real steps, 0 on padding
        m = mask[..., 0]
        lengths = m.sum(0).astype(int)
        assert lengths.max() == T                               # padded to the longest line
        np.testing.assert_array_equal(m, np.arange(T)[:, None] < lengths[None, :])   # prefix
        np.testing.assert_array_equal(score, default_score(mask))
        np.testing.assert_array_equal(np.sort(lengths), np.sort(task.lengths[task.rows(i)]))
    # the last batch of an epoch keeps only the remaining lines
    last = task.batch(task.n_batches - 1)
    assert last.x.shape[1] == task.n_lines - (task.n_batches - 1) * 16


def test_shuffling_is_seeded_per_epoch(char_data):
    a, b = PTBChar("train", batch_size=8, seed=1), PTBChar("train", batch_size=8, seed=1)
    for i in (0, 7):
        for u, v in zip(a.batch(i), b.batch(i)):
            np.testing.assert_array_equal(u, v)
    n = a.n_batches
    assert not np.array_equal(a.rows(0), a.rows(n))                  # next epoch reshuffles
    assert not np.array_equal(a.rows(0), PTBChar("train", batch_size=8, seed=2).rows(0))
    epoch = np.concatenate([a.rows(i) for i in range(n, 2 * n)])
    np.testing.assert_array_equal(np.sort(epoch), np.arange(a.n_lines))   # each line once


def test_valid_and_test_are_in_file_order(char_data):
    for split in ("valid", "test"):
        task = PTBChar(split, batch_size=10, seed=5)
        np.testing.assert_array_equal(task.rows(0), np.arange(10))
        np.testing.assert_array_equal(task.rows(task.n_batches), np.arange(10))  # no reshuffle
        first = _first_line(task.path)
        assert task.decode(task.batch(0).x[:, 0]) == "".join(first.split())
        assert task.decode(task.indices(0)[0][:, 0]) == "".join(first.split())


def test_max_lines_and_max_len(char_data):
    full = PTBChar("valid", batch_size=4)
    small = PTBChar("valid", batch_size=4, max_lines=10, max_len=30)
    assert small.n_lines == 10 and small.n_batches == 3
    assert small.n_tokens == int(np.minimum(full.lengths[:10], 30).sum())
    idx_f, _, _ = full.indices(0)
    idx_s, mask_s, _ = small.indices(0)
    assert idx_s.shape[0] <= 30
    np.testing.assert_array_equal(idx_s, np.where(mask_s[..., 0] > 0, idx_f[:idx_s.shape[0]], -1))
    tr = PTBChar("train", batch_size=4, max_lines=10, seed=0)
    assert set(np.concatenate([tr.rows(i) for i in range(3)])) == set(range(10))
    ident = small.identity()
    assert ident["task"] == "ptb_char" and ident["split"] == "valid"
    assert ident["max_lines"] == 10 and ident["max_len"] == 30
    assert ident["sha256"] == "246c264c01114e17c7bc36a80d355c9c6a5c5216d132e3a0f221a65cd2745a68"


# -- metric sanity ----------------------------------------------------------------

def _score_split(task, probs_fn, n_batches=None):
    """Summed NLL (nats) and scored-token count over batches, with the task's score mask."""
    nll, count = 0.0, 0.0
    for i in range(task.n_batches if n_batches is None else n_batches):
        b = task.batch(i)
        nll += nll_nats_sum(probs_fn(b.x), b.x, b.score)
        count += float(b.score.sum())
    return nll, count


def test_uniform_predictor_scores_log2_49_bits(char_data):
    task = PTBChar("valid", batch_size=200)
    nll, count = _score_split(task, lambda x: np.full(x.shape, 1.0 / 49))
    assert count == task.n_tokens - task.n_lines        # every token but each line's first
    assert abs(nll / count / np.log(2) - np.log2(49)) < 1e-9


# -- errors -----------------------------------------------------------------------

def test_oov_symbol_names_symbol_file_and_line():
    tok2idx = {c: i for i, c in enumerate("ab_")}
    ok = _tokenise(" a b _ a \n b a \n ", tok2idx, "fake.txt")
    assert ok.tokens.tolist() == [0, 1, 2, 0, 1, 0] and ok.lengths.tolist() == [4, 2]
    with pytest.raises(DataError, match=r"'%'.*line 2 of fake\.txt"):
        _tokenise(" a b \n a % b \n", tok2idx, "fake.txt")
    with pytest.raises(DataError, match=r"'ab'.*line 1"):            # multi-character token
        _tokenise("ab a\n", tok2idx, "fake.txt")
    words = {"the": 0, "cat": 1, "<eos>": 2}
    w = _tokenise(" the cat \n\n cat \n", words, "w.txt", eos="<eos>")
    assert w.tokens.tolist() == [0, 1, 2, 1, 2] and w.line_numbers.tolist() == [1, 3]
    with pytest.raises(DataError, match=r"'dog'.*line 3 of w\.txt"):
        _tokenise(" the \n cat \n the dog \n", words, "w.txt", eos="<eos>")


def test_corrupt_vocab_file_is_reported(char_data, tmp_path):
    src = find("ptb_char/contptncn_vocab.txt")
    dst = tmp_path / "ptb_char" / "contptncn_vocab.txt"
    dst.parent.mkdir()
    shutil.copyfile(src, dst)
    data = bytearray(dst.read_bytes())
    data[0] ^= 0x01
    dst.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256") as e:
        PTBChar("valid", data_dir=str(tmp_path))
    assert str(dst) in str(e.value)


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("PTNCN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    if os.path.exists(os.path.join(REPO_DATASETS, "ptb_char", "valid.txt.xz")):
        pytest.skip("the repository's datasets/ holds the PTB files")
    with pytest.raises(DataError, match="looked in") as e:
        PTBChar("valid", data_dir=str(empty))
    assert str(empty) in str(e.value) and "ptb_char/" in str(e.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        PTBChar("dev")
