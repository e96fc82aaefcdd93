"""The ``ptncn`` command."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _demo(args) -> int:
    from .data.synthetic import cyclic_symbol_stream, cyclic_symbols
    from .ptncn import PTNCN
    from .simulate import run_batch

    model = PTNCN(args.vocab, args.hidden, act=args.act, out="softmax", optimizer=args.optimizer,
                  lr=args.lr, seed=args.seed)
    stream = cyclic_symbol_stream(args.batch, args.length, vocab=args.vocab, seed=args.seed)
    held_out = cyclic_symbols(64, args.length, vocab=args.vocab, seed=args.seed)
    print(f"P-TNCN demo: next-symbol prediction on repeating patterns "
          f"(vocab {args.vocab}, hidden {args.hidden}, {args.optimizer} lr {args.lr}); "
          f"chance = {np.log2(args.vocab):.3f} bits")
    print(f"{'batch':>6} {'train bits':>11} {'held-out bits':>14} {'s':>7}")
    t0 = time.perf_counter()
    first = last = None
    for i in range(args.batches + 1):
        if i % args.every == 0:
            ev = run_batch(model, *held_out, learn=False)
            bits = ev.mean / np.log(2)
            first = bits if first is None else first
            last = bits
        x, m = next(stream)
        tr = run_batch(model, x, m, learn=True)
        if i % args.every == 0:
            print(f"{i:>6} {tr.mean / np.log(2):>11.4f} {bits:>14.4f} "
                  f"{time.perf_counter() - t0:>7.1f}", flush=True)
    print(f"held-out loss: {first:.4f} -> {last:.4f} bits/symbol")
    if args.save:
        model.save(args.save)
        print(f"saved model to {args.save}")
    return 0 if last < first else 1


def _info(args) -> int:
    from .ptncn import PTNCN

    m = PTNCN.load(args.file)
    print(json.dumps({"config": m.config.to_dict(), "optimizer": m.optimizer.hyperparams(),
                      "optimizer_steps": m.optimizer.t, "steps_taken": m.steps_taken,
                      "params": {k: list(v.shape) for k, v in m.params.items()}}, indent=2))
    return 0


def main(argv=None) -> int:
    from . import __version__

    ap = argparse.ArgumentParser(prog="ptncn", description="P-TNCN simulator")
    ap.add_argument("--version", action="version", version=f"ptncn {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="train a small P-TNCN on a built-in sequence task")
    d.add_argument("--batches", type=int, default=300)
    d.add_argument("--every", type=int, default=25)
    d.add_argument("--batch", type=int, default=16)
    d.add_argument("--length", type=int, default=20)
    d.add_argument("--vocab", type=int, default=8)
    d.add_argument("--hidden", type=int, default=64)
    d.add_argument("--act", default="tanh")
    d.add_argument("--optimizer", default="nesterov")
    d.add_argument("--lr", type=float, default=0.075)
    d.add_argument("--seed", type=int, default=1234)
    d.add_argument("--save", default=None, help="write the trained model here (.npz)")
    d.set_defaults(fn=_demo)

    i = sub.add_parser("info", help="print the config and shapes of a saved model")
    i.add_argument("file")
    i.set_defaults(fn=_info)

    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError) as exc:
        print(f"ptncn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
