"""The ``ptncn`` command: the demo's loss falls, info reads a saved model."""

import json

from ptncn.cli import main


def test_demo_loss_falls_and_model_saves(tmp_path, capsys):
    out = tmp_path / "demo.npz"
    rc = main(["demo", "--batches", "40", "--every", "20", "--hidden", "32", "--quiet",
               "--save", str(out), "--out", str(tmp_path / "run")])
    text = capsys.readouterr().out
    assert rc == 0, text
    line = [l for l in text.splitlines() if l.startswith("held-out loss") and "->" in l][0]
    first, last = (float(v) for v in line.split(":")[1].replace("bits/symbol", "").split("->"))
    assert last < 0.5 * first
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["hidden"] == [32, 32] and info["params"]["W1"] == [32, 8]
    assert (tmp_path / "run" / "run.h5").exists() and (tmp_path / "run" / "run.ckpt.npz").exists()
    assert (tmp_path / "run" / "plots" / "learning_curve.png").exists()
    assert main(["summary", str(tmp_path / "run" / "run.h5")]) == 0
    assert "eps1" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "run" / "run.h5"), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "param_norms.png").exists()


def test_bad_file_gives_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "Traceback" not in err


def test_info_shows_the_learner_and_config_of_any_model(tmp_path, capsys):
    from ptncn.baselines.bptt import TBPTT
    path = tmp_path / "tbptt.npz"
    TBPTT(3, hidden=5, k=4, seed=2).save(path)
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["learner"] == "tbptt" and info["class"] == "TBPTT"
    assert info["config"]["k"] == 4 and info["config"]["hidden"] == 5


def test_python_dash_m_ptncn_runs_the_cli():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ok = subprocess.run([sys.executable, "-m", "ptncn", "--help"], capture_output=True,
                        text=True, cwd=root, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "usage: ptncn" in ok.stdout and "zero-shot" in ok.stdout
    # the exit status of main() comes through: a usage error is 2
    bad = subprocess.run([sys.executable, "-m", "ptncn", "no-such-verb"], capture_output=True,
                         text=True, cwd=root, env=env)
    assert bad.returncode == 2 and "ptncn: error" in bad.stderr


def test_eval_prints_json_with_null_for_a_nan_metric(tmp_path, capsys, monkeypatch):
    import math
    import os

    import ptncn.harness as harness
    from ptncn import PTNCN
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = tmp_path / "m.npz"
    PTNCN(8, 4, seed=0).save(model)
    monkeypatch.setattr(harness, "evaluate",
                        lambda *a, **k: {"loss": float("nan"), "bits": math.inf, "n": 3})

    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    assert main(["eval", os.path.join(root, "models", "cyclic.toml"), "--model", str(model),
                 "--batches", "1"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert out["loss"] is None and out["bits"] is None and out["n"] == 3
