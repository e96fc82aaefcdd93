"""``ptncn evolve``: CMA-ES over the learned neuron's activation network."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("cma", reason="ptncn evolve needs the 'evolve' extra")

from ptncn import evolve  # noqa: E402
from ptncn.cli import main  # noqa: E402
from ptncn.harness import ConfigError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPHERE = """
[evolve]
fitness = "sphere"
generations = {generations}
popsize = {popsize}
sigma0 = 0.5
seed = 3
dim = {dim}
target = {target}
"""
BITS = """
[evolve]
fitness = "bit_repetition"
generations = 2
popsize = 4
sigma0 = 0.3
seed = 1
train_sequences = 16
eval_sequences = 8
batch = 8
n_bits = 2

[model]
hidden = [6]
variant = "memory"
n_m = 2
a_hidden = 4
optimizer = "adam"
lr = 0.01
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def sphere_config(tmp_path, name="sphere.toml", generations=30, popsize=8, dim=3,
                  target="[1.0, -2.0, 0.5]"):
    return write(tmp_path, name, SPHERE.format(generations=generations, popsize=popsize,
                                               dim=dim, target=target))


def numbers(out):
    """generations.csv without its wall-clock column."""
    rows = evolve.read_csv(os.path.join(out, "generations.csv"))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def theta_file(out):
    with np.load(os.path.join(out, "best_theta.npz")) as f:
        return f["theta"].copy(), str(f["meta"])


def test_sphere_finds_the_optimum(tmp_path):
    res = evolve.run_evolve(sphere_config(tmp_path), str(tmp_path / "run"), plots=False)
    rows = numbers(tmp_path / "run")
    assert len(rows) == 30 and [r["generation"] for r in rows] == list(range(1, 31))
    assert rows[0]["best"] > 0.1                      # it started far from the optimum
    assert res["best"]["fitness"] < 1e-3
    assert np.linalg.norm(res["best"]["theta"] - [1.0, -2.0, 0.5]) < 0.05
    assert rows[-1]["evaluations"] == 30 * 8


def test_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    np.random.seed(1)
    evolve.run_evolve(sphere_config(tmp_path, generations=20), full, plots=False)
    evolve.run_evolve(sphere_config(tmp_path, "k.toml", generations=7), part, plots=False)
    assert len(numbers(part)) == 7
    np.random.seed(2)             # the global generator elsewhere: no part of the run
    state = np.random.get_state()
    evolve.run_evolve(sphere_config(tmp_path, generations=20), part, resume=True,
                      plots=False)
    assert numbers(part) == numbers(full)
    (a, meta_a), (b, meta_b) = theta_file(full), theta_file(part)
    assert a.tobytes() == b.tobytes() and meta_a == meta_b
    after = np.random.get_state()                     # and the run leaves it as it was
    assert after[0] == state[0] and np.array_equal(after[1], state[1])


def test_a_killed_run_resumes_bitwise(tmp_path):
    config = sphere_config(tmp_path, generations=150, popsize=16, dim=40, target="0.25")
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    evolve.run_evolve(config, ref, plots=False)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ptncn", "evolve", config, "--out", killed,
                             "--quiet", "--no-plots"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = os.path.join(killed, evolve.CHECKPOINT)
    deadline = time.monotonic() + 60
    while not os.path.exists(ckpt) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    spec = evolve.load_evolve_config(config)
    assert 1 <= evolve.load_checkpoint(killed, spec)["generation"] < 150
    assert main(["evolve", config, "--out", killed, "--resume", "--quiet", "--no-plots"]) == 0
    assert numbers(killed) == numbers(ref)
    assert theta_file(killed)[0].tobytes() == theta_file(ref)[0].tobytes()


def test_dask_workers_give_the_in_process_values(tmp_path):
    pytest.importorskip("distributed", reason="Dask workers need the 'sweep' extra")
    from ptncn.sweep.engine import connect, disconnect

    configs = [sphere_config(tmp_path, generations=4)]
    if _have_learned_neuron():
        configs.append(write(tmp_path, "bits.toml", BITS.replace("generations = 2",
                                                                 "generations = 1")))
    client = connect(workers=2)
    try:
        for i, config in enumerate(configs):
            evolve.run_evolve(config, str(tmp_path / f"dask{i}"), client=client, plots=False)
    finally:
        disconnect(client, None)
    for i, config in enumerate(configs):
        evolve.run_evolve(config, str(tmp_path / f"here{i}"), workers=0, plots=False)
        assert numbers(tmp_path / f"dask{i}") == numbers(tmp_path / f"here{i}")
        assert (theta_file(tmp_path / f"dask{i}")[0].tobytes()
                == theta_file(tmp_path / f"here{i}")[0].tobytes())


@pytest.mark.parametrize("text, where, got", [
    ('[evolve]\nfitness = "rastrigin"\n', "[evolve] fitness", "'rastrigin'"),
    ('[evolve]\nfitness = "sphere"\npopsize = -4\n', "[evolve] popsize", "-4"),
    ('[model]\nhidden = [4]\n', "[evolve]", "missing"),
    ('[evolve]\nfitness = "sphere"\npopsiz = 4\n', "[evolve] 'popsiz'", "unknown key"),
    ('[evolve]\nfitness = "sphere"\ndim = 2\ntarget = [1, 2, 3]\n', "[evolve] target", "got 3"),
    ('[evolve]\nfitness = "sphere"\nsigma0 = 0\n', "[evolve] sigma0", "got 0"),
    ('[evolve]\nfitness = "sphere"\nn_bits = 3\n', "[evolve] n_bits", "'bit_repetition'"),
])
def test_config_errors_name_the_file_the_key_and_the_value(tmp_path, text, where, got):
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        evolve.load_evolve_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {where}") and got in msg


def test_cli_writes_the_outputs_and_refuses_a_used_folder(tmp_path, capsys):
    config, out = sphere_config(tmp_path, generations=5), str(tmp_path / "run")
    assert main(["evolve", config, "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("5 generations; best fitness")
    for name in ("best_theta.npz", "generations.csv", "fitness.png", evolve.CHECKPOINT):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert main(["evolve", config, "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ptncn: error: {out} exists")
    assert main(["evolve", write(tmp_path, "bad.toml", "[evolve]\npopsize = 0\n"),
                 "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml: [evolve] fitness: missing" in err
    assert main(["evolve", config, "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no evolution run" in capsys.readouterr().err


def test_resume_refuses_another_config(tmp_path):
    out = str(tmp_path / "run")
    evolve.run_evolve(sphere_config(tmp_path, generations=2), out, plots=False)
    other = sphere_config(tmp_path, "other.toml", generations=4, target="[0.0, 0.0, 0.0]")
    with pytest.raises(ConfigError, match="another config"):
        evolve.run_evolve(other, out, resume=True)


def _have_learned_neuron():
    import importlib.util
    return importlib.util.find_spec("ptncn.learned_neuron") is not None


needs_learned_neuron = pytest.mark.skipif(not _have_learned_neuron(),
                                          reason="ptncn.learned_neuron is not there")


@needs_learned_neuron
def test_bit_repetition_run_writes_a_theta_load_theta_reads(tmp_path):
    from ptncn.learned_neuron import load_theta, theta_size

    out = str(tmp_path / "bits")
    res = evolve.run_evolve(write(tmp_path, "bits.toml", BITS), out)
    rows = numbers(out)
    assert len(rows) == 2 and all(0.0 <= r["best"] <= r["median"] <= 1.0 for r in rows)
    theta = load_theta(os.path.join(out, "best_theta.npz"), "memory", 2, 4)
    assert theta.shape == (theta_size("memory", 2, 4),)
    assert np.array_equal(theta, res["best"]["theta"])
    for name in ("fitness.png", "neuron.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0


@needs_learned_neuron
def test_bit_repetition_fitness_is_pure_and_divergence_scores_worst(tmp_path, monkeypatch):
    from ptncn import simulate
    from ptncn.errors import DivergenceError

    spec = evolve.load_evolve_config(write(tmp_path, "bits.toml", BITS))
    theta = evolve.theta0(spec)
    first = evolve.fitness(theta, spec, 11)
    assert 0.0 <= first <= 1.0 and evolve.fitness(theta.copy(), spec, 11) == first

    def diverge(*args, **kw):
        raise DivergenceError(3, "o1")
        yield

    monkeypatch.setattr(simulate, "simulate", diverge)
    assert evolve.fitness(theta, spec, 11) == evolve.WORST


@needs_learned_neuron
def test_bit_repetition_model_errors_name_the_key(tmp_path):
    bad = BITS.replace('variant = "memory"', 'variant = "lstm"')
    with pytest.raises(ConfigError, match=r"bits.toml: \[model\]: .*variant.*'lstm'"):
        evolve.load_evolve_config(write(tmp_path, "bits.toml", bad))
    with pytest.raises(ConfigError, match=r"\[model\] seed: set by evolution"):
        evolve.load_evolve_config(write(tmp_path, "seed.toml", BITS + "seed = 3\n"))


@needs_learned_neuron
def test_the_shipped_example_config_validates():
    spec = evolve.load_evolve_config(os.path.join(ROOT, "models", "evolve", "bits.toml"))
    assert spec["evolve"]["fitness"] == "bit_repetition"
    assert np.array_equal(evolve.theta0(spec), evolve.theta0(spec))      # seeded
