"""TBPTT's truncation schedule: k as a function of the updates made."""

import numpy as np
import pytest

from ptncn.baselines.bptt import TBPTT, check_k_schedule, k_at

F32 = np.float32


def data(seed=0, T=9, B=4, X=5):
    rng = np.random.default_rng(seed)
    xs = np.eye(X, dtype=F32)[rng.integers(0, X, (T, B))]
    ms = (rng.random((T, B, 1)) > 0.2).astype(F32)
    return xs, ms


def run(model, sequences=3):
    for s in range(sequences):
        xs, ms = data(s)
        model.reset(xs.shape[1])
        for x, m in zip(xs, ms):
            model.step(x, m)
        model.end_sequence()
    return model


def test_k_at_piecewise_linear_and_geometric():
    steps = check_k_schedule([[0, 1], [3, 2], [10, 5]])
    assert [k_at(steps, u, 7) for u in (0, 2, 3, 9, 10, 100)] == [1, 1, 2, 2, 5, 5]
    lin = check_k_schedule({"start": 1, "end": 9, "over": 8})
    assert [k_at(lin, u, 7) for u in (0, 4, 8, 100)] == [1, 5, 9, 9]
    geo = check_k_schedule({"start": 1, "end": 16, "over": 4, "kind": "geometric"})
    assert [k_at(geo, u, 7) for u in (0, 2, 4)] == [1, 4, 16]
    assert k_at(None, 5, 7) == 7


def test_a_constant_schedule_is_plain_tbptt_bitwise():
    kw = dict(hidden=6, out="softmax", seed=3, optimizer="adam", lr=0.01)
    a = run(TBPTT(5, k=3, **kw))
    b = run(TBPTT(5, k=10, k_schedule=[[0, 3]], **kw))
    assert a.optimizer.t == b.optimizer.t > 0
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_the_window_follows_the_schedule_and_k_is_recorded():
    m = TBPTT(5, hidden=6, out="softmax", seed=0, k_schedule=[[0, 1], [4, 3]])
    xs, ms = data(T=13)
    ms[:] = 1
    m.reset(xs.shape[1])
    ts, ks = [], []
    for x, mask in zip(xs, ms):
        m.step(x, mask)
        ts.append(m.optimizer.t)
        ks.append(int(m.quantity("k")[0, 0]))
    # one update per step until 4 updates, then one every 3 steps
    assert ts == [1, 2, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7]
    assert ks[:5] == [1, 1, 1, 1, 3] and set(ks[4:]) == {3}


def test_a_saved_model_resumes_the_schedule_exactly(tmp_path):
    kw = dict(hidden=6, out="softmax", seed=1, k_schedule={"start": 1, "end": 4, "over": 6})
    a = run(TBPTT(5, **kw), sequences=2)
    a.save(tmp_path / "m.npz")
    b = TBPTT.load(tmp_path / "m.npz")
    assert b.config.k_schedule == a.config.k_schedule and b.window == a.window
    for model in (a, b):
        xs, ms = data(7)
        model.reset(xs.shape[1])
        for x, mask in zip(xs, ms):
            model.step(x, mask)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


@pytest.mark.parametrize("bad", [
    [[1, 2]],                      # does not start at update 0
    [[0, 2], [5, 0]],              # k < 1
    [[0, 2], [5, 3], [5, 4]],      # updates not increasing
    [[0, 2.5]],
    [],
    {"start": 1, "end": 5},        # no "over"
    {"start": 1, "end": 5, "over": 3, "kind": "cubic"},
    {"start": 1, "end": 5, "over": 3, "speed": 2},
    "fast",
])
def test_a_bad_schedule_is_one_error_naming_it(bad):
    with pytest.raises(ValueError, match="k_schedule: expected"):
        TBPTT(5, hidden=4, k_schedule=bad)
