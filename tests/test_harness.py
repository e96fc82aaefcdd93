"""The TOML harness: config validation, train/eval/resume through the API and CLI."""

import json
import os

import numpy as np
import pytest

from ptncn.cli import main
from ptncn.harness import ConfigError, evaluate, load_config, make_learner, make_task, train, \
    validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")

BASE = {"name": "t", "seed": 3,
        "task": {"name": "cyclic", "batch_size": 4, "length": 8, "vocab": 6},
        "model": {"hidden": [12, 10]},
        "optimizer": {"name": "sgd", "lr": 0.2},
        "train": {"batches": 6, "eval_every": 3, "eval_batches": 2, "checkpoint_every": 10},
        "record": {"traces": ["loss", "z1", "norm_dW1"], "rows": [0]}}


@pytest.mark.parametrize("path", sorted(f for f in os.listdir(MODELS) if f.endswith(".toml")))
def test_every_shipped_config_validates(path):
    from ptncn.learner import REGISTRY
    if path.startswith("zeroshot_"):          # protocol configs naming two task configs
        from ptncn.zeroshot import load_zeroshot_config
        zs = load_zeroshot_config(os.path.join(MODELS, path))
        assert zs["configs"] and all({"a", "b"} <= set(p) for p in zs["configs"].values())
        return
    cfg = load_config(os.path.join(MODELS, path))
    assert cfg["name"] and cfg["model"]["learner"] in REGISTRY


@pytest.mark.parametrize("change,match", [
    ({"bogus": 1}, r"unknown key 'bogus'; allowed: description, model"),
    ({"task": {"name": "cyclic", "lenght": 3}}, r"unknown key task.'lenght'; allowed: .*length"),
    ({"task": {"name": "mnist-ish"}}, r"unknown task 'mnist-ish'; allowed: ptb_char"),
    ({"model": {"hiden": [3]}}, r"unknown key model.'hiden'"),
    ({"model": {"learner": "lstm"}}, r"allowed ptncn"),
    ({"optimizer": {"name": "sgd", "lr": "fast"}}, r"\[optimizer\] lr: expected number > 0, got 'fast'"),
    ({"model": {"hidden": [12, "a"]}}, r"\[model\] hidden: expected list of int, got \[12, 'a'\]"),
    ({"model": {"beta": "big"}}, r"\[model\] beta: expected int or float, got 'big'"),
    ({"model": {"learner": "tbptt", "hidden": [4]}}, r"\[model\] hidden: expected int, got \[4\]"),
    ({"model": {"learner": "tbptt", "k": 2.5}}, r"\[model\] k: expected int, got 2.5"),
    ({"train": {"batches": 2.5}}, r"\[train\] batches: expected int >= 1, got 2.5"),
    ({"train": {"batches": True}}, r"\[train\] batches: expected int >= 1, got True"),
])
def test_bad_configs_name_the_key(change, match):
    with pytest.raises(ConfigError, match=match):
        validate({**BASE, **change})


def test_bad_toml_and_overrides(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    cfg = load_config(os.path.join(MODELS, "cyclic.toml"), ["train.batches=7", "model.act='sign'"])
    assert cfg["train"]["batches"] == 7 and cfg["model"]["act"] == "sign"


def test_train_writes_run_folder_and_metrics(tmp_path):
    cfg = validate(BASE)
    m = train(cfg, out_dir=str(tmp_path), quiet=True, plots=False, log=lambda s: None)
    for f in ("run.h5", "best.npz", "final.npz", "config.json", "metrics.json"):
        assert (tmp_path / f).exists(), f
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["final"]["bpc"] == pytest.approx(m["final"]["bpc"])
    assert len(saved["history"]) == 2 and saved["train"]["steps"] == 48
    assert saved["split"] == "valid" and saved["test"]["split"] == "test"
    # where training stood at each evaluation: the scored training tokens so far
    task = make_task(cfg, "train")
    per_batch = [float(task.batch(b).score.sum()) for b in range(6)]
    assert [h["tokens"] for h in saved["history"]] == [sum(per_batch[:3]), sum(per_batch)]


def test_evaluate_freezes_weights_and_matches_uniform_for_zero_output():
    cfg = validate(BASE)
    task = make_task(cfg, "test")
    learner = make_learner(cfg, task.x_dim)
    learner.params["W1"] = np.zeros_like(learner.params["W1"])   # softmax(0) = uniform
    before = learner.params.copy()
    m = evaluate(learner, task, 3)
    assert m["bpc"] == pytest.approx(np.log2(6), rel=1e-6)
    for k in before:
        np.testing.assert_array_equal(learner.params[k], before[k])


def test_interrupted_train_resumes_bitwise(tmp_path):
    cfg = validate({**BASE, "train": {"batches": 6, "checkpoint_every": 20, "eval_every": 2,
                                      "eval_batches": 1}})
    a = tmp_path / "a"
    train(cfg, out_dir=str(a), quiet=True, plots=False, log=lambda s: None)
    b = tmp_path / "b"
    cfg_short = validate({**BASE, "train": {"batches": 6, "checkpoint_every": 20,
                                            "eval_every": 2, "eval_batches": 1,
                                            "time_budget_s": 1e-9}})
    train(cfg_short, out_dir=str(b), quiet=True, plots=False, log=lambda s: None)  # stops early
    assert (b / "run.ckpt.npz").exists()
    assert main(["resume", str(b), "--quiet", "--set", "train.time_budget_s=0"]) == 0
    from ptncn import load
    fa, fb = load(a / "final.npz"), load(b / "final.npz")
    assert fb.steps_taken > 8
    ha = json.loads((a / "metrics.json").read_text())["history"]
    hb = json.loads((b / "metrics.json").read_text())["history"]
    assert len(ha) == 3 and [h["tokens"] for h in hb] == [h["tokens"] for h in ha]
    for k in fa.params:
        np.testing.assert_array_equal(fa.params[k], fb.params[k])


def test_cli_train_and_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", os.path.join(MODELS, "cyclic.toml"), "--out", str(out), "--quiet",
                 "--no-plots", "--set", "train.batches=4", "--set", "train.eval_every=0"]) == 0
    capsys.readouterr()
    assert main(["eval", os.path.join(MODELS, "cyclic.toml"), "--model", str(out / "best.npz"),
                 "--batches", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "valid" and 0 < res["bpc"] < 10


def test_cli_bad_config_is_one_clear_error(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('name = "x"\n[task]\nname = "cyclic"\nbatchsize = 3\n[model]\n')
    assert main(["train", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "batchsize" in err and "Traceback" not in err


def test_tasks_declare_split_metrics_and_baselines():
    from ptncn.data.bitrecall import BitRecall, bit_accuracy
    from ptncn.harness import trivial_baselines
    task = BitRecall(n_bits=3, batch_size=4, seed=1, n_batches=2)
    assert task.default_eval_split == "valid"
    learner = make_learner(validate({**BASE, "task": {"name": "bit_recall", "n_bits": 3},
                                     "model": {"hidden": [6, 5], "out": "sigmoid"}}), 3)
    m = evaluate(learner, task)
    hits = n = 0.0
    for i in range(2):                      # by hand: the recalled bits' predictions
        x, mask, sc = task.batch(i)
        learner.reset(4)
        preds = np.stack([learner.step(x[t], mask[t], learn=False) for t in range(len(x))])
        k = sc.sum()
        hits, n = hits + bit_accuracy(preds, x, sc) * k, n + k
    assert m["bit_accuracy"] == pytest.approx(hits / n)
    assert set(m) == {"batches", "scored", "loss", "bce_per_frame", "mse_per_frame",
                      "bit_accuracy"}
    assert trivial_baselines(task, task) == {}
    cyc = make_task(validate(BASE), "test")
    uni = trivial_baselines(make_task(validate(BASE), "train"), cyc, 2)["unigram"]
    assert uni["bpc"] == pytest.approx(uni["loss"] / np.log(2)) and uni["loss"] > 0


def test_time_budget_counts_training_not_periodic_evaluations(tmp_path, monkeypatch):
    """Each evaluation's time is left out of train_seconds, the clock of the budget: a
    run whose evaluations alone outlast the budget still trains to the end."""
    import time as _time

    import ptncn.harness as harness
    real = harness.evaluate

    def slow(*a, **kw):
        _time.sleep(0.5)
        return real(*a, **kw)

    monkeypatch.setattr(harness, "evaluate", slow)
    cfg = validate({**BASE, "model": {"learner": "tbptt", "hidden": 8, "k": 2},
                    "train": {"batches": 8, "eval_every": 1, "eval_batches": 1,
                              "time_budget_s": 2.0},
                    "record": {"traces": ["loss"]}})
    m = train(cfg, out_dir=str(tmp_path), quiet=True, plots=False, log=lambda s: None)
    h = m["history"]
    for i, e in enumerate(h):
        assert e["seconds"] - e["train_seconds"] >= 0.5 * (i + 1)
    assert len(h) == 8 and h[-1]["seconds"] > 2.0    # wall time alone would have stopped it
