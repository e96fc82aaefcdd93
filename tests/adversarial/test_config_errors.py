"""Bad input gets one clear error: typed configs, one-line CLI errors, memory limits
checked before allocating, user callables probed, spiking parameters validated."""

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from ptncn.cli import main
from ptncn.errors import DivergenceError, ModelFileError, ResourceLimitError
from ptncn.harness import ConfigError, load_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "models")
NAN, INF = float("nan"), float("inf")
HUGE = 10**6                       # a (10^6, 10^6) float32 matrix is 4 TB

BASE = {"name": "t", "seed": 3,
        "task": {"name": "cyclic", "batch_size": 4, "length": 8, "vocab": 6},
        "model": {"hidden": [12, 10]},
        "optimizer": {"name": "sgd", "lr": 0.2},
        "train": {"batches": 6},
        "record": {"traces": ["loss"], "rows": [0]}}


def _with(section, key, value, base=BASE):
    cfg = json.loads(json.dumps(base))
    if section is None:
        cfg[key] = value
    else:
        cfg.setdefault(section, {})[key] = value
    return cfg


# ---------------------------------------------------------------------------
# typed configs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("section,key,value,match", [
    ("task", "batch_size", "4", r"^\[task\] batch_size: expected int >= 1, got '4'$"),
    ("task", "batch_size", 2.5, r"^\[task\] batch_size: expected int >= 1, got 2.5$"),
    ("task", "batch_size", 0, r"^\[task\] batch_size: expected int >= 1, got 0$"),
    ("task", "length", -3, r"^\[task\] length: expected int >= 1, got -3$"),
    ("task", "ragged", "false", r"^\[task\] ragged: expected bool, got 'false'$"),
    ("task", "ragged", 1, r"^\[task\] ragged: expected bool, got 1$"),
    ("train", "batches", -1, r"^\[train\] batches: expected int >= 1, got -1$"),
    ("train", "batches", 0, r"^\[train\] batches: expected int >= 1"),
    ("train", "time_budget_s", -5, r"^\[train\] time_budget_s: expected number >= 0, got -5$"),
    ("train", "time_budget_s", NAN, r"^\[train\] time_budget_s: expected number >= 0, got nan"),
    ("train", "checkpoint_every", -1, r"^\[train\] checkpoint_every: expected int >= 0"),
    ("train", "eval_every", -2, r"^\[train\] eval_every: expected int >= 0"),
    ("train", "eval_batches", -2, r"^\[train\] eval_batches: expected int >= 0"),
    ("train", "final_eval_batches", 1.5, r"^\[train\] final_eval_batches: expected int >= 0"),
    ("optimizer", "momentum", 5, r"^\[optimizer\] momentum: expected number in \[0, 1\), got 5$"),
    ("optimizer", "momentum", 1.0, r"^\[optimizer\] momentum: expected number in \[0, 1\)"),
    ("optimizer", "lr", 0, r"^\[optimizer\] lr: expected number > 0, got 0$"),
    ("optimizer", "lr", -0.1, r"^\[optimizer\] lr: expected number > 0"),
    ("optimizer", "lr", INF, r"^\[optimizer\] lr: expected number > 0, got inf$"),
    ("optimizer", "lr", True, r"^\[optimizer\] lr: expected number > 0, got True$"),
    ("optimizer", "weight_decay", -1, r"^\[optimizer\] weight_decay: expected number >= 0"),
    ("optimizer", "beta2", 1.5, r"^\[optimizer\] beta2: expected number in \[0, 1\)"),
    ("optimizer", "eps", 0, r"^\[optimizer\] eps: expected number > 0"),
    ("record", "every", 0, r"^\[record\] every: expected int >= 1, got 0$"),
    ("record", "buffer_steps", -1, r"^\[record\] buffer_steps: expected int >= 1"),
    ("record", "flush_seconds", -1, r"^\[record\] flush_seconds: expected number >= 0"),
    ("record", "rows", [-1], r"^\[record\] rows: expected list of int >= 0, got \[-1\]$"),
    ("record", "traces", "loss", r"^\[record\] traces: expected list of str, got 'loss'$"),
    ("record", "compression", "zip", r"^\[record\] compression: expected one of 'lzf', "),
    (None, "seed", -1, r"^seed: expected int >= 0, got -1$"),
    (None, "seed", 1.5, r"^seed: expected int >= 0, got 1.5$"),
    ("model", "hidden", "250", r"^\[model\] hidden: expected list of int, got '250'$"),
    ("model", "temporal_error_rule", "false", r"^\[model\] temporal_error_rule: expected bool"),
])
def test_every_value_is_checked_against_its_type_and_range(section, key, value, match):
    with pytest.raises(ConfigError, match=match):
        validate(_with(section, key, value))


@pytest.mark.parametrize("learner,key,value,match", [
    ("ptncn", "beta", NAN, r"^\[model\] beta: .*finite"),
    ("ptncn", "zeta", -1.0, r"^\[model\] zeta: .*>= 0"),
    ("ptncn", "hidden", [0, 3], r"^\[model\] hidden: "),
    ("ptncn", "K", 0, r"^\[model\] K: "),
    ("ptncn", "act", "nope", r"^\[model\] act: .*unknown activation"),
    ("tbptt", "k", 0, r"^\[model\] k: "),
    ("rtrl", "leak", 2.0, r"^\[model\] leak: "),
    ("esn", "sr", -1.0, r"^\[model\] sr: "),
    ("esn", "hidden", 0, r"^\[model\] hidden: "),
])
def test_model_values_are_checked_by_the_learners_config_before_building(learner, key, value,
                                                                          match):
    model = {"learner": learner, key: value}
    if learner != "ptncn" and key != "hidden":
        model.setdefault("hidden", 5)
    with pytest.raises(ConfigError, match=match):
        validate({**BASE, "model": model})


def test_config_errors_from_a_file_name_the_file(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('name = "x"\n[task]\nname = "cyclic"\n[model]\nhidden = [4]\n'
                 '[train]\nbatches = -3\n')
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value) == f"{p}: [train] batches: expected int >= 1, got -3"
    with pytest.raises(ConfigError, match=r"x.toml: \[optimizer\] momentum: expected number in"):
        load_config(p, ["train.batches=2", "optimizer.momentum=5"])


def test_valid_configs_keep_their_values():
    cfg = validate(_with("optimizer", "momentum", 0))
    assert cfg["optimizer"]["momentum"] == 0 and cfg["train"]["batches"] == 6
    cfg = validate(_with("train", "time_budget_s", 0.5))
    assert cfg["train"]["time_budget_s"] == 0.5 and cfg["model"] == {"learner": "ptncn",
                                                                      "hidden": [12, 10]}


# ---------------------------------------------------------------------------
# the CLI: one line, exit 2, --debug shows the traceback
# ---------------------------------------------------------------------------
def _one_line(capsys, rc, code=2):
    err = capsys.readouterr().err
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptncn: "), err
    return lines[0]


def test_cli_config_error_is_one_line_naming_file_section_and_key(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('name = "x"\n[task]\nname = "cyclic"\nragged = "false"\n[model]\n')
    line = _one_line(capsys, main(["train", str(p), "--out", str(tmp_path / "o")]))
    assert line == f"ptncn: error: {p}: [task] ragged: expected bool, got 'false'"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [
    ["eval", os.path.join(MODELS, "cyclic.toml"), "--model", "m.npz", "--batches", "-1"],
    ["demo", "--batches", "-5"],
    ["demo", "--hidden", "0"],
    ["demo", "--lr", "nan"],
    ["info"],
])
def test_cli_bad_arguments_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptncn"), err


@pytest.mark.parametrize("cmd", [
    ["info", "{d}/missing.npz"], ["summary", "{d}/junk.h5"], ["plot", "{d}/missing.h5"],
    ["export", "{d}/junk.h5", "--nwb", "{d}/o.nwb"], ["resume", "{d}"],
    ["zero-shot", "{d}/missing.toml"], ["train", "{d}/missing.toml"],
    ["eval", "{d}/missing.toml", "--model", "{d}/m.npz"], ["info", "{d}/pickle.npz"],
    ["info", "{d}/meta_list.npz"],
])
def test_every_command_reports_bad_input_in_one_line(cmd, tmp_path, capsys):
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n" + b"x" * 100)
    with open(tmp_path / "pickle.npz", "wb") as f:
        pickle.dump({"a": 1}, f)
    np.savez(tmp_path / "meta_list.npz", __meta__=np.array(json.dumps([1, 2])))
    line = _one_line(capsys, main([a.format(d=tmp_path) for a in cmd]))
    assert "Traceback" not in line and "allow_pickle" not in line


@pytest.mark.parametrize("exc", [DivergenceError(7, "e0"), MemoryError("no memory"),
                                 KeyError("x"), RuntimeError("the run is locked by pid 1")])
def test_errors_raised_inside_a_command_are_one_line(exc, monkeypatch, capsys, tmp_path):
    import ptncn.harness

    def boom(*a, **k):
        raise exc
    monkeypatch.setattr(ptncn.harness, "train", boom)
    code = 3 if isinstance(exc, DivergenceError) else 2       # 3: the run diverged
    line = _one_line(capsys, main(["train", os.path.join(MODELS, "cyclic.toml"),
                                   "--out", str(tmp_path)]), code)
    assert line.startswith("ptncn: error: ")


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys,
                                                                       tmp_path):
    import ptncn.harness

    def boom(*a, **k):
        raise TypeError("something internal")
    monkeypatch.setattr(ptncn.harness, "train", boom)
    argv = ["train", os.path.join(MODELS, "cyclic.toml"), "--out", str(tmp_path)]
    line = _one_line(capsys, main(argv), code=1)
    assert "something internal" in line and "--debug" in line
    assert main(["--debug", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def _cli(*args, **kw):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "ptncn.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_cli_subprocess_bad_config_prints_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "x"\n[task]\nname = "cyclic"\n[model]\n[train]\nbatches = -1\n')
    proc = _cli("train", str(p), "--out", str(tmp_path / "o"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.decode().strip() == f"ptncn: error: {p}: [train] batches: expected int >= 1, got -1"


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path):
    from ptncn import PTNCN
    path = tmp_path / "m.npz"
    PTNCN(4, hidden=[3], seed=0).save(path)
    proc = _cli("info", str(path))
    proc.stdout.close()                      # like `ptncn info m.npz | head -0`
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "" and proc.returncode == 141, err       # quiet, like a SIGPIPE'd tool


# ---------------------------------------------------------------------------
# memory: estimated and refused before allocating
# ---------------------------------------------------------------------------
HUGE_OPTIONS = {"ptncn": {"hidden": [HUGE, 4]}, "spiking_ptncn": {"hidden": [HUGE]},
                "esn": {"hidden": HUGE}}


@pytest.mark.parametrize("name", ["ptncn", "rtrl", "uoro", "nobacktrack", "tbptt", "bptt",
                                  "esn", "spiking_ptncn"])
def test_every_learner_refuses_a_model_too_large_for_memory_before_allocating(name):
    from ptncn.learner import learner_class
    cls = learner_class(name)
    with pytest.raises(ResourceLimitError, match=r"GB.*(MemAvailable|PTNCN_MEMORY_LIMIT_GB)"):
        cls(4, **HUGE_OPTIONS.get(name, {"hidden": HUGE}))


def test_memory_estimate_counts_params_optimizer_slots_and_state():
    from ptncn import PTNCN
    m = PTNCN(5, hidden=[7, 6], optimizer="adam", lr=0.01, seed=0)
    est = m.memory_bytes(3)
    nbytes = sum(p.nbytes for p in m.params.values())
    assert est["params"] == nbytes and est["optimizer"] == 2 * nbytes
    assert est["state"] > 0 and m.memory_bytes(30)["state"] == 10 * est["state"]


def test_memory_limit_env_and_huge_batch(monkeypatch):
    from ptncn import PTNCN
    m = PTNCN(5, hidden=[7], seed=0)
    with pytest.raises(ResourceLimitError, match="batch 10000000000"):
        m.reset(10**10)
    assert m.state is None
    monkeypatch.setenv("PTNCN_MEMORY_LIMIT_GB", "1e-7")       # 100 bytes
    with pytest.raises(ResourceLimitError, match=r"PTNCN_MEMORY_LIMIT_GB"):
        PTNCN(5, hidden=[7], seed=0)
    monkeypatch.setenv("PTNCN_MEMORY_LIMIT_GB", "lots")
    with pytest.raises(ValueError, match="PTNCN_MEMORY_LIMIT_GB"):
        PTNCN(5, hidden=[7], seed=0)


def test_harness_refuses_a_huge_batch_before_allocating():
    from ptncn.harness import make_learner
    cfg = validate(_with("task", "batch_size", 10**11))
    with pytest.raises(ResourceLimitError):
        make_learner(cfg, 6)


def _npz_claiming(path, shape):
    """A tiny valid-looking model file whose param/W1 header claims ``shape``."""
    from ptncn import PTNCN
    PTNCN(4, hidden=[3], seed=0).save(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    members["param/W1.npy"] = buf.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def test_a_model_file_claiming_a_huge_shape_is_refused_from_its_header(tmp_path, capsys):
    from ptncn.learner import read_model_file
    path = tmp_path / "tampered.npz"
    _npz_claiming(path, (HUGE, HUGE))
    with pytest.raises(ModelFileError, match=r"param/W1.*\(1000000, 1000000\)"):
        read_model_file(path)
    line = _one_line(capsys, main(["info", str(path)]))
    assert "tampered.npz" in line


def test_a_model_file_with_a_wrong_shape_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "tampered.npz"
    _npz_claiming(path, (2, 2))
    line = _one_line(capsys, main(["info", str(path)]))
    assert "tampered.npz" in line


def test_a_pickle_is_not_a_model_file_and_no_allow_pickle_hint(tmp_path):
    from ptncn.learner import read_model_file
    path = tmp_path / "p.npz"
    np.savez(path, __meta__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError) as exc:
        read_model_file(path)
    assert "allow_pickle" not in str(exc.value) and "not a ptncn model file" in str(exc.value)


# ---------------------------------------------------------------------------
# user callables
# ---------------------------------------------------------------------------
def first_column(h):
    return h[:, :1]


def strings(h):
    return np.full(h.shape, "a")


def nan_out(h, rng):
    return h * np.nan


@pytest.mark.parametrize("fn,match", [(first_column, r"'first_column'.*shape"),
                                      (strings, r"'strings'.*dtype"),
                                      (nan_out, r"'nan_out'.*NaN"),
                                      (lambda h: 1 / 0, r"'<lambda>'.*ZeroDivisionError")])
@pytest.mark.parametrize("kind", ["act", "out"])
def test_user_callables_are_probed_once_and_named(fn, match, kind):
    from ptncn import PTNCN
    with pytest.raises(ValueError, match=match):
        PTNCN(4, hidden=[3], seed=0, **{kind: fn})


def test_good_user_callables_still_work():
    from ptncn import PTNCN
    m = PTNCN(4, hidden=[3], seed=0, act=lambda h: np.tanh(h), out=lambda h, rng: h * 0.5)
    m.step(np.eye(4, dtype=np.float32)[:2])
    assert np.isfinite(m.quantity("x_mu")).all()


# ---------------------------------------------------------------------------
# spiking parameters
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,match", [
    ("dt_ms", 0, r"dt_ms.*> 0"), ("dt_ms", -0.1, r"dt_ms.*> 0"), ("dt_ms", NAN, "dt_ms"),
    ("tau_m", 0, r"tau_m.*> 0"), ("tau_ref", -1, r"tau_ref.*> 0"), ("tau_m", INF, "tau_m"),
    ("window_ms", 0, r"window_ms.*> 0"), ("gain", -2.0, r"gain.*> 0"), ("gain", NAN, "gain"),
    ("err_theta", INF, "err_theta"), ("hidden", (2.5,), "hidden"),
    ("record_spikes", "no", "record_spikes"), ("temporal_error_rule", "false",
                                               "temporal_error_rule"),
    ("record_membrane", (0.5,), "record_membrane"), ("beta", NAN, "beta"),
])
def test_spiking_parameters_are_validated(key, value, match):
    from ptncn.spiking.config import SpikingConfig
    with pytest.raises(ValueError, match=match):
        SpikingConfig(x_dim=4, **{key: value})


def test_spiking_config_errors_surface_as_config_errors():
    with pytest.raises(ConfigError, match=r"^\[model\] dt_ms: "):
        validate({**BASE, "model": {"learner": "spiking_ptncn", "hidden": [4], "dt_ms": 0.0}})
