"""The echo state network baseline (ptncn.baselines.esn): reservoir equals reservoirpy's,
ridge/RLS readouts against closed forms, masks, input checks, save/load, checkpoint resume,
training through the harness, and the error without reservoirpy.  Needs no data files."""

import os
import sys

import numpy as np
import pytest

pytest.importorskip("reservoirpy", reason="the ESN baseline needs the 'esn' extra")

from ptncn.baselines.esn import ESN  # noqa: E402
from ptncn.data.synthetic import CyclicSymbols  # noqa: E402
from ptncn.learner import load_learner  # noqa: E402
from ptncn.record import Recorder, open_recording  # noqa: E402
from ptncn.simulate import Simulation  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _seq(T, B, X, seed=0, ragged=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, X)).astype(np.float32)
    m = np.ones((T, B, 1), np.float32)
    if ragged:
        for b in range(B):
            m[rng.integers(T // 2, T + 1):, b] = 0
    return x, m


def test_reservoir_matches_reservoirpy_node():
    from reservoirpy.nodes import Reservoir

    esn = ESN(4, hidden=40, sr=0.8, leak=0.3, input_scaling=0.7, bias_scaling=0.4,
              rc_connectivity=0.2, input_connectivity=0.5, out="identity", seed=5)
    p = esn.params
    # the generated matrices have the requested spectral radius and scalings
    radius = np.abs(np.linalg.eigvals(p["W"].astype(np.float64))).max()
    assert radius == pytest.approx(0.8, rel=1e-4)
    np.testing.assert_allclose(np.unique(np.abs(p["Win"])), [0.0, 0.7], rtol=1e-6)
    np.testing.assert_allclose(np.abs(p["bias"]), 0.4, rtol=1e-6)
    x, _ = _seq(25, 3, 4, seed=1)
    bias = p["bias"].astype(np.float64)
    import reservoirpy
    if reservoirpy.__version__.startswith("0.3"):
        bias = bias.reshape(-1, 1)                # reservoirpy 0.3 keeps column vectors
    node = Reservoir(W=p["W"].astype(np.float64), Win=p["Win"].astype(np.float64), bias=bias,
                     lr=0.3, input_dim=4)
    ref = np.asarray(node.run(x[:, 1].astype(np.float64))).reshape(25, 40)
    esn.reset(3)
    mine = []
    for t in range(25):
        esn.step(x[t], learn=False)
        mine.append(esn.quantity("r").copy())
    mine = np.array(mine)
    np.testing.assert_allclose(mine[:, 1], ref, atol=1e-5)
    assert np.abs(mine[:, 0] - ref).max() > 1e-2            # rows are independent sequences


def _collect_and_train(esn, batches):
    """Step ``esn`` through batches (learning), collecting the (state, target) pairs it should
    learn from: rows with mask 1 at t > 0, state = r after x_{t-1}."""
    feats, targets = [], []
    for x, m in batches:
        esn.reset(x.shape[1])
        r_prev = np.zeros((x.shape[1], esn.config.hidden), np.float32)
        for t in range(x.shape[0]):
            esn.step(x[t], m[t], learn=True)
            if t > 0:
                sel = m[t, :, 0] > 0
                feats.append(r_prev[sel])
                targets.append(x[t][sel])
            r_prev = esn.quantity("r").copy()
        esn.end_sequence(learn=True)
    phi = np.concatenate(feats).astype(np.float64)
    phi = np.hstack([phi, np.ones((len(phi), 1))])
    return phi, np.concatenate(targets).astype(np.float64)


def test_ridge_readout_equals_closed_form_on_the_collected_states():
    esn = ESN(3, hidden=30, leak=0.5, input_connectivity=0.5, ridge=0.5, out="identity", seed=2)
    x, _ = _seq(4, 2, 3)
    assert np.all(esn.step(x[0]) == 0.0)           # neutral output before the first solve
    batches = [(x + 2, m) for x, m in (_seq(20, 6, 3, seed=s, ragged=True) for s in range(3))]
    phi, y = _collect_and_train(esn, batches)
    N = esn.config.hidden
    # ridge on the units' weights, intercept unpenalised: an augmented least-squares problem
    aug = np.vstack([phi, np.sqrt(0.5) * np.eye(N + 1)[:N]])
    ref = np.linalg.lstsq(aug, np.vstack([y, np.zeros((N, 3))]), rcond=None)[0]
    np.testing.assert_allclose(esn.params["Wout"], ref, rtol=1e-4, atol=1e-5)
    assert esn.extra["n_rows"] == len(phi) and esn.extra["n_solves"] == 3


def test_softmax_and_sigmoid_outputs_are_valid_predictions():
    soft = ESN(5, hidden=20, seed=1)
    sig = ESN(5, hidden=20, out="sigmoid", seed=1)
    x = np.eye(5, dtype=np.float32)[[0, 1, 2, 3]]
    np.testing.assert_allclose(soft.step(x), 0.2, rtol=1e-6)      # neutral: uniform
    np.testing.assert_allclose(sig.step(x), 0.5)
    soft.params["Wout"] = np.random.default_rng(0).normal(size=(21, 5)) * 3
    sig.params["Wout"] = np.random.default_rng(0).normal(size=(21, 5)) * 3
    for _ in range(3):
        p, q = soft.step(x), sig.step(x)
        assert (p > 0).all() and np.allclose(p.sum(axis=1), 1, atol=1e-6)
        assert (q >= 1e-3 - 1e-9).all() and (q <= 1 - 1e-3 + 1e-9).all()


def test_rls_with_no_forgetting_converges_to_the_ridge_solution():
    kw = dict(hidden=15, leak=1.0, sr=0.5, input_scaling=1.0, input_connectivity=1.0,
              out="identity", seed=4)
    rls = ESN(2, readout="rls", rls_delta=1e-6, forgetting=1.0, **kw)
    ridge = ESN(2, readout="ridge", ridge=1e-6, **kw)
    batches = [_seq(30, 8, 2, seed=10 + s, ragged=True) for s in range(6)]
    _collect_and_train(rls, batches)
    _collect_and_train(ridge, batches)
    a, b = rls.params["Wout"], ridge.params["Wout"]
    assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max()
    # and forgetting < 1 gives another (recency-weighted) readout
    fg = ESN(2, readout="rls", rls_delta=1e-6, forgetting=0.9, **kw)
    _collect_and_train(fg, batches)
    assert np.abs(fg.params["Wout"] - b).max() > 1e-2 * np.abs(b).max()


@pytest.mark.parametrize("readout", ["ridge", "rls"])
def test_masked_rows_hold_state_and_teach_nothing(readout):
    x, m = _seq(12, 4, 3, seed=3, ragged=True)
    m[5, 0] = 0          # a hole in the middle of row 0
    m[0, 3] = 0          # and a masked first step
    garbage = x.copy()
    garbage[np.broadcast_to(m == 0, x.shape)] = 1e3
    a = ESN(3, hidden=25, readout=readout, out="identity", seed=1)
    b = ESN(3, hidden=25, readout=readout, out="identity", seed=1)
    for model, xs in ((a, x), (b, garbage)):
        model.reset(4)
        prev = None
        for t in range(12):
            model.step(xs[t], m[t])
            r = model.quantity("r")
            if prev is not None:
                held = m[t, :, 0] == 0
                np.testing.assert_array_equal(r[held], prev[held])
                assert np.all(np.any(r[~held] != prev[~held], axis=1))
            prev = r.copy()
        model.end_sequence(learn=True)
    np.testing.assert_array_equal(a.params["Wout"], b.params["Wout"])
    np.testing.assert_array_equal(a.quantity("r"), b.quantity("r"))


def test_bad_input_and_options_are_refused_with_clear_errors():
    esn = ESN(3, hidden=10)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 4\); expected \(batch, 3\)"):
        esn.step(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="dtype <U1"):
        esn.step(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        esn.step(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="mask has shape"):
        esn.step(x, np.ones((3, 1)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        esn.step(x, np.full((2, 1), 0.5))
    esn.step(x)
    with pytest.raises(ValueError, match=r"batch 5 .* batch 2; call reset\(5\)"):
        esn.step(np.zeros((5, 3)))
    for kw, match in [({"readout": "lms"}, "readout must be one of"),
                      ({"leak": 0.0}, r"leak must be in \(0, 1\]"),
                      ({"out": "tanh"}, "out must be one of"),
                      ({"sr": float("nan")}, "sr must be a finite number"),
                      ({"hidden": 0}, "hidden must be a positive integer")]:
        with pytest.raises(ValueError, match=match):
            ESN(3, **{"hidden": 10, **kw})


def _train_steps(model, x, m, t_range):
    out = []
    for t in t_range:
        out.append(model.step(x[t], m[t]).copy())
    return np.array(out)


@pytest.mark.parametrize("readout", ["ridge", "rls"])
def test_save_load_round_trip_continues_identically(tmp_path, readout):
    x, m = _seq(16, 5, 4, seed=7, ragged=True)
    model = ESN(4, hidden=30, readout=readout, forgetting=0.99, out="identity", seed=9)
    _train_steps(model, x, m, range(16))
    model.end_sequence(learn=True)
    model.reset(5)
    _train_steps(model, x, m, range(7))                          # stop mid-sequence
    path = tmp_path / "esn.npz"
    model.rng.random(3)                  # the (unused by the ESN) generator's state travels too
    model.save(path, include_state=True, extra_meta={"note": "mid"})
    loaded = load_learner(path)
    assert type(loaded) is ESN and loaded.extra_meta == {"note": "mid"}
    assert loaded.rng.bit_generator.state == model.rng.bit_generator.state
    assert loaded.config == model.config
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
    a = _train_steps(model, x, m, range(7, 16))
    b = _train_steps(loaded, x, m, range(7, 16))
    model.end_sequence(learn=True)
    loaded.end_sequence(learn=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.params["Wout"], model.params["Wout"])
    assert loaded.steps_taken == model.steps_taken
    # without include_state the statistics still travel (training continues identically)
    model.save(path)
    again = ESN.load(path)
    assert again.state is None
    for net in (model, again):
        net.reset(5)
        _train_steps(net, x, m, range(16))
        net.end_sequence(learn=True)
    np.testing.assert_array_equal(again.params["Wout"], model.params["Wout"])


@pytest.mark.parametrize("readout", ["ridge", "rls"])
def test_readout_statistics_travel_exactly_and_missing_ones_are_refused(tmp_path, readout):
    from ptncn.errors import ModelFileError

    x, m = _seq(10, 3, 4, seed=2, ragged=True)
    model = ESN(4, hidden=20, readout=readout, forgetting=0.95, out="identity", seed=6)
    model.reset(3)
    _train_steps(model, x, m, range(10))
    path = tmp_path / "esn.npz"
    model.save(path)
    loaded = ESN.load(path)
    assert sorted(loaded.extra) == sorted(model.extra)
    for k, v in model.extra.items():
        assert loaded.extra[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded.extra[k], v)
    other = "rls" if readout == "ridge" else "ridge"
    with pytest.raises(ModelFileError, match="persistent array '(P|A)' missing"):
        ESN.load(path, readout=other)


@pytest.mark.parametrize("readout", ["ridge", "rls"])
def test_norm_dWout_records_the_change_of_the_readout(tmp_path, readout):
    x, m = _seq(8, 3, 4, seed=4)
    esn = ESN(4, hidden=20, readout=readout, out="identity", seed=2)
    rec = Recorder(tmp_path / "r.h5").add("norm_dWout").add("dWout")
    rec.start(esn, batch=3)
    esn.reset(3)
    changes = []
    for t in range(8):
        before = esn.params["Wout"].copy()
        esn.step(x[t], m[t])
        rec.after_step(t, esn)
        changes.append(esn.params["Wout"].astype(np.float64) - before)
    rec.close()
    with open_recording(tmp_path / "r.h5") as r:
        norms, dW = r["norm_dWout"][:], r["dWout"][:]
    assert dW.shape == (8, 21, 4)
    np.testing.assert_allclose(dW, np.array(changes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norms, np.linalg.norm(dW.reshape(8, -1), axis=1), rtol=1e-5)
    assert norms[0] == 0.0                          # nothing is learnt at t = 0
    assert (norms[1:] > 0).all() if readout == "rls" else (norms == 0).all()
    if readout == "rls":
        return
    before = esn.params["Wout"].copy()
    esn.end_sequence(learn=True)                    # ridge: the solve is the change
    np.testing.assert_allclose(esn.quantity("dWout"), esn.params["Wout"] - before,
                               rtol=1e-5, atol=1e-6)


def _sim_parts(seed=3):
    model = ESN(6, hidden=40, seed=seed)
    task = CyclicSymbols(batch_size=4, length=10, vocab=6, seed=seed)
    return model, task


@pytest.mark.parametrize("readout", ["ridge", "rls"])
@pytest.mark.parametrize("every,position", [(23, (2, 3)), (20, (1, 10))])  # mid / end of a batch
def test_checkpoint_resume_is_bitwise_identical(tmp_path, readout, every, position):
    ckpt, path = str(tmp_path / "run.ckpt.npz"), str(tmp_path / "run.h5")
    model, task = _sim_parts()
    if readout == "rls":
        model = ESN(6, hidden=40, readout="rls", seed=3)
    sim = Simulation(model, task, 6, checkpoint_every=every, checkpoint_path=ckpt,
                     recorder=Recorder(path, buffer_steps=8).add("x_mu").add("loss"))

    class Crash(Exception):
        pass

    def crash(s):
        if s.step == 31:
            raise Crash
    sim.on_step = crash
    with pytest.raises(Crash):
        sim.run()
    sim = Simulation.resume(ckpt, task, recorder=Recorder(path, buffer_steps=8)
                            .add("x_mu").add("loss"))
    assert sim.step == every and sim.position == position
    sim.run()
    ref_model, _ = _sim_parts()
    if readout == "rls":
        ref_model = ESN(6, hidden=40, readout="rls", seed=3)
    ref = str(tmp_path / "ref.h5")
    Simulation(ref_model, task, 6, recorder=Recorder(ref).add("x_mu").add("loss")).run()
    for k in ref_model.params:
        np.testing.assert_array_equal(sim.learner.params[k], ref_model.params[k])
    with open_recording(path) as r, open_recording(ref) as full:
        for name in ("x_mu", "loss"):
            np.testing.assert_array_equal(r[name][:], full[name][:])


def test_trained_through_the_harness_on_cyclic_beats_the_unigram(tmp_path):
    from ptncn.harness import load_config, train

    cfg = load_config(os.path.join(ROOT, "models", "cyclic.toml"),
                      ["model={learner='esn', hidden=150, leak=0.5, sr=0.9}",
                       "train.batches=25", "train.eval_every=0", "train.final_eval_batches=4",
                       "train.checkpoint_every=0", "record.traces=['loss', 'r', 'norm_Wout']"])
    m = train(cfg, out_dir=str(tmp_path), quiet=True, plots=False, log=lambda s: None)
    uni = m["baselines"]["unigram"]["bpc"]
    assert m["final"]["bpc"] < 0.5 * uni, (m["final"]["bpc"], uni)
    model = load_learner(tmp_path / "final.npz")
    assert type(model) is ESN and model.config.hidden == 150
    with open_recording(tmp_path / "run.h5") as r:
        assert r["r"][:].shape[-1] == 150


def test_missing_reservoirpy_gives_one_clear_error(monkeypatch, tmp_path):
    saved = ESN(3, hidden=10)
    saved.save(tmp_path / "m.npz")
    for name in [k for k in sys.modules if k == "reservoirpy" or k.startswith("reservoirpy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "reservoirpy", None)      # import reservoirpy -> ImportError
    with pytest.raises(ImportError, match=r"needs reservoirpy.*pip install 'ptncn\[esn\]'"):
        ESN(3, hidden=10)
    # a saved ESN loads without reservoirpy (the matrices are in the file)
    assert ESN.load(tmp_path / "m.npz").params["W"].shape == (10, 10)


def test_units_is_the_old_name_of_hidden(tmp_path):
    with pytest.warns(FutureWarning, match="'units' is now called 'hidden'"):
        esn = ESN(3, units=12, seed=0)
    assert esn.config.hidden == 12 and esn.params["W"].shape == (12, 12)
    with pytest.raises(ValueError, match="give only 'hidden'"):
        ESN(3, units=12, hidden=12)
    from ptncn.harness import validate
    cfg = {"name": "e", "task": {"name": "cyclic"},
           "model": {"learner": "esn", "units": 7}}
    with pytest.warns(FutureWarning):
        assert validate(cfg)["model"]["hidden"] == 7     # configs written as 'hidden'
