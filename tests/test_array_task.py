"""ArrayTask (your own data as a task), `[task] name = "array"` / "module:Class" configs,
and the example of docs/tasks.md."""

import importlib.util
import json
import pathlib
import re
import sys

import numpy as np
import pytest

from ptncn import Simulation
from ptncn.cli import main
from ptncn.data import ArrayTask
from ptncn.harness import ConfigError, evaluate, load_config, make_task, validate
from ptncn.learner import REGISTRY, learner_class

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tasks.md"
X, N, T = 5, 30, 8

from test_learner_contract import EXTRAS, SMALL  # noqa: E402  (small settings per learner)


def onehot_data(n=N, t=T, seed=0, ragged=True):
    rng = np.random.default_rng(seed)
    x = np.eye(X, dtype=np.float32)[rng.integers(0, X, (n, t))]
    mask = np.ones((n, t), np.float32)
    if ragged:
        mask = (np.arange(t) < rng.integers(2, t + 1, size=(n, 1))).astype(np.float32)
    return x, mask


def test_splits_disjoint_cover_and_deterministic():
    x, m = onehot_data()
    tasks = {s: ArrayTask(x, m, batch_size=4, split=s, seed=7) for s in ("train", "valid", "test")}
    idx = {s: set(t.indices.tolist()) for s, t in tasks.items()}
    assert not idx["train"] & idx["valid"] and not idx["train"] & idx["test"] \
        and not idx["valid"] & idx["test"]
    assert idx["train"] | idx["valid"] | idx["test"] == set(range(N))
    assert len(idx["valid"]) == len(idx["test"]) == 3
    again = ArrayTask(x, m, batch_size=4, split="valid", seed=7)
    assert again.indices.tolist() == tasks["valid"].indices.tolist()
    other = ArrayTask(x, m, batch_size=4, split="valid", seed=8)
    assert other.indices.tolist() != tasks["valid"].indices.tolist()
    # one sha256 for the data, whatever the split
    assert len({t.identity()["sha256"] for t in tasks.values()}) == 1


def test_batches_shapes_epochs_and_padding():
    x, m = onehot_data()
    tr = ArrayTask(x, m, batch_size=4, seed=1)
    assert tr.n_batches == 24 // 4 and tr.x_dim == X and tr.kind == "onehot"
    b = tr.batch(0)
    assert b.x.dtype == np.float32 and b.x.ndim == 3 and b.x.shape[1:] == (4, X)
    assert b.mask.shape == (*b.x.shape[:2], 1) and (b.score[0] == 0).all()
    np.testing.assert_array_equal(b.score[1:], b.mask[1:])
    assert (b.x * (1 - b.mask) == 0).all()                       # padding zeroed
    for i in (0, 3, 7):                                           # deterministic in i
        np.testing.assert_array_equal(tr.batch(i).x, ArrayTask(x, m, batch_size=4, seed=1)
                                      .batch(i).x)
    # one epoch holds every training sequence once; the next is another order
    ep0 = [tuple(map(tuple, tr.batch(i).x.argmax(2).T)) for i in range(tr.n_batches)]
    ep1 = [tuple(map(tuple, tr.batch(tr.n_batches + i).x.argmax(2).T))
           for i in range(tr.n_batches)]
    assert ep0 != ep1
    va = ArrayTask(x, m, batch_size=2, split="valid", seed=1)
    assert va.n_batches == 2 and sum(va.batch(i).x.shape[1] for i in range(2)) == 3


def test_binary_kind_and_scoring():
    rng = np.random.default_rng(0)
    x = (rng.random((20, 6, 4)) < 0.3).astype(np.float64)
    t = ArrayTask(x, kind="binary", batch_size=5)
    assert t.kind == "binary" and "bce_per_frame" in t.loss_metrics(1.0)
    b = t.batch(0)
    assert "mse_per_frame" in t.step_metrics(np.full(b.x[1].shape, 0.5), b.x[1], b.score[1])


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.skipif(importlib.util.find_spec(EXTRAS[n]) is None,
                                              reason=f"{n} needs {EXTRAS[n]}")]
                 if n in EXTRAS else []) for n in REGISTRY])
def test_every_learner_runs_on_an_array_task(name):
    x, m = onehot_data(n=20, t=6)
    task = ArrayTask(x, m, batch_size=4, seed=0)
    learner = learner_class(name)(X, seed=0, **SMALL.get(name, {}))
    res = Simulation(learner, task, n_batches=2, progress=False).run()
    assert res.batches == 2 and res.steps > 0
    m_eval = evaluate(learner, ArrayTask(x, m, batch_size=4, seed=0, split="valid"))
    assert np.isfinite(m_eval["loss"]) and "bpc" in m_eval


def test_checkpoint_refuses_other_data(tmp_path):
    from ptncn import PTNCN
    x, m = onehot_data()
    task = ArrayTask(x, m, batch_size=4)
    ck = tmp_path / "c.npz"
    sim = Simulation(PTNCN(x_dim=X, hidden=(4,), seed=0), task, 2, checkpoint_every=3,
                     checkpoint_path=ck, progress=False)
    sim.run()
    sim.save_checkpoint()
    x2 = x.copy()
    x2[0, 0] = np.roll(x2[0, 0], 1)
    with pytest.raises(ValueError):
        Simulation.resume(ck, ArrayTask(x2, m, batch_size=4), 4)
    Simulation.resume(ck, ArrayTask(x, m, batch_size=4), 4)      # the same data resumes


@pytest.mark.parametrize("kw,words", [
    (dict(x=np.zeros((4, 5))), "shape"),
    (dict(x=np.zeros((4, 1, 3))), "2 steps"),
    (dict(x=np.array([[["a"]]])), "dtype"),
    (dict(x=np.full((10, 4, 3), np.nan)), "NaN"),
    (dict(x=np.ones((10, 4, 3))), "one-hot"),
    (dict(x=np.full((10, 4, 3), 0.5), kind="binary", valid_fraction=0.2), None),
    (dict(x=np.full((10, 4, 3), 2.0), kind="binary"), "[0, 1]"),
    (dict(mask=np.full((10, 4), 0.5)), "0/1"),
    (dict(mask=np.ones((10, 5))), "mask must have shape"),
    (dict(mask=np.ones((10, 4), dtype=object)), "dtype"),
    (dict(valid_fraction=0.01), "valid split empty"),
    (dict(test_fraction=0.0), "test split empty"),
    (dict(valid_fraction=1.0), "out of range"),
    (dict(valid_fraction=0.5, test_fraction=0.5), "train split"),
    (dict(valid_fraction=0.45, test_fraction=0.55), "train split"),
    (dict(kind="gaussian"), "kind"),
    (dict(split="dev"), "split"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_input_is_one_value_error(kw, words):
    args = dict(x=np.eye(3, dtype=np.float32)[np.zeros((10, 4), int)], kind="onehot")
    args.update(kw)
    x = args.pop("x")
    if words is None:                                    # a valid case among the bad
        ArrayTask(x, **args)
        return
    with pytest.raises(ValueError) as exc:
        ArrayTask(x, **args)
    msg = str(exc.value)
    if words == "out of range":
        assert "[0, 1)" in msg
    else:
        assert words in msg, msg


def test_from_file(tmp_path):
    x, m = onehot_data()
    np.savez(tmp_path / "d.npz", x=x, mask=m)
    a = ArrayTask.from_file(tmp_path / "d.npz", batch_size=4)
    assert a.identity() == ArrayTask(x, m, batch_size=4).identity()
    np.savez(tmp_path / "e.npz", seqs=x)
    assert ArrayTask.from_file(tmp_path / "e.npz", key="seqs").n_sequences == N
    with pytest.raises(ValueError, match="no array 'x'.*seqs"):
        ArrayTask.from_file(tmp_path / "e.npz")
    with pytest.raises(ValueError, match="not found"):
        ArrayTask.from_file(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        ArrayTask.from_file(tmp_path / "junk.npz")
    # relative paths: the current directory, then data_dir
    assert ArrayTask.from_file("d.npz", data_dir=str(tmp_path)).n_sequences == N


CONFIG = """
name = "mine"
seed = 3
[task]
name = "array"
path = "data.npz"
batch_size = 4
valid_fraction = 0.2
[model]
learner = "ptncn"
hidden = [6]
[train]
batches = 3
"""


def test_cli_trains_from_an_array_config(tmp_path, monkeypatch, capsys):
    x, m = onehot_data()
    np.savez(tmp_path / "data.npz", x=x, mask=m)
    (tmp_path / "c.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "c.toml", "--out", "out", "--quiet", "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"]["task"] == "array" and metrics["split"] == "valid"
    assert metrics["eval_data"]["split_sequences"] == 6
    assert metrics["test"]["data"]["split"] == "test"
    assert np.isfinite(metrics["final"]["loss"])
    capsys.readouterr()
    # a config's unknown key and a missing path are errors naming them
    (tmp_path / "bad.toml").write_text(CONFIG.replace("batch_size = 4", "batchsize = 4"))
    assert main(["train", "bad.toml", "--out", "o2"]) == 2
    assert "batchsize" in capsys.readouterr().err
    cfg = load_config(tmp_path / "c.toml")
    del cfg["task"]["path"]
    with pytest.raises(ConfigError, match="path"):
        make_task(cfg)
    cfg["task"]["path"] = "nowhere.npz"
    with pytest.raises(ValueError, match="nowhere.npz"):
        make_task(cfg)


USER_TASK = '''
import numpy as np
from ptncn.data.base import Batch, OneHotTask, default_score

class Repeat(OneHotTask):
    n_batches = 4
    def __init__(self, batch_size: int = 3, vocab: int = 4, seed: int = 0, split: str = "train"):
        self.batch_size, self.x_dim, self.seed, self.split = batch_size, vocab, seed, split
    def batch(self, i):
        idx = np.random.default_rng([self.seed, i]).integers(0, self.x_dim, self.batch_size)
        x = np.repeat(np.eye(self.x_dim, dtype=np.float32)[idx][None], 5, axis=0)
        m = np.ones((5, self.batch_size, 1), np.float32)
        return Batch(x, m, default_score(m))
    def identity(self):
        return {"task": "repeat", "split": self.split, "seed": self.seed}

class NotATask:
    def __init__(self, batch_size: int = 3):
        pass
'''


def test_module_class_task(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_user_tasks.py").write_text(USER_TASK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_user_tasks", raising=False)
    cfg = {"name": "u", "task": {"name": "my_user_tasks:Repeat", "batch_size": 2},
           "model": {"learner": "ptncn", "hidden": [4]}, "train": {"batches": 2}}
    cfg = validate(cfg)
    assert make_task(cfg, "valid").split == "valid"
    (tmp_path / "u.toml").write_text(
        'name = "u"\n[task]\nname = "my_user_tasks:Repeat"\nbatch_size = 2\n'
        '[model]\nhidden = [4]\n[train]\nbatches = 2\n')
    assert main(["train", "u.toml", "--out", "uo", "--quiet", "--no-plots"]) == 0
    capsys.readouterr()
    for name, words in [("my_user_tasks:NotATask", "not a subclass"),
                        ("my_user_tasks:Missing", "has no 'Missing'"),
                        ("no_such_module_xyz:Task", "cannot import"),
                        ("my_user_tasks:", "module:Class"),
                        ("nonsense", "module:Class")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            validate({**cfg, "task": {"name": name}})
    with pytest.raises(ConfigError, match="vocabulary"):
        validate({**cfg, "task": {"name": "my_user_tasks:Repeat", "vocabulary": 3}})


def test_docs_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/tasks.md has no python example"
    assert len(blocks[0].strip().splitlines()) <= 25
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {"__name__": "tasks_example"})
    assert (tmp_path / "run.h5").exists()
    assert list((tmp_path / "plots").glob("*.png"))
