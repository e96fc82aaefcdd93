"""The ``ptncn`` command."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback

import numpy as np

from .jsonio import dumps_json

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
    from .threads import note_choice

    model = PTNCN(args.vocab, args.hidden, act=args.act, out="softmax", optimizer=args.optimizer,
                  lr=args.lr, seed=args.seed)
    task = CyclicSymbols(batch_size=args.batch, length=args.length, vocab=args.vocab,
                         seed=args.seed)
    held_out = CyclicSymbols(batch_size=64, length=args.length, vocab=args.vocab,
                             seed=args.seed).batch(10**9)     # a batch training never sees
    print(f"P-TNCN demo: next-symbol prediction on repeating patterns "
          f"(vocab {args.vocab}, hidden {args.hidden}, {args.optimizer} lr {args.lr}); "
          f"chance = {np.log2(args.vocab):.3f} bits")
    note_choice()
    before = _held_out_bits(model, held_out)
    print(f"held-out loss before training: {before:.4f} bits/symbol")
    res = _demo_simulation(args, model, task).run()
    after = _held_out_bits(model, held_out)
    print(f"trained {res.steps} steps in {res.seconds:.1f} s ({res.steps_per_s:.0f} steps/s)")
    print(f"held-out loss: {before:.4f} -> {after:.4f} bits/symbol")
    _demo_outputs(args, model)
    return 0 if after < before else 1


def _demo_args(p) -> None:
    p.add_argument("--batches", type=_int_at_least(1), default=300)
    p.add_argument("--every", type=_int_at_least(1), default=25, help="print the train loss every N batches")
    p.add_argument("--batch", type=_int_at_least(1), default=16)
    p.add_argument("--length", type=_int_at_least(2), default=20)
    p.add_argument("--vocab", type=_int_at_least(2), default=8)
    p.add_argument("--hidden", type=_int_at_least(1), default=64)
    p.add_argument("--act", default="tanh")
    p.add_argument("--optimizer", default="nesterov")
    p.add_argument("--lr", type=_positive_number, default=0.075)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--save", default=None, help="write the trained model here (.npz)")
    p.add_argument("--out", default=None,
                   help="record the run to OUT/run.h5 (+ checkpoint, + OUT/plots/*.png)")


# ---------------------------------------------------------------------------
# the other subcommands: each runs one function and has its own arguments
# ---------------------------------------------------------------------------
def _set_option(p, **kw) -> None:
    """The repeatable ``--set`` override option."""
    p.add_argument("--set", action="append", default=[], **kw)


def _writing(args, run) -> int:
    """Run ``run()`` (a command that writes a run folder); the exit status of how it ended
    (besides :func:`main`'s: 2 for bad input or a folder held by another process):
    0 done, 3 the run diverged (its last good state saved), 130 interrupted by SIGINT
    (a checkpoint saved)."""
    from .errors import DivergenceError

    try:
        run()
    except DivergenceError as exc:
        saved = f"; the last good state is in {exc.checkpoint}" if exc.checkpoint else ""
        line, code = f"ptncn: error: the run diverged: {exc}{saved}", 3
    except KeyboardInterrupt as exc:
        line, code = f"ptncn: {str(exc) or 'interrupted'}", 130
    else:
        return 0
    print(traceback.format_exc() + line if args.debug else line, file=sys.stderr)
    return code


def _train(args) -> int:
    from .harness import load_config, train

    cfg = load_config(args.config, args.set)
    return _writing(args, lambda: train(cfg, out_dir=args.out, data_dir=args.data_dir,
                                        quiet=args.quiet, plots=not args.no_plots))


def _train_args(p) -> None:
    p.add_argument("config")
    p.add_argument("--out", default=None, help="output folder (default runs/<name>)")
    p.add_argument("--data-dir", default=None, help="where the data files are (else $PTNCN_DATA)")
    _set_option(p, metavar="SECTION.KEY=VALUE",
                help="override a config value, e.g. --set train.batches=50")
    p.add_argument("--no-plots", action="store_true")


def _resume(args) -> int:
    from .harness import resume_config, train

    cfg = resume_config(args.run_dir, args.set)
    return _writing(args, lambda: train(cfg, out_dir=args.run_dir, data_dir=args.data_dir,
                                        quiet=args.quiet, resume=True,
                                        plots=not args.no_plots))


def _resume_args(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-plots", action="store_true")
    _set_option(p, metavar="SECTION.KEY=VALUE",
                help="change how long the run goes on or when it evaluates: train.batches, "
                     "train.time_budget_s, train.eval_every, ... (others are refused)")


def _eval(args) -> int:
    from .harness import evaluate, load_config, make_task
    from .learner import load_learner
    from .threads import note_choice

    cfg = load_config(args.config, args.set)
    probe = make_task(cfg, "train", args.data_dir)
    split = args.split or probe.default_eval_split
    task = make_task(cfg, split, args.data_dir)
    model = load_learner(args.model)
    note_choice()
    m = evaluate(model, task, args.batches, progress=False if args.quiet else None,
                 desc=f"eval {split}")
    print(dumps_json({"model": args.model, "split": split, **m}, indent=2, default=float))
    return 0


def _eval_args(p) -> None:
    p.add_argument("config")
    p.add_argument("--model", required=True, help="a model saved by train (best.npz, final.npz)")
    p.add_argument("--split", default=None, help="valid or test (default: the config's)")
    p.add_argument("--batches", type=_int_at_least(0), default=0,
                   help="at most this many batches (0 = all)")
    p.add_argument("--data-dir", default=None)
    _set_option(p)


def _zeroshot(args) -> int:
    from .zeroshot import load_zeroshot_config, run_zeroshot

    cfg = load_zeroshot_config(args.config, args.set)
    out = args.out or os.path.join("runs", cfg["name"])
    return _writing(args, lambda: run_zeroshot(cfg, out, data_dir=args.data_dir,
                                                quiet=args.quiet, workers=args.workers,
                                                scheduler=args.scheduler))


def _where_args(p, workers: int, help_workers: str) -> None:
    """``--workers N`` (default ``workers``) or ``--scheduler ADDR``, not both."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_int_at_least(0), default=workers, help=help_workers)
    where.add_argument("--scheduler", default=None,
                       help="address of a running Dask scheduler (tcp://host:port)")


def _zeroshot_args(p) -> None:
    p.add_argument("config", help="a zero-shot config (models/zeroshot_*.toml)")
    p.add_argument("--out", default=None, help="output folder (default runs/<name>)")
    p.add_argument("--data-dir", default=None)
    _where_args(p, 0, "local worker processes, one seed each at a time "
                      "(default 0 = in this process)")
    _set_option(p, metavar="KEY=VALUE",
                help="zeroshot.seeds=[1,2], or section.key=value for both task configs")


def _sweep(args) -> int:
    from .sweep import run_sweep
    from .sweep.results import sweep_report

    try:
        res = run_sweep(args.spec, args.out, workers=args.workers, scheduler=args.scheduler,
                        resume=args.resume, retries=args.retries, overrides=args.set,
                        data_dir=args.data_dir, progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print(f"ptncn: interrupted; the finished runs are in {args.out}/results.csv and the "
              "same command resumes the others from their checkpoints", file=sys.stderr)
        return 130
    text, figures = sweep_report(args.out)
    print(text)
    for f in figures:
        print(f"figure: {f}")
    for row in res.failed:
        print(f"failed: run {row['run_id']} ({args.out}/runs/{row['run_id']}): {row['error']}",
              file=sys.stderr)
    if res.failed:
        print(f"ptncn: {len(res.failed)} of {len(res.rows)} runs failed", file=sys.stderr)
    return 1 if res.failed else 0


def _sweep_args(p) -> None:
    p.add_argument("spec", help="a sweep spec (TOML: base config, [sweep] grid/random/seeds)")
    p.add_argument("--out", required=True, help="the sweep's folder")
    _where_args(p, 1, "local worker processes (default 1; 0 = in this process)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out (a re-run of the same command does too)")
    p.add_argument("--retries", type=_int_at_least(0), default=2,
                   help="times a run whose worker died is tried again (default 2)")
    p.add_argument("--data-dir", default=None)
    _set_option(p, metavar="SECTION.KEY=VALUE", help="override a base-config value")
    p.add_argument("--quiet", action="store_true", help="no progress")


def _evolve(args) -> int:
    from .evolve import run_evolve

    try:
        res = run_evolve(args.config, args.out, workers=args.workers, scheduler=args.scheduler,
                         resume=args.resume, plots=not args.no_plots)
    except KeyboardInterrupt:
        print(f"ptncn: interrupted; --resume continues from the last finished generation "
              f"in {args.out}", file=sys.stderr)
        return 130
    best = res["best"]
    print(f"{res['generations']} generations; best fitness {best['fitness']:.6g} "
          f"(generation {best['generation']})")
    for f in res["files"]:
        print(f"wrote {f}")
    return 0


def _evolve_args(p) -> None:
    p.add_argument("config", help="an evolve config (TOML: [evolve], [model])")
    p.add_argument("--out", required=True, help="the run's folder")
    _where_args(p, 0, "local worker processes evaluating candidates "
                      "(default 0 = in this process)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished generation")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no line per generation")


def _sweep_report(args) -> int:
    from .sweep.results import sweep_report

    text, figures = sweep_report(args.dir)
    print(text)
    for f in figures:
        print(f"figure: {f}")
    return 0


def _sweep_report_args(p) -> None:
    p.add_argument("dir", help="a sweep folder (ptncn sweep --out)")


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
    from .export import export_nwb
    from .runlock import describe

    done = export_nwb(args.file, args.nwb, step_seconds=args.step_seconds,
                      overwrite=args.overwrite, partial=args.partial)
    print(f"wrote {done.path}")
    if done.writer is not None:
        upto = "" if done.last_step is None else f" (the latest of step {done.last_step})"
        print(f"partial export: took {done.records} records of {done.traces} traces"
              f"{upto}, flushed while {describe(done.writer)} was writing the run")
    return 0


def _export_args(p) -> None:
    p.add_argument("file", help="run file (.h5)")
    p.add_argument("--nwb", required=True, help="write NWB (needs the 'nwb' extra) to this path")
    p.add_argument("--step-seconds", type=float, default=1.0,
                   help="NWB time of one simulation step, in seconds (default 1)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--partial", action="store_true",
                   help="export a run that is still being written (the records flushed so far)")


def _summary(args) -> int:
    from .record import open_recording

    with open_recording(args.file) as r:
        print(r.summary())
    return 0


def _info(args) -> int:
    from .learner import load_learner

    m = load_learner(args.file)
    opt = m.optimizer
    print(dumps_json({"learner": m.name, "class": type(m).__name__, "config": m.config_dict(),
                      "optimizer": opt.hyperparams() if opt is not None else None,
                      "optimizer_steps": opt.t if opt is not None else None,
                      "steps_taken": m.steps_taken,
                      "params": {k: list(v.shape) for k, v in m.params.items()}}, indent=2,
                     default=str))
    return 0


def _file_arg(p) -> None:
    p.add_argument("file")


#: the subcommands that compute (and so take ``--threads`` and ``--quiet``)
COMPUTING = ("demo", "train", "resume", "eval", "zero-shot")

#: subcommand -> (help, function adding its arguments, function running it)
COMMANDS = {
    "demo": ("train a small P-TNCN on a built-in sequence task", _demo_args, _demo),
    "train": ("train and evaluate from a TOML config (models/*.toml)", _train_args, _train),
    "resume": ("continue an interrupted `ptncn train` run from its checkpoint", _resume_args,
               _resume),
    "eval": ("evaluate a saved model on a config's task", _eval_args, _eval),
    "zero-shot": ("train on family A, run on family B (docs/zero-shot.md)", _zeroshot_args,
                  _zeroshot),
    "sweep": ("run a sweep over config values and seeds (docs/studies.md)", _sweep_args,
              _sweep),
    "sweep-report": ("the table and figures of a sweep", _sweep_report_args, _sweep_report),
    "evolve": ("evolve the learned neuron's activation network by CMA-ES "
               "(docs/learned-neuron.md)", _evolve_args, _evolve),
    "plot": ("write PNG figures of a recorded run", _plot_args, _plot),
    "export": ("export a recorded run to another format", _export_args, _export),
    "summary": ("list the traces of a recorded run", _file_arg, _summary),
    "info": ("print the config and shapes of a saved model", _file_arg, _info),
}


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(lo: int):
    """An argparse type: an integer >= ``lo``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}")
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v
    return parse


def _positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _threads_type(text: str):
    from .threads import parse_threads
    try:
        return parse_threads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _computing_args(p) -> None:
    p.add_argument("--threads", type=_threads_type, default=None, metavar="N|auto",
                   help="BLAS threads (default: auto, the cores not already busy, unless "
                        "OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is set)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (bar or log lines); results and errors still print")


class _StderrHandler(logging.StreamHandler):
    """A logging handler writing to whatever ``sys.stderr`` is at the time."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _start(args) -> None:
    """Before a command runs: progress and notes to stderr through ``logging`` (hidden
    under ``--quiet``), and the BLAS threads of a computing command chosen."""
    from .threads import set_threads

    log = logging.getLogger("ptncn")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    if args.cmd in COMPUTING:
        set_threads(args.threads)       # logged by the command when it starts computing


def _finish() -> None:
    """After a command (``main`` may run in a longer process): undo :func:`_start`."""
    from .threads import reset_threads

    log = logging.getLogger("ptncn")
    for h in [h for h in log.handlers if isinstance(h, _StderrHandler)]:
        log.removeHandler(h)
    log.propagate = True
    log.setLevel(logging.NOTSET)
    reset_threads()


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = _Parser(prog="ptncn", description="P-TNCN simulator")
    ap.add_argument("--version", action="version", version=f"ptncn {__version__}")
    ap.add_argument("--debug", action="store_true",
                    help="show the traceback of an error (else one line)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        if name in COMPUTING:
            _computing_args(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error (else one line)")
    return ap


#: errors that bad input (a config, a file, an argument, a busy folder) ends in: one line,
#: exit status 2
USER_ERRORS = (ValueError, OSError, KeyError, ImportError, FloatingPointError, RuntimeError,
               MemoryError)


def _message(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def main(argv=None) -> int:
    """Run one ``ptncn`` command; errors are one line on stderr (``--debug``: with the
    traceback): exit 2 for bad input, 1 for anything unexpected."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        _finish()


def _run(args) -> int:
    """:func:`main` after parsing the arguments."""
    try:
        _start(args)
        code = COMMANDS[args.cmd][2](args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:          # the reader went away (``ptncn summary f | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as exc:
        line, code, tb = f"ptncn: error: {_message(exc)}", 2, traceback.format_exc()
    except Exception as exc:         # noqa: BLE001 - a bug: still one line, unless --debug
        line, code, tb = (f"ptncn: internal error: {type(exc).__name__}: {_message(exc)} "
                          "(rerun with --debug for the traceback)"), 1, traceback.format_exc()
    print(tb + line if args.debug else line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
