"""Honest splits: selection (periodic evaluation, best.npz) on validation, test read only
after training and selection are over, and validation data distinct from train and test."""

import json
import math

import numpy as np
import pytest

from ptncn import harness
from ptncn.data.bouncing import BouncingDigits, glyph_pool
from ptncn.data.files import DataError, find
from ptncn.harness import evaluate, make_task, train, validate
from ptncn.learner import load_learner


@pytest.fixture
def mnist():
    try:
        find("mnist.npz")
    except DataError as e:
        pytest.skip(f"mnist.npz not available (set PTNCN_DATA to the data directory): {e}")


def _bouncing_cfg(**train_kw):
    return validate({
        "name": "split_check", "seed": 5,
        "task": {"name": "bouncing_mnist", "batch_size": 2, "canvas": 8, "glyph": 7,
                 "digits": 1, "frames": 4},
        "model": {"hidden": [8], "out": "sigmoid"},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {"batches": 6, "eval_every": 2, "eval_batches": 2, "final_eval_batches": 2,
                  "checkpoint_every": 100, **train_kw},
        "record": {"traces": ["loss"]}})


# ------------------------------------------------------------------ the task

def test_bouncing_valid_split_is_heldout_training_pool_sequences(mnist):
    kw = dict(batch_size=8, canvas=32, digits=2, frames=6, seed=4)
    tr, va, te = (BouncingDigits(split=s, **kw) for s in ("train", "valid", "test"))
    assert BouncingDigits.default_eval_split == "valid"
    assert va.pool is tr.pool or np.array_equal(va.pool, tr.pool)   # the training glyphs
    assert np.array_equal(va.pool, glyph_pool("mnist", "train"))
    assert va.n_sequences == 1000 and va.n_batches == math.ceil(1000 / 8)
    assert va.identity()["split"] == "valid" and va.identity()["glyph_pool"] == "train"
    assert "glyph_pool" not in tr.identity() and "glyph_pool" not in te.identity()
    for i in range(3):
        xv = va.batch(i).x
        assert np.array_equal(xv, va.batch(i).x)                    # deterministic
        for j in range(3):
            assert not np.array_equal(xv, tr.batch(j).x)
            assert not np.array_equal(xv, te.batch(j).x)
        assert not np.array_equal(va.trajectories(i), tr.trajectories(i))
        assert not np.array_equal(va.trajectories(i), te.trajectories(i))
    with pytest.raises(ValueError, match="valid"):
        BouncingDigits(split="validation", **kw)


def test_held_out_streams_of_tasks_without_splits_differ():
    base = {"name": "t", "seed": 3, "model": {"hidden": [4]},
            "optimizer": {"name": "sgd", "lr": 0.1}, "train": {"batches": 1},
            "record": {"traces": ["loss"]}}
    for task in ({"name": "bit_recall", "n_bits": 3, "batch_size": 4},
                 {"name": "cyclic", "batch_size": 4, "length": 8, "vocab": 6}):
        cfg = validate({**base, "task": task})
        xs = {s: make_task(cfg, s).batch(0).x for s in ("train", "valid", "test")}
        assert not np.array_equal(xs["valid"], xs["test"]), task["name"]
        assert not np.array_equal(xs["valid"], xs["train"]), task["name"]
        assert not np.array_equal(xs["test"], xs["train"]), task["name"]
    with pytest.raises(harness.ConfigError, match="split"):
        make_task(validate({**base, "task": {"name": "bit_recall"}}), "dev")


# ------------------------------------------------------------ the harness

def _count_reads(monkeypatch):
    """Log every BouncingDigits.batch call as its split, and 'END' once training ends."""
    events = []
    real_batch = BouncingDigits.batch
    real_run = harness._run_to_checkpoint

    def batch(self, i):
        events.append(self.split)
        return real_batch(self, i)

    def run(*a, **kw):
        res = real_run(*a, **kw)
        events.append("END")
        return res
    monkeypatch.setattr(BouncingDigits, "batch", batch)
    monkeypatch.setattr(harness, "_run_to_checkpoint", run)
    return events


def test_bouncing_selects_on_valid_and_reads_test_only_at_the_end(mnist, tmp_path,
                                                                   monkeypatch):
    events = _count_reads(monkeypatch)
    cfg = _bouncing_cfg()
    m = train(cfg, str(tmp_path), plots=False, quiet=True, log=lambda s: None)
    # test data is never read before training has ended and the last validation read
    assert "test" in events
    first_test = events.index("test")
    assert first_test > events.index("END")
    assert "valid" not in events[first_test:]
    assert events.count("valid") >= 3 * 2 * 1        # 3 periodic evaluations x 2 batches
    # selection on validation
    assert m["split"] == "valid" and m["eval_data"]["split"] == "valid"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "valid" and saved["test"]["data"]["split"] == "test"
    valid, test = make_task(cfg, "valid"), make_task(cfg, "test")
    candidates = m["history"] + [m["final"]]
    assert m["best"]["loss"] == pytest.approx(min(c["loss"] for c in candidates))
    best = load_learner(str(tmp_path / "best.npz"))
    assert evaluate(best, valid, 2)["loss"] == pytest.approx(m["best"]["loss"])
    # and reported on test, for the final and the best model
    final = load_learner(str(tmp_path / "final.npz"))
    assert m["test"]["final"]["loss"] == pytest.approx(evaluate(final, test, 2)["loss"])
    assert m["test"]["best"]["loss"] == pytest.approx(evaluate(best, test, 2)["loss"])
    assert set(m["test"]["baselines"]) == {"copy_last_frame", "mean_frame"}


def test_best_follows_valid_not_test(mnist, tmp_path, monkeypatch):
    """With scripted scores where valid and test disagree, best.npz is the model that
    is best on valid (and the test split is scored only at the end)."""
    events = _count_reads(monkeypatch)
    real_evaluate = harness.evaluate
    script = {"valid": iter([3.0, 1.0, 2.0, 5.0]), "test": iter([9.0, 9.0])}
    saved = {}

    def evaluate_scripted(learner, task, max_batches=0, *args, **kw):
        m = real_evaluate(learner, task, max_batches, *args, **kw)
        m["loss"] = next(script[task.split])
        if task.split == "valid":
            saved[m["loss"]] = {k: v.copy() for k, v in learner.params.items()}
        return m
    monkeypatch.setattr(harness, "evaluate", evaluate_scripted)
    m = train(_bouncing_cfg(), str(tmp_path), plots=False, quiet=True, log=lambda s: None)
    assert [h["loss"] for h in m["history"]] == [3.0, 1.0, 2.0]
    assert m["best"]["loss"] == 1.0 and m["best"]["batch"] == 4
    best = load_learner(str(tmp_path / "best.npz"))
    for k, v in saved[1.0].items():
        np.testing.assert_array_equal(best.params[k], v)
    assert m["final"]["loss"] == 5.0 and m["test"]["final"]["loss"] == 9.0
    assert events.index("test") > events.index("END")
