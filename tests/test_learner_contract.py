"""The learner contract, checked for every registered learner.

A learner registered in ``ptncn.learner.REGISTRY`` gets these tests by being
registered: every recordable name records with its declared shape and meaning;
save/load round-trips bit-exactly and a mid-sequence checkpoint resumes bitwise;
``learn=False`` touches no parameter, optimizer slot or persistent array; bad
input is one ValueError naming the problem; a divergence raises DivergenceError
and leaves parameters, state and RNG as they were.
"""

import importlib.util
import pathlib
import re

import numpy as np
import pytest

from ptncn import DivergenceError, Recorder, Simulation, open_recording
from ptncn.data import CyclicSymbols
from ptncn.learner import REGISTRY, learner_class, load_learner

X, B, T = 5, 3, 6

# the example learner of docs/architecture.md, run as written: it registers itself
# and so gets every test below
DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
exec(compile(re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[0],
             str(DOC), "exec"), {"__name__": "architecture_example"})

#: small settings per registered learner (a learner not listed runs with its defaults)
SMALL = {
    "ptncn": dict(hidden=(6, 5), wght_sd=0.3, err_wght_sd=0.3),
    "rtrl": dict(hidden=6),
    "uoro": dict(hidden=6),
    "nobacktrack": dict(hidden=6, kalman=True),
    "tbptt": dict(hidden=6, k=3),
    "bptt": dict(hidden=6),
    "sab": dict(hidden=6, k_trunc=2, k_att=2, k_top=2),
    "esn": dict(hidden=20),
    "window": dict(hidden=6, w=2),
    "spiking_ptncn": dict(hidden=(4, 3), window_ms=20.0, target="numpy"),
    "learned_neuron": dict(hidden=(4, 3), n_m=2, a_hidden=3),
}
#: further variants worth covering (name, extra settings)
VARIANTS = [("ptncn", dict(engine="reference", K=2, temporal_error_rule=True)),
            ("ptncn", dict(act="stochastic_binary", optimizer="adam", lr=0.01)),
            ("esn", dict(readout="rls", hidden=20)),
            ("window", dict(hidden=0, w=3)),
            ("learned_neuron", dict(variant="recurrent", recurrent_b=True)),
            ("tbptt", dict(cell="lstm")),
            ("bptt", dict(cell="lstm")),
            ("sab", dict(cell="lstm", k_top=1))]
EXTRAS = {"esn": "reservoirpy", "spiking_ptncn": "brian2"}


def _cases():
    cases = [(name, {}) for name in REGISTRY] + VARIANTS
    out = []
    for name, extra in cases:
        mod = EXTRAS.get(name)
        marks = [pytest.mark.skipif(importlib.util.find_spec(mod) is None,
                                    reason=f"{name} needs {mod}")] if mod else []
        label = name + "".join(f",{k}={v}" for k, v in extra.items())
        out.append(pytest.param(name, extra, id=label, marks=marks))
    return out


CASES = _cases()


def make(name, extra, seed=3):
    kw = {**SMALL.get(name, {}), **extra}
    return learner_class(name)(X, seed=seed, **kw)


def data(seed=0, steps=T):
    rng = np.random.default_rng(seed)
    xs = np.eye(X, dtype=np.float32)[rng.integers(0, X, (steps, B))]
    ms = np.ones((steps, B, 1), np.float32)
    ms[steps // 2:, 0] = 0.0                                   # a sequence that ends early
    return xs, ms


def run(learner, xs, ms, learn=True):
    preds = [learner.step(x, m, learn=learn).copy() for x, m in zip(xs, ms)]
    return np.stack(preds)


def slots(learner):
    opt = learner.optimizer
    if opt is None:
        return {}
    return {f"{s}/{k}": v.copy() for s, d in opt.state_dict()["slots"].items()
            for k, v in d.items()}


def flat(tree, prefix=""):
    """Every array and scalar in a state / extra tree, by path."""
    import dataclasses
    if dataclasses.is_dataclass(tree):
        tree = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    if isinstance(tree, dict):
        return {k2: v2 for k, v in tree.items() for k2, v2 in flat(v, f"{prefix}/{k}").items()}
    if isinstance(tree, (list, tuple)):
        return {k2: v2 for i, v in enumerate(tree) for k2, v2 in flat(v, f"{prefix}/{i}").items()}
    return {prefix: np.array(tree, copy=True) if isinstance(tree, np.ndarray) else tree}


def assert_same(a: dict, b: dict, what):
    assert a.keys() == b.keys(), what
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what} {k}")
        else:
            assert a[k] == b[k], f"{what} {k}"


def snapshot(learner):
    return {"params": learner.params.copy(), "slots": slots(learner),
            "extra": flat(learner.extra), "state": flat(learner.state),
            "rng": learner.rng.bit_generator.state, "steps": learner.steps_taken}


def assert_unchanged(before, learner, parts=("params", "slots", "extra", "state", "rng")):
    after = snapshot(learner)
    for part in parts:
        if part == "rng":
            assert before["rng"] == after["rng"]
        else:
            assert_same(before[part], after[part], part)


@pytest.mark.parametrize("name, extra", CASES)
def test_every_recordable_name_records_with_its_shape_and_meaning(tmp_path, name, extra):
    learner = make(name, extra)
    task = CyclicSymbols(batch_size=B, length=T, vocab=X, seed=0)
    rec = Recorder(tmp_path / "r.h5")
    for n in learner.recordable:
        rec.add(n)
    Simulation(learner, task, n_batches=2, recorder=rec, progress=False).run()
    names = set(learner.recordable)
    assert {f"d{p}" for p in learner.trained_params} <= names
    assert {f"norm_{n}" for n in names if not n.startswith("norm_")} <= names
    with open_recording(tmp_path / "r.h5") as r:
        for n in learner.recordable:
            tr = r[n]
            assert len(tr) > 0, f"{n} was never recorded"
            assert tr.shape[1:] == learner.quantity_shape(n, B), n
            meaning, unit = learner.describe(n)
            assert meaning and tr.attrs["meaning"] == meaning, n
            assert np.isfinite(tr[-1]).all(), n
    with pytest.raises(KeyError, match="unknown quantity"):
        learner.quantity("no_such_thing")


@pytest.mark.parametrize("name, extra", CASES)
def test_save_load_is_exact_and_a_checkpoint_resumes_bitwise(tmp_path, name, extra):
    xs, ms = data(0, 2 * T)
    a = make(name, extra)
    run(a, xs[:T], ms[:T])
    a.end_sequence()
    a.reset(B)
    run(a, xs[T:T + 3], ms[T:T + 3])                       # stop mid-sequence
    a.save(tmp_path / "ckpt.npz", include_state=True, extra_meta={"where": [1, 3]})
    b = load_learner(tmp_path / "ckpt.npz")
    assert type(b) is type(a) and b.config == a.config
    assert b.extra_meta == {"where": [1, 3]}
    assert_unchanged(snapshot(a), b)
    assert b.steps_taken == a.steps_taken
    pa, pb = run(a, xs[T + 3:], ms[T + 3:]), run(b, xs[T + 3:], ms[T + 3:])
    a.end_sequence()
    b.end_sequence()
    np.testing.assert_array_equal(pa, pb)
    assert_unchanged(snapshot(a), b)
    # a plain save keeps no sequence state; the loaded model starts with reset()
    a.save(tmp_path / "plain.npz")
    c = load_learner(tmp_path / "plain.npz")
    assert c.state is None
    assert_unchanged(snapshot(a), c, parts=("params", "slots", "extra", "rng"))


@pytest.mark.parametrize("name, extra", CASES)
def test_learn_false_changes_no_parameter_slot_or_persistent_array(name, extra):
    xs, ms = data(1)
    learner = make(name, extra)
    run(learner, xs, ms)                                     # slots exist, learning happened
    learner.end_sequence()
    learner.reset(B)
    before = snapshot(learner)
    run(learner, xs, ms, learn=False)
    learner.end_sequence(learn=False)
    assert_unchanged(before, learner, parts=("params", "slots", "extra"))
    assert learner.steps_taken == before["steps"]        # evaluation steps are not counted


@pytest.mark.parametrize("name, extra", CASES)
@pytest.mark.parametrize("x, mask, match", [
    (np.zeros((B, X + 1)), None, "shape"),
    (np.full((B, X), np.nan), None, "NaN"),
    (np.zeros((B, X)), np.full((B, 1), 2.0), "0 and 1"),
    (np.array([["a"] * X] * B), None, "dtype"),
])
def test_bad_input_is_one_value_error_naming_the_problem(name, extra, x, mask, match):
    learner = make(name, extra)
    with pytest.raises(ValueError, match=match):
        learner.step(x, mask)
    learner.step(np.zeros((B, X), np.float32))
    with pytest.raises(ValueError, match="reset"):
        learner.step(np.zeros((B + 1, X), np.float32))


@pytest.mark.parametrize("name, extra", CASES)
def test_divergence_raises_and_leaves_everything_as_it_was(name, extra):
    xs, ms = data(2)
    learner = make(name, extra)
    run(learner, xs[:2], ms[:2])
    first = learner.trained_params[0]
    dict.__getitem__(learner.params, first)[...] = np.nan     # bypasses the finiteness check
    before = snapshot(learner)
    with pytest.raises(DivergenceError) as info:
        learner.step(xs[2], ms[2])
    assert info.value.step == before["steps"]
    assert_unchanged(before, learner)
    assert learner.steps_taken == before["steps"]


def test_the_documented_learner_trains_from_a_config(tmp_path):
    """docs/architecture.md's learner, once registered, runs through the harness: config
    validated against its Config, trained, recorded, evaluated, resumable model files."""
    from ptncn import harness
    cfg = harness.validate({
        "name": "leaky", "seed": 0,
        "task": {"name": "cyclic", "batch_size": 8, "length": 12, "vocab": X},
        "model": {"learner": "leaky_delta", "leak": 0.7},
        "optimizer": {"name": "sgd", "lr": 0.5},
        "train": {"batches": 30, "checkpoint_every": 50},
        "record": {"traces": ["loss", "e", "norm_dW"]}})
    with pytest.raises(harness.ConfigError, match="leek"):
        harness.validate({**cfg, "model": {"learner": "leaky_delta", "leek": 0.7}})
    metrics = harness.train(cfg, str(tmp_path), quiet=True, plots=False, log=lambda m: None)
    assert metrics["final"]["loss"] < metrics["baselines"]["unigram"]["loss"]
    model = load_learner(tmp_path / "final.npz")
    assert model.name == "leaky_delta" and model.config.leak == 0.7
    with open_recording(tmp_path / "run.h5") as r:
        assert r["e"].shape[1:] == (1, X) and len(r["norm_dW"]) > 0
