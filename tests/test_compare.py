"""analysis/compare_baselines.py: equal-budget comparison of learners.  Data-free: runs on the
built-in cyclic task only, with a budget of a few seconds per learner."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "analysis", "compare_baselines.py")
CYCLIC = os.path.join(ROOT, "models", "cyclic.toml")


def _module():
    spec = importlib.util.spec_from_file_location("compare_baselines", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_compares_learners_and_reports_failures(tmp_path):
    pytest.importorskip("reservoirpy", reason="the ESN baseline needs the 'esn' extra")
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, SCRIPT, "--tasks", CYCLIC,
                           "--learners", "ptncn", "esn", "bogus", "--budget", "2",
                           "--final-eval-batches", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    md = (out / "compare.md").read_text()
    assert md in proc.stdout                                  # the table is printed too
    rows = {r["learner"]: r for r in json.loads((out / "compare.json").read_text())}
    assert list(rows) == ["ptncn", "esn", "bogus"]
    for name, hidden in (("ptncn", "64,64"), ("esn", "200")):
        r = rows[name]
        assert r["status"] == "ok", r
        assert r["task"] == "cyclic" and r["metric"] == "bpc" and r["hidden"] == hidden
        assert r["params"] > 0 and r["rss_mib"] > 10 and r["tokens_per_s"] > 0
        assert 1.5 <= r["train_s"] < 30 and r["wall_s"] >= r["train_s"]
        assert r["reference"].startswith("unigram ")
        assert 0 < r["value"] < float(r["reference"].split()[1])   # both learn something
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| cyclic | {name} |"))
        assert f"| {hidden} |" in line and "bpc" in line and "unigram" in line
    assert rows["esn"]["params"] == 200 * 200 + 200 * 8 + 200 + 201 * 8
    assert rows["bogus"]["status"] == "failed"
    assert "unknown learner 'bogus'" in rows["bogus"]["note"]
    assert any(ln.startswith("| cyclic | bogus |") and "failed" in ln for ln in md.splitlines())
    png = out / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_rtrl_over_the_memory_limit_is_refused_before_running(tmp_path):
    mod = _module()
    assert mod.rtrl_bytes(16, 2000, 8) == 16 * 2000 * 2000 * (8 + 2000 + 1) * 4
    row = mod.run_one(CYCLIC, "rtrl", 1, str(tmp_path), sets=["model.hidden=2000"])
    assert row["status"] == "refused" and row["hidden"] == "2000"
    assert row["note"].startswith("refused: RTRL sensitivity 514 GB > limit 4 GB"), row["note"]
    assert not (tmp_path / "runs").exists()                  # nothing was started


def test_a_crashing_run_gives_a_row_with_the_reason(tmp_path):
    mod = _module()
    # a valid config whose run fails in the child: a batch too large for this machine
    row = mod.run_one(CYCLIC, "ptncn", 1, str(tmp_path), sets=["task.batch_size=100000000000"],
                      final_eval_batches=1)
    assert row["status"] == "failed" and row["note"].startswith("exit "), row["note"]
    assert "over the limit" in row["note"], row["note"]
    md = mod.markdown_table([row], 1)
    assert "| cyclic | ptncn | 64,64 |" in md and "failed" in md


def test_compare_json_writes_null_for_a_diverged_value(tmp_path, monkeypatch):
    mod = _module()

    def fake_run_one(task_path, learner, budget, out_dir, sets, **kw):
        return {"task": "cyclic", "learner": learner, "hidden": "4", "params": 10,
                "metric": "bpc", "value": float("nan"), "higher_better": False,
                "reference": "unigram 3.0", "train_s": 1.0, "wall_s": float("inf"),
                "rss_mib": 20.0, "tokens_per_s": 5.0, "status": "ok", "note": "diverged"}
    monkeypatch.setattr(mod, "run_one", fake_run_one)
    mod.compare([CYCLIC], ["ptncn"], 1, str(tmp_path), log=lambda m: None)

    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    rows = json.loads((tmp_path / "compare.json").read_text(), parse_constant=refuse)
    assert rows[0]["value"] is None and rows[0]["wall_s"] is None and rows[0]["params"] == 10
