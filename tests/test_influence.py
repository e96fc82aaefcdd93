"""Influence balancing (UORO paper): unbiased online gradients converge, short TBPTT does not."""

import numpy as np
import pytest

from ptncn.baselines.influence import InfluenceBalancing, run

TASK = dict(n=10, n_minus=6)
STEPS, LR = 6000, 1e-4


def test_the_task_has_opposite_short_and_long_term_influence():
    task = InfluenceBalancing(**TASK)
    assert task.kappa == pytest.approx(-4.0)                 # 2 * (n_plus - n_minus)
    assert task.theta_star == pytest.approx(-0.25)
    for k in (1, 2, 5, 10):
        assert task.truncated_influence(k) > 0               # what short truncations see
        assert task.window_influence(k) > 0
    assert task.truncated_influence(200) == pytest.approx(task.kappa)


def _tail(losses, n=500):
    return float(np.mean(losses[-n:]))


@pytest.mark.parametrize("learner", ["rtrl", "uoro", "nobacktrack"])
def test_unbiased_online_gradients_reach_the_minimum(learner):
    # initial loss 0.5 (theta = 0), minimum 0: require the last 500 steps' mean below 1e-3
    losses = run(InfluenceBalancing(**TASK), learner, STEPS, LR, seed=0)
    assert losses[0] == pytest.approx(0.5)
    assert _tail(losses) < 1e-3, _tail(losses)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_short_truncation_diverges(k):
    # same lr and steps: TBPTT(k) ends with a loss above 1 (twice the initial 0.5), growing
    losses = run(InfluenceBalancing(**TASK), "tbptt", STEPS, LR, k=k)
    assert _tail(losses) > 1.0, _tail(losses)
    assert _tail(losses) > 10 * np.mean(losses[1000:1500])
