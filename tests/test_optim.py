"""Tests for ptncn.optim: TF1-style optimizers over dicts of float32 arrays.

Expected values are worked out by hand (the arithmetic is written in the
tests, in float64) or, for Adam, by a float64 reference loop written here.
The optimizers run in float32, so comparisons use rtol ~1e-6.
"""

import math

import numpy as np
import pytest

from ptncn.optim import (OPTIMIZERS, SGD, Adam, Momentum, Nesterov, RMSprop,
                         apply_max_norm, make_optimizer)

RTOL = 1e-6
ATOL = 1e-7


def f32(x):
    return np.array(x, dtype=np.float32)


def run(opt, p0, grads, key="w"):
    """Apply ``grads`` (a list of arrays) to a copy of ``p0``; return each p."""
    params = {key: f32(p0)}
    out = []
    for g in grads:
        opt.step(params, {key: f32(g)})
        out.append(params[key].copy())
    return out


def close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64),
                               rtol=RTOL, atol=ATOL)


# -- the five update rules, by hand ------------------------------------------------

def test_sgd_steps():
    # p -= lr * g with lr = 0.1
    ps = run(SGD(lr=0.1), [1.0, -2.0], [[0.5, 0.25], [-1.0, 0.5], [0.0, 0.0]])
    close(ps[0], [1.0 - 0.05, -2.0 - 0.025])        # [0.95, -2.025]
    close(ps[1], [0.95 + 0.1, -2.025 - 0.05])       # [1.05, -2.075]
    close(ps[2], [1.05, -2.075])                    # zero gradient: no move


def test_momentum_steps():
    # a = mu*a + g; p -= lr*a  (lr = 0.1, mu = 0.9)
    ps = run(Momentum(lr=0.1, momentum=0.9), [1.0], [[0.5], [0.5], [-1.0]])
    a1 = 0.5;              p1 = 1.0 - 0.1 * a1      # 0.95
    a2 = 0.9 * a1 + 0.5;   p2 = p1 - 0.1 * a2       # a2 = 0.95,   p2 = 0.855
    a3 = 0.9 * a2 - 1.0;   p3 = p2 - 0.1 * a3       # a3 = -0.145, p3 = 0.8695
    close(ps, [[p1], [p2], [p3]])
    close([p1, p2, p3], [0.95, 0.855, 0.8695])


def test_nesterov_steps():
    # TF semantics: a = mu*a + g; p -= lr*(g + mu*a)  (lr = 0.1, mu = 0.9)
    ps = run(Nesterov(lr=0.1, momentum=0.9), [1.0], [[0.5], [0.5], [-1.0]])
    a1 = 0.5;            p1 = 1.0 - 0.1 * (0.5 + 0.9 * a1)   # 0.905
    a2 = 0.9 * a1 + 0.5; p2 = p1 - 0.1 * (0.5 + 0.9 * a2)    # 0.7695
    a3 = 0.9 * a2 - 1.0; p3 = p2 - 0.1 * (-1.0 + 0.9 * a3)   # 0.88255
    close([p1, p2, p3], [0.905, 0.7695, 0.88255])
    close(ps, [[p1], [p2], [p3]])


def test_nesterov_differs_from_momentum():
    g = [[0.5], [0.5]]
    plain = run(Momentum(lr=0.1, momentum=0.9), [1.0], g)
    nest = run(Nesterov(lr=0.1, momentum=0.9), [1.0], g)
    assert abs(float(plain[1][0]) - float(nest[1][0])) > 0.05


def adam_reference(p, grads, lr, beta1, beta2, eps):
    """Float64 TF1 Adam, one update per gradient; returns p after each step."""
    b1, b2 = beta1, beta2
    p = np.array(p, dtype=np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=np.float64)
        lr_t = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        p = p - lr_t * m / (np.sqrt(v) + eps)
        out.append(p.copy())
    return out


def test_adam_matches_float64_reference():
    p0 = [0.5, -1.0, 2.0, 0.0]
    grads = [[0.1, -0.2, 3.0, 0.0],
             [0.3, 0.1, -1.0, 1e-3],
             [-0.2, 0.4, 0.5, 2.0],
             [0.0, -0.5, 0.25, -1.0]]
    kw = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    ps = run(Adam(**kw), p0, grads)
    ref = adam_reference(p0, grads, **kw)
    for got, want in zip(ps, ref):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_adam_first_step_is_about_lr_times_sign():
    # t=1: m = (1-b1) g, v = (1-b2) g^2, lr_t = lr sqrt(1-b2)/(1-b1), so
    # the step is lr * g / (|g| + eps/sqrt(1-b2)) ~= lr * sign(g).
    (p1,) = run(Adam(lr=0.01), [1.0, 1.0, 1.0], [[2.0, -0.5, 0.0]])
    close(p1, [0.99, 1.01, 1.0])


def test_adam_counts_steps():
    opt = Adam()
    run(opt, [1.0], [[0.1]] * 3)
    assert opt.t == 3


def test_rmsprop_steps_without_momentum():
    # ms starts at 1; ms = rho ms + (1-rho) g^2; p -= lr g / sqrt(ms + eps)
    lr, rho, eps = 0.1, 0.9, 1e-10
    ps = run(RMSprop(lr=lr, rho=rho, eps=eps), [1.0], [[0.5], [-1.0]])
    ms1 = 0.9 * 1.0 + 0.1 * 0.25                          # 0.925
    p1 = 1.0 - 0.1 * 0.5 / math.sqrt(ms1 + eps)           # ~0.9480125
    ms2 = 0.9 * ms1 + 0.1 * 1.0                           # 0.9325
    p2 = p1 - 0.1 * -1.0 / math.sqrt(ms2 + eps)           # ~1.0515679
    close(ps, [[p1], [p2]])


def test_rmsprop_steps_with_momentum():
    # mom = mu mom + lr g / sqrt(ms + eps); p -= mom   (mu = 0.5)
    lr, rho, mu, eps = 0.1, 0.9, 0.5, 1e-10
    ps = run(RMSprop(lr=lr, rho=rho, momentum=mu, eps=eps), [1.0],
             [[0.5], [0.5], [0.0]])
    ms1 = 0.9 + 0.1 * 0.25
    mom1 = 0.1 * 0.5 / math.sqrt(ms1 + eps)
    p1 = 1.0 - mom1
    ms2 = 0.9 * ms1 + 0.1 * 0.25
    mom2 = 0.5 * mom1 + 0.1 * 0.5 / math.sqrt(ms2 + eps)
    p2 = p1 - mom2
    mom3 = 0.5 * mom2                                     # g = 0: coasting
    p3 = p2 - mom3
    close(ps, [[p1], [p2], [p3]])


def test_rmsprop_mean_square_starts_at_one():
    opt = RMSprop(lr=0.1, rho=0.9)
    run(opt, [1.0], [[2.0]])
    # from ones: 0.9*1 + 0.1*4 = 1.3 (from zeros it would be 0.4)
    close(opt.slots["ms"]["w"], [1.3])


# -- weight decay and max-norm ---------------------------------------------------------

def test_weight_decay_with_sgd():
    # g += wd * p, then p -= lr * g   (lr = 0.1, wd = 0.1)
    ps = run(SGD(lr=0.1, weight_decay=0.1), [2.0], [[0.5], [0.5]])
    p1 = 2.0 - 0.1 * (0.5 + 0.1 * 2.0)         # 1.93
    p2 = p1 - 0.1 * (0.5 + 0.1 * p1)           # 1.8607
    close([p1, p2], [1.93, 1.8607])
    close(ps, [[p1], [p2]])


def test_weight_decay_alone_shrinks_geometrically():
    ps = run(SGD(lr=0.5, weight_decay=0.2), [1.0, -4.0], [[0.0, 0.0]] * 3)
    close(ps[2], np.array([1.0, -4.0]) * (1.0 - 0.5 * 0.2) ** 3)


def test_weight_decay_enters_momentum_accumulator():
    opt = Momentum(lr=0.1, momentum=0.9, weight_decay=0.5)
    run(opt, [2.0], [[1.0]])
    close(opt.slots["accum"]["w"], [1.0 + 0.5 * 2.0])


def test_max_norm_in_step_rescales_only_long_rows():
    W = f32([[3.0, 4.0],        # norm 5   -> rescaled to [0.6, 0.8]
             [0.3, 0.4],        # norm 0.5 -> untouched
             [0.0, 0.0]])       # norm 0   -> untouched (no 0/0)
    b = f32([30.0, 40.0])       # 1-D: max_norm does not apply
    params = {"W": W, "b": b}
    SGD(lr=0.1, max_norm=1.0).step(params, {"W": np.zeros_like(W),
                                             "b": np.zeros_like(b)})
    close(params["W"][0], [0.6, 0.8])
    np.testing.assert_array_equal(params["W"][1:], f32([[0.3, 0.4], [0.0, 0.0]]))
    np.testing.assert_array_equal(params["b"], f32([30.0, 40.0]))


def test_max_norm_applies_after_the_update():
    # p = [0.6, 0] - 1.0 * [-0.6, 0] = [1.2, 0], then clipped to radius 1
    ps = run(SGD(lr=1.0, max_norm=1.0), [[0.6, 0.0]], [[[-0.6, 0.0]]])
    close(ps[0], [[1.0, 0.0]])


def test_max_norm_zero_means_off():
    ps = run(SGD(lr=1.0), [[3.0, 4.0]], [[[0.0, 0.0]]])
    np.testing.assert_array_equal(ps[0], f32([[3.0, 4.0]]))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("radius", [0.05, 1.0, 3.5])
def test_apply_max_norm_properties(seed, radius):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.0, 2.0 * radius, size=(40, 1))
    before = (rng.standard_normal((40, 6)) * scales / np.sqrt(6)).astype(np.float32)
    p = before.copy()
    assert apply_max_norm(p, radius) is None           # in place
    n_before = np.linalg.norm(before.astype(np.float64), axis=1)
    n_after = np.linalg.norm(p.astype(np.float64), axis=1)
    inside = n_before <= np.float32(radius)
    assert inside.any() and (~inside).any()            # both cases exercised
    # float32 rounding may leave a rescaled row a few 1e-8 relative above radius
    assert np.all(n_after <= radius * (1 + 1e-6))
    np.testing.assert_array_equal(p[inside], before[inside])
    np.testing.assert_allclose(n_after[~inside], radius, rtol=1e-6)
    # direction kept: the rescaled row is a positive multiple of the old one
    unit_before = before[~inside] / n_before[~inside, None]
    unit_after = p[~inside] / n_after[~inside, None]
    np.testing.assert_allclose(unit_after, unit_before, atol=1e-6)


def test_apply_max_norm_by_hand_and_1d_untouched():
    p = f32([[6.0, 8.0], [-0.6, 0.8], [0.0, -20.0]])
    apply_max_norm(p, 2.0)
    close(p, [[1.2, 1.6], [-0.6, 0.8], [0.0, -2.0]])
    v = f32([6.0, 8.0])
    apply_max_norm(v, 2.0)
    np.testing.assert_array_equal(v, f32([6.0, 8.0]))


# -- persistence -----------------------------------------------------------------------

OPTIONS = {
    "sgd": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.1, momentum=0.9),
    "adam": dict(lr=0.01),
    "rmsprop": dict(lr=0.01, momentum=0.5),
}


def test_options_cover_every_optimizer():
    assert set(OPTIONS) == set(OPTIMIZERS)


def grad_sequence(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"W": rng.standard_normal((3, 4)).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32)} for _ in range(n)]


def fresh_params():
    return {"W": np.arange(12, dtype=np.float32).reshape(3, 4) / 10,
            "b": f32([0.5, -0.5, 1.0, 0.0])}


def copy_grads(g):
    return {k: v.copy() for k, v in g.items()}  # step may overwrite grads


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_state_dict_round_trip_is_bitwise(name):
    kw = dict(OPTIONS[name], weight_decay=0.01, max_norm=2.0)
    grads = grad_sequence(6)

    # uninterrupted run; snapshot taken after step 3 while it keeps going
    a, pa = make_optimizer(name, **kw), fresh_params()
    for i, g in enumerate(grads):
        if i == 3:
            state = a.state_dict()
            params_at_3 = {k: v.copy() for k, v in pa.items()}
        a.step(pa, copy_grads(g))

    # two restored runs from the same snapshot (checks both directions of aliasing)
    for _ in range(2):
        b = make_optimizer(name, **kw)
        b.load_state_dict(state)
        assert b.t == 3
        pb = {k: v.copy() for k, v in params_at_3.items()}
        for g in grads[3:]:
            b.step(pb, copy_grads(g))
        for k in pa:
            assert pb[k].dtype == np.float32
            np.testing.assert_array_equal(pb[k], pa[k])


def test_state_dict_contents():
    opt = Adam(lr=0.01, beta1=0.8)
    run(opt, [1.0, 2.0], [[0.1, 0.2]])
    st = opt.state_dict()
    assert st["t"] == 1
    assert st["hyperparams"]["name"] == "adam"
    assert st["hyperparams"]["beta1"] == 0.8
    assert set(st["slots"]) == {"m", "v"}
    close(st["slots"]["m"]["w"], [0.2 * 0.1, 0.2 * 0.2])


# -- construction ------------------------------------------------------------------------

def test_make_optimizer_builds_each_class():
    expected = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov,
                "adam": Adam, "rmsprop": RMSprop}
    for name, cls in expected.items():
        opt = make_optimizer(name, lr=0.25)
        assert type(opt) is cls
        assert opt.lr == 0.25
        assert opt.hyperparams()["name"] == name


def test_make_optimizer_passes_options():
    opt = make_optimizer("rmsprop", rho=0.8, momentum=0.3, eps=1e-6)
    assert (opt.rho, opt.momentum, opt.eps) == (0.8, 0.3, 1e-6)


def test_make_optimizer_unknown_name():
    with pytest.raises(ValueError, match="adamw") as exc:
        make_optimizer("adamw")
    for known in OPTIMIZERS:
        assert known in str(exc.value)


@pytest.mark.parametrize("name,kw", [("sgd", {"momentum": 0.9}),
                                     ("adam", {"rho": 0.9}),
                                     ("momentum", {"beta1": 0.9})])
def test_make_optimizer_bad_option(name, kw):
    with pytest.raises(ValueError, match=name):
        make_optimizer(name, **kw)


@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf")])
def test_make_optimizer_bad_lr(lr):
    with pytest.raises(ValueError, match="learning rate"):
        make_optimizer("sgd", lr=lr)


def test_negative_weight_decay_rejected():
    with pytest.raises(ValueError, match="weight_decay"):
        make_optimizer("sgd", weight_decay=-1e-3)


def test_zero_lr_is_allowed_and_freezes_params():
    ps = run(make_optimizer("momentum", lr=0.0), [1.0, 2.0], [[5.0, -5.0]] * 2)
    np.testing.assert_array_equal(ps[1], f32([1.0, 2.0]))


# -- several parameters ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_only_keys_in_grads_are_updated(name):
    params = fresh_params()
    b0 = params["b"].copy()
    opt = make_optimizer(name, **OPTIONS[name])
    for g in grad_sequence(2):
        opt.step(params, {"W": g["W"]})
    np.testing.assert_array_equal(params["b"], b0)
    assert not np.array_equal(params["W"], fresh_params()["W"])
    for slot in opt.slots.values():
        assert set(slot) == {"W"}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_params_and_slots_stay_float32(name):
    params = fresh_params()
    opt = make_optimizer(name, **OPTIONS[name], weight_decay=0.1, max_norm=1.0)
    for g in grad_sequence(3):
        opt.step(params, g)
    for p in params.values():
        assert p.dtype == np.float32
    for slot in opt.slots.values():
        for s in slot.values():
            assert s.dtype == np.float32


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_float64_params_are_updated_in_float64(name):
    """Constants take the parameter's precision: a float64 run is not a float32 run
    (SGD: exactly p - lr g), its slots stay float64 and a state_dict round trip of it
    is bitwise."""
    kw = dict(OPTIONS[name], weight_decay=0.01, max_norm=2.0)
    grads = [{k: v.astype(np.float64) for k, v in g.items()} for g in grad_sequence(4)]
    a = make_optimizer(name, **kw)
    pa = {k: v.astype(np.float64) for k, v in fresh_params().items()}
    for i, g in enumerate(grads):
        if i == 2:
            state, at_2 = a.state_dict(), {k: v.copy() for k, v in pa.items()}
        a.step(pa, copy_grads(g))
    assert all(s.dtype == np.float64 for d in a.slots.values() for s in d.values())
    b = make_optimizer(name, **kw)
    b.load_state_dict(state)
    for g in grads[2:]:
        b.step(at_2, copy_grads(g))
    for k in pa:
        assert pa[k].dtype == np.float64
        np.testing.assert_array_equal(at_2[k], pa[k])
    single = {k: v.astype(np.float32) for k, v in fresh_params().items()}
    c = make_optimizer(name, **kw)
    for g in grad_sequence(4):
        c.step(single, copy_grads(g))
    assert any(not np.array_equal(pa[k], single[k].astype(np.float64)) for k in pa)


def test_float64_sgd_is_exact():
    p = {"w": np.array([0.3, -1.7, 2.0])}
    g = np.array([0.1, 0.25, -3.0])
    SGD(lr=0.05).step(p, {"w": g.copy()})
    np.testing.assert_array_equal(p["w"], np.array([0.3, -1.7, 2.0]) - 0.05 * g)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_params_are_independent(name):
    # one optimizer over {W, b} == one optimizer per parameter, bitwise
    grads = grad_sequence(4, seed=1)
    joint, pj = make_optimizer(name, **OPTIONS[name]), fresh_params()
    for g in grads:
        joint.step(pj, copy_grads(g))
    for key in ("W", "b"):
        solo, ps = make_optimizer(name, **OPTIONS[name]), fresh_params()
        for g in grads:
            solo.step(ps, {key: g[key].copy()})
        np.testing.assert_array_equal(pj[key], ps[key])
        for slot_name, slot in joint.slots.items():
            np.testing.assert_array_equal(slot[key], solo.slots[slot_name][key])


def test_params_updated_in_place():
    params = fresh_params()
    W = params["W"]
    SGD(lr=0.1).step(params, {"W": np.ones_like(W)})
    assert params["W"] is W
    close(W, fresh_params()["W"] - 0.1)


def test_resolve_optimizer_by_name_or_instance():
    from ptncn.optim import make_optimizer, resolve_optimizer
    inst = make_optimizer("sgd", lr=0.5)
    assert resolve_optimizer(inst, 0.1, 0.9, 0.0, 0.0) is inst
    nest = resolve_optimizer("nesterov", 0.1, 0.8, 0.01, 2.0)
    sd = nest.state_dict()["hyperparams"]
    assert sd["lr"] == 0.1 and sd["momentum"] == 0.8 and sd["weight_decay"] == 0.01
    sgd = resolve_optimizer("sgd", 0.1, 0.8, 0.0, 0.0, {"lr": 0.3})   # options win
    assert sgd.state_dict()["hyperparams"]["lr"] == 0.3
    assert "momentum" not in sgd.state_dict()["hyperparams"]
    with pytest.raises(ValueError, match="unknown optimizer"):
        resolve_optimizer("lbfgs", 0.1, 0.9, 0.0, 0.0)


# -- learning-rate schedules -------------------------------------------------------------

@pytest.mark.parametrize("schedule,factors", [
    ({"kind": "step", "every": 2, "factor": 0.1}, [1, 1, 0.1, 0.1, 0.01]),
    ({"kind": "exponential", "half_life": 2}, [1, 2 ** -0.5, 0.5, 2 ** -1.5, 0.25]),
    ({"kind": "cosine", "over": 4}, [1, 0.5 + 0.5 * np.cos(np.pi / 4), 0.5,
                                     0.5 - 0.5 * np.cos(np.pi / 4), 0.0]),
    ({"kind": "cosine", "over": 2, "floor": 0.2}, [1, 0.6, 0.2, 0.2, 0.2]),
])
def test_lr_schedule_factors_by_hand(schedule, factors):
    """SGD with lr 0.1 and a gradient of 1: each update moves p by 0.1 times the
    schedule's factor of the updates made before it."""
    opt = SGD(lr=0.1, lr_schedule=schedule)
    p = {"w": np.zeros(1)}
    moves = []
    for _ in factors:
        before = p["w"][0]
        opt.step(p, {"w": np.ones(1)})
        moves.append(before - p["w"][0])
    np.testing.assert_allclose(moves, 0.1 * np.array(factors), rtol=1e-12, atol=1e-15)
    assert opt.hyperparams()["lr"] == 0.1 and opt.hyperparams()["lr_schedule"]["kind"]


def test_lr_schedule_resumes_from_the_state_dict():
    kw = dict(lr=0.01, lr_schedule={"kind": "step", "every": 2, "factor": 0.5})
    grads = grad_sequence(6)
    a, pa = Adam(**kw), fresh_params()
    for i, g in enumerate(grads):
        if i == 3:
            state, at_3 = a.state_dict(), {k: v.copy() for k, v in pa.items()}
        a.step(pa, copy_grads(g))
    b = make_optimizer(**{**a.hyperparams()})
    b.load_state_dict(state)
    for g in grads[3:]:
        b.step(at_3, copy_grads(g))
    for k in pa:
        np.testing.assert_array_equal(at_3[k], pa[k])


@pytest.mark.parametrize("bad,match", [
    ({"kind": "linear"}, "kind one of step, exponential, cosine"),
    ({"kind": "step"}, "missing every"),
    ({"kind": "step", "every": 0}, "bad or missing every"),
    ({"kind": "cosine", "over": 10, "floor": 2.0}, "floor"),
    ({"kind": "exponential", "half_life": 5, "every": 3}, "every"),
    ("cosine", "expected a table"),
])
def test_bad_lr_schedules_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        SGD(lr=0.1, lr_schedule=bad)


def test_lr_schedule_from_a_config_file_is_one_clear_error():
    from ptncn.harness import ConfigError, validate
    base = {"name": "t", "task": {"name": "cyclic"}, "model": {"hidden": [4]},
            "optimizer": {"name": "sgd", "lr": 0.1}}
    validate({**base, "optimizer": {"name": "sgd", "lr": 0.1,
                                    "lr_schedule": {"kind": "cosine", "over": 100}}})
    with pytest.raises(ConfigError, match=r"\[optimizer\] lr_schedule: .*kind one of"):
        validate({**base, "optimizer": {"name": "sgd", "lr": 0.1,
                                        "lr_schedule": {"kind": "warm"}}})


def test_lr_schedule_travels_with_a_saved_learner(tmp_path):
    from ptncn.baselines.bptt import TBPTT
    from ptncn.learner import load_learner
    sched = {"kind": "exponential", "half_life": 3}
    m = TBPTT(4, hidden=5, k=2, optimizer=Adam(lr=0.01, lr_schedule=sched), seed=0)
    rng = np.random.default_rng(0)
    m.reset(2)
    for _ in range(5):
        m.step(np.eye(4, dtype=np.float32)[rng.integers(0, 4, 2)], np.ones((2, 1), np.float32))
    m.save(tmp_path / "m.npz")
    back = load_learner(tmp_path / "m.npz")
    assert back.optimizer.lr_schedule == sched and back.optimizer.t == m.optimizer.t > 0
    assert back.optimizer.base_lr == 0.01
