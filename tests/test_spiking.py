"""The Brian2 spiking P-TNCN (ptncn.spiking): convergence to its lif_rate twin, the
learner interface, save/load, the run-file events, and the error without Brian2."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# brian2 2.9 calls pyparsing's deprecated camelCase names while it builds networks
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_package_imports_without_brian2_and_explains():
    code = ("import sys; sys.modules['brian2'] = None\n"
            "import ptncn, ptncn.spiking, ptncn.harness\n"
            "from ptncn.spiking import SpikingPTNCN\n"
            "try:\n"
            "    SpikingPTNCN(3, hidden=4)\n"
            "except ImportError as e:\n"
            "    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "pip install 'ptncn[spiking]'" in out.stdout


from ptncn.spiking import brian2_available  # noqa: E402

needs_brian2 = pytest.mark.skipif(not brian2_available(), reason="brian2 not importable")


@needs_brian2
def test_convergence_to_rate_twin():
    """Errors <= c tau_ref / T + b and log-log slope <= -0.8, numpy target, small net."""
    sys.path.insert(0, os.path.join(ROOT, "analysis"))
    from spiking_convergence import sweep
    t0 = time.perf_counter()
    res = sweep([50, 100, 200, 400, 800], target="numpy", hidden=(8, 8), x_dim=4, batch=2,
                steps=4, log=lambda s: None)
    assert time.perf_counter() - t0 < 300       # ~10 s on an idle core, numpy target
    c, b = res["c"], res["b"]
    for r in res["rows"]:
        for k in ("z", "y", "e0", "e1", "eps"):
            assert r[k] <= c * 2.0 / r["T"] + b, (k, r)
    for k in ("z", "y", "e0", "e1", "eps", "upd_rel_e0", "upd_rel_eps"):
        assert res["slopes"][k] <= -0.8, (k, res["slopes"])
    rel = [r["upd_rel_e0"] for r in res["rows"]]
    assert rel[-1] < rel[0] / 4


@needs_brian2
def test_learner_interface_save_load_and_learning(tmp_path):
    from ptncn.learner import load_learner
    from ptncn.spiking import SpikingPTNCN
    m = SpikingPTNCN(3, hidden=(6, 5), window_ms=20.0, target="numpy", seed=2,
                     optimizer="sgd", lr=0.5)
    x = (np.random.default_rng(1).random((3, 2, 3)) > 0.5).astype(np.float32)
    w0 = m.params["W1"].copy()
    m.reset(2)
    preds = [m.step(x[t], np.ones((2, 1))) for t in range(3)]
    m.end_sequence()
    assert all(p.shape == (2, 3) for p in preds)
    assert not np.array_equal(w0, m.params["W1"])       # learned after step 0
    for name in m.recordable:
        assert m.quantity(name).shape == m.quantity_shape(name, 2), name
    assert m.quantity("spikes_z1").sum() > 0
    # save / load: same parameters, same next predictions (the network is deterministic)
    path = tmp_path / "s.npz"
    m.save(path, include_state=True)
    m2 = load_learner(path)
    assert type(m2).__name__ == "SpikingPTNCN"
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], m2.params[k])
    m.state = m2.state.copy()
    a = m.step(x[0], learn=False)
    b = m2.step(x[0], learn=False)
    np.testing.assert_array_equal(a, b)
    m.end_sequence()
    m2.end_sequence()
    # a new batch size rebuilds the network
    m.reset(1)
    assert m.step(x[0][:1]).shape == (1, 3)
    m.close()


@needs_brian2
def test_model_file_stores_the_config(tmp_path, capsys):
    """The model file holds the config like every learner's: load_learner gives it back
    and ``ptncn info`` prints it."""
    import json

    from ptncn.cli import main
    from ptncn.learner import load_learner, read_model_file
    from ptncn.spiking import SpikingPTNCN
    m = SpikingPTNCN(3, hidden=(5, 4), window_ms=30.0, target="numpy", beta=0.3,
                     record_spikes=True, record_membrane=[1, 3], seed=7)
    path = tmp_path / "s.npz"
    m.save(path)
    meta, _ = read_model_file(path)
    assert meta["config"] is not None and meta["config"] == m.config.to_dict()
    assert meta["config"]["hidden"] == [5, 4] and meta["config"]["record_membrane"] == [1, 3]
    m2 = load_learner(path)
    assert m2.config == m.config
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], m2.params[k])
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["window_ms"] == 30.0 and info["config"]["target"] == "numpy"
    assert info["learner"] == "spiking_ptncn"
    m3 = load_learner(path, target="cython", record_membrane=[])
    assert m3.config.target == "cython" and m3.config.beta == 0.3


@needs_brian2
def test_version_1_model_file_loads(tmp_path):
    """A file of the first format ("options" beside "x_dim") loads its config and weights."""
    from ptncn.learner import FORMAT_NAME, load_learner, pack_params, write_model_file
    from ptncn.spiking import SpikingPTNCN
    m = SpikingPTNCN(3, hidden=(5, 4), window_ms=30.0, target="numpy", seed=7, gain=1.5)
    options = {k: v for k, v in m.config.to_dict().items() if k != "x_dim"}
    opt = m.optimizer.state_dict()
    meta = {"format": FORMAT_NAME, "version": 1, "class": "SpikingPTNCN", "x_dim": 3,
            "options": options, "optimizer": opt["hyperparams"], "optimizer_t": opt["t"],
            "steps_taken": 0, "rng": m.rng.bit_generator.state}
    write_model_file(tmp_path / "v1.npz", meta, pack_params(m.params, m.optimizer))
    m2 = load_learner(tmp_path / "v1.npz")
    assert m2.config == m.config
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], m2.params[k])


@needs_brian2
def test_harness_accepts_spiking_config():
    from ptncn.harness import load_config, make_learner
    for name in ("spiking_bit_recall.toml", "spiking_bouncing_tiny.toml",
                 "spiking_bouncing_16.toml"):
        cfg = load_config(os.path.join(ROOT, "models", name))
        assert cfg["model"]["learner"] == "spiking_ptncn"
    cfg = load_config(os.path.join(ROOT, "models", "spiking_bit_recall.toml"),
                      ["model.target=\"numpy\"", "model.hidden=[4, 4]"])
    m = make_learner(cfg, 3)
    assert m.config.target == "numpy"


@needs_brian2
def test_spike_events_in_run_file(tmp_path):
    from ptncn.record import Recorder, open_recording
    from ptncn.spiking import SpikingPTNCN
    m = SpikingPTNCN(3, hidden=(4, 4), window_ms=20.0, target="numpy", record_spikes=True)
    rec = Recorder(tmp_path / "run.h5")
    rec.add("spikes_z1", rows=[0]).add("spikes_y2", rows=[0]).add("spikes_e1", rows=[0])
    rec.add("z1", rows=[0])
    rec.start(m, batch=2)
    x = (np.random.default_rng(0).random((2, 5, 2, 3)) > 0.5).astype(np.float32)
    step = 0
    for seq in range(2):          # two sequences: the monitors are emptied between flushes
        m.reset(2)
        for t in range(5):
            m.step(x[seq, t])
            rec.after_step(step, m)
            step += 1
        m.end_sequence()
    rec.close()
    r = open_recording(tmp_path / "run.h5")
    try:
        units = r.file["units"]
        assert set(units) >= {"Z1", "Y1", "E1", "Z2", "Y2"}
        ts = units["Z1"]["spike_times"][:]
        ui = units["Z1"]["unit_index"][:]
        assert len(ts) == len(ui) > 0 and ui.max() < 4
        assert np.all(np.diff(ts) >= 0)
        assert r["spikes_z1"].shape == (10, 1, 4)
        # every spike once: the events add up to the decoded counts of batch row 0
        for pop, trace in (("Z1", "spikes_z1"), ("Y2", "spikes_y2")):
            per_unit = np.bincount(units[pop]["unit_index"][:], minlength=4)
            np.testing.assert_array_equal(per_unit, r[trace][:, 0].sum(axis=0), err_msg=pop)
        e = units["E1"]
        net = np.zeros(4)
        np.add.at(net, e["unit_index"][:], e["sign"][:])
        np.testing.assert_array_equal(net, r["spikes_e1"][:, 0].sum(axis=0))
        assert len(m.backend.monitors[0][1].i[:]) == 0          # drained: monitors do not grow
    finally:
        r.close()
    from ptncn.analysis import plot_run
    written = plot_run(tmp_path / "run.h5", tmp_path / "plots")
    assert any("units_raster" in os.path.basename(p) for p in written)


@needs_brian2
def test_membrane_traces_in_run_file(tmp_path):
    from ptncn.record import Recorder, open_recording
    from ptncn.spiking import SpikingPTNCN
    with pytest.raises(ValueError, match="record_membrane: units \\[7\\] outside layer 1"):
        SpikingPTNCN(3, hidden=(4, 4), target="numpy", record_membrane=[7])
    m = SpikingPTNCN(3, hidden=(4, 4), window_ms=20.0, target="numpy", record_membrane=[0, 2])
    rec = Recorder(tmp_path / "run.h5")
    rec.add("z1", rows=[0])
    rec.start(m, batch=2)
    m.reset(2)
    for t in range(3):
        m.step(np.ones((2, 3), np.float32))
        rec.after_step(t, m)
    m.end_sequence()
    rec.close()
    r = open_recording(tmp_path / "run.h5")
    try:
        g = r.file["membrane"]
        t = g["time"][:]
        assert list(g["unit_index"][:]) == [0, 2]
        # three windows of 20 ms sampled every 0.1 ms (the run may stop a step late)
        assert 3 * 200 <= len(t) <= 3 * 200 + 2 and np.all(np.diff(t) > 0)
        np.testing.assert_allclose(np.diff(t)[:10], 0.1, rtol=1e-6)
        for pop in ("Z1", "Y1"):
            v = g[pop][:]
            assert v.shape == (len(t), 2)
            assert v.max() <= 1.0 + 1e-6 and v.min() >= 0.0      # threshold 1, reset to 0
            assert v.max() > 0.5                                   # it charges
    finally:
        r.close()


@needs_brian2
@pytest.mark.parametrize("bad", ["M1", "E1"])
def test_divergence_error_leaves_parameters_and_state(bad):
    """A non-finite weight gives one DivergenceError naming the first non-finite quantity;
    parameters and the carried state stay as they were, and the model runs on once fixed."""
    from ptncn import DivergenceError
    from ptncn.spiking import SpikingPTNCN
    m = SpikingPTNCN(3, hidden=(4, 4), window_ms=20.0, target="numpy", seed=1)
    x = np.ones((2, 3), np.float32)
    m.reset(2)
    m.step(x)
    m.step(x)
    good = m.params[bad].copy()
    m.params[bad][0, 0] = np.nan
    before = {k: v.copy() for k, v in m.params.items()}
    t = m.state.t
    with pytest.raises(DivergenceError, match="h1" if bad == "M1" else "d1"):
        m.step(x)
    for k in before:
        np.testing.assert_array_equal(before[k], m.params[k])
    assert m.state.t == t
    m.params[bad][:] = good
    m.step(x)
    assert m.state.t == t + 1
    m.close()
