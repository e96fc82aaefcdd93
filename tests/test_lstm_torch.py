"""benchmarks/lstm_torch.py and benchmarks/torch_lstm_step.py: ptncn's LSTM-BPTT and a
plain PyTorch nn.LSTM make the same updates (every parameter to 1e-6 after each of 3
float64 SGD updates), and the benchmark's pieces.

The PyTorch side runs in its own environment: ``$PTNCN_TORCH_PYTHON`` or
.venv-torch/bin/python (``python3 -m venv .venv-torch && .venv-torch/bin/pip install
torch numpy``); without one the tests that need it are skipped.
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import lstm_torch  # noqa: E402

TORCH_PYTHON = lstm_torch.find_torch_python()
needs_torch = pytest.mark.skipif(
    TORCH_PYTHON is None,
    reason="no PyTorch interpreter: set PTNCN_TORCH_PYTHON, or make .venv-torch with "
           "'python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy'")

X, H = 7, 8


def _lines(n=3, seed=1):
    return lstm_torch.random_lines(X, batch=5, max_len=9, n=n, seed=seed)


@needs_torch
def test_torch_lstm_matches_ptncn_bptt(tmp_path):
    res = lstm_torch.agreement_check(TORCH_PYTHON, _lines(), X, H, str(tmp_path))
    assert len(res["updates"]) == 3
    assert res["max_diff"] <= lstm_torch.TOLERANCE, lstm_torch.format_check(res)
    assert res["moved"] > 1e-3            # the updates did change the parameters


@needs_torch
def test_agreement_check_sees_a_different_update(tmp_path):
    # PyTorch replays ptncn's run with twice its step size: the check must notice
    batches = _lines()
    arrays = lstm_torch.reference_run(batches, X, H, lstm_torch.CHECK_LR)
    path = lstm_torch.write_npz(str(tmp_path / "ref.npz"), batches,
                                {"x_dim": X, "hidden": H, "lr": 2 * lstm_torch.CHECK_LR}, arrays)
    res = lstm_torch.run_worker([TORCH_PYTHON, lstm_torch.TORCH_STEP, "--worker", "check",
                                 "--npz", path], env=lstm_torch.worker_env(1))
    assert res["max_diff"] > 1e-3


@needs_torch
def test_both_sides_time_the_same_tokens(tmp_path):
    batches = _lines(n=3, seed=2)
    model = lstm_torch.make_bptt(X, H)
    meta = {"x_dim": X, "hidden": H, "lr": 0.01, "clip": 1.0}
    path = lstm_torch.write_npz(str(tmp_path / "b.npz"), batches, meta,
                                {f"init_{k}": model.params[k] for k in lstm_torch.NAMES})
    expected = float(sum(m.sum() for _, m in batches[1:]))
    for impl in ("ptncn", "torch"):
        res = lstm_torch.time_side(impl, TORCH_PYTHON, path, 1, runs=2, warmup=1)
        assert res["tokens_per_run"] == expected
        assert len(res["tokens_per_s_all"]) == 2 and res["tokens_per_s"] > 0
        assert res["cores"] == lstm_torch.first_cores(1)


def test_random_lines_are_padded_at_the_end():
    for idx, mask in _lines(n=4):
        lengths = mask.sum(axis=0).astype(int)
        assert idx.shape == mask.shape and idx.shape[1] == 5
        assert idx.shape[0] == lengths.max() and lengths.min() >= 2
        for b, n in enumerate(lengths):
            assert mask[:n, b].all() and not mask[n:, b].any()
            assert (idx[:n, b] >= 0).all() and (idx[n:, b] == -1).all()


def test_one_hot_is_zero_on_padding():
    idx = np.array([[2, 0], [1, -1]], np.int32)
    x, m = lstm_torch.one_hot(idx, (idx >= 0).astype(np.float32), 3, np.float64)
    assert x.shape == (2, 2, 3) and m.shape == (2, 2, 1) and x.dtype == np.float64
    assert x[0, 0, 2] == 1 and x[1, 0, 1] == 1 and x.sum() == 3 and not x[1, 1].any()


def test_make_bptt_takes_given_weights():
    a = lstm_torch.make_bptt(X, H)
    init = {k: v + 0.5 for k, v in a.params.items()}
    b = lstm_torch.make_bptt(X, H, init=init)
    for k in lstm_torch.NAMES:
        np.testing.assert_array_equal(b.params[k], init[k].astype(np.float32))


def test_npz_carries_batches_and_meta(tmp_path):
    batches = _lines(n=2)
    path = lstm_torch.write_npz(str(tmp_path / "x.npz"), batches, {"lr": 0.5},
                                {"init_c": np.zeros(X)})
    data = np.load(path)
    assert int(data["n_batches"]) == 2 and json.loads(str(data["meta"])) == {"lr": 0.5}
    np.testing.assert_array_equal(data["idx_1"], batches[1][0])
    np.testing.assert_array_equal(data["mask_0"], batches[0][1])


def test_find_torch_python(tmp_path, monkeypatch):
    exe = tmp_path / "python"
    exe.write_text("")
    assert lstm_torch.find_torch_python(str(exe)) == str(exe)
    monkeypatch.setenv("PTNCN_TORCH_PYTHON", str(exe))
    assert lstm_torch.find_torch_python() == str(exe)
    monkeypatch.setenv("PTNCN_TORCH_PYTHON", str(tmp_path / "missing"))
    assert lstm_torch.find_torch_python() is None


def test_table_ratio():
    side = lambda r, c: {"tokens_per_s": r, "cores_busy": c}  # noqa: E731
    rows = [{"threads": 1, "ptncn": side(3000.0, 1.0), "torch": side(6000.0, 1.0),
             "loadavg_before": (0.5, 0, 0), "loadavg_after": (1.25, 0, 0)},
            {"threads": 2, "ptncn": side(4500.0, 1.8), "torch": side(9000.0, 1.9)}]
    lines = lstm_torch.format_table(rows).splitlines()
    assert len(lines) == 3
    assert lines[1].split()[3:] == ["0.500", "1.00", "1.00", "0.50->1.25"]
    assert lines[2].split()[:4] == ["2", "4500", "9000", "0.500"]
