"""Zero-shot protocol: frozen conditions never learn, state resets, statistics, the command."""

import json
import os

import numpy as np
import pytest

from ptncn.data.bitrecall import BitRecall
from ptncn.harness import ConfigError
from ptncn.ptncn import PTNCN
from ptncn.zeroshot import (ZeroShotError, frame_losses, load_frozen, load_zeroshot_config,
                            mean_ci, run_zeroshot)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Sub:
    """Only some batches of a task (to evaluate batch 1 with and without batch 0 first)."""

    def __init__(self, task, idx):
        self.task, self.idx = task, list(idx)
        self.kind, self.x_dim, self.n_batches = task.kind, task.x_dim, len(self.idx)
        self.step_loss = task.step_loss

    def batch(self, i):
        return self.task.batch(self.idx[i])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small P-TNCN trained a little on 8-bit recall, saved with its optimizer state."""
    task = BitRecall(n_bits=4, batch_size=8, seed=3)
    m = PTNCN(3, hidden=(16, 12), out="sigmoid", beta=0.3, lr=0.05, seed=5)
    from ptncn.simulate import run_batch
    for i in range(20):
        b = task.batch(i)
        run_batch(m, b.x, b.mask, learn=True, kind="binary", score=b.score)
    path = str(tmp_path_factory.mktemp("zs") / "theta.npz")
    m.save(path)
    return path, task


@pytest.mark.parametrize("correction", [True, False])
def test_frozen_conditions_never_modify_weights(trained, correction):
    path, task = trained
    before = open(path, "rb").read()
    m = load_frozen(path, correction)
    params = m.params.copy()
    opt = {s: {k: v.copy() for k, v in d.items()}
           for s, d in m.optimizer.state_dict()["slots"].items()}
    t_opt = m.optimizer.t
    frame_losses(m, BitRecall(n_bits=6, batch_size=8, seed=9), errors=("e0", "e1"))
    for k, v in params.items():
        assert np.array_equal(m.params[k], v), k           # bitwise
    for s, d in m.optimizer.state_dict()["slots"].items():
        for k, v in d.items():
            assert np.array_equal(v, opt[s][k]), (s, k)
    assert m.optimizer.t == t_opt
    assert open(path, "rb").read() == before
    assert m.config.beta == (0.3 if correction else 0.0)


def test_state_resets_between_sequences(trained):
    path, _ = trained
    task = BitRecall(n_bits=5, batch_size=4, seed=11)
    m = load_frozen(path)
    both = frame_losses(m, _Sub(task, [0, 1]))
    first = frame_losses(m, _Sub(task, [0]))
    alone = frame_losses(load_frozen(path), _Sub(task, [1]))
    # batch 1's per-frame losses do not depend on batch 0 having been run before it
    s = np.nan_to_num(both["loss_t"] * both["count_t"] - first["loss_t"] * first["count_t"])
    np.testing.assert_allclose(s, np.nan_to_num(alone["loss_t"] * alone["count_t"]),
                               rtol=1e-10, atol=1e-9)
    # and a model whose state were not reset would carry batch 0 into batch 1:
    m2 = load_frozen(path)
    m2.reset = lambda batch: None                         # break the reset
    PTNCN.reset(m2, 4)                                    # one initial reset only
    broken = frame_losses(m2, _Sub(task, [0, 1]))
    assert not np.allclose(np.nan_to_num(broken["loss_t"]), np.nan_to_num(both["loss_t"]))


def test_correction_changes_predictions_only_through_beta(trained):
    path, _ = trained
    task = BitRecall(n_bits=6, batch_size=8, seed=9)
    i = frame_losses(load_frozen(path, True), task, 3)
    ii = frame_losses(load_frozen(path, False), task, 3)
    assert i["mean"] != ii["mean"]
    ii_again = frame_losses(PTNCN.load(path, beta=0.0), task, 3)
    assert ii_again["mean"] == ii["mean"]
    assert np.all(np.isnan(i["loss_t"][:7]))              # unscored read phase + cue
    assert np.all(i["count_t"][7:] == 3 * 8)


def test_mean_ci_hand_computed():
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["n"] == 3
    assert r["ci95"] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-6)
    r = mean_ci([[1.0, 5.0], [3.0, 5.0]])
    assert r["mean"] == [2.0, 5.0] and r["ci95"][1] == 0.0
    assert np.isnan(mean_ci([4.0])["ci95"])


def _write_cfg(tmp_path, extra=""):
    p = tmp_path / "zs.toml"
    p.write_text(f'''name = "zs_tiny"
[zeroshot]
a = "{ROOT}/models/bit_recall.toml"
b = "{ROOT}/models/bit_recall.toml"
set_b = ["task.n_bits=6"]
seeds = [1, 2]
adapt = [0, 1, 3]
adapt_batch = 1
adapt_lr = 0.01
test_batches = 2
set = ["train.batches=3", "train.eval_every=0", "train.final_eval_batches=1",
       "model.hidden=[8, 8]", 'record.traces=["loss"]']
{extra}''')
    return str(p)


def test_protocol_end_to_end(tmp_path):
    cfg = load_zeroshot_config(_write_cfg(tmp_path))
    assert cfg["configs"]["ptncn"]["b"]["task"]["n_bits"] == 6
    assert cfg["configs"]["ptncn"]["a"]["task"]["n_bits"] == 8
    out = str(tmp_path / "out")
    res = run_zeroshot(cfg, out, log=lambda m: None)
    for f in ("results.json", "zeroshot.md", "zeroshot.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    r = res["learners"]["ptncn"]
    per = r["per_seed"]
    gains = [p["conditions"]["ii_frozen_uncorrected"]["mean"]
             - p["conditions"]["i_frozen_corrected"]["mean"] for p in per]
    assert r["summary"]["zero_shot_gain"]["mean"] == pytest.approx(np.mean(gains))
    assert [a["sequences"] for a in r["summary"]["adaptation"]] == [0, 1, 3]
    # 0 adaptation sequences = theta_A frozen with correction
    assert per[0]["adaptation"][0]["loss_B"] == pytest.approx(
        per[0]["conditions"]["i_frozen_corrected"]["mean"])
    f = per[0]["forgetting"]
    assert f["backward_transfer"] == pytest.approx(f["loss_A_before"] - f["loss_A_after"])
    assert os.path.exists(os.path.join(out, "ptncn", "seed1", "traces_B.h5"))
    with open(os.path.join(out, "results.json")) as fh:
        assert json.load(fh)["protocol"]["seeds"] == [1, 2]
    assert "zero-shot gain" in open(os.path.join(out, "zeroshot.md")).read()


def test_bad_protocols_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown key zeroshot.'seed'"):
        load_zeroshot_config(_write_cfg(tmp_path, ""), ["zeroshot.seed=[1]"])
    with pytest.raises(ConfigError, match="increasing"):
        load_zeroshot_config(_write_cfg(tmp_path), ["zeroshot.adapt=[5, 1]"])
    with pytest.raises(ConfigError, match="no such file"):
        load_zeroshot_config(_write_cfg(tmp_path), ['zeroshot.b="nope.toml"'])
    with pytest.raises(ConfigError, match=r"\[learner.lstm\]: unknown learner"):
        load_zeroshot_config(_write_cfg(tmp_path, "[learner.lstm]\nset = []\n"))
    p = tmp_path / "mismatch.toml"
    p.write_text(f'''name = "m"
[zeroshot]
a = "{ROOT}/models/cyclic.toml"
b = "{ROOT}/models/cyclic.toml"
set_b = ["task.vocab=12"]
seeds = [1]
set = ["train.batches=1"]
''')
    cfg = load_zeroshot_config(str(p))
    with pytest.raises(ZeroShotError, match="x_dim 8.*x_dim 12"):
        run_zeroshot(cfg, str(tmp_path / "o"), log=lambda m: None)


def _strict_json(text):
    """Parse ``text`` as JSON proper: NaN / Infinity (Python's extension) raise."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_cli_zero_shot(tmp_path, capsys):
    from ptncn.cli import main
    out = str(tmp_path / "cli")
    assert main(["zero-shot", _write_cfg(tmp_path), "--out", out,
                 "--set", "zeroshot.seeds=[4]"]) == 0
    assert "seed 4" in capsys.readouterr().out              # progress, without --quiet
    with open(os.path.join(out, "results.json")) as fh:
        res = _strict_json(fh.read())                        # one seed: no CI, null not NaN
    assert res["protocol"]["seeds"] == [4]
    s = res["learners"]["ptncn"]["summary"]
    assert s["zero_shot_gain"]["ci95"] is None and s["zero_shot_gain"]["n"] == 1


def test_cli_zero_shot_quiet(tmp_path, capsys):
    from ptncn.cli import main
    out = str(tmp_path / "cli")
    assert main(["zero-shot", _write_cfg(tmp_path), "--out", out, "--quiet",
                 "--set", "zeroshot.seeds=[4]"]) == 0
    text = capsys.readouterr()
    assert "seed 4" not in text.out and "trained A" not in text.out and text.err == ""
    assert "results.json" in text.out                        # still says what it wrote
    assert os.path.exists(os.path.join(out, "results.json"))


def test_dump_json_writes_null_for_non_finite_numbers(tmp_path):
    from ptncn.jsonio import dump_json, dumps_json
    obj = {"a": float("nan"), "b": [1.5, float("inf"), np.float32("-inf")],
           "c": np.array([np.nan, 2.0]), "d": (np.int64(3), np.bool_(True)), "e": None}
    with open(tmp_path / "x.json", "w") as f:
        dump_json(obj, f, indent=1)
    want = {"a": None, "b": [1.5, None, None], "c": [None, 2.0], "d": [3, True], "e": None}
    assert _strict_json((tmp_path / "x.json").read_text()) == want
    assert _strict_json(dumps_json(obj)) == want
    assert _strict_json(dumps_json({"f": object()}, default=lambda o: float("nan"))) == {"f": None}


def test_learners_without_correction_run_ii_and_iii(tmp_path):
    extra = '''[learner.tbptt]
set = ["model.hidden=8", "model.k=4", 'optimizer.name="adam"', "optimizer.lr=0.003"]
[learner.esn]
set = ["model.hidden=30"]
'''
    path = _write_cfg(tmp_path, extra)
    text = open(path).read().replace("test_batches = 2\n",
                                     'test_batches = 2\nlearners = ["tbptt", "esn"]\n')
    text = text.replace('"model.hidden=[8, 8]", ', "")
    open(path, "w").write(text)
    cfg = load_zeroshot_config(path, ["zeroshot.seeds=[1]"])
    assert cfg["configs"]["tbptt"]["a"]["model"]["learner"] == "tbptt"
    res = run_zeroshot(cfg, str(tmp_path / "o"), log=lambda m: None)
    for name in ("tbptt", "esn"):
        s = res["learners"][name]["summary"]
        assert not s["correction"] and "zero_shot_gain" not in s
        assert "i_frozen_corrected" not in s["conditions"]
        assert np.isfinite(s["conditions"]["ii_frozen_uncorrected"]["mean_after_first"]["mean"])
        assert len(s["adaptation"]) == 3
    assert "tbptt" in open(tmp_path / "o" / "zeroshot.md").read()


#: the fields of results.json that are timings (the rest is the same on workers)
_TIMINGS = ("seconds", "train_seconds")


def _without_timings(res, out):
    """``res`` without its timing fields, the traces path relative to ``out``."""
    res = {k: v for k, v in res.items() if k not in _TIMINGS}
    for r in res["learners"].values():
        r["per_seed"] = [{**{k: v for k, v in p.items() if k not in _TIMINGS},
                          **({"traces": os.path.relpath(p["traces"], out)}
                             if "traces" in p else {})} for p in r["per_seed"]]
    return res


def test_seeds_on_workers_give_the_in_process_results(tmp_path):
    pytest.importorskip("distributed", reason="Dask workers need the 'sweep' extra")
    from ptncn.learner import load_learner
    cfg = load_zeroshot_config(_write_cfg(tmp_path))
    outs = {n: str(tmp_path / f"w{n}") for n in (0, 2)}
    for n, out in outs.items():
        run_zeroshot(cfg, out, log=lambda m: None, workers=n)
    res = {}
    for n, out in outs.items():
        with open(os.path.join(out, "results.json")) as fh:
            res[n] = json.load(fh)
    assert [p["seed"] for p in res[2]["learners"]["ptncn"]["per_seed"]] == [1, 2]
    assert res[2]["learners"]["ptncn"]["per_seed"][0]["train_seconds"]["A"] > 0
    assert _without_timings(res[2], outs[2]) == _without_timings(res[0], outs[0])
    for seed in (1, 2):
        for fam in ("A", "B"):
            models = [load_learner(os.path.join(out, "ptncn", f"seed{seed}", fam, "final.npz"))
                      for out in outs.values()]
            assert set(models[0].params) == set(models[1].params)
            for k, v in models[0].params.items():
                assert np.array_equal(models[1].params[k], v), (seed, fam, k)
    assert os.path.exists(os.path.join(outs[2], "ptncn", "seed1", "traces_B.h5"))
    assert "zero-shot gain" in open(os.path.join(outs[2], "zeroshot.md")).read()


def test_cli_zero_shot_takes_workers_or_a_scheduler(tmp_path, capsys):
    from ptncn.cli import main
    with pytest.raises(SystemExit):
        main(["zero-shot", _write_cfg(tmp_path), "--workers", "1",
              "--scheduler", "tcp://127.0.0.1:1"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["zero-shot", _write_cfg(tmp_path), "--workers", "-1"])
