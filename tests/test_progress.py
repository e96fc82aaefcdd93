"""Progress lines off a terminal, their time-left estimate, and the BLAS thread choice."""

import json
import logging
import time

import pytest

from ptncn.cli import main
from ptncn.progress import Progress, duration, resolve_mode
from ptncn import threads
from ptncn.threads import auto_threads, choose_threads, parse_threads


def test_mode_follows_the_terminal(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty
    monkeypatch.setattr("sys.stderr", Stream(True))
    assert resolve_mode(None) == "bar"
    monkeypatch.setattr("sys.stderr", Stream(False))
    assert resolve_mode(None) == "log"
    assert resolve_mode(False) == "off" and resolve_mode("log") == "log"
    with pytest.raises(ValueError, match="progress must be"):
        resolve_mode("loud")


def test_log_lines_every_interval_with_rate_and_note(caplog):
    caplog.set_level(logging.INFO, logger="ptncn.progress")
    p = Progress(10, desc="train", mode="log", every_s=0.0)
    p.note = "last valid: bpc 2.5"
    p.update(1, loss="0.70")
    p.update(1)
    p.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2                          # one per update (close adds none)
    assert lines[0].startswith("train: step 1/10 (10%)")
    assert "steps/s" in lines[0] and "left ~" in lines[0] and "loss 0.70" in lines[0]
    assert lines[-1].startswith("train: step 2/10") and lines[-1].endswith("bpc 2.5")


def test_quiet_interval_writes_nothing(caplog):
    caplog.set_level(logging.INFO, logger="ptncn.progress")
    p = Progress(10, desc="eval", unit="batch", mode="log", every_s=3600)
    p.update(5)
    p.close()
    assert caplog.records == []


def test_time_left_counts_extra_work_and_stops_at_the_deadline():
    p = Progress(100, desc="train", mode="log", every_s=3600)
    p.t0 = time.perf_counter() - 10.0               # 50 steps in 10 s: 5 steps/s
    p.n = 50
    assert p.eta_s() == pytest.approx(10.0, rel=0.05)
    p.extra_s = lambda: 30.0                         # e.g. evaluations still due
    assert p.eta_s() == pytest.approx(40.0, rel=0.05)
    p.deadline = time.perf_counter() + 5.0           # the time budget ends sooner
    p.after_deadline_s = lambda: 7.0                 # then the final evaluation
    assert p.eta_s() == pytest.approx(12.0, abs=0.5)


def test_duration_text():
    assert duration(42.4) == "42 s"
    assert duration(185) == "3 min 05 s"
    assert duration(7620) == "2 h 07 min"
    assert duration(float("inf")) == "?"


def test_thread_choice_rules():
    assert auto_threads(cores=2, busy=1.2) == 1     # the other core is busy
    assert auto_threads(cores=2, busy=0.1) == 2
    assert auto_threads(cores=16, busy=40.0) == 1   # never below one
    assert choose_threads(3, environ={}).threads == 3
    env = {"OPENBLAS_NUM_THREADS": "2"}
    c = choose_threads(None, environ=env)
    assert c.threads is None and "OPENBLAS_NUM_THREADS=2" in c.reason   # the user's choice
    assert choose_threads("auto", environ=env).threads >= 1             # unless asked
    assert parse_threads("auto") == "auto" and parse_threads("4") == 4
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            parse_threads(bad)


def test_cli_threads_flag_sets_the_blas_pool_for_the_command(tmp_path, capsys, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    from ptncn import cli

    def demo(args):                              # the command, as it starts computing
        seen.append([p["num_threads"] for p in threadpoolctl.threadpool_info()
                     if p["user_api"] == "blas"])
        threads.note_choice()
        return 0
    monkeypatch.setitem(cli.COMMANDS, "demo", (*cli.COMMANDS["demo"][:2], demo))
    before = [p["num_threads"] for p in threadpoolctl.threadpool_info()
              if p["user_api"] == "blas"]
    assert main(["demo", "--threads", "1"]) == 0
    assert seen[0] and set(seen[0]) == {1}
    assert "BLAS threads: 1 thread (--threads" in capsys.readouterr().err
    after = [p["num_threads"] for p in threadpoolctl.threadpool_info()
             if p["user_api"] == "blas"]
    assert after == before                       # main() leaves the process as it was
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--threads", "zero"])
    assert exc.value.code == 2
    assert "positive integer or 'auto'" in capsys.readouterr().err


def test_cli_logs_progress_off_a_terminal_and_quiet_hides_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTNCN_PROGRESS_SECONDS", "0")
    argv = ["demo", "--batches", "3", "--hidden", "8", "--every", "3"]
    main(argv)
    err = capsys.readouterr().err
    assert "train: step" in err and "steps/s" in err and "left ~" in err
    main(argv + ["--quiet"])
    captured = capsys.readouterr()
    assert captured.err == "" and "held-out loss" in captured.out


def test_eval_shows_progress_and_takes_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTNCN_PROGRESS_SECONDS", "0")
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "c"\n[task]\nname = "cyclic"\nbatch_size = 4\nlength = 6\n'
                   'vocab = 5\n[model]\nhidden = [6, 6]\n[train]\nbatches = 2\n')
    assert main(["train", str(cfg), "--out", str(tmp_path / "r"), "--no-plots",
                 "--quiet"]) == 0
    capsys.readouterr()
    argv = ["eval", str(cfg), "--model", str(tmp_path / "r" / "final.npz"), "--batches", "2"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "eval valid: batch 1/2" in err and json.loads(out)["batches"] == 2
    assert main(argv + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""
