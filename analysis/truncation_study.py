"""One-step backprop against BPTT, the truncation curriculum and its controls.

    python analysis/truncation_study.py models/studies/truncation_ptb_char.toml \\
        models/studies/truncation_bit_recall.toml --out runs/truncation [--workers N]

Each spec is a study (:mod:`ptncn.sweep.study`): every learner tuned on validation
with the same number of configurations and the same training time, the chosen
configuration re-run with fresh seeds and scored on test.  On top of the study's
table this script reads the final runs' periodic validation scores (``history`` in
each run's metrics.json: the score with the scored training tokens and training
seconds at that point) and writes per study, in ``OUT/<study>/``:

* ``curves.png``: validation score against training tokens and against training
  seconds, each learner's mean over seeds with its 95% t-interval band;
* ``truncation.md`` / ``truncation.json``: the validation score at fixed fractions
  of the budget, its mean over the whole budget (the area under the curve divided
  by the budget: lower means it got good early), tokens seen, and the test score.

The study itself (sweeps, resume, the test table) is ``compare_baselines.py``'s.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_baselines import fmt, run_studies, study_args, table  # noqa: E402

#: fractions of the training budget at which the validation score is compared
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def run_histories(final_dir: str) -> list[list[dict]]:
    """The periodic evaluations of every finished run under a sweep folder."""
    out = []
    runs = os.path.join(final_dir, "runs")
    for run_id in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        try:
            with open(os.path.join(runs, run_id, "metrics.json")) as f:
                hist = json.load(f)["history"]
        except (OSError, ValueError, KeyError):
            continue
        if hist:
            out.append(hist)
    return out


def curve(hist: list[dict], metric: str, axis: str, grid: np.ndarray) -> np.ndarray:
    """One run's ``metric`` on ``grid`` (values of ``axis``: "tokens" or
    "train_seconds"), linear between evaluations, NaN outside them."""
    x = np.array([h[axis] for h in hist], float)
    y = np.array([np.nan if h.get(metric) is None else h[metric] for h in hist], float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() == 0:
        return np.full(len(grid), np.nan)
    return np.interp(grid, x[ok], y[ok], left=np.nan, right=np.nan)


def band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over rows (seeds) and the half-width of its 95% t-interval, per column."""
    from scipy import stats
    n = np.isfinite(curves).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(curves, axis=0) if len(curves) else np.array([])
        sd = np.nanstd(curves, axis=0, ddof=1) if len(curves) > 1 else np.full_like(mean, np.nan)
        t = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)
        half = t * sd / np.sqrt(n)
    return mean, half


def learner_curves(study_dir: str, doc: dict, axis: str, n: int = 200) -> dict:
    """label -> (grid, mean, half) of the validation score against ``axis``."""
    out = {}
    for label in doc["learners"]:
        hists = run_histories(os.path.join(study_dir, label, "final"))
        if not hists:
            continue
        lo = max(h[0][axis] for h in hists)             # where every seed has a value
        grid = np.linspace(lo, max(lo, min(h[-1][axis] for h in hists)), n)
        c = np.array([curve(h, doc["metric"], axis, grid) for h in hists])
        out[label] = (grid, *band(c))
    return out


def at_fraction(hists: list[list[dict]], metric: str, budget: float, frac: float) -> list:
    """Each run's validation score at ``frac`` of the training budget (the last
    evaluation at or before it; None before the first)."""
    vals = []
    for h in hists:
        before = [e for e in h if e["train_seconds"] <= frac * budget * 1.02]
        vals.append(before[-1][metric] if before else None)
    return vals


def mean_over_budget(hist: list[dict], metric: str, budget: float) -> float:
    """The validation score averaged over the training time (trapezoids between
    evaluations, the first one's score held back to time 0): lower means good early."""
    x = np.array([0.0] + [e["train_seconds"] for e in hist])
    y = np.array([hist[0][metric]] + [e[metric] for e in hist], float)
    if not np.all(np.isfinite(y)):
        return math.nan
    return float(np.trapezoid(y, x) / x[-1]) if x[-1] > 0 else math.nan


def summary(study_dir: str, doc: dict) -> dict:
    """Per learner: scores at fractions of the budget, the mean over it, tokens seen."""
    from ptncn.sweep.results import mean_interval
    m, budget, out = doc["metric"], doc["budget_s"], {}
    for label, r in doc["learners"].items():
        hists = run_histories(os.path.join(study_dir, label, "final"))
        row = {"chosen": r["values"], "test": [r["test_mean"], r["test_half"]], "n": r["n"]}
        for f in FRACTIONS:
            st = mean_interval([v for v in at_fraction(hists, m, budget, f) if v is not None])
            row[f"valid@{f:g}"] = [st.mean, st.half]
        st = mean_interval([mean_over_budget(h, m, budget) for h in hists])
        row["valid_mean_over_budget"] = [st.mean, st.half]
        st = mean_interval([h[-1]["tokens"] for h in hists])
        row["tokens"] = [st.mean, st.half]
        out[label] = row
    return out


def summary_table(doc: dict, rows: dict) -> str:
    m, budget = doc["metric"], doc["budget_s"]
    head = " | ".join(f"valid {m} at {f * budget:g} s" for f in FRACTIONS)
    lines = [f"### {doc['name']}: validation {m} during training ({budget:g} s budget)", "",
             f"Mean ± half-width of the 95% t-interval over the {doc['final_seeds']} final "
             "seeds; the score at a time is the last evaluation at or before it; "
             "'mean over the budget' is the area under the validation curve divided by "
             "the training time.", "",
             f"| learner | {head} | mean over the budget | tokens seen | test {m} |",
             "|---|" + "---|" * (len(FRACTIONS) + 3)]
    for label, r in rows.items():
        cells = [fmt(*r[f"valid@{f:g}"]) for f in FRACTIONS]
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {fmt(*r['valid_mean_over_budget'])} | {fmt(*r['tokens'])} | "
                     f"{fmt(*r['test'])} |")
    return "\n".join(lines) + "\n"


def rows_of(study) -> tuple[list, list]:
    """The labels of the truncation family (vanilla-cell TBPTT, BPTT and the window
    control) and of the rest (other cells and learners), for the figure's two rows."""
    first, rest = [], []
    for label, entry in study.learners.items():
        model = entry.get("model", {})
        family = (model.get("learner") in ("tbptt", "bptt", "window")
                  and model.get("cell", "rnn") == "rnn")
        (first if family else rest).append(label)
    return first, rest


def figure(study_dir: str, doc: dict, rows: tuple[list, list]) -> Figure:
    """Validation score against training tokens (left) and seconds (right); the
    truncation family on top, the other learners below with BPTT repeated as the
    reference."""
    fig = Figure(figsize=(13, 9), layout="constrained")
    axes = fig.subplots(2, 2, sharey=True)
    colors = {label: f"C{i % 10}" for i, label in enumerate(doc["learners"])}
    ref = [lab for lab in rows[0] if lab == "bptt"]
    for col, (axis, xlabel) in enumerate((("tokens", "training tokens (scored)"),
                                          ("train_seconds", "training seconds"))):
        curves = learner_curves(study_dir, doc, axis)
        for row, labels in enumerate((rows[0], rows[1] + ref)):
            ax = axes[row, col]
            for label in labels:
                if label not in curves:
                    continue
                grid, mean, half = curves[label]
                dashed = row == 1 and label in ref
                ax.plot(grid, mean, "--" if dashed else "-", color=colors[label], lw=1.6,
                        label=label + (" (reference)" if dashed else ""))
                if not dashed:
                    ax.fill_between(grid, mean - half, mean + half, color=colors[label],
                                    alpha=0.12, lw=0)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(f"validation {doc['metric']}")
            if col == 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{doc['name']}: {doc['budget_s']:g} s of training per run; mean over "
                 f"{doc['final_seeds']} seeds, band: 95% t-interval")
    _limit_y(axes[0, 0], doc)
    return fig


def _limit_y(ax, doc: dict) -> None:
    """Keep the interesting range: from the best mean to a bit above the final scores,
    so one diverging learner does not flatten the rest."""
    finals = [r["test_mean"] for r in doc["learners"].values()
              if r["test_mean"] is not None and math.isfinite(r["test_mean"])]
    if len(finals) < 2:
        return
    if doc["metric"].endswith("accuracy"):
        ax.set_ylim(0.4, 1.02)
        return
    lo, hi = min(finals), max(finals)
    pad = 0.6 * (hi - lo) + 1e-9
    if doc["direction"] == "min":
        ax.set_ylim(lo - 0.3 * pad, hi + 2 * pad)
    else:
        ax.set_ylim(lo - 2 * pad, hi + 0.3 * pad)


def main(argv=None) -> int:
    from ptncn.jsonio import write_json
    from ptncn.sweep.study import load_study

    for path, out, doc in run_studies(study_args(__doc__.split("\n")[0], argv)):
        rows = summary(out, doc)
        text = table(doc) + "\n" + summary_table(doc, rows)
        with open(os.path.join(out, "truncation.md"), "w") as f:
            f.write(text)
        write_json(os.path.join(out, "truncation.json"), {"study": doc, "summary": rows},
                   indent=2)
        figure(out, doc, rows_of(load_study(path))).savefig(os.path.join(out, "curves.png"),
                                                            dpi=110)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
