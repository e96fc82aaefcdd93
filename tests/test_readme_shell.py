"""The README's shell blocks run as written, in a fresh copy of the repository.

The copy holds the files git tracks (as a clone would), ``../shared`` beside it
(the data) and ``.venv`` pointing at the environment running these tests, used as
it is (``PTNCN_NO_INSTALL=1``: no network, no reinstall).  ``./dev run`` runs with a
tiny budget appended; ``./dev test`` (this suite) is only checked to be there.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
TINY = ["--out", "runs/tiny", "--set", "train.batches=2", "--set", "train.eval_every=0",
        "--set", "train.final_eval_batches=1", "--no-plots"]


def shell_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)


def commands(block: str) -> list[str]:
    """The block's command lines (continuations joined, comments and blanks dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            out.append(line)
    return out


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh copy of the tracked files, with ../shared and .venv beside/inside it."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot make a fresh copy of the tracked files")
    if not (SHARED / "datasets").is_dir():
        pytest.skip(f"no data at {SHARED / 'datasets'} (the README's commands need it)")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    top = tmp_path_factory.mktemp("fresh")
    main = top / "main"
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (main / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, main / f)
    (top / "shared").symlink_to(SHARED)
    (main / ".venv").symlink_to(pathlib.Path(sys.prefix))
    return main


def run(clone, script: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PTNCN_DATA", "VIRTUAL_ENV")}
    env.update(PTNCN_NO_INSTALL="1", OPENBLAS_NUM_THREADS="1", PTNCN_PROGRESS_SECONDS="600",
               PATH=os.defpath)                   # nothing of this environment on PATH
    r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{script}\n--- stdout\n{r.stdout[-3000:]}" \
                              f"\n--- stderr\n{r.stderr[-3000:]}"
    return r


def test_set_up_block_dev_run_with_a_tiny_budget(clone):
    block = next(b for b in shell_blocks() if "./dev run" in b)
    cmds = [c for c in commands(block) if c.startswith("./dev")]
    assert [c.split()[:2] for c in cmds] == [["./dev", "run"], ["./dev", "test"]]
    run(clone, shlex.join(["./dev", "run", *TINY]))
    assert (clone / "runs" / "tiny" / "metrics.json").exists()


def test_command_line_block_runs_as_written(clone):
    block = next(b for b in shell_blocks() if "source .venv/bin/activate" in b)
    r = run(clone, block)
    quick = clone / "runs" / "quick"
    for name in ("metrics.json", "best.npz", "final.npz", "run.h5", "run.nwb"):
        assert (quick / name).exists(), name
    assert list((quick / "figures").glob("*.png"))
    assert "usage: ptncn" in r.stdout and '"learner": "ptncn"' in r.stdout
    assert "resuming" in r.stdout and "final model on test" in r.stdout


def test_other_blocks_name_files_and_commands_that_exist(clone):
    for block in shell_blocks():
        for cmd in commands(block):
            words = shlex.split(cmd)
            if words[0] == "ptncn":
                from ptncn.cli import COMMANDS
                assert words[1] in COMMANDS, cmd
            for w in words:
                if re.match(r"^(models|analysis|benchmarks)/\S+\.(toml|py)$", w):
                    assert (clone / w).exists(), f"README names {w}, which is not there"
