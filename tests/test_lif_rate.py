"""lif_rate: the LIF f-I curve (the rate twin of the spiking P-TNCN)."""

import math

import numpy as np
import pytest

from ptncn import PTNCN
from ptncn.activations import ACTIVATIONS, LIF_RATE_DEFAULTS, get_activation, make_lif_rate


def ref_rate(h, tau_m=10.0, tau_ref=2.0, gain=2.0, bias=2.0, dt=None):
    i = gain * h + bias
    if i <= 1.0:
        return 0.0
    tc = tau_m * math.log(i / (i - 1.0))
    isi = tau_ref + tc if dt is None else dt * (round(tau_ref / dt) + math.floor(tc / dt))
    return tau_ref / isi


@pytest.mark.parametrize("name,dt", [("lif_rate", None), ("lif_rate_dt", 0.1)])
def test_registry_matches_formula(name, dt):
    f = get_activation(name)
    assert ACTIVATIONS[name] is f
    h = np.linspace(-1.5, 3.0, 91).astype(np.float32)
    y = f(h, None)
    assert y.dtype == np.float32 and y.shape == h.shape
    want = [ref_rate(float(v), dt=dt) for v in h]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-7)
    assert (y >= 0).all() and (y < 1).all()
    assert np.all(np.diff(y) >= -1e-7)          # monotone


def test_silent_below_threshold_and_saturates_below_one():
    f = make_lif_rate(gain=1.0, bias=0.0)
    assert f(np.array([0.5, 1.0], np.float32), None).tolist() == [0.0, 0.0]
    assert 0.95 < float(f(np.array([1e4], np.float32), None)[0]) < 1.0


def test_dt_rounding_never_slower():
    h = np.linspace(-0.4, 2, 50).astype(np.float32)
    assert np.all(make_lif_rate(dt=0.1)(h) >= make_lif_rate()(h) - 1e-7)


def test_bad_parameters():
    with pytest.raises(ValueError):
        make_lif_rate(tau_m=0)
    with pytest.raises(ValueError):
        make_lif_rate(dt=-1)


def test_rate_ptncn_with_lif_rate_runs():
    for engine in ("fast", "reference"):
        m = PTNCN(5, hidden=(8, 8), act="lif_rate", out="sigmoid", engine=engine, seed=0)
        m.reset(3)
        x = (np.random.default_rng(0).random((4, 3, 5)) > 0.5).astype(np.float32)
        for t in range(4):
            p = m.step(x[t])
        assert np.isfinite(p).all()
        assert (m.quantities["z1"] >= 0).all() and (m.quantities["z1"] < 1).all()


def test_defaults_shared_with_spiking():
    import dataclasses

    from ptncn.spiking.config import SpikingConfig
    default = {f.name: f.default for f in dataclasses.fields(SpikingConfig)}
    for k in ("tau_m", "tau_ref", "gain", "bias"):
        assert default[k] == LIF_RATE_DEFAULTS[k]
    assert default["dt_ms"] == LIF_RATE_DEFAULTS["dt"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # brian2 2.9 + new pyparsing
def test_brian2_lif_matches_lif_rate_dt():
    from ptncn.spiking import brian2_available, import_brian2
    if not brian2_available():
        pytest.skip("brian2 not importable")
    b2 = import_brian2()
    b2.prefs.codegen.target = "numpy"
    h = np.array([-0.6, -0.4, 0.0, 0.3, 1.0, 2.5])
    g = b2.NeuronGroup(len(h), "dv/dt = (I - v) / (10*ms) : 1 (unless refractory)\nI : 1",
                       threshold="v > 1", reset="v = 0", refractory=2 * b2.ms, method="exact",
                       dt=0.1 * b2.ms)
    g.I = 2.0 * h + 2.0
    mon = b2.SpikeMonitor(g)
    net = b2.Network(g, mon)
    net.run(1000 * b2.ms)
    counts = np.bincount(np.asarray(mon.i[:]), minlength=len(h))
    rate = counts * 2.0 / 1000.0                 # rate * tau_ref
    want = get_activation("lif_rate_dt")(h.astype(np.float32))
    np.testing.assert_allclose(rate, want, atol=2 * 2.0 / 1000.0)
