"""Divergence is caught at the step that diverges, wherever it happens.

Every learner raises DivergenceError at the step whose optimizer update would leave
a parameter or an optimizer slot non-finite, with parameters, optimizer slots and
step count, state and RNG exactly as before; both P-TNCN engines refuse an update
whose norm overflows; the ESN checks its readout after the float32 cast; a model
file with bad optimizer slots or non-finite parameters is one ModelFileError.
"""

import importlib.util

import numpy as np
import pytest

from ptncn import DivergenceError
from ptncn.errors import ModelFileError, NonFiniteStepError
from ptncn.learner import REGISTRY, learner_class, load_learner, read_model_file, \
    write_model_file
from ptncn.optim import make_optimizer
from ptncn.ptncn import clip_frobenius

from test_learner_contract import SMALL, assert_unchanged, data, run, snapshot

X, B = 5, 3
EXTRAS = {"esn": "reservoirpy", "spiking_ptncn": "brian2"}
#: learners trained by a gradient optimizer (the ESN has none)
OPTIMIZED = [n for n in REGISTRY if learner_class(n).default_optimizer is not None]


def _param(name, extra=None):
    mod = EXTRAS.get(name)
    marks = [pytest.mark.skipif(importlib.util.find_spec(mod) is None,
                                reason=f"{name} needs {mod}")] if mod else []
    label = name + "".join(f",{k}={v}" for k, v in (extra or {}).items())
    return pytest.param(name, extra or {}, id=label, marks=marks)


def make(name, extra, seed=3):
    return learner_class(name)(X, seed=seed, **{**SMALL.get(name, {}), **extra})


#: (learner, options, slot set to a huge finite value): the next update overflows
OVERFLOW = [_param(n, dict(optimizer="momentum", lr=2.0)) for n in OPTIMIZED] + [
    _param("ptncn", dict(optimizer="nesterov", lr=2.0)),
    _param("ptncn", dict(optimizer="nesterov", lr=2.0, engine="reference")),
    _param("ptncn", dict(optimizer="adam", lr=0.01)),
    _param("ptncn", dict(optimizer="momentum", lr=2.0, weight_decay=0.1)),
    _param("rtrl", dict(optimizer="adam", lr=0.01)),
]
SLOT = {"momentum": "accum", "nesterov": "accum", "adam": "m"}


def _first_divergence(learner, xs, ms):
    """Step through ``xs`` then end the sequences (whole-sequence learners update
    there) until a DivergenceError; returns (snapshot before, optimizer t before, error)."""
    actions = [lambda x=x, m=m: learner.step(x, m) for x, m in zip(xs, ms)]
    for act in actions + [learner.end_sequence]:
        before, t = snapshot(learner), learner.optimizer.t
        try:
            act()
        except DivergenceError as exc:
            return before, t, exc
    pytest.fail("no DivergenceError")


@pytest.mark.parametrize("name, extra", OVERFLOW)
def test_an_optimizer_step_that_overflows_raises_at_that_step(tmp_path, name, extra):
    xs, ms = data(4)
    learner = make(name, extra)
    run(learner, xs[:3], ms[:3])
    learner.end_sequence()                              # the slots exist
    learner.reset(B)
    learner.save(tmp_path / "m.npz", include_state=True)
    meta, arrays = read_model_file(tmp_path / "m.npz")
    slot = SLOT[extra["optimizer"]]
    keys = [k for k in arrays if k.startswith(f"opt/{slot}/")]
    assert keys
    for k in keys:
        arrays[k][...] = 3e38                           # finite; lr * (mu a + g) is not
    write_model_file(tmp_path / "m.npz", meta, arrays)
    learner = load_learner(tmp_path / "m.npz")
    before, t, exc = _first_divergence(learner, xs, ms)
    assert "optimizer" in str(exc)
    assert exc.step == before["steps"]
    assert exc.quantity in learner.params
    assert_unchanged(before, learner)
    assert learner.optimizer.t == t
    assert learner.steps_taken == before["steps"]


@pytest.mark.parametrize("opt, slot, fill", [
    ("sgd", None, None), ("momentum", "accum", -3e38), ("nesterov", "accum", -3e38),
    ("adam", "m", 3e38), ("rmsprop", "mom", 3.4e38)])
def test_a_checked_optimizer_step_restores_params_slots_and_t(opt, slot, fill):
    o = make_optimizer(opt, lr=1.0)
    p = {"a": np.ones((3, 4), np.float32), "b": np.full(4, 3e38, np.float32)}
    o.step(p, {"a": np.full((3, 4), 0.1, np.float32), "b": np.zeros(4, np.float32)})
    if slot:
        o.slots[slot]["b"][...] = fill
        o.forget_bounds()                               # changed other than by a step
    before = {k: v.copy() for k, v in p.items()}
    slots = {(s, k): v.copy() for s, d in o.slots.items() for k, v in d.items()}
    with pytest.raises(NonFiniteStepError) as info:
        o.step(p, {"a": np.full((3, 4), 0.1, np.float32), "b": np.full(4, -1e38, np.float32)})
    assert info.value.name == "b"
    assert o.t == 1
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])
    assert {(s, k) for s, d in o.slots.items() for k in d} == set(slots)
    for (s, k), v in slots.items():
        np.testing.assert_array_equal(o.slots[s][k], v)


@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "rmsprop"])
def test_a_huge_update_after_ordinary_steps_is_caught(opt):
    o = make_optimizer(opt, lr=2.0)
    p = {"w": np.ones((2, 3), np.float32)}
    for _ in range(3):                                  # ordinary steps: no check needed
        o.step(p, {"w": np.full((2, 3), 0.1, np.float32)})
    before, t = p["w"].copy(), o.t
    with pytest.raises(NonFiniteStepError, match="'w'"):
        o.step(p, {"w": np.full((2, 3), -3e38, np.float32)})   # lr * g overflows
    np.testing.assert_array_equal(p["w"], before)
    assert o.t == t
    o.step(p, {"w": np.full((2, 3), 0.1, np.float32)})  # and the next step is ordinary
    assert np.isfinite(p["w"]).all()


def test_clip_frobenius_does_not_zero_an_update_whose_norm_overflows():
    g = np.full((3, 3), 1e20, np.float32)               # finite; its squares are not
    assert not np.isfinite(clip_frobenius(g, 1.0)).all()


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_both_engines_refuse_an_update_whose_norm_overflows(engine):
    xs, ms = data(5)
    learner = make("ptncn", dict(engine=engine, act="identity"))
    run(learner, xs[:2], ms[:2])
    for s in learner.state.s:
        s[...] = 1e19                                    # quantities finite, dW1's norm is not
    before = snapshot(learner)
    with pytest.raises(DivergenceError) as info:
        learner.step(xs[2], ms[2])
    assert info.value.quantity == "dW1"
    assert_unchanged(before, learner)


@pytest.mark.skipif(importlib.util.find_spec("reservoirpy") is None, reason="needs reservoirpy")
def test_esn_readout_that_overflows_float32_is_a_divergence():
    xs, ms = data(6)
    learner = make("esn", {})
    run(learner, xs, ms)
    learner.extra["A"][...] = np.eye(learner.config.D) * 1e-30
    learner.extra["B"][...] = 1e10                      # Wout = 1e40: finite in float64 only
    learner.extra["n_pending"] = np.array(1, np.int64)
    before = snapshot(learner)
    with pytest.raises(DivergenceError, match="Wout"):
        learner.end_sequence()
    assert_unchanged(before, learner)


# ---------------------------------------------------------------------------
# model files
# ---------------------------------------------------------------------------
def _tampered(tmp_path, name, extra, change):
    xs, ms = data(7)
    learner = make(name, extra)
    run(learner, xs[:3], ms[:3])
    learner.end_sequence()
    path = tmp_path / "m.npz"
    learner.save(path, include_state=True)
    meta, arrays = read_model_file(path)
    change(arrays)
    write_model_file(path, meta, arrays)
    return path


def _slot_key(arrays):
    return sorted(k for k in arrays if k.startswith("opt/"))[0]


def _wrong_shape(arrays):
    k = _slot_key(arrays)
    arrays[k] = np.zeros(arrays[k].shape + (2,), np.float32)


def _nan(arrays):
    k = _slot_key(arrays)
    arrays[k] = np.full_like(arrays[k], np.nan)


def _unknown_slot(arrays):
    k = _slot_key(arrays)
    arrays["opt/velocity/" + k.split("/", 2)[2]] = arrays[k]


def _unknown_param(arrays):
    k = _slot_key(arrays)
    arrays[k.rsplit("/", 1)[0] + "/nope"] = arrays[k]


@pytest.mark.parametrize("name, extra", [_param(n, dict(optimizer="momentum")) for n in OPTIMIZED]
                         + [_param("ptncn", dict(optimizer="adam"))])
@pytest.mark.parametrize("change, match", [
    (_wrong_shape, "shape"), (_nan, "NaN"), (_unknown_slot, "velocity"),
    (_unknown_param, "nope")])
def test_a_bad_optimizer_slot_is_a_model_file_error(tmp_path, name, extra, change, match):
    path = _tampered(tmp_path, name, extra, change)
    _, arrays = read_model_file(path)
    slot = _slot_key(arrays).split("/")[1] if change is not _unknown_slot else "velocity"
    with pytest.raises(ModelFileError, match=match) as info:
        load_learner(path)
    assert slot in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("name", [_param(n).values[0] for n in REGISTRY
                                  if n not in EXTRAS or importlib.util.find_spec(EXTRAS[n])])
def test_a_non_finite_parameter_in_a_model_file_is_a_model_file_error(tmp_path, name):
    learner = make(name, {})
    first = next(iter(learner.params))
    path = tmp_path / "m.npz"
    learner.save(path)
    meta, arrays = read_model_file(path)
    arrays[f"param/{first}"] = np.full_like(arrays[f"param/{first}"], np.inf)
    write_model_file(path, meta, arrays)
    with pytest.raises(ModelFileError, match=first):
        load_learner(path)


def test_adam_without_eps_on_a_zero_gradient_is_caught():
    o = make_optimizer("adam", lr=0.1, eps=0.0)          # 0 / (sqrt(0) + 0) = NaN
    p = {"w": np.ones(3, np.float32)}
    with pytest.raises(NonFiniteStepError, match="'w'"):
        o.step(p, {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(p["w"], np.ones(3, np.float32))
    assert o.t == 0 and o.slots["m"] == {} and o.slots["v"] == {}
