"""Recordings under faults: damaged files, corrupted chunks, a full disk, live runs."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from ptncn import PTNCN, cli
from ptncn.data.synthetic import CyclicSymbols
from ptncn.record import Recorder, RecordingError, open_recording
from ptncn.runlock import RunLock
from ptncn.simulate import Simulation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def make_run(folder, batches=10, buffer_steps=16):
    """A finished recording ``folder/run.h5`` of a small P-TNCN (z1, eps1, loss)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "run.h5")
    model = PTNCN(8, (6, 5), seed=0)
    task = CyclicSymbols(batch_size=4, length=10, vocab=8, seed=0)
    rec = Recorder(path, buffer_steps=buffer_steps).add("z1").add("eps1").add("loss")
    Simulation(model, task, batches, recorder=rec, attrs={"seed": 0}).run()
    return path


def flip(src, dst, offset, n):
    raw = bytearray(open(src, "rb").read())
    for i in range(offset, min(offset + n, len(raw))):
        raw[i] ^= 0xFF
    with open(dst, "wb") as f:
        f.write(raw)


def metadata_offsets(path):
    """The superblock and the object headers (signature ``OHDR``) of a file."""
    raw = open(path, "rb").read()
    headers = [m.start() for m in re.finditer(b"OHDR", raw)]
    return [8] + [headers[i] + 6 for i in (0, 1, len(headers) // 2, -1)]


def data_offsets(path, trace="z1"):
    with h5py.File(path, "r") as f:
        ds = f[f"traces/{trace}/values"]
        infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    return [(i.byte_offset + 8, min(200, i.size - 16)) for i in infos[1:3]]


CLI_LOOP = textwrap.dedent("""
    import contextlib, io, json, sys
    from ptncn import cli
    out = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = cli.main(argv)
            except BaseException as exc:
                rc = f"raised {type(exc).__name__}: {exc}"
        out.append([argv, rc, err.getvalue()])
    print(json.dumps(out))
""")


def run_cli_loop(argvs, timeout=240):
    """Run ``cli.main`` on each argv in one subprocess; a hang fails the test."""
    proc = subprocess.run([sys.executable, "-c", CLI_LOOP, json.dumps(argvs)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def commands(path, tmp, which=("summary", "plot", "export")):
    out = {"summary": ["summary", path],
           "plot": ["plot", path, "--out", os.path.join(tmp, "plots")],
           "export": ["export", path, "--nwb", os.path.join(tmp, "out.nwb"), "--overwrite"]}
    return [out[w] for w in which]


def one_error_line(err):
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("ptncn: error: ")


def test_damaged_metadata_gives_one_error_and_never_hangs(tmp_path):
    pytest.importorskip("pynwb")
    good = make_run(str(tmp_path / "good"))
    argvs = []
    for k, off in enumerate(metadata_offsets(good)):
        bad = str(tmp_path / f"meta{k}" / "run.h5")
        os.makedirs(os.path.dirname(bad))
        flip(good, bad, off, 300)
        argvs += commands(bad, str(tmp_path))
    for argv, rc, err in run_cli_loop(argvs):
        assert rc == 2 and one_error_line(err), (argv, rc, err)
        assert argv[1] in err and "Traceback" not in err


def test_damaged_file_of_a_live_run_gives_a_bounded_error(tmp_path):
    """With a live writer holding the folder the reader retries, but not forever."""
    good = make_run(str(tmp_path / "good"))
    bad = str(tmp_path / "live" / "run.h5")
    os.makedirs(os.path.dirname(bad))
    flip(good, bad, metadata_offsets(good)[2], 300)
    with RunLock(os.path.dirname(bad), "train"):
        (argv, rc, err), = run_cli_loop(commands(bad, str(tmp_path), ("summary",)))
    assert rc == 2 and one_error_line(err) and bad in err, err


@pytest.mark.parametrize("cmd", ["summary", "plot", "export"])
def test_cli_on_a_damaged_file_exits_2_with_one_line(tmp_path, cmd):
    if cmd == "export":
        pytest.importorskip("pynwb")
    good = make_run(str(tmp_path / "good"))
    bad = str(tmp_path / "bad" / "run.h5")
    os.makedirs(os.path.dirname(bad))
    flip(good, bad, metadata_offsets(good)[3], 300)       # hung in a SWMR retry loop
    argv, = commands(bad, str(tmp_path), (cmd,))
    proc = subprocess.run([sys.executable, "-m", "ptncn.cli", *argv], capture_output=True,
                          text=True, timeout=120, env=ENV)
    assert proc.returncode == 2 and one_error_line(proc.stderr), proc.stderr


def test_recorded_datasets_carry_checksums(tmp_path):
    path = make_run(str(tmp_path))
    with h5py.File(path, "r") as f:
        for name in ("z1", "eps1", "loss"):
            assert f[f"traces/{name}/values"].fletcher32
            assert f[f"traces/{name}/step"].fletcher32


def test_corrupted_chunk_names_the_trace_and_records(tmp_path):
    path = make_run(str(tmp_path / "good"))
    with open_recording(path) as r:
        ref = r["z1"][:]
    (off, n), _ = data_offsets(path)
    bad = str(tmp_path / "bad.h5")
    flip(path, bad, off, n)
    with open_recording(bad) as r:
        assert r["z1"][:16].shape == (16, 4, 6)          # the first chunk is intact
        np.testing.assert_array_equal(r["z1"][:16], ref[:16])
        with pytest.raises(RecordingError, match=r"trace 'z1'.*records 16\.\.31"):
            r["z1"][:]
        with pytest.raises(RecordingError, match=r"trace 'z1'.*records 16\.\.31"):
            r["z1"].values[20, 0, :]                     # the dataset-like view the plots use
        with pytest.raises(RecordingError, match="trace 'z1'"):
            r["z1"].at_steps(0, 100)
        np.testing.assert_array_equal(r["eps1"][:], r["eps1"][:])   # other traces read


def test_corrupted_chunk_fails_plot_and_export(tmp_path):
    pytest.importorskip("pynwb")
    good = make_run(str(tmp_path / "good"))
    argvs = []
    for k, (off, n) in enumerate(data_offsets(good)):
        bad = str(tmp_path / f"data{k}" / "run.h5")
        os.makedirs(os.path.dirname(bad))
        flip(good, bad, off, n)
        argvs += commands(bad, str(tmp_path), ("plot", "export"))
    for argv, rc, err in run_cli_loop(argvs):
        assert rc == 2 and one_error_line(err), (argv, rc, err)
        assert "trace 'z1'" in err and "records" in err, err
    assert not os.path.exists(tmp_path / "out.nwb")


@pytest.mark.parametrize("version,shown", [(None, "no version attribute"), (2, "version 2"),
                                           ("abc", "version 'abc'")])
def test_version_errors_name_what_was_found(tmp_path, version, shown):
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "ptncn-recording"
        if version is not None:
            f.attrs["version"] = version
        f.create_group("traces")
    with pytest.raises(RecordingError) as info:
        open_recording(path)
    assert shown in str(info.value) and "None" not in str(info.value)


# -- disk full ---------------------------------------------------------------------------
DISK_FULL = textwrap.dedent("""
    import os, resource, shutil, signal, sys
    from ptncn import PTNCN
    from ptncn.data.synthetic import CyclicSymbols
    from ptncn.record import Recorder
    from ptncn.simulate import Simulation
    path, limit, keep = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    model = PTNCN(8, (32, 32), seed=0)
    task = CyclicSymbols(batch_size=8, length=50, vocab=8, seed=0)
    rec = Recorder(path, buffer_steps=16, flush_seconds=1e9, compression={compression!r})
    rec.add("z1").add("eps1").add("loss")
    try:
        Simulation(model, task, 1000, recorder=rec).run()
    finally:
        if keep:                      # the file system vanishes with this process
            shutil.copy(path, keep)
""")


def _check_disk_full(proc, path, kept, tmp_path):
    err = proc.stderr
    assert proc.returncode == 1, err[-3000:]                  # not a crash (-11)
    assert err.count("Traceback") == 1 and "During handling" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ptncn.record.RecordingError: ") and path in last, last
    n = int(re.search(r"records up to step (\d+) are safely on disk", last).group(1))
    assert n > 0
    model = PTNCN(8, (32, 32), seed=0)
    task = CyclicSymbols(batch_size=8, length=50, vocab=8, seed=0)
    ref = str(tmp_path / "ref.h5")
    Simulation(model, task, n // 50 + 1,
               recorder=Recorder(ref).add("z1").add("eps1").add("loss")).run()
    with h5py.File(kept, "r") as f:                              # a plain, clean open
        assert f.attrs["format"] == "ptncn-recording"
    with open_recording(kept) as r, open_recording(ref) as full:
        for name in ("z1", "eps1", "loss"):
            assert r[name].step[:n + 1].tolist() == list(range(n + 1))
            np.testing.assert_array_equal(r[name][:n + 1], full[name][:n + 1])


@pytest.mark.parametrize("compression", [None, "lzf"])
def test_file_size_limit_ends_in_one_recording_error(tmp_path, compression):
    """RLIMIT_FSIZE makes writes fail (EFBIG) as a full disk does (ENOSPC)."""
    path = str(tmp_path / "run.h5")
    code = DISK_FULL.format(compression=compression)
    proc = subprocess.run([sys.executable, "-c", code, path, "300000", ""], capture_output=True,
                          text=True, timeout=120, env=ENV)
    _check_disk_full(proc, path, path, tmp_path)


def _can_mount_tmpfs(where):
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {where}"], capture_output=True)
    return probe.returncode == 0


def test_full_file_system_ends_in_one_recording_error(tmp_path):
    """A real full disk: a 512 KiB tmpfs in a private mount namespace."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a small tmpfs here (needs unprivileged user namespaces); "
                    "the file-size-limit test covers the same failure")
    path, kept = str(mnt / "run.h5"), str(tmp_path / "kept.h5")
    code = DISK_FULL.format(compression=None)
    shell = (f"mount -t tmpfs -o size=512k tmpfs {mnt} && exec {sys.executable} -c "
             f"\"$0\" {path} 0 {kept}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell, code], capture_output=True,
                          text=True, timeout=120, env=ENV)
    _check_disk_full(proc, path, kept, tmp_path)


# -- export of a live run ----------------------------------------------------------------
def test_export_of_a_live_run_needs_partial(tmp_path, capsys):
    pytest.importorskip("pynwb")
    path = make_run(str(tmp_path))
    out = str(tmp_path / "out.nwb")
    with RunLock(str(tmp_path), "train"):
        assert cli.main(["export", path, "--nwb", out]) == 2
        err = capsys.readouterr().err
        assert one_error_line(err) and "--partial" in err and "ptncn train" in err, err
        assert not os.path.exists(out)
        assert cli.main(["export", path, "--nwb", out, "--partial"]) == 0
        printed = capsys.readouterr().out
    assert re.search(r"took 300 records of 3 traces \(the latest of step 99\)", printed), printed
    assert os.path.exists(out)
    assert cli.main(["export", path, "--nwb", out, "--overwrite"]) == 0   # not live any more
    assert "took" not in capsys.readouterr().out
