"""The BLAS thread tuner: chooses from measured step times, reacts to contention."""

import numpy as np
import pytest

from ptncn import threads
from ptncn.threads import ThreadTuner, candidates


class Machine:
    """A fake machine: seconds per step by thread count, a busy neighbour or not,
    and a clock that advances by each step's time."""

    def __init__(self, quiet: dict, busy: dict):
        self.quiet, self.busy, self.contended = quiet, busy, False
        self.now, self.threads, self.history = 0.0, 1, []

    def apply(self, n):
        self.threads = n

    def clock(self):
        return self.now

    def run(self, tuner, steps, key="k"):
        for _ in range(steps):
            dt = (self.busy if self.contended else self.quiet)[self.threads]
            self.now += dt
            self.history.append(self.threads)
            tuner.step_done(dt, key)


def tuner_on(m, **kw):
    kw.setdefault("settle", 0.0)
    return ThreadTuner((1, 2), m.apply, clock=m.clock, **kw)


def test_candidates_are_one_half_and_all_cores():
    assert candidates(1) == (1,)
    assert candidates(2) == (1, 2)
    assert candidates(16) == (1, 8, 16)


def test_keeps_two_threads_only_where_they_pay():
    m = Machine(quiet={1: 0.010, 2: 0.006}, busy={1: 0.010, 2: 0.060})
    t = tuner_on(m)
    m.run(t, 30)
    assert m.threads == 2 and m.history[-10:] == [2] * 10
    m2 = Machine(quiet={1: 0.010, 2: 0.0095}, busy={})      # 5% faster: not worth it
    t2 = tuner_on(m2)
    m2.run(t2, 30)
    assert m2.threads == 1 and m2.history[-10:] == [1] * 10


def test_contention_moves_to_one_thread_within_a_few_steps():
    m = Machine(quiet={1: 0.010, 2: 0.006}, busy={1: 0.010, 2: 0.060})
    t = tuner_on(m)
    m.run(t, 30)
    assert m.threads == 2
    m.contended = True
    m.history.clear()
    m.run(t, 100)
    slow = sum(1 for n in m.history if n == 2)
    assert m.threads == 1
    assert slow <= 2 * (t.probe + t.warmup)       # noticed, probed, left
    # while contended, rechecks come less and less often: ever fewer slow steps
    m.history.clear()
    m.run(t, 20000)
    assert m.threads == 1
    assert sum(1 for n in m.history if n == 2) <= 8 * (t.probe + t.warmup)


def test_after_lowering_the_count_sampling_waits_for_spinning_threads_to_stop():
    m = Machine(quiet={1: 0.010, 2: 0.006}, busy={1: 0.010, 2: 0.060})
    t = tuner_on(m, settle=0.2)
    m.run(t, 30)
    assert m.threads == 2
    m.contended = True
    m.run(t, 10)                      # noticed: probing again, 2 threads first, then 1
    while m.threads != 1:
        m.run(t, 1)
    ctx, lowered = t.contexts["k"], m.now
    m.run(t, 15)                      # 0.15 s of steps: all within the settling time
    assert 1 not in ctx.results and ctx.samples == []
    m.run(t, 30)
    assert ctx.chosen == 1 and ctx.results[1] == 0.010 and m.now - lowered > 0.2


def test_recheck_interval_doubles_while_the_choice_holds():
    m = Machine(quiet={1: 0.010, 2: 0.006}, busy={})
    t = tuner_on(m, recheck=1.0, max_recheck=4.0)
    m.run(t, 20)
    ctx = t.contexts["k"]
    assert ctx.chosen == 2 and ctx.interval == 1.0
    intervals = []
    for _ in range(6):
        before = ctx.next_check
        m.run(t, int((before - m.now) / 0.006) + 20)
        intervals.append(ctx.interval)
    assert intervals[:3] == [2.0, 4.0, 4.0] and ctx.chosen == 2


def test_each_kind_of_step_has_its_own_choice():
    m = Machine(quiet={1: 0.010, 2: 0.006}, busy={})
    small = {1: 0.001, 2: 0.003}
    t = tuner_on(m)
    m.run(t, 30, key="big")
    for _ in range(30):                       # a small model: one thread is faster
        m.now += small[m.threads]
        t.step_done(small[m.threads], "small")
    assert t.contexts["big"].chosen == 2 and t.contexts["small"].chosen == 1
    assert m.threads == 1
    m.run(t, 1, key="big")                    # back to the big one: its count again
    assert m.threads == 2


def test_set_threads_auto_installs_a_tuner_only_when_asked(monkeypatch):
    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    try:
        c = threads.set_threads("auto")
        assert threads._TUNER and "tuned from step times" in c.reason
        assert "to start with" in threads.describe(c)
        threads.set_threads(1)
        assert not threads._TUNER                # a fixed count: no tuner
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
        threads.set_threads(None)
        assert not threads._TUNER                # the user's variable stands
    finally:
        threads.reset_threads()
    assert not threads._TUNER


def test_the_simulation_loop_reports_every_step(monkeypatch):
    from ptncn import PTNCN
    from ptncn.simulate import run_batch

    seen = []

    class Spy:
        def step_done(self, seconds, key):
            seen.append((seconds, key))
    monkeypatch.setattr(threads, "_TUNER", [Spy()])
    model = PTNCN(5, (4,), seed=0)
    x = np.eye(5, dtype=np.float32)[np.zeros((6, 3), int)]
    run_batch(model, x, np.ones((6, 3, 1), np.float32))
    run_batch(model, x, np.ones((6, 3, 1), np.float32), learn=False)
    assert len(seen) == 12 and all(s > 0 for s, _ in seen)
    assert {k for _, k in seen} == {(id(model), True, 3), (id(model), False, 3)}
