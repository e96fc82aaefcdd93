"""The ``ptncn`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------
def _held_out_bits(model, held_out) -> float:
    """Mean loss of ``model`` (weights frozen) on the batch ``held_out``, in bits per symbol."""
    from .simulate import run_batch

    return run_batch(model, held_out.x, held_out.mask, learn=False,
                     score=held_out.score).mean / np.log(2)


def _demo_recorder(model, out):
    """A Recorder writing ``out``/run.h5 (None without ``out``)."""
    from .record import Recorder

    if not out:
        return None
    os.makedirs(out, exist_ok=True)
    rec = Recorder(os.path.join(out, "run.h5"))
    rec.add("loss").add("e0").add("e1").add("eps1").add("eps2")
    rec.add("z1", rows=[0, 1]).add("z2", rows=[0])
    for p in model.params:
        rec.add(f"norm_{p}").add(f"norm_d{p}")
    return rec


def _print_train_loss(every: int):
    """An ``on_batch_end`` callback printing the mean train loss of every ``every`` batches."""
    recent: list = []

    def batch_end(sim, b, mean_nats):
        recent.append(mean_nats / np.log(2))
        if (b + 1) % every == 0:
            print(f"  batch {b + 1:>5}: train loss {np.nanmean(recent):.4f} bits/symbol "
                  f"(mean of the last {len(recent)} batches)", flush=True)
            recent.clear()
    return batch_end


def _demo_simulation(args, model, task):
    from .simulate import Simulation

    sim = Simulation(model, task, args.batches, recorder=_demo_recorder(model, args.out),
                     checkpoint_every=500 if args.out else 0,
                     checkpoint_path=os.path.join(args.out, "run.ckpt.npz") if args.out else None,
                     progress=False if args.quiet else None,
                     attrs={"config": {"model": model.config.to_dict(),
                                       "optimizer": model.optimizer.hyperparams(),
                                       "batches": args.batches}, "seed": args.seed})
    sim.on_batch_end = _print_train_loss(args.every)
    return sim


def _demo_outputs(args, model) -> None:
    """Save the model and plot the recording, where the options ask for them."""
    from .analysis import plot_run

    if args.save:
        model.save(args.save)
        print(f"saved model to {args.save}")
    if args.out:
        print(f"recording: {os.path.join(args.out, 'run.h5')}")
        for p in plot_run(os.path.join(args.out, "run.h5"), os.path.join(args.out, "plots")):
            print(f"plot: {p}")


def _demo(args) -> int:
    from .data.synthetic import CyclicSymbols
    from .ptncn import PTNCN

    model = PTNCN(args.vocab, args.hidden, act=args.act, out="softmax", optimizer=args.optimizer,
                  lr=args.lr, seed=args.seed)
    task = CyclicSymbols(batch_size=args.batch, length=args.length, vocab=args.vocab,
                         seed=args.seed)
    held_out = CyclicSymbols(batch_size=64, length=args.length, vocab=args.vocab,
                             seed=args.seed).batch(10**9)     # a batch training never sees
    print(f"P-TNCN demo: next-symbol prediction on repeating patterns "
          f"(vocab {args.vocab}, hidden {args.hidden}, {args.optimizer} lr {args.lr}); "
          f"chance = {np.log2(args.vocab):.3f} bits")
    before = _held_out_bits(model, held_out)
    print(f"held-out loss before training: {before:.4f} bits/symbol")
    res = _demo_simulation(args, model, task).run()
    after = _held_out_bits(model, held_out)
    print(f"trained {res.steps} steps in {res.seconds:.1f} s ({res.steps_per_s:.0f} steps/s)")
    print(f"held-out loss: {before:.4f} -> {after:.4f} bits/symbol")
    _demo_outputs(args, model)
    return 0 if after < before else 1


def _demo_args(p) -> None:
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--every", type=int, default=25, help="print the train loss every N batches")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=20)
    p.add_argument("--vocab", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--act", default="tanh")
    p.add_argument("--optimizer", default="nesterov")
    p.add_argument("--lr", type=float, default=0.075)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--save", default=None, help="write the trained model here (.npz)")
    p.add_argument("--out", default=None,
                   help="record the run to OUT/run.h5 (+ checkpoint, + OUT/plots/*.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------
# the other subcommands: each runs one function and has its own arguments
# ---------------------------------------------------------------------------
def _set_option(p, **kw) -> None:
    """The repeatable ``--set`` override option."""
    p.add_argument("--set", action="append", default=[], **kw)


def _train(args) -> int:
    from .harness import load_config, train

    cfg = load_config(args.config, args.set)
    train(cfg, out_dir=args.out, data_dir=args.data_dir, quiet=args.quiet,
          plots=not args.no_plots)
    return 0


def _train_args(p) -> None:
    p.add_argument("config")
    p.add_argument("--out", default=None, help="output folder (default runs/<name>)")
    p.add_argument("--data-dir", default=None, help="where the data files are (else $PTNCN_DATA)")
    _set_option(p, metavar="SECTION.KEY=VALUE",
                help="override a config value, e.g. --set train.batches=50")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true")


def _resume(args) -> int:
    from .harness import apply_overrides, train, validate

    with open(os.path.join(args.run_dir, "config.json")) as f:
        cfg = validate(apply_overrides(json.load(f), args.set))
    train(cfg, out_dir=args.run_dir, data_dir=args.data_dir, quiet=args.quiet, resume=True)
    return 0


def _resume_args(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    _set_option(p, metavar="SECTION.KEY=VALUE",
                help="override a config value (e.g. a new train.time_budget_s)")


def _eval(args) -> int:
    from .harness import evaluate, load_config, make_task
    from .learner import load_learner

    cfg = load_config(args.config, args.set)
    probe = make_task(cfg, "train", args.data_dir)
    split = args.split or probe.default_eval_split
    task = make_task(cfg, split, args.data_dir)
    model = load_learner(args.model)
    m = evaluate(model, task, args.batches)
    print(json.dumps({"model": args.model, "split": split, **m}, indent=2))
    return 0


def _eval_args(p) -> None:
    p.add_argument("config")
    p.add_argument("--model", required=True, help="a model saved by train (best.npz, final.npz)")
    p.add_argument("--split", default=None, help="valid or test (default: the config's)")
    p.add_argument("--batches", type=int, default=0, help="at most this many batches (0 = all)")
    p.add_argument("--data-dir", default=None)
    _set_option(p)


def _zeroshot(args) -> int:
    from .zeroshot import load_zeroshot_config, run_zeroshot

    cfg = load_zeroshot_config(args.config, args.set)
    out = args.out or os.path.join("runs", cfg["name"])
    run_zeroshot(cfg, out, data_dir=args.data_dir)
    return 0


def _zeroshot_args(p) -> None:
    p.add_argument("config", help="a zero-shot config (models/zeroshot_*.toml)")
    p.add_argument("--out", default=None, help="output folder (default runs/<name>)")
    p.add_argument("--data-dir", default=None)
    _set_option(p, metavar="KEY=VALUE",
                help="zeroshot.seeds=[1,2], or section.key=value for both task configs")


def _plot(args) -> int:
    from .analysis import plot_run

    out = args.out or (str(args.file).rsplit(".", 1)[0] + "_plots")
    for p in plot_run(args.file, out):
        print(p)
    return 0


def _plot_args(p) -> None:
    p.add_argument("file", help="run file (.h5) written by a recorder")
    p.add_argument("--out", default=None, help="output folder (default: <run>_plots)")


def _export(args) -> int:
    from .export import to_nwb

    path = to_nwb(args.file, args.nwb, step_seconds=args.step_seconds, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def _export_args(p) -> None:
    p.add_argument("file", help="run file (.h5)")
    p.add_argument("--nwb", required=True, help="write NWB (needs the 'nwb' extra) to this path")
    p.add_argument("--step-seconds", type=float, default=1.0,
                   help="NWB time of one simulation step, in seconds (default 1)")
    p.add_argument("--overwrite", action="store_true")


def _summary(args) -> int:
    from .record import open_recording

    with open_recording(args.file) as r:
        print(r.summary())
    return 0


def _info(args) -> int:
    from .learner import load_learner

    m = load_learner(args.file)
    opt = m.optimizer
    print(json.dumps({"learner": m.name, "class": type(m).__name__, "config": m.config_dict(),
                      "optimizer": opt.hyperparams() if opt is not None else None,
                      "optimizer_steps": opt.t if opt is not None else None,
                      "steps_taken": m.steps_taken,
                      "params": {k: list(v.shape) for k, v in m.params.items()}}, indent=2,
                     default=str))
    return 0


def _file_arg(p) -> None:
    p.add_argument("file")


#: subcommand -> (help, function adding its arguments, function running it)
COMMANDS = {
    "demo": ("train a small P-TNCN on a built-in sequence task", _demo_args, _demo),
    "train": ("train and evaluate from a TOML config (models/*.toml)", _train_args, _train),
    "resume": ("continue an interrupted `ptncn train` run from its checkpoint", _resume_args,
               _resume),
    "eval": ("evaluate a saved model on a config's task", _eval_args, _eval),
    "zero-shot": ("train on family A, run on family B (docs/zero-shot.md)", _zeroshot_args,
                  _zeroshot),
    "plot": ("write PNG figures of a recorded run", _plot_args, _plot),
    "export": ("export a recorded run to another format", _export_args, _export),
    "summary": ("list the traces of a recorded run", _file_arg, _summary),
    "info": ("print the config and shapes of a saved model", _file_arg, _info),
}


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="ptncn", description="P-TNCN simulator")
    ap.add_argument("--version", action="version", version=f"ptncn {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd][2](args)
    except (ValueError, OSError, KeyError, ImportError) as exc:
        print(f"ptncn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
