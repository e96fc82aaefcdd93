"""Sparse attentive backtracking (``learner = "sab"``).

The memory schedule, the sparse weights by hand, SAB without memories against
TBPTT(k_trunc) bit for bit, and one whole update against central finite differences
of the objective of ptncn/baselines/sab.py's docstring, written here as a plain
forward pass; float64.
"""

import numpy as np
import pytest

from ptncn.baselines import lstm, rnn
from ptncn.baselines.bptt import TBPTT
from ptncn.baselines.sab import SAB, sparsify
from fd import central_differences

X, H, B = 4, 3, 3


def _data(T, seed=0):
    rng = np.random.default_rng(seed)
    xs = np.eye(X)[rng.integers(0, X, (T, B))]
    ms = np.ones((T, B, 1))
    ms[T // 2:, 2] = 0.0                  # a row that ends early
    ms[1, 1] = 0.0                        # and one masked step
    return xs, ms


def _model(cell="rnn", **kw):
    kw = {"hidden": H, "cell": cell, "dtype": "float64", "seed": 3, **kw}
    return SAB(X, **kw)


def _run(model, xs, ms, learn=True):
    model.reset(xs.shape[1])
    return np.stack([model.step(x, m, learn=learn).copy() for x, m in zip(xs, ms)])


# ---------------------------------------------------------------------------
# memory and weights
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("k_att, stored", [(1, [0, 1, 2, 3, 4, 5, 6]), (3, [2, 5])])
def test_memory_stores_the_final_state_every_k_att_steps(k_att, stored):
    xs, ms = _data(7)
    model = _model(k_att=k_att, k_top=2)
    model.reset(B)
    hs = []
    for t, (x, m) in enumerate(zip(xs, ms)):
        n_before = len(model.state.memory)
        model.step(x, m)
        hs.append(model.state.h[:, :H].copy())
        np.testing.assert_array_equal(model.quantity("n_mem"), np.full((B, 1), n_before))
    assert model.state.memory_steps == stored
    for mem, t in zip(model.state.memory, stored):
        np.testing.assert_array_equal(mem, hs[t])
    # a masked row holds its state, so its memory is the state it holds
    if 1 in stored:
        np.testing.assert_array_equal(model.state.memory[stored.index(1)][1], hs[0][1])
    model.end_sequence()
    assert model.state.memory == [] and model.state.memory_steps == []
    model.reset(B)
    assert model.state.memory == [] and model.state.tape == []
    model.step(xs[0], ms[0])
    assert model.state.memory_steps == ([0] if k_att == 1 else [])


def test_masked_rows_add_no_summary():
    xs, ms = _data(6)
    model = _model(k_att=1, k_top=2)
    _run(model, xs[:4], ms[:4])
    h = model.state.h.copy()
    m = np.array([[1.0], [0.0], [0.0]])
    model.step(xs[4], m)
    np.testing.assert_array_equal(model.state.h[1:], h[1:])
    assert (model.quantity("att")[1:] == 0).all() and (model.quantity("att")[0] > 0).all()


def test_sparse_weights_by_hand():
    a = np.array([[3.0, 1.0, 2.0, 0.5]])
    w, tau = sparsify(a, 2)
    assert tau.tolist() == [1]                          # the 3rd largest: tau = a[1] = 1
    np.testing.assert_allclose(w, [[2 / 3, 0, 1 / 3, 0]], rtol=1e-6)
    w1, _ = sparsify(a, 1)
    np.testing.assert_allclose(w1, [[1, 0, 0, 0]], rtol=1e-6)
    # at most k_top memories: a softmax over them all
    w, tau = sparsify(a, 4)
    assert tau is None
    np.testing.assert_allclose(w, np.exp(a) / np.exp(a).sum(), rtol=1e-12)


def test_attention_quantity_lists_the_weights_largest_first():
    xs, ms = _data(8)
    model = _model(k_att=1, k_top=2)
    _run(model, xs, ms)
    att = model.quantity("att")
    assert att.shape == (B, 2)
    assert (np.diff(att, axis=1) <= 0).all() and (att[0] > 0).any()
    assert (att.sum(axis=1) <= 1 + 1e-12).all()


# ---------------------------------------------------------------------------
# without memory: TBPTT(k_trunc)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_without_memory_sab_is_tbptt_bitwise(cell):
    T, k = 7, 3
    kw = dict(hidden=H, cell=cell, dtype="float64", seed=5, optimizer="adam", lr=0.05)
    sab = SAB(X, k_trunc=k, k_att=T + 1, **kw)
    tbptt = TBPTT(X, k=k, **kw)
    for seq in range(3):
        xs, ms = _data(T, seed=seq)
        np.testing.assert_array_equal(_run(sab, xs, ms), _run(tbptt, xs, ms))
        sab.end_sequence()
        tbptt.end_sequence()
        assert sab.state.memory == []
    for name, v in tbptt.params.items():
        np.testing.assert_array_equal(sab.params[name], v, err_msg=name)
    assert sab.optimizer.t == tbptt.optimizer.t == 9


# ---------------------------------------------------------------------------
# the whole gradient against finite differences
# ---------------------------------------------------------------------------
def _sparse(a, tau, k_top):
    """The weights from scores ``a`` with the threshold's memory ``tau`` fixed (None: a
    softmax), as defined; the selection comes from the run, not from ``a``."""
    if tau is None:
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    r = np.maximum(a - a[np.arange(len(a)), tau][:, None], 0)
    return r / (r.sum(axis=1, keepdims=True) + 1e-7)


def _forward(cfg, p, xs, ms, fixed=None):
    """A plain forward pass.  Without ``fixed``: the states, weights and thresholds of
    every step.  With ``fixed`` (those of the unperturbed run, and the live and window
    steps and the losses counted): the summed window losses, the state after a step
    that is not live, the memories outside the window steps and those a row does not
    attend taken from the unperturbed run."""
    cell = lstm if cfg.cell == "lstm" else rnn
    s = np.zeros((xs.shape[1], cell.state_size(cfg)))
    mems, states, ws, taus, total = [], [], [], [], 0.0
    for t in range(len(xs)):
        if fixed is not None and t in fixed["losses"] and ms[t].sum() > 0:
            logits = s[:, :H] @ p["W_out"] + p["c"]
            total += (rnn.row_loss(cfg.out, logits, xs[t]) * ms[t][:, 0]).sum() / ms[t].sum()
        s, _ = cell.transition(cfg, p, s, xs[t], ms[t])
        w = tau = None
        if mems:
            M = np.stack(mems, axis=1)
            if fixed is not None:
                const = np.stack(fixed["mems"][:len(mems)], axis=1)
                use = (fixed["w"][t] > 0)[:, :, None] & (t in fixed["window"])
                M = np.where(use, M, const)
            a = np.tanh((s[:, :H] @ p["Wq"])[:, None] + M @ p["Wk"] + p["b_att"]) @ p["v"]
            if fixed is None:
                tau = np.argsort(-a, axis=1)[:, cfg.k_top] if len(mems) > cfg.k_top else None
            else:
                tau = fixed["tau"][t]
            w = _sparse(a, tau, cfg.k_top)
            s = s.copy()
            s[:, :H] += ms[t] * np.einsum("bn,bnh->bh", w, M)
        if fixed is not None and t not in fixed["live"]:
            s = fixed["states"][t]
        states.append(s)
        ws.append(w)
        taus.append(tau)
        if (t + 1) % cfg.k_att == 0:
            mems.append(s[:, :H])
    if fixed is None:
        return states, ws, taus
    return total


def _live(cfg, ws, ms, t_end, p):
    """The window and live steps of the update after step ``t_end`` (``p`` steps since
    the previous one), from the definition."""
    window = set(range(max(0, t_end - p), t_end))
    stored = [t for t in range(t_end) if (t + 1) % cfg.k_att == 0]
    live = set(window)
    for t in window:
        if ws[t] is not None:
            for i in np.flatnonzero(((ws[t] > 0) & (ms[t] > 0)).any(axis=0)):
                live |= set(range(max(0, stored[i] - cfg.k_trunc + 1), stored[i] + 1))
    return window, live


# data seeds where, in the sparse case, a row's threshold memory is attended by another
# row (3, 7), or a memory only the masked row would attend is next to the window (27)
@pytest.mark.parametrize("cell, seed", [("rnn", 3), ("lstm", 7), ("rnn", 27)])
@pytest.mark.parametrize("T", [12, 13])       # the last update inside, or at end_sequence
@pytest.mark.parametrize("k_top", [2, 3])     # the window's weights sparse, or a softmax
def test_one_update_is_the_gradient_of_its_objective(cell, seed, T, k_top):
    xs, ms = _data(T, seed=seed)
    kw = dict(k_trunc=2, k_att=3, k_top=k_top, att_hidden=4, out="softmax")
    model = _model(cell, optimizer="sgd", lr=0.0, clip=0.0, **kw)   # lr 0: params fixed
    p = {k: v.copy() for k, v in model.params.items()}
    p["b_att"] += 0.3
    p["b"] += np.random.default_rng(7).standard_normal(p["b"].shape) * 0.3
    for k in ("b_att", "b"):
        model.params[k] = p[k]
    _run(model, xs, ms)
    model.end_sequence()
    grads = model.updates
    assert set(grads) == set(p)

    cfg = model.config
    states, ws, taus = _forward(cfg, p, xs, ms)
    t_end, pend = (11, 2) if T == 12 else (12, 1)
    window, live = _live(cfg, ws, ms, t_end, pend)
    # memories are attended (sparsely when k_top = 2), the backtracks reach outside
    # the window and some steps are cut
    assert all((taus[t] is not None) == (k_top == 2) for t in window)
    assert min(live) < min(window) and set(range(t_end)) - live
    fixed = {"states": states, "w": ws, "tau": taus, "live": live, "window": window,
             "losses": set(range(t_end - pend + 1, t_end + 1)),
             "mems": [states[t][:, :H] for t in range(T) if (t + 1) % cfg.k_att == 0]}
    fds = central_differences(lambda q: _forward(cfg, q, xs, ms, fixed), p)
    for k, fd in fds.items():
        assert np.abs(fd).max() > 1e-6, k
        np.testing.assert_allclose(grads[k], fd, rtol=1e-6, atol=1e-9, err_msg=k)


# ---------------------------------------------------------------------------
# options, save/load, learning
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["k_trunc", "k_att", "k_top", "att_hidden"])
@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3"])
def test_bad_option_is_one_value_error_naming_it(key, bad):
    with pytest.raises(ValueError, match=key):
        SAB(X, hidden=H, **{key: bad})


def test_a_checkpoint_with_memories_and_tape_resumes_bitwise(tmp_path):
    from ptncn.learner import load_learner
    xs, ms = _data(12, seed=4)
    a = _model("lstm", k_trunc=4, k_att=2, k_top=1)
    a.reset(B)
    for x, m in zip(xs[:7], ms[:7]):
        a.step(x, m)
    assert a.state.tape and len(a.state.memory) == 3
    a.save(tmp_path / "c.npz", include_state=True)
    b = load_learner(tmp_path / "c.npz")
    for x, m in zip(xs[7:], ms[7:]):
        np.testing.assert_array_equal(a.step(x, m), b.step(x, m))
    a.end_sequence()
    b.end_sequence()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


def test_sab_learns_bit_recall_beyond_its_truncation():
    """Bits recalled n + 1 = 4 steps after they were read, with k_trunc = 2: attending
    the stored states reaches them, TBPTT(2) with the same seed does much worse."""
    from ptncn.data import BitRecall
    from ptncn.data.bitrecall import bit_accuracy

    def train(model, task):
        for b in range(150):
            xs, ms, _ = task.batch(b)
            _run(model, xs, ms)
            model.end_sequence()
        accs = []
        for b in range(1000, 1008):
            xs, ms, sc = task.batch(b)
            accs.append(bit_accuracy(_run(model, xs, ms, learn=False), xs, sc))
            model.end_sequence(learn=False)
        return float(np.mean(accs))

    task = BitRecall(n_bits=3, batch_size=16, seed=0)
    kw = dict(hidden=16, out="sigmoid", seed=0, optimizer="adam", lr=0.01)
    acc = train(SAB(3, k_trunc=2, k_att=1, k_top=2, **kw), task)
    base = train(TBPTT(3, k=2, **kw), task)
    assert acc > 0.85 and acc > base + 0.1, (acc, base)
