"""Compare learners as a study: equal tuning budgets, equal training time, many seeds.

    python analysis/compare_baselines.py STUDY.toml [STUDY.toml ...] --out DIR
        [--workers N | --scheduler ADDR] [--retries R]

A study spec (``models/studies/*.toml``, format in :mod:`ptncn.sweep.study`) names
a task config and, per learner, its model and a grid of the same size as every
other learner's.  For each learner the script tunes (every configuration, each
run ``budget_s`` seconds of training, scored on validation), takes the best
configuration and re-runs it with ``final_seeds`` fresh seeds, scored on test.
Both stages are sweeps on Dask workers (:func:`ptncn.sweep.run_sweep`), so
re-running the command skips what is done.

Writes per study ``DIR/<study>/``: ``study.json`` (the results), ``study.md`` (the
table, also printed), ``study.png`` (each learner's test score: every seed and the
mean with its 95% t-interval, the trivial predictors as lines), and the sweep
folders ``<learner>/tune`` and ``<learner>/final``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from matplotlib.figure import Figure


def fmt(x: float, half: float | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if half is None or math.isnan(half):
        return f"{x:.4g}"
    return f"{x:.4g} ± {half:.2g}"


def table(doc: dict) -> str:
    """The study as a markdown table."""
    m, better = doc["metric"], "higher" if doc["direction"] == "max" else "lower"
    lines = [f"### {doc['name']}: test {m} ({better} is better)", "",
             f"Each run {doc['budget_s']:g} s of training; {doc['tune_seeds']} seed(s) "
             f"per configuration while tuning (on validation), then the chosen "
             f"configuration with {doc['final_seeds']} new seeds (on test); mean ± "
             "half-width of the 95% t-interval over those seeds.", "",
             f"| learner | chosen | valid {m} (tuning) | test {m} | seeds | steps/run | "
             "failed runs |", "|---|---|---|---|---|---|---|"]
    for label, r in doc["learners"].items():
        chosen = ", ".join(f"{k.split('.', 1)[1]} = {v}" for k, v in r["values"].items())
        lines.append(f"| {label} | {chosen} | {fmt(r['valid'])} | "
                     f"{fmt(r['test_mean'], r['test_half'])} | {r['n']} | "
                     f"{fmt(r['steps'])} | {r['failed']} |")
    base = next((r["baselines"] for r in doc["learners"].values() if r["baselines"]), {})
    if base:
        lines += ["", "Trivial predictors on the same test data: " +
                  ", ".join(f"{k} {fmt(v)}" for k, v in base.items()) + "."]
    return "\n".join(lines) + "\n"


def figure(doc: dict) -> Figure:
    """Each learner's test scores: seeds as dots, mean and 95% interval as a bar."""
    labels = list(doc["learners"])
    fig = Figure(figsize=(1.2 * len(labels) + 3, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, label in enumerate(labels):
        r = doc["learners"][label]
        vals = r["test_values"]
        ax.plot([i] * len(vals), vals, "o", ms=4, alpha=0.5, color=f"C{i}")
        if not math.isnan(r["test_mean"]):
            half = 0.0 if math.isnan(r["test_half"]) else r["test_half"]
            ax.errorbar(i + 0.18, r["test_mean"], yerr=half, fmt="s", color="k", capsize=4)
    base = next((r["baselines"] for r in doc["learners"].values() if r["baselines"]), {})
    for j, (name, v) in enumerate(base.items()):
        ax.axhline(v, ls=":", color=f"C{len(labels) + j}", label=f"{name} predictor")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(f"test {doc['metric']}")
    better = "higher" if doc["direction"] == "max" else "lower"
    ax.set_title(f"{doc['name']}: {doc['budget_s']:g} s per run, tuned on validation, "
                 f"{doc['final_seeds']} seeds ({better} is better)")
    ax.grid(alpha=0.3, axis="y")
    if base:
        ax.legend(loc="best", fontsize=8)
    return fig


def study_args(description: str, argv=None) -> argparse.Namespace:
    """The command line of a study script: specs, ``--out``, where to run."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("studies", nargs="+", help="study specs (models/studies/*.toml)")
    ap.add_argument("--out", required=True)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2)
    where.add_argument("--scheduler", default=None)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    return ap.parse_args(argv)


def run_studies(args: argparse.Namespace):
    """Run (or finish) each study of ``args``: yields (its spec, its folder, its results)."""
    from ptncn.sweep.study import load_study, run_study

    for path in args.studies:
        out = os.path.join(args.out, load_study(path).name)
        os.makedirs(out, exist_ok=True)
        yield path, out, run_study(path, out, workers=args.workers, scheduler=args.scheduler,
                                   retries=args.retries, data_dir=args.data_dir,
                                   log=lambda msg: print(msg, file=sys.stderr, flush=True))


def main(argv=None) -> int:
    for _, out, doc in run_studies(study_args(__doc__.split("\n")[0], argv)):
        text = table(doc)
        with open(os.path.join(out, "study.md"), "w") as f:
            f.write(text)
        figure(doc).savefig(os.path.join(out, "study.png"), dpi=110)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
