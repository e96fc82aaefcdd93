"""The learned neuron on bit repetition: evolve ``a``, then compare ``b`` with it.

    python analysis/learned_neuron_study.py --out DIR [--bits 3 5] [--evolve-bits 3]
        [--generations 60] [--popsize 12] [--budget-s 20] [--seeds 5] [--workers 2]
        [--transfer]

1. ``ptncn evolve`` (CMA-ES) finds ``theta_a`` for each variant ("memory",
   "recurrent") on ``--evolve-bits`` bits: ``b`` = two layers of 10 units with
   ``a`` as activation, trained from scratch by Adam (2,048 sequences) for each
   candidate, scored on 128 held-out sequences.
2. For each bit count in ``--bits`` a study (:mod:`ptncn.sweep.study`): ``b`` with
   each evolved ``a``, the same ``b`` with tanh units trained by the same one-step
   backprop (TBPTT(1)), BPTT, P-TNCN and the ESN; every learner tunes its learning
   rate (the ESN its leak) on validation with equal budgets, then runs ``--seeds``
   seeds of its best configuration, scored on test (bit accuracy of the recall).
3. With ``--transfer``: the evolved memory neuron in a
   bigger ``b`` (one layer of 128 units) on PTB-char next-character prediction,
   against tanh units with the same one-step backprop, at equal budgets (BPC).

Writes ``DIR/evolve-<variant>-bits<n>/`` (``ptncn evolve``'s outputs), ``DIR/studies/`` (the
study files) and ``DIR/bits<n>/`` (each study's table ``study.md`` and figure), and
prints the tables.  Re-running skips what is done.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN = [10, 10]
NEURON = {"n_m": 2, "a_hidden": 8}


def evolve_config(variant: str, bits: int, generations: int, popsize: int) -> str:
    """The TOML of one evolution run (b: two layers of 10 units, trained by Adam)."""
    return f"""# written by analysis/learned_neuron_study.py
[evolve]
fitness = "bit_repetition"
generations = {generations}
popsize = {popsize}
sigma0 = 0.3
seed = 0
n_bits = {bits}
batch = 16
train_sequences = 2048
eval_sequences = 128

[model]
hidden = {HIDDEN}
variant = "{variant}"
n_m = {NEURON['n_m']}
a_hidden = {NEURON['a_hidden']}
out = "sigmoid"
optimizer = "adam"
lr = 0.01
"""


def study_config(bits: int, thetas: dict, budget_s: float, seeds: int) -> tuple[str, str]:
    """(task config, study config) TOML for ``bits`` bits."""
    task = f"""name = "bits{bits}"
seed = 1234
[task]
name = "bit_recall"
n_bits = {bits}
batch_size = 16
[model]
learner = "ptncn"
hidden = [32, 32]
act = "tanh"
out = "sigmoid"
[optimizer]
name = "nesterov"
lr = 0.075
momentum = 0.95
[train]
batches = 500
"""
    ln = (f'learner = "learned_neuron", out = "sigmoid", hidden = {HIDDEN}, '
          f'n_m = {NEURON["n_m"]}, a_hidden = {NEURON["a_hidden"]}')
    lrs = "[0.003, 0.01, 0.03]"
    learners = [f'[learners.{v}_neuron]\nmodel = {{{ln}, variant = "{v}", theta_a = "{p}"}}\n'
                f'optimizer = {{name = "adam"}}\ngrid = {{"optimizer.lr" = {lrs}}}\n'
                for v, p in thetas.items()]
    learners += [
        f'[learners.tanh_one_step]\nmodel = {{{ln}, neuron = "tanh"}}\n'
        f'optimizer = {{name = "adam"}}\ngrid = {{"optimizer.lr" = {lrs}}}\n',
        '[learners.bptt]\nmodel = {learner = "bptt", out = "sigmoid", hidden = 20}\n'
        'optimizer = {name = "adam"}\ngrid = {"optimizer.lr" = [0.003, 0.01, 0.03]}\n',
        '[learners.ptncn]\ngrid = {"optimizer.lr" = [0.02, 0.075, 0.2]}\n',
        '[learners.esn]\nmodel = {learner = "esn", out = "sigmoid", hidden = 200, sr = 0.9, '
        'input_scaling = 1.0, readout = "ridge", ridge = 1e-4}\n'
        'grid = {"model.leak" = [0.2, 0.5, 1.0]}\n']
    study = (f'name = "bits{bits}"\nbase = "bits{bits}_task.toml"\n'
             'set = ["train.eval_every=0", "train.final_eval_batches=16", '
             '"train.checkpoint_every=0", \'record.traces=["loss"]\']\n'
             f'budget_s = {budget_s}\nmetric = "bit_accuracy"\ntune_seeds = 1\n'
             f'final_seeds = {seeds}\n\n' + "\n".join(learners))
    return task, study


def transfer_config(theta: str, budget_s: float, seeds: int) -> str:
    """A study on PTB-char (h = 250 task file): ``b`` with one layer of 128 units, with
    the evolved ``a`` (memory variant) vs tanh units, both by one-step backprop."""
    ln = ('learner = "learned_neuron", out = "softmax", hidden = [128], n_m = '
          f'{NEURON["n_m"]}, a_hidden = {NEURON["a_hidden"]}')
    grid = 'grid = {"optimizer.lr" = [0.001, 0.003, 0.01]}'
    base = os.path.join(ROOT, "models", "ptb_char_small.toml")
    return (f'name = "transfer_ptb_char"\nbase = "{base}"\n'
            'set = ["train.eval_every=0", "train.final_eval_batches=10", '
            '"train.checkpoint_every=0", \'record.traces=["loss"]\']\n'
            f'budget_s = {budget_s}\nmetric = "bpc"\ntune_seeds = 1\nfinal_seeds = {seeds}\n\n'
            f'[learners.memory_neuron]\nmodel = {{{ln}, variant = "memory", theta_a = "{theta}"}}\n'
            f'optimizer = {{name = "adam"}}\n{grid}\n\n'
            f'[learners.tanh_one_step]\nmodel = {{{ln}, neuron = "tanh"}}\n'
            f'optimizer = {{name = "adam"}}\n{grid}\n')


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def evolve(out: str, variant: str, bits: int, args) -> str:
    """Run (or finish) ``ptncn evolve`` for ``variant`` on ``bits`` bits; the path of
    its best theta_a."""
    d = os.path.join(out, f"evolve-{variant}-bits{bits}")
    cfg = write(os.path.join(out, "studies", f"evolve_{variant}_bits{bits}.toml"),
                evolve_config(variant, bits, args.generations, args.popsize))
    resume = ["--resume"] if os.path.isdir(d) and os.listdir(d) else []   # done: no work
    run([sys.executable, "-m", "ptncn", "evolve", cfg, "--out", d, "--quiet",
         "--workers", str(args.workers)] + resume)
    return os.path.join(d, "best_theta.npz")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--bits", type=int, nargs="*", default=[3, 5])
    ap.add_argument("--evolve-bits", type=int, default=3,
                    help="the bit count a is evolved on (used for every --bits)")
    ap.add_argument("--generations", type=int, default=60)
    ap.add_argument("--popsize", type=int, default=12)
    ap.add_argument("--budget-s", type=float, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--transfer", action="store_true",
                    help="also the PTB-char transfer study (the evolved memory neuron)")
    ap.add_argument("--transfer-budget-s", type=float, default=60)
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    studies = []
    thetas = {v: evolve(out, v, args.evolve_bits, args) for v in ("memory", "recurrent")}
    for bits in args.bits:
        task, study = study_config(bits, thetas, args.budget_s, args.seeds)
        write(os.path.join(out, "studies", f"bits{bits}_task.toml"), task)
        studies.append(write(os.path.join(out, "studies", f"bits{bits}.toml"), study))
    if args.transfer:
        studies.append(write(os.path.join(out, "studies", "transfer_ptb_char.toml"),
                             transfer_config(thetas["memory"], args.transfer_budget_s,
                                             args.seeds)))
    run([sys.executable, os.path.join(ROOT, "analysis", "compare_baselines.py"), *studies,
         "--out", out, "--workers", str(args.workers)])


if __name__ == "__main__":
    main()
