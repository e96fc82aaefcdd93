"""Tests for ptncn.activations: the named activation/output registries,
user callables, and the f(h, rng) calling convention.

Expected values come from the defining formulas evaluated in float64 (math
module); the functions run in float32, so comparisons use ~1e-6.
"""

import math

import numpy as np
import pytest

from ptncn.activations import (ACTIVATIONS, OUTPUTS, get_activation,
                               get_output, name_of, sigmoid, softmax,
                               stochastic_binary)

X = [-7.0, -2.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5, 6.0, 7.0]


def f32(x):
    return np.array(x, dtype=np.float32)


def gelu_ref(x):
    return x / 2 * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# name -> float64 scalar reference; checked elementwise on X
REFERENCE = {
    "tanh": math.tanh,
    "ltanh": lambda x: 1.7159 * math.tanh(2 * x / 3),
    "relu": lambda x: max(x, 0.0),
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)),
    "sign": lambda x: (x > 0) - (x < 0),
    "step": lambda x: 1.0 if x >= 0 else 0.0,
    "gelu": gelu_ref,
    "identity": lambda x: x,
}


def _lif_isi(x, dt=None):
    """Inter-spike interval (ms) of the default LIF (tau_m 10, tau_ref 2, theta 1,
    I = 2x + 2); None when the neuron never fires."""
    i = 2 * x + 2
    if i <= 1:
        return None
    t_cross = 10 * math.log(i / (i - 1))
    return 2 + t_cross if dt is None else dt * (round(2 / dt) + math.floor(t_cross / dt))


REFERENCE["lif_rate"] = lambda x: 0.0 if _lif_isi(x) is None else 2 / _lif_isi(x)
REFERENCE["lif_rate_dt"] = lambda x: 0.0 if _lif_isi(x) is None else 2 / _lif_isi(x, 0.1)
STOCHASTIC = {"stochastic_binary"}


def test_every_activation_has_a_reference():
    assert set(ACTIVATIONS) == set(REFERENCE) | STOCHASTIC


def test_outputs_registry():
    assert set(OUTPUTS) == {"softmax", "sigmoid", "tanh", "identity"}
    for name in ("sigmoid", "tanh", "identity"):
        assert OUTPUTS[name] is ACTIVATIONS[name]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_activation_values(name):
    f = get_activation(name)
    y = f(f32(X), np.random.default_rng(0))
    assert y.dtype == np.float32 and y.shape == (len(X),)
    np.testing.assert_allclose(y, [REFERENCE[name](x) for x in X],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "identity"])
def test_output_values(name):
    h = f32([X, X[::-1]])
    y = get_output(name)(h, None)
    want = [[REFERENCE[name](x) for x in row] for row in (X, X[::-1])]
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_hand_values():
    # a few values worked out on paper
    assert get_activation("relu")(f32([-3.0, 0.0, 2.0]), None).tolist() == [0, 0, 2]
    assert get_activation("relu6")(f32([-1.0, 3.0, 6.0, 6.5, 1e6]), None).tolist() \
        == [0, 3, 6, 6, 6]
    assert get_activation("step")(f32([-1e-30, -0.0, 0.0, 2.0]), None).tolist() \
        == [0, 1, 1, 1]                                  # step(0) = 1
    np.testing.assert_allclose(get_activation("ltanh")(f32([1.5]), None),
                               [1.7159 * math.tanh(1.0)], rtol=1e-6)  # 1.306819...
    np.testing.assert_allclose(get_activation("gelu")(f32([1.0, -1.0, 0.0]), None),
                               [0.841192, -0.158808, 0.0], atol=1e-6)


def test_sign_values():
    y = get_activation("sign")(f32([-3.5, -1e-20, 0.0, -0.0, 1e-20, 2.0]), None)
    assert y.tolist() == [-1, -1, 0, 0, 1, 1]
    assert set(np.unique(y)) <= {-1.0, 0.0, 1.0}


def test_sigmoid_extremes_no_overflow():
    h = f32([-100.0, -50.0, 50.0, 100.0])
    with np.errstate(all="raise"):          # any overflow/invalid would raise
        y = sigmoid(h)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, [0.0, 0.0, 1.0, 1.0], atol=1e-6)
    assert np.all((y >= 0) & (y <= 1))


def test_sigmoid_dense_grid():
    h = np.linspace(-20, 20, 4001, dtype=np.float32)
    want = 1 / (1 + np.exp(-h.astype(np.float64)))
    np.testing.assert_allclose(sigmoid(h), want, atol=1e-6)


def test_identity_is_a_copy():
    h = f32([[1.0, -2.0], [3.0, 0.5]])
    y = get_activation("identity")(h, None)
    assert y is not h and not np.shares_memory(y, h)
    np.testing.assert_array_equal(y, h)
    y[0, 0] = 99.0
    assert h[0, 0] == 1.0


# -- stochastic binary units --------------------------------------------------------

def test_stochastic_binary_is_binary():
    h = f32(np.linspace(-3, 3, 60).reshape(6, 10))
    y = stochastic_binary(h, np.random.default_rng(1))
    assert y.dtype == np.float32 and y.shape == h.shape
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_stochastic_binary_reproducible():
    h = f32(np.linspace(-2, 2, 200))
    y1 = stochastic_binary(h, np.random.default_rng(42))
    y2 = stochastic_binary(h, np.random.default_rng(42))
    y3 = stochastic_binary(h, np.random.default_rng(43))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)


def test_stochastic_binary_mean_is_sigmoid():
    cols = [-2.0, -0.5, 0.0, 1.0, 3.0]
    n = 20000
    h = np.tile(f32(cols), (n, 1))
    y = stochastic_binary(h, np.random.default_rng(7))
    p = np.array([1 / (1 + math.exp(-x)) for x in cols])
    # binomial std <= 0.5/sqrt(20000) ~ 0.0035; allow 0.015 (> 4 sigma)
    np.testing.assert_allclose(y.mean(axis=0), p, atol=0.015)


def test_stochastic_binary_saturates():
    y = stochastic_binary(f32([[-100.0, 100.0]] * 500), np.random.default_rng(0))
    assert np.all(y[:, 0] == 0) and np.all(y[:, 1] == 1)


def test_stochastic_binary_needs_rng():
    with pytest.raises(ValueError, match="generator"):
        stochastic_binary(f32([0.0]), None)
    with pytest.raises(ValueError):
        get_activation("stochastic_binary")(f32([0.0]), None)


# -- softmax -------------------------------------------------------------------------------

def test_softmax_hand_values():
    y = softmax(f32([[0.0, math.log(3.0)], [1.0, 1.0]]))
    np.testing.assert_allclose(y, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)


def test_softmax_large_inputs():
    e = math.e
    with np.errstate(all="raise"):
        y = get_output("softmax")(f32([[1000.0, 1001.0], [-1001.0, -1000.0]]), None)
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    want = [1 / (1 + e), e / (1 + e)]              # [0.26894142, 0.73105858]
    np.testing.assert_allclose(y, [want, want], rtol=1e-6)


def test_softmax_rows_sum_to_one():
    h = np.random.default_rng(3).standard_normal((8, 5)).astype(np.float32) * 10
    y = softmax(h)
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=1), np.ones(8), rtol=1e-6)


def test_softmax_shift_invariant():
    h = f32([[0.5, -1.25, 2.0], [3.0, 3.0, -4.5]])
    c = f32([[1000.0], [-7.5]])          # sums are exact in float32
    np.testing.assert_allclose(softmax(h + c), softmax(h), atol=1e-7)


# -- inputs left alone ------------------------------------------------------------------

@pytest.mark.parametrize("table,name",
                         [(ACTIVATIONS, n) for n in sorted(ACTIVATIONS)]
                         + [(OUTPUTS, n) for n in sorted(OUTPUTS)])
def test_input_not_modified(table, name):
    h = f32([[-2.0, -0.5, 0.0], [0.5, 1.0, 7.0]])
    before = h.copy()
    y = table[name](h, np.random.default_rng(0))
    np.testing.assert_array_equal(h, before)
    assert y is not h


# -- user callables and lookup ----------------------------------------------------------

def test_one_argument_callable_is_wrapped():
    f = get_activation(lambda h: 2 * h + 1)
    y = f(f32([0.0, 1.5]), np.random.default_rng(0))     # called as f(h, rng)
    assert y.tolist() == [1.0, 4.0]
    assert y.dtype == np.float32


def test_wrapped_callable_output_cast_to_input_dtype():
    f = get_activation(lambda h: np.asarray(h, dtype=np.float64) / 3)
    y = f(f32([3.0]), None)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [1.0])


def test_numpy_ufunc_as_activation():
    f = get_output(np.tanh)
    np.testing.assert_allclose(f(f32([[0.5]]), np.random.default_rng(0)),
                               [[math.tanh(0.5)]], rtol=1e-6)


def test_callable_with_keyword_option_is_one_argument():
    # a leaky relu whose slope has a default must not receive rng as its slope
    f = get_activation(lambda h, a=0.1: np.where(h > 0, h, a * h))
    np.testing.assert_allclose(f(f32([-2.0, 3.0]), np.random.default_rng(0)),
                               [-0.2, 3.0], rtol=1e-6)


def test_two_argument_callable_passed_through():
    seen = []

    def noisy(h, rng):
        seen.append(rng)
        return h + rng.random(h.shape, dtype=np.float32)

    f = get_activation(noisy)
    assert f is noisy
    rng = np.random.default_rng(5)
    y = f(f32([0.0, 0.0]), rng)
    assert seen[-1] is rng          # (the earlier call: the one-time probe of the function)
    np.testing.assert_array_equal(
        y, np.random.default_rng(5).random(2, dtype=np.float32))


def test_unknown_activation_lists_names():
    with pytest.raises(ValueError, match="nope") as exc:
        get_activation("nope")
    for name in ACTIVATIONS:
        assert name in str(exc.value)


def test_relu_is_not_an_output():
    with pytest.raises(ValueError, match="relu") as exc:
        get_output("relu")
    for name in OUTPUTS:
        assert name in str(exc.value)


def test_non_string_non_callable_rejected():
    with pytest.raises(ValueError):
        get_activation(3)


def test_registry_lookup_returns_registered_function():
    for name, fn in ACTIVATIONS.items():
        assert get_activation(name) is fn
    for name, fn in OUTPUTS.items():
        assert get_output(name) is fn


def test_name_of():
    def my_act(h):
        return h

    assert name_of("tanh") == "tanh"
    assert name_of(my_act) == "<callable:my_act>"
    assert name_of(lambda h: h) == "<callable:<lambda>>"
    assert name_of(get_activation(my_act)) == "<callable:my_act>"  # wrapper keeps name


def test_user_callable_with_rng_keyword_default_receives_the_generator():
    seen = {}

    def noisy(h, rng=None):
        seen["rng"] = rng
        return h

    f = get_activation(noisy)
    g = np.random.default_rng(0)
    f(np.zeros((1, 2), np.float32), g)
    assert seen["rng"] is g
