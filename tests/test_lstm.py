"""The LSTM cell of the gradient baselines (``cell = "lstm"``).

A step computed by hand, its Jacobian products against central finite differences,
and the learners' whole updates (BPTT, TBPTT) against finite differences of their
objective, in float64.
"""

import numpy as np
import pytest

from ptncn.baselines import lstm, rnn
from ptncn.baselines.bptt import BPTT, TBPTT
from ptncn.baselines.nobacktrack import NoBackTrack
from ptncn.baselines.rtrl import RTRL
from ptncn.baselines.uoro import UORO
from fd import central_differences

X, H, B, T = 4, 3, 3, 6


def _data(seed=0, T=T):
    rng = np.random.default_rng(seed)
    xs = np.eye(X)[rng.integers(0, X, (T, B))]
    ms = (rng.random((T, B, 1)) > 0.25).astype(float)
    ms[:, 0] = 1.0
    ms[T // 2:, 2] = 0.0                  # a row that ends early
    return xs, ms


def _cfg(**kw):
    return rnn.RNNConfig(X, hidden=H, cell="lstm", dtype="float64", **kw)


def _params(seed=1, cfg=None):
    cfg = cfg or _cfg()
    p = lstm.init_params(cfg, np.random.default_rng(seed))
    p["b"] += np.random.default_rng(seed + 1).standard_normal(p["b"].shape) * 0.3
    return p


def _sig(a):
    return 1 / (1 + np.exp(-a))


def test_one_step_by_hand():
    cfg = rnn.RNNConfig(1, hidden=1, cell="lstm", dtype="float64")
    p = {"W_in": np.array([[0.5, -0.3, 0.8, 0.2]]), "W_rec": np.array([[0.1, 0.4, -0.6, 0.7]]),
         "b": np.array([0.0, 1.0, 0.1, -0.2]), "W_out": np.ones((1, 1)), "c": np.zeros(1)}
    s_prev = np.array([[0.3, -0.5], [0.3, -0.5]])         # [h, c], two rows
    x = np.array([[1.0], [1.0]])
    m = np.array([[1.0], [0.0]])
    s, _ = lstm.transition(cfg, p, s_prev, x, m)
    a = 1.0 * p["W_in"][0] + 0.3 * p["W_rec"][0] + p["b"]
    i, f, g, o = _sig(a[0]), _sig(a[1]), np.tanh(a[2]), _sig(a[3])
    c = f * -0.5 + i * g
    np.testing.assert_allclose(s[0], [o * np.tanh(c), c], rtol=1e-12)
    np.testing.assert_array_equal(s[1], s_prev[1])        # masked row holds its state


def test_forget_bias_starts_at_one():
    p = lstm.init_params(_cfg(), np.random.default_rng(0))
    np.testing.assert_array_equal(p["b"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    assert {k: v.shape for k, v in p.items()} == lstm.param_shapes(_cfg())


def test_vjp_matches_finite_differences_of_the_step():
    cfg, p = _cfg(), _params()
    rng = np.random.default_rng(5)
    s_prev = rng.standard_normal((B, 2 * H)) * 0.5
    x, m = _data()[0][0], np.array([[1.0], [0.0], [1.0]])
    u = rng.standard_normal((B, 2 * H))
    _, tr = lstm.transition(cfg, p, s_prev, x, m)
    grads, u_prev = lstm.vjp(p, tr, u)

    def f(pp, sp):
        return float((lstm.transition(cfg, pp, sp, x, m)[0] * u).sum())

    fd = central_differences(lambda d: f(p, d["s"]), {"s": s_prev})["s"]
    np.testing.assert_allclose(u_prev, fd, rtol=1e-6, atol=1e-9)
    fds = central_differences(lambda q: f(q, s_prev), p)
    for k in ("W_in", "W_rec", "b"):
        np.testing.assert_allclose(grads[k], fds[k], rtol=1e-6, atol=1e-9, err_msg=k)
    np.testing.assert_allclose(lstm.vjp_state(p, tr, u), u_prev, rtol=1e-14)
    np.testing.assert_allclose(lstm.vjp_params(tr, u)["W_rec"], grads["W_rec"], rtol=1e-14)


def _objective(cfg, p, xs, ms, windows):
    """sum over windows of the window's summed batch-mean losses, each window's state
    before it held constant: the objective whose gradient TBPTT takes (BPTT: one window)."""
    total = 0.0
    s = np.zeros((xs.shape[1], 2 * cfg.hidden))
    for lo, hi in windows:
        for t in range(lo, hi):
            n = ms[t].sum()
            if n > 0:
                logits = s[:, :cfg.hidden] @ p["W_out"] + p["c"]
                total += (rnn.row_loss(cfg.out, logits, xs[t]) * ms[t][:, 0]).sum() / n
            s, _ = lstm.transition(cfg, p, s, xs[t], ms[t])
    return total


def _one_update(cls, xs, ms, **kw):
    """The parameter change of one plain SGD update with lr = 1 (= minus the gradient)."""
    model = cls(X, hidden=H, cell="lstm", dtype="float64", optimizer="sgd", lr=1.0, clip=0.0,
                seed=3, **kw)
    p0 = {k: v.copy() for k, v in model.params.items()}
    model.reset(B)
    for x, m in zip(xs, ms):
        model.step(x, m)
    model.end_sequence()
    return p0, {k: p0[k] - model.params[k] for k in p0}


@pytest.mark.parametrize("out", ["softmax", "sigmoid", "identity"])
def test_bptt_update_is_the_gradient_of_the_sequence_loss(out):
    xs, ms = _data(1)
    p0, g = _one_update(BPTT, xs, ms, out=out)
    cfg = _cfg(out=out)
    fd = central_differences(lambda q: _objective(cfg, q, xs, ms, [(0, T)]), p0)
    for k in p0:
        np.testing.assert_allclose(g[k], fd[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_tbptt_window_update_is_the_gradient_of_the_window_loss():
    """TBPTT(3) over 3 steps: one update, the gradient of the window's losses."""
    xs, ms = _data(2, T=3)
    p0, g = _one_update(TBPTT, xs, ms, k=3)
    cfg = _cfg()
    fd = central_differences(lambda q: _objective(cfg, q, xs, ms, [(0, 3)]), p0)
    for k in p0:
        np.testing.assert_allclose(g[k], fd[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_tbptt_of_the_whole_sequence_equals_bptt():
    xs, ms = _data(3)
    _, g_bptt = _one_update(BPTT, xs, ms)
    _, g_tbptt = _one_update(TBPTT, xs, ms, k=T)
    for k in g_bptt:
        np.testing.assert_array_equal(g_tbptt[k], g_bptt[k])


def test_lstm_quantities_split_the_state():
    model = BPTT(X, hidden=H, cell="lstm", seed=0)
    xs, ms = _data(4)
    model.reset(B)
    model.step(xs[0].astype(np.float32), ms[0].astype(np.float32))
    s = model.state.h
    assert s.shape == (B, 2 * H)
    np.testing.assert_array_equal(model.quantity("h"), s[:, :H])
    np.testing.assert_array_equal(model.quantity("cell"), s[:, H:])


@pytest.mark.parametrize("cls", [RTRL, UORO, NoBackTrack])
def test_forward_mode_learners_refuse_the_lstm(cls):
    with pytest.raises(ValueError, match=r"cell = 'lstm' is not available.*rnn"):
        cls(X, hidden=H, cell="lstm")


@pytest.mark.parametrize("kw,match", [(dict(cell="gru"), "cell must be one of rnn, lstm"),
                                      (dict(cell="lstm", act="relu"), "act = 'relu'"),
                                      (dict(cell="lstm", leak=0.5), "leak = 0.5")])
def test_bad_cell_options(kw, match):
    with pytest.raises(ValueError, match=match):
        BPTT(X, hidden=H, **kw)


def test_lstm_bptt_learns_a_cycle():
    from ptncn.data import CyclicSymbols
    task = CyclicSymbols(batch_size=8, length=12, vocab=5, period=4, n_patterns=2, seed=0)
    model = BPTT(5, hidden=16, cell="lstm", optimizer="adam", lr=0.02, seed=0)
    losses = []
    for b in range(120):
        xs, ms, _ = task.batch(b)
        model.reset(xs.shape[1])
        loss = 0.0
        for x, m in zip(xs, ms):
            y = model.step(x, m)
            loss += float(-(x * np.log(y + 1e-9)).sum(axis=1).mean())
        model.end_sequence()
        losses.append(loss / len(xs))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
