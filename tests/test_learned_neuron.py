"""The learned-neuron learner: its activation network, its one-step gradient (equal to
TBPTT(1) with the tanh neuron), delta in place of the derivative, bad input, learning."""

import json
import math

import numpy as np
import pytest

from ptncn.baselines import rnn
from ptncn.data.bitrecall import BitRecall
from ptncn.learned_neuron import (LearnedNeuron, NeuronNet, init_theta, load_theta,
                                  theta_size)
from ptncn.learner import learner_class, load_learner
from fd import central_differences

OPT = dict(optimizer="sgd", lr=0.1, momentum=0.9)


def sig(a):
    return 1 / (1 + math.exp(-a))


def theta_of(W1, b1, W2, b2):
    """theta_a from a's arrays, in the documented order."""
    return np.concatenate([np.ravel(W1), np.ravel(b1), np.ravel(W2), np.ravel(b2)])


def write_theta(path, theta, variant="memory", n_m=2, a_hidden=8):
    meta = json.dumps({"variant": variant, "n_m": n_m, "a_hidden": a_hidden})
    np.savez(path, theta=np.asarray(theta, np.float64), meta=np.array(meta))
    return path


# ---------------------------------------------------------------------------
# 1. the tanh neuron with one recurrent layer is TBPTT(1)
# ---------------------------------------------------------------------------
def masks(T, B):
    """Per-step masks of two sequences: a row that ends early, a row masked in the middle
    and a step with no scored row."""
    ms = np.ones((2, T, B, 1))
    ms[0, 3:, 0] = 0.0
    ms[1, 2, 2] = 0.0
    ms[1, 4] = 0.0
    return ms


def test_tanh_neuron_one_recurrent_layer_updates_equal_tbptt_1():
    X, H, B, T = 4, 5, 3, 7
    kw = dict(out="sigmoid", clip=0.0, dtype="float64", seed=5, **OPT)
    ref = learner_class("tbptt")(X, hidden=H, k=1, **kw)
    ln = LearnedNeuron(X, hidden=(H,), neuron="tanh", recurrent_b=True, **kw)
    p = ref.params
    ln.params.update(W1=np.vstack([p["W_in"], p["W_rec"]]), b1=p["b"] + 0.1,
                     W_out=p["W_out"], c=p["c"] - 0.2)
    ref.params.update(b=p["b"] + 0.1, c=p["c"] - 0.2)
    rng = np.random.default_rng(0)
    ms = masks(T, B)
    seen_rec = 0
    for seq in range(2):
        ref.reset(B), ln.reset(B)
        for t in range(T):
            x = (rng.random((B, X)) < 0.5).astype(np.float64)
            np.testing.assert_allclose(ln.step(x, ms[seq, t]), ref.step(x, ms[seq, t]),
                                       atol=1e-10)
            ru, lu = ref.updates, ln.updates
            assert set(lu) == ({"W1", "b1", "W_out", "c"} if ru else set())
            if not ru:
                continue
            for mine, theirs in (("W1", np.vstack([ru["W_in"], ru["W_rec"]])),
                                 ("b1", ru["b"]), ("W_out", ru["W_out"]), ("c", ru["c"])):
                np.testing.assert_allclose(lu[mine], theirs, atol=1e-6, rtol=0,
                                           err_msg=f"sequence {seq} step {t} d{mine}")
            seen_rec += bool(np.abs(ru["W_rec"]).max() > 1e-3)
        ref.end_sequence(), ln.end_sequence()
    assert seen_rec >= 6                     # the recurrent gradient was really compared
    np.testing.assert_allclose(ln.params["W1"][X:], ref.params["W_rec"], atol=1e-6)


def test_two_layers_gradient_is_the_loss_derivative_through_one_transition():
    """With the tanh neuron delta is do/ds, so the update is the exact gradient of L_t
    through the transition that produced o_{t-1} (the state before it held fixed)."""
    X, B = 3, 4
    ln = LearnedNeuron(X, hidden=(5, 4), neuron="tanh", recurrent_b=True, clip=0.0,
                       dtype="float64", out="softmax", seed=3, optimizer="sgd", lr=0.0)
    rng = np.random.default_rng(2)                   # lr 0: the parameters stay put
    xs = np.eye(X)[rng.integers(0, X, (3, B))]
    m = np.array([[1.0], [1.0], [0.0], [1.0]])
    ln.reset(B)
    ln.step(xs[0])
    before, p = ln.state, ln.params.copy()

    def loss(params):
        o = ln._forward(params, before, xs[1], m)[0]
        logits = o[-1] @ params["W_out"] + params["c"]
        return float((m[:, 0] * rnn.row_loss("softmax", logits, xs[2])).sum() / m.sum())

    ln.step(xs[1], m)
    ln.step(xs[2], m)
    for name, num in central_differences(loss, p).items():
        np.testing.assert_allclose(ln.updates[name], num, atol=1e-7, err_msg=name)
    assert np.abs(ln.updates["W1"]).max() > 1e-3


# ---------------------------------------------------------------------------
# 2. memory and gates by hand
# ---------------------------------------------------------------------------
#: a (a_hidden = 1): hid = tanh(s + 0.5 m_1), r = hid * [2, 0.5, 1, -1] + [0, 0.3, 0, 0.5]
HAND = theta_of([[1.0], [0.5], [0.0]], [0.0], [[2.0, 0.5, 1.0, -1.0]], [0.0, 0.3, 0.0, 0.5])


def hand_neuron(s, m1, m2):
    """o, delta, gates and new memory of HAND, written out."""
    h = math.tanh(s + 0.5 * m1)
    g1, g2 = sig(h), sig(-h + 0.5)
    return (math.tanh(2 * h), 0.5 * h + 0.3, (g1, g2),
            ((1 - g1) * m1 + g1 * s, (1 - g2) * m2 + g2 * s))


def test_memory_update_and_gates_by_hand():
    ln = LearnedNeuron(1, hidden=(1,), n_m=2, a_hidden=1, theta_a=HAND, dtype="float64")
    ln.params.update(W1=[[0.8]], b1=[-0.1])
    x1, x2 = np.array([[1.0], [0.5]]), np.array([[-0.5], [2.0]])
    ln.reset(2)
    ln.step(x1)
    mem = []
    for b in range(2):
        s = 0.8 * x1[b, 0] - 0.1
        o, delta, g, m = hand_neuron(s, 0.0, 0.0)
        assert ln.quantity("s1")[b, 0] == pytest.approx(s)
        assert ln.quantity("o1")[b, 0] == pytest.approx(o)
        assert ln.quantity("delta1")[b, 0] == pytest.approx(delta)
        np.testing.assert_allclose(ln.quantity("g1")[b], g)
        np.testing.assert_allclose(ln.quantity("m1")[b], m)
        mem.append(m)
    ln.step(x2, mask=[1, 0])                          # row 1 masked: holds o and m
    s = 0.8 * x2[0, 0] - 0.1
    o, _, g, m = hand_neuron(s, *mem[0])
    np.testing.assert_allclose(ln.quantity("g1")[0], g)
    np.testing.assert_allclose(ln.state.mem[0][0, 0], m)
    assert ln.quantity("o1")[0, 0] == pytest.approx(o)
    np.testing.assert_allclose(ln.state.mem[0][1, 0], mem[1])
    assert ln.quantity("m1").shape == (2, 2)          # (batch, units * n_m)


# ---------------------------------------------------------------------------
# 3. delta, not the derivative, reaches the weights
# ---------------------------------------------------------------------------
def test_delta_not_the_true_derivative_reaches_the_weights():
    rng = np.random.default_rng(1)
    W1, b1, W2, b2 = (rng.standard_normal((3, 4)), rng.standard_normal(4),
                      rng.standard_normal((4, 4)), rng.standard_normal(4))
    W2[:, 1], b2[1] = 0.0, 0.7                       # delta = 0.7 whatever s
    theta = theta_of(W1, b1, W2, b2)
    ln = LearnedNeuron(2, hidden=(3,), n_m=2, a_hidden=4, theta_a=theta, clip=0.0,
                       dtype="float64", seed=2, **OPT)
    x1, x2 = np.array([[1.0, 0.0], [0.3, 1.0]]), np.array([[0.0, 1.0], [1.0, 1.0]])
    ln.reset(2)
    ln.step(x1)
    s1 = ln.quantity("s1").copy()
    np.testing.assert_allclose(ln.quantity("delta1"), 0.7)
    p = ln.params.copy()
    y = ln.step(x2)
    u = ((y - x2) / 2) @ p["W_out"].T                 # sigmoid out: do = (y - x) / n
    net, eps, zero = NeuronNet("memory", 2, 4, theta), 1e-6, np.zeros((2, 3, 2))
    dods = (net(s1 + eps, zero)[0] - net(s1 - eps, zero)[0]) / (2 * eps)
    with_delta, with_derivative = x1.T @ (u * 0.7), x1.T @ (u * dods)
    np.testing.assert_allclose(ln.updates["W1"], with_delta, atol=1e-10)
    np.testing.assert_allclose(ln.updates["b1"], (u * 0.7).sum(axis=0), atol=1e-10)
    assert np.abs(ln.updates["W1"] - with_derivative).max() > 1e-3


# ---------------------------------------------------------------------------
# 4. the recurrent variant carries a's hidden state
# ---------------------------------------------------------------------------
def test_recurrent_variant_carries_the_neuron_state():
    theta = theta_of([[1.0], [0.5], [-0.5]], [0.1], [[1.0, 0.2, 2.0, -1.0]],
                     [0.0, 0.0, 0.1, 0.0])
    net = NeuronNet("recurrent", 2, 1, theta)
    s, m = np.array([0.3]), np.array([[0.4, -0.2]])
    o, delta, new_m, g = net(s, m)
    h = math.tanh(0.3 + 0.5 * 0.4 + 0.5 * 0.2 + 0.1)
    assert g is None
    np.testing.assert_allclose(new_m[0], [math.tanh(2 * h + 0.1), math.tanh(-h)])
    assert o[0] == pytest.approx(math.tanh(h)) and delta[0] == pytest.approx(0.2 * h)
    assert not np.allclose(net(s, np.zeros((1, 2)))[2], new_m)   # depends on the old state
    ln = LearnedNeuron(1, hidden=(1,), variant="recurrent", n_m=2, a_hidden=1, theta_a=theta,
                       dtype="float64")
    ln.params.update(W1=[[1.0]], b1=[0.0])
    x = np.array([[0.3]])
    ln.step(x)
    first = ln.quantity("m1").reshape(1, 1, 2).copy()
    ln.step(x)
    np.testing.assert_allclose(ln.quantity("m1"), net(np.array([[0.3]]), first)[2][0])
    assert "g1" not in ln.recordable


# ---------------------------------------------------------------------------
# 5. bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(variant="gated"), r"variant must be one of 'memory', 'recurrent', got 'gated'"),
    (dict(n_m=-1), r"n_m must be an integer >= 0, got -1"),
    (dict(a_hidden=0), r"a_hidden must be an integer >= 1, got 0"),
    (dict(n_m=2, a_hidden=8, theta_a=[0.0] * 67),
     r"theta_a must have theta_size\('memory', n_m=2, a_hidden=8\) = 68 entries, got 67"),
    (dict(neuron="relu"), r"neuron must be one of 'mlp', 'tanh', got 'relu'"),
])
def test_bad_options_are_one_value_error_naming_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        LearnedNeuron(3, **kw)


def test_theta_size_and_the_tanh_neuron_needs_no_theta():
    assert theta_size("memory", 2, 8) == 3 * 8 + 8 + 8 * 4 + 4 == 68
    assert theta_size("recurrent", 0, 1) == 1 + 1 + 2 + 2
    assert LearnedNeuron(3, neuron="tanh", theta_a=[1.0]).theta is None
    ln = LearnedNeuron(3, neuron="tanh")
    assert ln.theta is None and "m1" not in ln.recordable and "g1" not in ln.recordable


def test_theta_files_wrong_size_or_variant_are_refused(tmp_path):
    good = init_theta("memory", 2, 8, np.random.default_rng(0))
    path = write_theta(tmp_path / "best_theta.npz", good)
    np.testing.assert_array_equal(load_theta(path, "memory", 2, 8), good)
    with pytest.raises(ValueError, match=r"best_theta.npz: theta_a for .*'recurrent'.*"
                                         r"expected .*'memory'"):
        load_theta(write_theta(tmp_path / "best_theta.npz", good, variant="recurrent"),
                   "memory", 2, 8)
    short = write_theta(tmp_path / "short.npz", good[:-1])
    with pytest.raises(ValueError, match=r"short.npz: theta must have .* = 68 entries, got 67"):
        load_theta(short, "memory", 2, 8)
    with pytest.raises(ValueError, match=r"theta_a: .*short.npz"):
        LearnedNeuron(3, theta_a=str(short))


def test_theta_from_a_file_is_kept_in_the_model_file(tmp_path):
    theta = init_theta("recurrent", 3, 5, np.random.default_rng(4))
    path = write_theta(tmp_path / "best_theta.npz", theta, "recurrent", 3, 5)
    ln = LearnedNeuron(3, variant="recurrent", n_m=3, a_hidden=5, theta_a=str(path))
    np.testing.assert_array_equal(ln.theta, theta)
    ln.save(tmp_path / "model.npz")
    path.unlink()                                    # the model file needs it no more
    back = load_learner(tmp_path / "model.npz")
    np.testing.assert_array_equal(back.theta, theta)
    assert back.config == ln.config
    default = LearnedNeuron(3, seed=9)               # theta drawn from the seed, the same again
    np.testing.assert_array_equal(LearnedNeuron(3, seed=9).theta, default.theta)


# ---------------------------------------------------------------------------
# 7. it learns
# ---------------------------------------------------------------------------
def bce(y, x):
    y = np.clip(y, 1e-7, 1 - 1e-7)
    return float(-(x * np.log(y) + (1 - x) * np.log(1 - y)).sum(axis=-1).mean())


@pytest.mark.parametrize("neuron, factor", [("mlp", 0.85), ("tanh", 0.5)])
def test_bit_recall_loss_falls_with_training(neuron, factor):
    task = BitRecall(n_bits=2, batch_size=16, seed=0)
    ln = LearnedNeuron(3, hidden=(10, 10), neuron=neuron, recurrent_b=True, seed=0,
                       optimizer="adam", lr=0.01)
    losses = []
    for i in range(150):
        batch = task.batch(i)
        ln.reset(task.batch_size)
        losses.append(np.mean([bce(ln.step(x, m), x) for x, m in zip(batch.x, batch.mask)]))
        ln.end_sequence()
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < factor * first, (first, last)
