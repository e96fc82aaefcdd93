"""The fast engine (stacked GEMMs, formed updates, one-pass optimizer kernels)
computes what the readable reference engine computes, to 1e-6, with either kernel
backend."""

import numpy as np
import pytest

from ptncn import PTNCN
from ptncn.fast import clip_scale
from ptncn.kernels import get_kernels

F32 = np.float32

CONFIGS = [
    dict(),
    dict(optimizer="sgd", lr=0.3),
    dict(optimizer="momentum", lr=0.2, momentum=0.8),
    dict(optimizer="nesterov", lr=0.2, momentum=0.95, clip=0.0),
    dict(optimizer="adam", lr=0.01),
    dict(optimizer="rmsprop", lr=0.01),
    dict(optimizer="nesterov", weight_decay=0.01, max_norm=0.5),
    dict(hidden=(7,), zeta=1.0),
    dict(hidden=(7, 6, 5), zeta=1.0, K=2),
    dict(hidden=(7, 6, 5), zeta=0.0, temporal_error_rule=True),
    dict(zeta=0.0, act="sign", out="sigmoid"),
    dict(act="stochastic_binary"),
    dict(act="relu", clip=0.02, gamma=2.5),
    dict(act="relu", clip=0.05, clip_mode="mean", gamma=2.5),
]


def kernel_backends():
    """Both backends where Numba is installed (the ``fast`` extra), else NumPy only."""
    out = ["numpy"]
    try:
        get_kernels("numba")
        out.append("numba")
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("kernels", kernel_backends())
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_fast_equals_reference(cfg, kernels, monkeypatch):
    monkeypatch.setenv("PTNCN_KERNELS", kernels)
    cfg = dict(cfg)
    hidden = cfg.pop("hidden", (7, 6))
    kw = dict(wght_sd=0.3, err_wght_sd=0.3, seed=4, clip=0.1)
    kw.update(cfg)
    fast = PTNCN(9, hidden, engine="fast", **kw)
    ref = PTNCN(9, hidden, engine="reference", **kw)
    rng = np.random.default_rng(0)
    for seq in range(2):
        B, T = 5, 8
        fast.reset(B)
        ref.reset(B)
        lengths = rng.integers(2, T + 1, B)
        for t in range(T):
            x = np.eye(9, dtype=F32)[rng.integers(0, 9, B)]
            m = (t < lengths).astype(F32)[:, None]
            fast.step(x, m)
            ref.step(x, m)
            for n in ["x_mu", "y1", "eps1", f"y{len(hidden)}", f"eps{len(hidden)}"]:
                np.testing.assert_allclose(fast.quantity(n), ref.quantity(n), atol=1e-6,
                                           err_msg=f"{n} seq {seq} t {t}")
            for k in ref.params:
                np.testing.assert_allclose(fast.params[k], ref.params[k], atol=1e-6,
                                           err_msg=f"{k} seq {seq} t {t}")
                if t > 0:
                    np.testing.assert_allclose(fast.updates[k], ref.updates[k],
                                               atol=1e-7, err_msg=f"d{k}")
    assert fast.optimizer.t == ref.optimizer.t
    for slot, d in ref.optimizer.slots.items():
        for k in d:
            np.testing.assert_allclose(fast.optimizer.slots[slot][k], d[k], atol=1e-6)


def test_clip_scale_is_tf_clip_by_norm():
    assert clip_scale(0.5, 1.0) == 1.0
    assert clip_scale(1.0, 1.0) == 1.0
    assert clip_scale(4.0, 1.0) == 0.25
    assert clip_scale(4.0, 0.0) == 1.0        # radius <= 0: off


def test_params_are_views_into_stacked_storage():
    m = PTNCN(4, (3, 3), seed=0)
    R1 = m.engine.layer_blocks[0].array
    for name in ("M1", "V1", "U1", "W2"):
        assert np.shares_memory(m.params[name], R1)
    m.params["V1"] = np.full((3, 3), 2.0)
    assert (R1[4:7] == 2.0).all()


def test_save_load_continues_identically_with_fused_nesterov(tmp_path):
    rng = np.random.default_rng(0)
    xs = np.eye(6, dtype=F32)[rng.integers(0, 6, (12, 3))]
    a = PTNCN(6, (5, 5), seed=1)
    for x in xs[:6]:
        a.step(x)
    a.save(tmp_path / "m.npz")
    b = PTNCN.load(tmp_path / "m.npz")
    b.reset(3)
    a.reset(3)
    for x in xs[6:]:
        a.step(x)
        b.step(x)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_factored_update_norms_equal_formed_norms():
    rng = np.random.default_rng(0)
    m = PTNCN(6, (5, 4), seed=0, clip=0.3)
    for _ in range(3):
        m.step(np.eye(6, dtype=F32)[rng.integers(0, 6, 4)])
    for k in m.params:
        formed = np.linalg.norm(m.updates[k].astype(np.float64))
        assert m.quantity_norm(f"d{k}") == pytest.approx(formed, rel=1e-5, abs=1e-9)
