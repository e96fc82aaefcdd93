"""The P-TNCN engine: equations, masks, clipping, first step, seeds, bad input."""

import math

import numpy as np
import pytest

import ptncn
from ptncn import PTNCN, DivergenceError

from literal_ptncn import LiteralPTNCN

F32 = np.float32
NAMES = ["x_mu", "z1", "z2", "y1", "y2", "e0", "e1", "eps1", "eps2"]


def one_hot_batch(rng, B, X, T):
    return np.eye(X, dtype=F32)[rng.integers(0, X, size=(T, B))]


def masks_with_padding(rng, B, T):
    """Per-row sequence lengths; mask 1 up to the length, 0 after (padding)."""
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    return (np.arange(T)[:, None] < lengths[None, :]).astype(F32)[..., None]


CASES = [
    dict(act="tanh", out="softmax", zeta=1.0),
    dict(act="tanh", out="sigmoid", zeta=0.0),
    dict(act="sign", out="softmax", zeta=1.0),
    dict(act="relu", out="sigmoid", zeta=1.0),
    dict(act="step", out="softmax", zeta=0.0),
    dict(act="relu", out="softmax", zeta=0.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("radius", [0.05, 0.0])
def test_matches_literal_two_layer_spec(case, temporal, radius):
    """Every per-step quantity and every parameter after every step match the spec."""
    rng = np.random.default_rng(7)
    B, X, h1, h2, T = 5, 7, 6, 4, 9
    model = PTNCN(X, (h1, h2), act=case["act"], out=case["out"], zeta=case["zeta"],
                  beta=0.3, alpha=0.05, gamma=0.8, clip=radius, wght_sd=0.4, err_wght_sd=0.3,
                  temporal_error_rule=temporal, optimizer="sgd", lr=0.5, seed=3)
    lit = LiteralPTNCN(model.params.copy(), case["act"], case["out"], beta=0.3, alpha=0.05,
                       gamma=0.8, zeta=case["zeta"], radius=radius, lr=0.5, temporal=temporal)
    xs = one_hot_batch(rng, B, X, T) if case["out"] == "softmax" else \
        (rng.random((T, B, X)) < 0.4).astype(F32)
    ms = masks_with_padding(rng, B, T)
    model.reset(B)
    lit.reset(B)
    clipped = 0
    for t in range(T):
        model.step(xs[t], ms[t])
        q = lit.step(xs[t], ms[t])
        for n in NAMES:
            np.testing.assert_allclose(model.quantity(n), q[n], atol=1e-5, rtol=0,
                                       err_msg=f"{n} at t={t}")
        assert set(model.params) == set(lit.P)
        for k in lit.P:
            np.testing.assert_allclose(model.params[k], lit.P[k], atol=1e-5, rtol=0,
                                       err_msg=f"{k} after t={t}")
        if t > 0:
            clipped += sum(np.linalg.norm(u) * B > 0.05 * 0.999 for u in model.updates.values())
    assert clipped > 0, "the case should make some updates larger than 0.05"


def test_hand_computed_scalar_network():
    """x_dim = 1, one unit per layer, identity output: every line by hand."""
    m = PTNCN(1, (1, 1), act="tanh", out="identity", beta=0.5, alpha=0.25, gamma=2.0,
              zeta=1.0, clip=0.0, optimizer="sgd", lr=0.1)
    P = dict(W1=0.5, E1=0.3, W2=-0.4, E2=0.2, U1=0.6, M1=0.7, M2=-0.8, V1=0.9, V2=0.1)
    for k, v in P.items():
        m.params[k] = np.array([[v]])
    tanh = math.tanh
    # step 1: zero state -> h = 0, z = 0
    m.step(np.array([[1.0]]))
    q = {k: float(v[0, 0]) for k, v in m.quantities.items()}
    assert q["h1"] == 0 and q["h2"] == 0 and q["z1"] == 0 and q["z2"] == 0
    assert q["x_mu"] == 0.0 and q["e0"] == pytest.approx(-1.0)   # e0 = x_mu - x
    assert q["e1"] == 0.0
    d2, d1 = 0.0, -1.0 * 0.3 - 0.25 * 0.0
    assert q["d1"] == pytest.approx(d1) and q["d2"] == pytest.approx(d2)
    y1, y2 = tanh(0 - 0.5 * d1), tanh(0.0)
    assert q["y1"] == pytest.approx(y1, abs=1e-7) and q["y2"] == pytest.approx(y2)
    assert q["eps1"] == pytest.approx(0 - y1, abs=1e-7)
    for k, v in P.items():      # first step: no update
        assert m.params[k][0, 0] == np.float32(v)
    # step 2: state x_prev = 1, s1 = y1, s2 = y2 = 0
    m.step(np.array([[0.5]]))
    q = {k: float(v[0, 0]) for k, v in m.quantities.items()}
    s1, s2, xp = y1, y2, 1.0
    h2 = s1 * P["M2"] + s2 * P["V2"]
    z2 = tanh(h2)
    mu1 = z2 * P["W2"]
    h1 = xp * P["M1"] + s2 * P["U1"] + s1 * P["V1"]
    z1 = tanh(h1)
    x_mu = z1 * P["W1"]
    e1, e0 = mu1 - z1, x_mu - 0.5
    d2, d1 = e1 * P["E2"], e0 * P["E1"] - 0.25 * e1
    y2, y1n = tanh(h2 - 0.5 * d2), tanh(h1 - 0.5 * d1)
    eps2, eps1 = z2 - y2, z1 - y1n
    for name, want in dict(h2=h2, z2=z2, mu1=mu1, h1=h1, z1=z1, x_mu=x_mu, e1=e1, e0=e0,
                           d2=d2, d1=d1, y2=y2, y1=y1n, eps2=eps2, eps1=eps1).items():
        assert q[name] == pytest.approx(want, abs=2e-7), name
    dW1 = z1 * e0
    want_updates = dict(W1=dW1, E1=2.0 * dW1, W2=z2 * eps1, E2=2.0 * z2 * eps1,
                        U1=s2 * eps1, M1=xp * eps1, M2=s1 * eps2, V1=s1 * eps1, V2=s2 * eps2)
    for k, d in want_updates.items():
        assert m.params[k][0, 0] == pytest.approx(P[k] - 0.1 * d, abs=2e-7), k


def test_one_layer_and_three_layers_shapes_and_run():
    for hidden in [(5,), (5, 4, 3)]:
        m = PTNCN(6, hidden, optimizer="sgd", lr=0.1, seed=0)
        L = len(hidden)
        expect = {f"W{l}" for l in range(1, L + 1)} | {f"E{l}" for l in range(1, L + 1)} | \
            {f"M{l}" for l in range(1, L + 1)} | {f"V{l}" for l in range(1, L + 1)} | \
            {f"U{l}" for l in range(1, L)}
        assert set(m.params) == expect
        sizes = (6, *hidden)
        for l in range(1, L + 1):
            assert m.params[f"W{l}"].shape == (sizes[l], sizes[l - 1])
            assert m.params[f"E{l}"].shape == (sizes[l - 1], sizes[l])
            assert m.params[f"M{l}"].shape == (sizes[l - 1], sizes[l])
        for l in range(1, L):
            assert m.params[f"U{l}"].shape == (sizes[l + 1], sizes[l])
        x = np.eye(6, dtype=F32)[[0, 1, 2]]
        for _ in range(3):
            m.step(x)
        assert m.quantity(f"eps{L}").shape == (3, hidden[-1])


def test_three_layer_middle_layer_equations():
    """Layer 2 of 3: h2 uses M2, V2 and U2; d2 = e1 @ E2 - alpha * e2."""
    m = PTNCN(4, (3, 3, 3), optimizer="sgd", lr=0.0, alpha=0.3, beta=0.7, wght_sd=0.5,
              err_wght_sd=0.5, seed=2)
    rng = np.random.default_rng(0)
    for _ in range(2):
        m.step(rng.random((2, 4)).astype(F32))
    st, p = m.state, m.params
    m.step(rng.random((2, 4)).astype(F32))
    q = m.quantities
    h2 = st["s1"] @ p["M2"] + st["s3"] @ p["U2"] + st["s2"] @ p["V2"]
    np.testing.assert_allclose(q["h2"], h2, atol=1e-6)
    np.testing.assert_allclose(q["e2"], q["z3"] @ p["W3"] - q["z2"], atol=1e-6)
    np.testing.assert_allclose(q["d2"], q["e1"] @ p["E2"] - 0.3 * q["e2"], atol=1e-6)
    np.testing.assert_allclose(q["d3"], q["e2"] @ p["E3"], atol=1e-6)
    np.testing.assert_allclose(q["y2"], np.tanh(q["h2"] - 0.7 * q["d2"]), atol=1e-6)


def test_padded_rows_change_nothing():
    """Whatever a padded row holds, params and the other rows' quantities are unchanged."""
    rng = np.random.default_rng(1)
    B, X, T = 4, 5, 6
    xs = one_hot_batch(rng, B, X, T)
    ms = np.ones((T, B, 1), F32)
    ms[2:, 3] = 0          # row 3 is padding from t = 2
    runs = []
    for garbage in (0.0, 1.0):
        m = PTNCN(X, (4, 4), optimizer="nesterov", lr=0.2, seed=5)
        xg = xs.copy()
        xg[2:, 3] = garbage
        for t in range(T):
            m.step(xg[t], ms[t])
        runs.append(m)
    for k in runs[0].params:
        np.testing.assert_array_equal(runs[0].params[k], runs[1].params[k])
    for n in ["x_mu", "z1", "y1", "y2", "e0"]:
        np.testing.assert_array_equal(runs[0].quantity(n)[:3], runs[1].quantity(n)[:3])
    # error units of the padded row are zero
    for n in ["e0", "e1", "eps1", "eps2"]:
        assert not runs[0].quantity(n)[3].any()


def test_all_rows_masked_means_no_update():
    m = PTNCN(5, (4, 4), optimizer="sgd", lr=1.0, seed=0)
    x = np.eye(5, dtype=F32)[[0, 1]]
    m.step(x)
    before = m.params.copy()
    m.step(x, np.zeros((2, 1)))
    for k in before:
        np.testing.assert_array_equal(m.params[k], before[k])


def test_zero_error_gives_zero_update():
    """One layer, identity output: feeding x = x_mu zeroes e0, d1, eps1 and every update."""
    m = PTNCN(3, (4,), layers=1, out="identity", optimizer="sgd", lr=1.0, seed=0)
    rng = np.random.default_rng(0)
    m.step(rng.random((2, 3)).astype(F32))
    _, q = m.transition(m.state, np.zeros((2, 3), F32), np.ones((2, 1), F32))
    before = m.params.copy()
    m.step(q["x_mu"])
    assert not m.quantity("e0").any() and not m.quantity("eps1").any()
    for k in before:
        assert not m.updates[k].any()
        np.testing.assert_array_equal(m.params[k], before[k])


@pytest.mark.parametrize("radius", [0.01, 0.3])
def test_clipping_bound_holds(radius):
    rng = np.random.default_rng(3)
    m = PTNCN(8, (6, 6), clip=radius, wght_sd=1.0, err_wght_sd=1.0, gamma=3.0,
              optimizer="sgd", lr=0.1, seed=1)
    B = 7
    for t in range(6):
        m.step(one_hot_batch(rng, B, 8, 1)[0])
        if t == 0:
            continue
        for k, u in m.updates.items():
            assert np.linalg.norm(u.astype(np.float64)) * B <= radius * (1 + 1e-5), k
    # and at least one was actually clipped to the bound
    assert any(np.isclose(np.linalg.norm(u) * B, radius, rtol=1e-4) for u in m.updates.values())


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_mean_clip_mode_bounds_the_batch_mean_update(engine):
    """clip_mode = "mean": the applied (batch-divided) update is clipped at the radius,
    the same update as "sum" with the radius times the batch size, bitwise."""
    B, radius = 7, 0.05
    runs = {}
    for mode, r in (("mean", radius), ("sum", radius * B)):
        rng = np.random.default_rng(3)
        m = PTNCN(8, (6, 6), clip=r, clip_mode=mode, wght_sd=1.0, err_wght_sd=1.0,
                  gamma=3.0, optimizer="sgd", lr=0.1, seed=1, engine=engine)
        norms = []
        for t in range(6):
            m.step(one_hot_batch(rng, B, 8, 1)[0])
            norms += [np.linalg.norm(u.astype(np.float64)) for u in m.updates.values()]
        runs[mode] = m
        assert max(norms) <= radius * (1 + 1e-5) and max(norms) > 0.5 * radius
    for k in runs["sum"].params:
        np.testing.assert_array_equal(runs["mean"].params[k], runs["sum"].params[k])
    with pytest.raises(ValueError, match="clip_mode must be one of sum, mean, got 'row'"):
        PTNCN(8, (6, 6), clip_mode="row")


def test_first_step_of_every_sequence_never_updates():
    rng = np.random.default_rng(0)
    m = PTNCN(5, (4, 4), optimizer="nesterov", lr=0.5, seed=0)
    for seq in range(3):
        m.reset(3)
        before = m.params.copy()
        slots = {k: v.copy() for k, v in m.optimizer.slots["accum"].items()}
        m.step(one_hot_batch(rng, 3, 5, 1)[0])
        for k in before:
            np.testing.assert_array_equal(m.params[k], before[k])
        for k, v in slots.items():
            np.testing.assert_array_equal(m.optimizer.slots["accum"][k], v)
        assert m.updates == {}
        m.step(one_hot_batch(rng, 3, 5, 1)[0])
        assert any(not np.array_equal(m.params[k], before[k]) for k in before)


def test_learn_false_freezes_params_but_advances_state():
    rng = np.random.default_rng(0)
    m = PTNCN(5, (4, 4), seed=0)
    m.step(one_hot_batch(rng, 2, 5, 1)[0])
    before = m.params.copy()
    s1 = m.state["s1"].copy()
    m.step(one_hot_batch(rng, 2, 5, 1)[0], learn=False)
    for k in before:
        np.testing.assert_array_equal(m.params[k], before[k])
    assert not np.array_equal(m.state["s1"], s1)
    assert m.state.t == 2


def test_state_carries_corrected_states():
    rng = np.random.default_rng(0)
    m = PTNCN(5, (4, 3), seed=0)
    x = one_hot_batch(rng, 2, 5, 1)[0]
    m.step(x)
    np.testing.assert_array_equal(m.state.x_prev, x)
    np.testing.assert_array_equal(m.state["s1"], m.quantity("y1"))
    np.testing.assert_array_equal(m.state["s2"], m.quantity("y2"))


@pytest.mark.parametrize("act", ["tanh", "stochastic_binary"])
def test_same_seed_same_numbers(act):
    def run(seed):
        rng = np.random.default_rng(11)
        m = PTNCN(6, (5, 5), act=act, seed=seed)
        for t in range(5):
            m.step(one_hot_batch(rng, 3, 6, 1)[0])
        return m
    a, b, c = run(4), run(4), run(5)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    np.testing.assert_array_equal(a.quantity("z1"), b.quantity("z1"))
    assert not np.array_equal(a.params["V1"], c.params["V1"])


def test_stochastic_binary_states_are_zero_one():
    m = PTNCN(6, (50, 50), act="stochastic_binary", seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        m.step(one_hot_batch(rng, 4, 6, 1)[0])
    z = m.quantity("z1")
    assert set(np.unique(z)) <= {0.0, 1.0} and 0 < z.mean() < 1


def test_user_callable_activation():
    m = PTNCN(4, (3, 3), act=lambda h: np.clip(h, -1, 1), seed=0, wght_sd=2.0)
    rng = np.random.default_rng(0)
    m.step(rng.random((2, 4)))
    m.step(rng.random((2, 4)))
    np.testing.assert_allclose(m.quantity("z1"), np.clip(m.quantity("h1"), -1, 1))


def test_K_iterations():
    """K = 1 is the default; with beta = 0, any K gives y = z; K = 2 re-evaluates errors."""
    rng = np.random.default_rng(0)
    xs = one_hot_batch(rng, 3, 5, 4)

    def run(**kw):
        m = PTNCN(5, (4, 4), seed=1, optimizer="sgd", lr=0.1, wght_sd=0.5, err_wght_sd=0.5, **kw)
        for x in xs:
            m.step(x)
        return m
    a, b = run(K=1), run()
    np.testing.assert_array_equal(a.params["V1"], b.params["V1"])
    c = run(K=3, beta=0.0)
    np.testing.assert_array_equal(c.quantity("y1"), c.quantity("z1"))
    k2 = PTNCN(5, (4, 4), seed=1, K=2, beta=0.5, wght_sd=0.5, err_wght_sd=0.5)
    k2.step(xs[0], learn=False)
    k2.step(xs[1], learn=False)
    q, p = k2.quantities, k2.params
    y1, y2 = q["y1"], q["y2"]   # K = 2: second pass evaluates errors at the first pass's y
    z1 = np.tanh(q["h1"])
    x_mu1 = ptncn.activations.softmax(z1 @ p["W1"])
    first_d1 = (x_mu1 - xs[1]) @ p["E1"] - 0.001 * ((np.tanh(q["h2"]) @ p["W2"]) - z1)
    y1_first = np.tanh(q["h1"] - 0.5 * first_d1)
    y2_first = np.tanh(q["h2"] - 0.5 * (((np.tanh(q["h2"]) @ p["W2"]) - z1) @ p["E2"]))
    e0b = ptncn.activations.softmax(y1_first @ p["W1"]) - xs[1]
    e1b = y2_first @ p["W2"] - y1_first
    np.testing.assert_allclose(y1, np.tanh(q["h1"] - 0.5 * (e0b @ p["E1"] - 0.001 * e1b)),
                               atol=1e-6)
    np.testing.assert_allclose(y2, np.tanh(q["h2"] - 0.5 * (e1b @ p["E2"])), atol=1e-6)


def test_params_are_assignable_and_checked():
    m = PTNCN(4, (3, 3), seed=0)
    m.params["W1"] = np.ones((3, 4), dtype=np.float64)
    assert m.params["W1"].dtype == np.float32 and m.params["W1"].sum() == 12
    with pytest.raises(ValueError, match="shape"):
        m.params["W1"] = np.ones((4, 3))
    with pytest.raises(KeyError, match="unknown parameter"):
        m.params["Q1"] = np.ones((3, 3))
    with pytest.raises(ValueError, match="NaN"):
        m.params["W1"] = np.full((3, 4), np.nan)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("x,mask,match", [
    (np.ones((2, 5)), None, r"shape \(2, 5\)"),
    (np.ones(4), None, r"shape \(4,\)"),
    (np.ones((2, 4), dtype=complex), None, "dtype complex"),
    (np.array([["a"] * 4] * 2), None, "dtype"),
    (np.array([[np.nan, 0, 0, 0], [0, 0, 0, 0]]), None, "NaN"),
    (np.array([[np.inf, 0, 0, 0], [0, 0, 0, 0]]), None, "inf"),
    (np.ones((2, 4)), np.array([[0.5], [1]]), "only 0 and 1"),
    (np.ones((2, 4)), np.array([[np.nan], [1]]), "only 0 and 1"),
    (np.ones((2, 4)), np.ones((3, 1)), "mask has shape"),
])
def test_bad_input_is_a_clear_value_error(x, mask, match):
    m = PTNCN(4, (3, 3), seed=0)
    m.step(np.zeros((2, 4)))
    before = m.params.copy()
    with pytest.raises(ValueError, match=match):
        m.step(x, mask)
    for k in before:
        np.testing.assert_array_equal(m.params[k], before[k])


def test_batch_change_mid_sequence_is_an_error():
    m = PTNCN(4, (3, 3), seed=0)
    m.step(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="reset"):
        m.step(np.zeros((3, 4)))
    m.reset(3)
    m.step(np.zeros((3, 4)))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown activation"):
        PTNCN(4, 3, act="tahn")
    with pytest.raises(ValueError, match="unknown optimizer"):
        PTNCN(4, 3, optimizer="adagrad")
    with pytest.raises(ValueError, match="unknown P-TNCN config key"):
        ptncn.PTNCNConfig.from_dict({"x_dim": 3, "hiden": [3]})
    with pytest.raises(ValueError, match="K"):
        PTNCN(4, 3, K=0)


def test_divergence_error_names_step_and_quantity_and_keeps_params():
    m = PTNCN(4, (3, 3), act="relu", out="identity", optimizer="sgd", lr=0.1, seed=0,
              clip=0.0)
    x = np.ones((2, 4), F32)
    m.step(x)
    m.step(x)
    m.params["V1"] = np.full((3, 3), 3e38)
    m.params["M1"] = np.full((4, 3), 3e38)
    before = m.params.copy()
    state_t = m.state.t
    with pytest.raises(DivergenceError, match=r"'h1' at step 2") as info:
        m.step(x)
    assert info.value.step == 2 and info.value.quantity == "h1"
    for k in before:
        np.testing.assert_array_equal(m.params[k], before[k])
    assert m.state.t == state_t
