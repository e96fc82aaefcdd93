"""The windowed control (``learner = "window"``): the window it sees, its exact gradient,
its equivalence to a bigram regression, its config checks, that it learns what a window
can hold and that it runs through the harness."""

import numpy as np
import pytest

from ptncn.baselines import rnn
from ptncn.baselines.window import (Window, WindowConfig, batch_loss, forward, gradient,
                                    init_params, shift)
from ptncn.learner import load_learner
from fd import central_differences


def onehot(symbols, X=2):
    return np.eye(X)[np.asarray(symbols)]


# ---------------------------------------------------------------------------
# the window
# ---------------------------------------------------------------------------
def test_the_window_shifts_on_unmasked_rows_and_holds_on_masked_ones():
    model = Window(2, w=2, hidden=0, dtype="float64")
    steps = [(onehot([0, 1]), [1, 1]),
             (onehot([1, 0]), [1, 0]),            # row 1 masked: its window holds
             (onehot([0, 1]), [1, 1])]
    seen = []
    for x, m in steps:
        model.step(x, np.array(m, float))
        seen.append(model.quantity("window").copy())
    expected = [[[0, 0, 0, 0], [0, 0, 0, 0]],     # zeros before the start
                [[1, 0, 0, 0], [0, 1, 0, 0]],
                [[0, 1, 1, 0], [0, 1, 0, 0]]]
    np.testing.assert_array_equal(np.stack(seen), expected)
    np.testing.assert_array_equal(model.state.window, [[1, 0, 0, 1], [0, 1, 0, 1]])
    assert model.state.t == 3


def test_shift_drops_the_oldest_input():
    window = np.array([[1., 2, 3, 4, 5, 6]])       # x_{t-1} = (1, 2), ..., x_{t-3} = (5, 6)
    np.testing.assert_array_equal(shift(window, np.array([[7., 8]]), np.ones((1, 1))),
                                  [[7, 8, 1, 2, 3, 4]])
    np.testing.assert_array_equal(shift(window, np.array([[7., 8]]), np.zeros((1, 1))), window)


def test_the_prediction_is_made_from_the_window_before_seeing_x():
    model = Window(3, w=2, hidden=4, dtype="float64", seed=5)
    xs = onehot([[0, 2], [1, 1], [2, 0]], 3)
    for x in xs:
        u = model.state.window.copy() if model.state is not None else np.zeros((2, 6))
        p = model.params.copy()
        y = model.step(x)
        logits, _ = forward(model.config, p, u)
        np.testing.assert_allclose(y, rnn.output("softmax", logits), rtol=1e-12)


def test_without_hidden_layer_there_is_no_z_and_two_parameters():
    model = Window(4, w=3, hidden=0)
    assert set(model.params) == {"W_out", "c"} and model.params["W_out"].shape == (12, 4)
    assert "z" not in model.recordable and "window" in model.recordable
    model = Window(4, w=3, hidden=5)
    assert {k: v.shape for k, v in model.params.items()} == {
        "W1": (12, 5), "b1": (5,), "W_out": (5, 4), "c": (4,)}


def test_init_is_normal_with_variance_one_over_fan_in_and_zero_biases():
    cfg = WindowConfig(x_dim=50, w=4, hidden=300, dtype="float64")
    p = init_params(cfg, np.random.default_rng(0))
    assert abs(p["W1"].std() - 1 / np.sqrt(200)) < 0.02 / np.sqrt(200)
    assert abs(p["W_out"].std() - 1 / np.sqrt(300)) < 0.02 / np.sqrt(300)
    assert not p["b1"].any() and not p["c"].any()


# ---------------------------------------------------------------------------
# the gradient
# ---------------------------------------------------------------------------
def _case(out, hidden, act="tanh", seed=0):
    X, w, B = 4, 3, 5
    rng = np.random.default_rng(seed)
    cfg = WindowConfig(x_dim=X, w=w, hidden=hidden, act=act, out=out, dtype="float64")
    p = init_params(cfg, rng)
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}   # nonzero biases
    u = rng.standard_normal((B, w * X))
    if out == "softmax":
        x = onehot(rng.integers(0, X, B), X)
    elif out == "sigmoid":
        x = (rng.random((B, X)) < 0.5).astype(float)
    else:
        x = rng.standard_normal((B, X))
    m = np.array([[1.], [0.], [1.], [1.], [0.]])
    return cfg, p, u, x, m


def _analytic(cfg, p, u, x, m):
    logits, cache = forward(cfg, p, u)
    y = rnn.output(cfg.out, logits)
    return gradient(cfg, p, cache, rnn.logit_grad(cfg.out, y, x, m, float(m.sum())))


def _numeric(cfg, p, u, x, m):
    return central_differences(lambda q: batch_loss(cfg, q, u, x, m), p)


@pytest.mark.parametrize("out", ["softmax", "sigmoid", "identity"])
@pytest.mark.parametrize("hidden, act", [(0, "tanh"), (3, "tanh"), (3, "sigmoid"),
                                         (3, "identity")])
def test_gradient_matches_central_finite_differences(out, hidden, act):
    cfg, p, u, x, m = _case(out, hidden, act)
    g, fd = _analytic(cfg, p, u, x, m), _numeric(cfg, p, u, x, m)
    assert set(g) == set(p)
    for k in p:
        err = np.linalg.norm(g[k] - fd[k]) / np.linalg.norm(fd[k])
        assert err < 1e-6, (k, err)


def test_masked_rows_add_nothing_to_the_gradient():
    cfg, p, u, x, m = _case("softmax", 3)
    keep = m[:, 0] > 0
    g_all = _analytic(cfg, p, u, x, m)
    g_kept = _analytic(cfg, p, u[keep], x[keep], m[keep])
    for k in p:
        np.testing.assert_allclose(g_all[k], g_kept[k], rtol=1e-12, atol=1e-15)


def test_an_update_is_the_clipped_gradient_and_learn_false_makes_none():
    model = Window(4, w=2, hidden=3, dtype="float64", clip=0.01, seed=2)
    xs = onehot([[0, 1], [2, 3], [1, 1]], 4)
    for x in xs[:2]:
        u, p = (model.state.window.copy() if model.state is not None else np.zeros((2, 8)),
                model.params.copy())
        model.step(x)
    g = _analytic(model.config, p, u, xs[1], np.ones((2, 1)))
    norm = np.sqrt(sum(np.vdot(v, v) for v in g.values()))
    assert norm > 0.01
    for k in g:
        np.testing.assert_allclose(model.quantity(f"d{k}"), g[k] * 0.01 / norm, rtol=1e-10)
    before = model.params.copy()
    model.step(xs[2], learn=False)
    assert not model.updates
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])
    model.step(xs[2], np.zeros(2))                # no unmasked row: no update
    assert not model.updates


# ---------------------------------------------------------------------------
# w = 1, no hidden layer: a bigram logistic regression
# ---------------------------------------------------------------------------
def _bigram_by_hand(seqs, X, W, c, lr, steps):
    """Softmax regression of x_t on the symbol before it (none at t = 0), one SGD step on
    the batch-mean cross-entropy after every step.  Returns the predictions, W and c."""
    W, c = W.copy(), c.copy()
    B = len(seqs)
    preds = []
    for t in range(steps):
        probs = np.zeros((B, X))
        dW, dc = np.zeros_like(W), np.zeros_like(c)
        for b in range(B):
            logit = c + (W[seqs[b][t - 1]] if t > 0 else 0.0)
            e = np.exp(logit - logit.max())
            probs[b] = e / e.sum()
            err = probs[b].copy()
            err[seqs[b][t]] -= 1.0
            dc += err / B
            if t > 0:
                dW[seqs[b][t - 1]] += err / B
        preds.append(probs)
        W -= lr * dW
        c -= lr * dc
    return np.stack(preds), W, c


def test_w1_without_hidden_layer_is_a_bigram_logistic_regression():
    X, T = 4, 7
    seqs = np.random.default_rng(1).integers(0, X, (3, T))
    model = Window(X, w=1, hidden=0, out="softmax", clip=0, dtype="float64", seed=4,
                   optimizer="sgd", lr=0.5)
    W0, c0 = model.params["W_out"].copy(), model.params["c"].copy()
    preds = np.stack([model.step(onehot(seqs[:, t], X)).copy() for t in range(T)])
    ref, W, c = _bigram_by_hand(seqs, X, W0, c0, 0.5, T)
    np.testing.assert_allclose(preds, ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.params["W_out"], W, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.params["c"], c, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [
    ("x_dim", 0), ("w", 0), ("w", 1.5), ("w", True), ("hidden", -1), ("hidden", 2.5),
    ("hidden", "8"), ("act", "softplus"), ("out", "softmax2"), ("clip", -1.0),
    ("clip", float("nan")), ("clip", "1"), ("seed", 1.5), ("dtype", "float16")])
def test_a_bad_option_is_one_value_error_naming_it(key, value):
    kw = {"x_dim": 3, key: value}
    with pytest.raises(ValueError, match=rf"^{key} "):
        WindowConfig(**kw)


def test_an_unknown_option_is_refused():
    with pytest.raises(ValueError, match="leak"):
        Window(3, leak=0.5)


def test_config_round_trips_through_a_dict():
    cfg = WindowConfig(x_dim=3, w=4, hidden=0, act="relu", out="sigmoid", clip=0, seed=7,
                       dtype="float64")
    assert WindowConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------
# learning
# ---------------------------------------------------------------------------
def _accuracy_on_cycle(w, cycle, X, steps=300):
    """Train on a batch of phase-shifted copies of ``cycle`` and return the accuracy of
    the last 60 predictions (argmax of x_mu against the symbol it predicts)."""
    model = Window(X, w=w, hidden=16, seed=0, optimizer="adam", lr=0.05, clip=0)
    B = len(cycle)
    hits = []
    for t in range(steps):
        sym = [cycle[(t + b) % len(cycle)] for b in range(B)]
        y = model.step(onehot(sym, X))
        if t >= steps - 60:
            hits.append(np.mean(y.argmax(axis=1) == np.array(sym)))
    return float(np.mean(hits))


def test_a_window_of_two_learns_what_a_window_of_one_cannot():
    cycle = [0, 0, 1]          # after a 0 comes 0 or 1: only the input before it decides
    acc2 = _accuracy_on_cycle(2, cycle, 3)
    acc1 = _accuracy_on_cycle(1, cycle, 3)
    assert acc2 > 0.99, acc2
    assert acc1 < 0.8, acc1


def test_it_learns_the_cyclic_task_with_a_window_as_long_as_the_period():
    from ptncn.data import CyclicSymbols
    task = CyclicSymbols(batch_size=16, length=20, vocab=6, period=3, n_patterns=2, seed=0)
    model = Window(6, w=3, hidden=32, seed=1, optimizer="adam", lr=0.01)

    def mean_loss(batches, learn):
        total, n = 0.0, 0.0
        for i in batches:
            bt = task.batch(i)
            model.reset(bt.x.shape[1])
            for x, m, s in zip(bt.x, bt.mask, bt.score):
                y = model.step(x, m, learn=learn)
                logits = np.log(np.clip(y, 1e-12, None))
                total += float((s[:, 0] * rnn.row_loss("softmax", logits, x)).sum())
                n += float(s.sum())
        return total / n
    before = mean_loss(range(1000, 1005), learn=False)
    mean_loss(range(200), learn=True)
    after = mean_loss(range(1000, 1005), learn=False)
    assert after < 0.3 * before, (before, after)


# ---------------------------------------------------------------------------
# through the harness
# ---------------------------------------------------------------------------
def test_trained_through_the_harness_its_model_file_loads_and_scores_the_same(tmp_path):
    from ptncn import harness
    cfg = harness.validate({
        "name": "window", "seed": 0,
        "task": {"name": "cyclic", "batch_size": 8, "length": 12, "vocab": 5, "period": 3},
        "model": {"learner": "window", "w": 2, "hidden": 8},
        "optimizer": {"name": "adam", "lr": 0.02},
        "train": {"batches": 40, "final_eval_batches": 3, "checkpoint_every": 0},
        "record": {"traces": ["loss", "z", "norm_dW1"]}})
    metrics = harness.train(cfg, str(tmp_path), quiet=True, plots=False, log=lambda s: None)
    assert metrics["final"]["loss"] < metrics["baselines"]["unigram"]["loss"]
    model = load_learner(tmp_path / "final.npz")
    assert type(model) is Window and model.config.w == 2 and model.config.hidden == 8
    again = harness.evaluate(model, harness.make_task(cfg, metrics["split"]), 3)
    assert again["loss"] == metrics["final"]["loss"]
    model.save(tmp_path / "again.npz")
    twice = load_learner(tmp_path / "again.npz")
    for k in model.params:
        np.testing.assert_array_equal(twice.params[k], model.params[k])
