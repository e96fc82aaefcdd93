"""The gradient-based baselines: RTRL, UORO, NoBackTrack, TBPTT(k), BPTT.

Equations are checked against each other and against finite differences on a small
float64 network with fixed weights; the stochastic estimators statistically.
"""

import os

import numpy as np
import pytest

from ptncn.baselines import rnn
from ptncn.baselines.bptt import BPTT, TBPTT, Record, backward
from ptncn.baselines.nobacktrack import NoBackTrack
from ptncn.baselines.rtrl import RTRL, SensitivityTooLarge
from ptncn.baselines.uoro import UORO
from ptncn.errors import ModelFileError
from ptncn.optim import clip_grad_norm
from fd import central_differences

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = [RTRL, UORO, NoBackTrack, TBPTT, BPTT]
X, H, B, T = 4, 5, 3, 6


def _data(seed=0, T=T, B=B, X=X, p_mask=0.2):
    rng = np.random.default_rng(seed)
    xs = np.eye(X)[rng.integers(0, X, (T, B))]
    ms = (rng.random((T, B, 1)) > p_mask).astype(float)
    ms[:, 0] = 1.0                      # at least one scored row per step
    return xs, ms


def _make(cls, **kw):
    opts = dict(hidden=H, dtype="float64", lr=0.0, clip=0.0, seed=3, leak=0.7)
    opts.update(kw)
    return cls(X, **opts)


def _total_loss(cfg, p, xs, ms, steps=None):
    """sum_t L_t by a plain forward pass (the objective of BPTT)."""
    h = np.zeros((xs.shape[1], cfg.hidden))
    total = 0.0
    for t in range(xs.shape[0]):
        logits = h @ p["W_out"] + p["c"]
        n = ms[t].sum()
        if (steps is None or t in steps) and n > 0:
            total += (rnn.row_loss(cfg.out, logits, xs[t]) * ms[t][:, 0]).sum() / n
        h, _ = rnn.transition(cfg, p, h, xs[t], ms[t])
    return total


def _tape(model, xs, ms):
    """Records of a forward pass (fixed weights), one per step."""
    cfg, p = model.config, model.params
    h = np.zeros((xs.shape[1], cfg.hidden))
    recs = []
    for t in range(xs.shape[0]):
        logits = h @ p["W_out"] + p["c"]
        y = rnn.output(cfg.out, logits)
        n = ms[t].sum()
        do = rnn.logit_grad(cfg.out, y, xs[t], ms[t], n)
        h_new, tr = rnn.transition(cfg, p, h, xs[t], ms[t])
        recs.append(Record(do if n > 0 else None, tr))
        h = h_new
    return recs


def _carried(mdl):
    """What the model carries for learning, rows first."""
    if isinstance(mdl, RTRL):
        return {"sensitivity": mdl.sensitivity}
    return {k: getattr(mdl.state, k) for k in ("s_tilde", "th_tilde") if hasattr(mdl.state, k)}


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


# ---------------------------------------------------------------------------
# exactness
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("out,act", [("softmax", "tanh"), ("sigmoid", "relu"),
                                     ("identity", "identity")])
def test_bptt_matches_central_finite_differences(out, act):
    xs, ms = _data(1)
    m = _make(BPTT, out=out, act=act)
    g = backward(m.cell, m.params, _tape(m, xs, ms), T)
    fds = central_differences(lambda q: _total_loss(m.config, q, xs, ms), m.params)
    for k, fd in fds.items():
        np.testing.assert_allclose(g[k], fd, rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("out", ["softmax", "sigmoid"])
def test_rtrl_gradient_equals_bptt_of_the_same_step_loss_at_every_step(out):
    xs, ms = _data(2)
    m = _make(RTRL, out=out)
    recs = _tape(m, xs, ms)
    m.reset(B)
    for t in range(T):
        m.step(xs[t], ms[t])
        # BPTT of L_t alone: the records up to t, only the last one's loss
        only_t = [Record(r.do if i == t else None, r.tr) for i, r in enumerate(recs[:t + 1])]
        want = backward(m.cell, m.params, only_t, 1)
        for k in m.params:
            got = m.quantity(f"d{k}")
            assert _rel(got, want[k]) < 1e-8, (t, k, _rel(got, want[k]))
    # and the sensitivity is really dh/dtheta: compare with a finite difference of h_T
    S = m.sensitivity
    p = m.params.copy()
    cfg = m.config

    def h_final(q):
        h = np.zeros((B, H))
        for t in range(T):
            h, _ = rnn.transition(cfg, q, h, xs[t], ms[t])
        return h
    q = {k: v.copy() for k, v in p.items()}
    q["W_rec"][1, 2] += 1e-6
    hp = h_final(q)
    q["W_rec"][1, 2] -= 2e-6
    col = X * H + 1 * H + 2                      # flat index of W_rec[1, 2]
    np.testing.assert_allclose(S[:, :, col], (hp - h_final(q)) / 2e-6, rtol=1e-6, atol=1e-9)


def test_tbptt_of_the_sequence_length_equals_bptt():
    xs, ms = _data(3)
    a, b = _make(TBPTT, k=T, lr=0.1), _make(BPTT, lr=0.1)
    for mdl in (a, b):
        mdl.reset(B)
        for t in range(T):
            mdl.step(xs[t], ms[t])
    assert a.optimizer.t == 1 and b.optimizer.t == 0          # updates taken
    b.end_sequence()
    a.end_sequence()
    assert a.optimizer.t == b.optimizer.t == 1
    for k in a.params:
        assert _rel(a.quantity(f"d{k}"), b.quantity(f"d{k}")) < 1e-12
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-12, atol=1e-14)


def test_tbptt_windows_are_non_overlapping_and_cut_the_gradient():
    """TBPTT(3) on 7 steps: updates after steps 2 and 5 and (short window) at the end;
    the second window's gradient is that of L_3 + L_4 + L_5 with h_1 held constant."""
    xs, ms = _data(4, T=7)
    m = _make(TBPTT, k=3)
    m.reset(B)
    got = []
    for t in range(7):
        m.step(xs[t], ms[t])
        if m.updates:
            got.append((t, {k: m.quantity(f"d{k}") for k in m.params}))
    assert [t for t, _ in got] == [2, 5]
    recs = _tape(m, xs, ms)
    want = backward(m.cell, m.params, recs[2:6], 3)          # transitions 2..4, losses 3..5
    for k in m.params:
        assert _rel(got[1][1][k], want[k]) < 1e-12, k
    # finite differences: perturb theta only in steps 2..5 (h_1 fixed)
    cfg, p = m.config, m.params.copy()

    def window_loss(q):
        h = np.zeros((B, H))
        for t in range(2):
            h, _ = rnn.transition(cfg, p, h, xs[t], ms[t])
        tot = 0.0
        for t in range(2, 6):
            if t >= 3:
                logits = h @ q["W_out"] + q["c"]
                tot += (rnn.row_loss(cfg.out, logits, xs[t]) * ms[t][:, 0]).sum() / ms[t].sum()
            h, _ = rnn.transition(cfg, q, h, xs[t], ms[t])
        return tot
    for k, idx in (("W_rec", (0, 1)), ("W_in", (2, 3)), ("b", (4,)), ("W_out", (1, 1))):
        q = {kk: v.copy() for kk, v in p.items()}
        q[k][idx] += 1e-6
        lp = window_loss(q)
        q[k][idx] -= 2e-6
        assert got[1][1][k][idx] == pytest.approx((lp - window_loss(q)) / 2e-6, rel=1e-5, abs=1e-9)
    m.end_sequence()
    assert m.optimizer.t == 3                         # the short last window (step 6)


# ---------------------------------------------------------------------------
# unbiasedness of the rank-one estimators
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [UORO, NoBackTrack])
def test_rank_one_estimates_are_unbiased(cls):
    """N rows with identical inputs carry N independent estimates (independent signs).

    Tolerance: every coordinate of the mean of the N per-row estimates of
    g_h . dh_{T-1}/dtheta_rec lies within 4.5 standard errors of RTRL's exact value
    (about 60 coordinates: a false alarm has probability < 1e-3), and the whole mean
    is within 15% of it in relative L2 norm (expected ~ sqrt(60 var)/|g| ~ 5% at N = 4000).
    """
    N, Tn = 4000, 4
    rng = np.random.default_rng(5)
    xs1 = np.eye(3)[rng.integers(0, 3, Tn)]
    xs = np.repeat(xs1[:, None, :], N, axis=1)
    ref = RTRL(3, hidden=4, dtype="float64", lr=0.0, clip=0.0, seed=7, leak=0.8)
    est = cls(3, hidden=4, dtype="float64", lr=0.0, clip=0.0, seed=11, leak=0.8)
    est.params.update(ref.params.copy())
    ref.reset(1)
    est.reset(N)
    for t in range(Tn - 1):
        ref.step(xs[t, :1])
        est.step(xs[t])
    # the estimate each row would use at the next step, row by row
    y = rnn.output("softmax", est.state.h @ est.params["W_out"] + est.params["c"])
    do = rnn.logit_grad("softmax", y, xs[Tn - 1], np.ones((N, 1)), 1.0)
    g_h = do @ est.params["W_out"].T
    rows = np.einsum("bh,bh->b", g_h, est.state.s_tilde)[:, None] * est.state.th_tilde  # (N, P)
    true = g_h[:1] @ ref.sensitivity[0]                                                 # (1, P)
    mean = rows.mean(axis=0)
    se = rows.std(axis=0, ddof=1) / np.sqrt(N)
    assert np.all(np.abs(mean - true[0]) <= 4.5 * se + 1e-12)
    assert np.linalg.norm(mean - true[0]) <= 0.15 * np.linalg.norm(true[0])
    # the learner's own update direction is that mean (plus the exact readout gradient)
    est.step(xs[Tn - 1])
    flat = np.concatenate([est.quantity(f"d{k}").ravel() for k in ("W_in", "W_rec", "b")])
    np.testing.assert_allclose(flat, mean, rtol=1e-9, atol=1e-12)
    # a single estimate is not the true gradient (the test can fail)
    assert np.linalg.norm(rows[0] - true[0]) > 0.05 * np.linalg.norm(true[0])


def test_nobacktrack_smoothing_switch():
    xs, ms = _data(6)
    a, b = _make(NoBackTrack, seed=1), _make(NoBackTrack, seed=1, kalman=True, smoothing=0.25)
    for mdl in (a, b):
        mdl.reset(B)
    g_bar = {k: np.zeros_like(v) for k, v in a.params.items()}
    for t in range(T):
        a.step(xs[t], ms[t])
        b.step(xs[t], ms[t])
        for k in g_bar:   # same signs (same seed), so b's direction is a's, smoothed
            g_bar[k] = 0.75 * g_bar[k] + 0.25 * a.quantity(f"d{k}")
            np.testing.assert_allclose(b.quantity(f"d{k}"), g_bar[k], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------
# limits, masks, input checks
# ---------------------------------------------------------------------------
def test_rtrl_refuses_a_too_large_sensitivity_tensor():
    m = RTRL(10, hidden=200, max_memory_gb=1.0)        # batch 1: 34 MB
    with pytest.raises(SensitivityTooLarge, match=r"B\*H\*P = 32\*200\*42200 float32 = 1.08 GB, "
                                                  r"over the limit max_memory_gb = 1 GB"):
        m.reset(32)
    with pytest.raises(MemoryError, match="GB"):       # already at batch 1
        RTRL(50, hidden=1000, max_memory_gb=1e-3)
    with pytest.raises(ValueError):                    # also a ValueError
        RTRL(50, hidden=1000, max_memory_gb=1e-3)
    RTRL(50, hidden=100, max_memory_gb=1.0).reset(4)   # 4*100*15100*4 B = 24 MB: fine


@pytest.mark.parametrize("cls", ALL)
def test_masked_rows_hold_state_and_carry_no_loss(cls):
    xs, ms = _data(7)
    ms[2:4, 1] = 0.0
    a, b = _make(cls, lr=0.05, seed=2), _make(cls, lr=0.05, seed=2)
    xs_b = xs.copy()
    xs_b[2:4, 1] = np.eye(X)[[3, 0]] * 5.0           # garbage where masked: must not matter
    for mdl, data in ((a, xs), (b, xs_b)):
        mdl.reset(B)
        for t in range(T):
            h_before = mdl.state.h.copy()
            carried = {k: v.copy() for k, v in _carried(mdl).items()}
            mdl.step(data[t], ms[t])
            if 2 <= t < 4:
                np.testing.assert_array_equal(mdl.state.h[1], h_before[1])
                now = _carried(mdl)
                for k, v in carried.items():      # the sensitivities of held rows are unchanged
                    np.testing.assert_array_equal(now[k][1], v[1], err_msg=k)
        mdl.end_sequence()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("cls", ALL)
def test_bad_input_is_refused(cls):
    m = cls(X, hidden=H)
    m.reset(2)
    x = np.zeros((2, X), np.float32)
    for bad, match in [(np.zeros((2, X + 1)), r"shape \(2, 5\)"), (x[0], r"shape \(4,\)"),
                       (x.astype(str), "dtype"), (np.full((2, X), np.nan), "NaN")]:
        with pytest.raises(ValueError, match=match):
            m.step(bad)
    with pytest.raises(ValueError, match="only 0 and 1"):
        m.step(x, np.array([[0.5], [1.0]]))
    with pytest.raises(ValueError, match=r"mask has shape"):
        m.step(x, np.ones((3, 1)))
    with pytest.raises(ValueError, match="reset"):
        m.step(np.zeros((3, X)))
    with pytest.raises(ValueError, match="act"):
        cls(X, act="sign")
    with pytest.raises(ValueError, match="dtype"):
        cls(X, dtype="float16")


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(g["a"], [0.6, 0.0])
    np.testing.assert_allclose(g["b"], [[0.8]])
    assert clip_grad_norm(g, 0.0) == pytest.approx(1.0)       # off
    assert clip_grad_norm(g, 2.0) == pytest.approx(1.0)       # under the limit: unchanged
    np.testing.assert_allclose(g["a"], [0.6, 0.0])


def test_clip_grad_norm_when_float32_squares_overflow():
    """Finite float32 gradients whose squares overflow are still clipped (3e20 * 4e20)."""
    g = {"a": np.array([3e20, 0.0], np.float32), "b": np.array([[4e20]], np.float32)}
    assert clip_grad_norm(g, 1.0) == pytest.approx(5e20)
    np.testing.assert_allclose(g["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(g["b"], [[0.8]], rtol=1e-6)
    g = {"a": np.array([np.inf, 1.0], np.float32)}
    assert not np.isfinite(clip_grad_norm(g, 1.0))             # not finite: left as is
    assert g["a"][1] == 1.0


# ---------------------------------------------------------------------------
# persistence and resume
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kw", [(RTRL, {}), (UORO, {}), (NoBackTrack, {}),
                                    (NoBackTrack, {"kalman": True}), (TBPTT, {"k": 3}),
                                    (BPTT, {})])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_save_load_mid_sequence_continues_identically(tmp_path, cls, kw, opt):
    xs, ms = _data(8, T=10)
    a = cls(X, hidden=H, optimizer=opt, lr=0.05, seed=4, **kw)
    a.reset(B)
    for t in range(5):
        a.step(xs[t], ms[t])
    a.save(tmp_path / "m.npz", include_state=True, extra_meta={"note": [1, 2]})
    b = type(a).load(tmp_path / "m.npz")
    assert b.config == a.config and b.extra_meta == {"note": [1, 2]}
    assert b.optimizer.hyperparams() == a.optimizer.hyperparams()
    for t in range(5, 10):
        a.step(xs[t], ms[t])
        b.step(xs[t], ms[t])
    a.end_sequence()
    b.end_sequence()
    for k in a.params:
        assert a.params[k].dtype == np.float32
        np.testing.assert_array_equal(a.params[k], b.params[k])
    # without the state: same params, fresh sequences
    a.save(tmp_path / "p.npz")
    c = type(a).load(tmp_path / "p.npz")
    assert c.state is None
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k])


def test_load_checks_class_and_float64_round_trip(tmp_path):
    from ptncn.learner import load_learner
    a = _make(UORO, lr=0.1, optimizer="momentum")
    xs, ms = _data(9)
    a.reset(B)
    for t in range(T):
        a.step(xs[t], ms[t])
    a.save(tmp_path / "u.npz", include_state=True)
    b = load_learner(tmp_path / "u.npz")
    assert type(b) is UORO and b.params["W_rec"].dtype == np.float64
    assert b.optimizer.slots["accum"]["W_rec"].dtype == np.float64
    with pytest.raises(ModelFileError, match="UORO"):
        RTRL.load(tmp_path / "u.npz")


@pytest.mark.parametrize("cls,kw", [(RTRL, {}), (TBPTT, {"k": 4}), (UORO, {}), (BPTT, {}),
                                    (NoBackTrack, {"kalman": True})])
def test_simulation_checkpoint_mid_batch_resumes_bitwise(tmp_path, cls, kw):
    from ptncn.data.synthetic import CyclicSymbols
    from ptncn.simulate import Simulation
    task = CyclicSymbols(batch_size=4, length=9, vocab=5, seed=2)

    def fresh():
        return cls(5, hidden=6, optimizer="nesterov", lr=0.1, momentum=0.9, seed=5, **kw)
    full = fresh()
    Simulation(full, task, 3).run()
    ck = tmp_path / "ck.npz"
    part = fresh()
    sim = Simulation(part, task, 3, checkpoint_every=13, checkpoint_path=ck)   # 13: mid-batch

    def stop_after_checkpoint(s):
        if s.step == 13:
            raise KeyboardInterrupt
    sim.on_step = stop_after_checkpoint
    with pytest.raises(KeyboardInterrupt):
        sim.run()
    resumed = Simulation.resume(ck, task)
    assert resumed.position == (1, 4)
    resumed.run()
    for k in full.params:
        np.testing.assert_array_equal(full.params[k], resumed.learner.params[k])


# ---------------------------------------------------------------------------
# through the harness
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("learner,extra", [("rtrl", {}), ("uoro", {}), ("nobacktrack", {}),
                                           ("tbptt", {"k": 5}), ("bptt", {})])
def test_harness_training_on_cyclic_reduces_the_loss(learner, extra):
    from ptncn.harness import evaluate, make_learner, make_task, validate
    from ptncn.simulate import Simulation
    cfg = validate({"name": "t", "seed": 1,
                    "task": {"name": "cyclic", "batch_size": 8, "length": 12, "vocab": 6},
                    "model": {"learner": learner, "hidden": 16, **extra},
                    "optimizer": {"name": "adam", "lr": 0.02},
                    "train": {"batches": 25}})
    task = make_task(cfg)
    model = make_learner(cfg, task.x_dim)
    assert type(model).__name__ == {"rtrl": "RTRL", "uoro": "UORO", "nobacktrack": "NoBackTrack",
                                    "tbptt": "TBPTT", "bptt": "BPTT"}[learner]
    ev = make_task(cfg, "test")
    before = evaluate(model, ev, 3)["loss"]
    res = Simulation(model, task, 25).run()
    after = evaluate(model, ev, 3)["loss"]
    assert after < before - 0.15, (before, after)
    assert np.mean(res.train_loss[-5:]) < np.mean(res.train_loss[:5])


@pytest.mark.parametrize("name", ["rtrl", "uoro", "nobacktrack", "tbptt", "bptt"])
def test_shipped_bit_recall_configs_validate_and_build(name):
    from ptncn.harness import load_config, make_learner, make_task
    cfg = load_config(os.path.join(ROOT, "models", f"bit_recall_{name}.toml"))
    assert cfg["model"]["learner"] == name
    model = make_learner(cfg, make_task(cfg).x_dim)
    assert model.config.hidden == 64 and model.config.out == "sigmoid"
