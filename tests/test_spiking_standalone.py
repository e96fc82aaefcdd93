"""SpikingPTNCN on the cpp_standalone server (ptncn/spiking/standalone.py): the same
spikes and the same learning as the runtime targets, clear errors, and save/load."""

import os

import numpy as np
import pytest

from ptncn.spiking import brian2_available

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(not brian2_available(), reason="brian2 not importable"),
]


def _no_toolchain():
    from ptncn.spiking.standalone import compiler_missing
    return compiler_missing()


needs_toolchain = pytest.mark.skipif(bool(_no_toolchain()), reason=str(_no_toolchain()))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # one build cache for this test module: the builds are exercised, $HOME is not touched
    monkeypatch.setenv("PTNCN_BRIAN_CACHE", str(tmp_path_factory.getbasetemp() / "b2cache"))


def _run(target, hidden, steps=5, batch=3, learn=True):
    from ptncn.spiking import SpikingPTNCN
    rng = np.random.default_rng(1)
    x = (rng.random((steps, batch, 4)) > 0.5).astype(np.float32)
    m = SpikingPTNCN(4, hidden=hidden, window_ms=20.0, target=target, seed=3, optimizer="sgd",
                     lr=0.5, beta=0.5, wght_sd=0.3, err_wght_sd=0.3)
    m.reset(batch)
    qs, preds = [], []
    for t in range(steps):
        preds.append(m.step(x[t], learn=learn))
        qs.append({k: v.copy() for k, v in m.quantities.items()})
    m.end_sequence()
    params = {k: v.copy() for k, v in m.params.items()}
    m.close()
    return qs, preds, params


@needs_toolchain
@pytest.mark.parametrize("hidden", [(7, 5), (6,), (5, 4, 3)])
def test_standalone_matches_numpy_target_spike_for_spike(hidden):
    """Same network description, same inputs: identical spike counts, predictions and
    learned weights (both integrate exactly and reset every half-window)."""
    a_q, a_p, a_w = _run("numpy", hidden)
    b_q, b_p, b_w = _run("cpp_standalone", hidden)
    L = len(hidden)
    n_spikes = 0
    for t in range(len(a_q)):
        for l in range(1, L + 1):
            for k in [f"spikes_z{l}", f"spikes_y{l}"] + ([f"spikes_e{l}"] if l < L else []):
                np.testing.assert_array_equal(a_q[t][k], b_q[t][k], err_msg=f"{k} step {t}")
                n_spikes += np.abs(a_q[t][k]).sum()
        np.testing.assert_allclose(a_p[t], b_p[t], rtol=0, atol=1e-6)
    assert n_spikes > 0
    for k in a_w:
        np.testing.assert_allclose(a_w[k], b_w[k], rtol=0, atol=1e-6, err_msg=k)


@needs_toolchain
def test_standalone_learns_and_saves(tmp_path):
    from ptncn.learner import load_learner
    from ptncn.spiking import SpikingPTNCN
    # the shapes of the other tests, so the cached builds are reused
    m = SpikingPTNCN(4, hidden=(7, 5), window_ms=20.0, target="cpp_standalone", seed=2,
                     optimizer="sgd", lr=0.5)
    x = (np.random.default_rng(1).random((3, 3, 4)) > 0.5).astype(np.float32)
    w0 = m.params["W1"].copy()
    m.reset(3)
    for t in range(3):
        m.step(x[t])
    assert not np.array_equal(w0, m.params["W1"])
    path = tmp_path / "s.npz"
    m.save(path, include_state=True)
    m2 = load_learner(path)
    assert m2.config.target == "cpp_standalone"
    m.state = m2.state.copy()
    np.testing.assert_array_equal(m.step(x[0], learn=False), m2.step(x[0], learn=False))
    # a new batch size builds (or reuses) another server; the old one is closed
    m.reset(1)
    assert m.step(x[0][:1]).shape == (1, 4)
    m.close()
    m2.close()


@needs_toolchain
def test_dead_server_gives_a_clear_error():
    from ptncn.spiking import SpikingPTNCN
    from ptncn.spiking.standalone import StandaloneError
    m = SpikingPTNCN(4, hidden=(6,), window_ms=20.0, target="cpp_standalone")
    m.reset(3)
    m.step(np.ones((3, 4), np.float32))
    w = m.params["W1"].copy()
    m.backend.server._proc.kill()
    m.backend.server._proc.wait()
    with pytest.raises(StandaloneError, match="server"):
        m.step(np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(w, m.params["W1"])       # nothing half-applied
    assert m.state.t == 1
    m.step(np.ones((3, 4), np.float32))                     # a new server takes over
    assert m.state.t == 2
    m.close()


def test_standalone_refuses_recording_and_missing_toolchain(monkeypatch):
    from ptncn.spiking import SpikingPTNCN
    from ptncn.spiking import standalone
    if not _no_toolchain():
        with pytest.raises(ValueError, match="record_membrane"):
            SpikingPTNCN(3, hidden=4, target="cpp_standalone", record_membrane=[0])
    monkeypatch.setattr(standalone.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="make"):
        SpikingPTNCN(3, hidden=4, target="cpp_standalone")


def test_build_failure_is_reported(monkeypatch, tmp_path):
    """A broken build (here: an unknown C++ compiler) names the failure and leaves no
    half-built project in the cache."""
    if _no_toolchain():
        pytest.skip(_no_toolchain())
    from ptncn.spiking import standalone
    monkeypatch.setenv("PTNCN_BRIAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "g++")
    monkeypatch.setattr(standalone, "_key", lambda spec: "broken")
    monkeypatch.setattr(standalone.sys, "executable", os.path.join(str(tmp_path), "nopython"))
    with pytest.raises(standalone.StandaloneError, match="building"):
        standalone.ensure_built({"batch": 1, "sizes": [2, 2], "window_ms": 20.0, "dt_ms": 0.1,
                                 "tau_m": 10.0, "tau_ref": 2.0, "err_theta": 0.5})
    assert not os.path.exists(tmp_path / "cache" / "broken")
    assert not [p for p in os.listdir(tmp_path / "cache") if p.startswith("build-")]


@needs_toolchain
def test_standalone_divergence_error_keeps_the_server():
    from ptncn import DivergenceError
    from ptncn.spiking import SpikingPTNCN
    m = SpikingPTNCN(4, hidden=(7, 5), window_ms=20.0, target="cpp_standalone")
    x = np.ones((3, 4), np.float32)
    m.reset(3)
    m.step(x)
    good = m.params["V2"].copy()
    m.params["V2"][1, 1] = np.inf
    with pytest.raises(DivergenceError, match="h2"):
        m.step(x)
    m.params["V2"][:] = good
    srv = m.backend.server
    m.step(x)
    assert m.backend.server is srv and m.state.t == 2
    m.close()


def test_unusable_cached_build_names_the_directory(monkeypatch, tmp_path):
    import json
    from ptncn.spiking import standalone
    d = tmp_path / "proj"
    d.mkdir()
    (d / "server.json").write_text(json.dumps({"n_lif": 4, "n_err": 1, "n_syn": 0}))
    monkeypatch.setattr(standalone, "ensure_built", lambda spec, log=None: str(d))
    with pytest.raises(standalone.StandaloneError, match="delete that directory"):
        standalone.StandaloneServer({})


@needs_toolchain
def test_standalone_spike_events_match_the_numpy_target(tmp_path):
    """record_spikes on the server: the same events (unit, time, sign) as the numpy
    target writes, and they add up to the decoded counts."""
    from ptncn.record import Recorder, open_recording
    from ptncn.spiking import SpikingPTNCN
    x = (np.random.default_rng(4).random((4, 3, 4)) > 0.5).astype(np.float32)
    files = {}
    for target in ("numpy", "cpp_standalone"):
        m = SpikingPTNCN(4, hidden=(7, 5), window_ms=20.0, target=target, seed=3,
                         beta=0.5, wght_sd=0.3, err_wght_sd=0.3, record_spikes=True)
        path = tmp_path / f"{target}.h5"
        rec = Recorder(path)
        rec.add("spikes_z1", rows=[0]).add("spikes_y2", rows=[0])
        rec.start(m, batch=3)
        m.reset(3)
        for t in range(4):
            m.step(x[t])
            rec.after_step(t, m)
        m.end_sequence()
        rec.close()
        m.close()
        files[target] = path
    a, b = open_recording(files["numpy"]), open_recording(files["cpp_standalone"])
    try:
        ua, ub = a.file["units"], b.file["units"]
        assert set(ua) == set(ub) == {"Z1", "Y1", "E1", "Z2", "Y2"}
        total = 0
        for pop in ua:
            ka = np.lexsort((ua[pop]["unit_index"][:], ua[pop]["spike_times"][:]))
            kb = np.lexsort((ub[pop]["unit_index"][:], ub[pop]["spike_times"][:]))
            np.testing.assert_array_equal(ua[pop]["unit_index"][:][ka],
                                          ub[pop]["unit_index"][:][kb], err_msg=pop)
            np.testing.assert_allclose(ua[pop]["spike_times"][:][ka],
                                       ub[pop]["spike_times"][:][kb], atol=1e-6, err_msg=pop)
            if pop == "E1":
                np.testing.assert_array_equal(ua[pop]["sign"][:][ka], ub[pop]["sign"][:][kb])
            total += len(ka)
        assert total > 0
        per_unit = np.bincount(ub["Z1"]["unit_index"][:], minlength=7)
        np.testing.assert_array_equal(per_unit, b["spikes_z1"][:, 0].sum(axis=0))
    finally:
        a.close()
        b.close()
