"""The time-stepped loop: batches of masked sequences, online learning, recording,
checkpoints and exact resume.

A *task* is any object implementing the interface of :mod:`ptncn.data.base`:
``batch(i) -> Batch(x, mask, score)``, deterministic in ``i``, ``identity()``,
``kind`` ("onehot": scored by NLL; "binary": BCE summed over units).

:class:`Simulation` steps a learner through batches ``0..n_batches-1``.  Every
``checkpoint_every`` steps it writes a checkpoint (learner, optimizer, RNG,
the current sequences' state and the position in the data) beside the run;
:meth:`Simulation.resume` continues from it so that the final parameters are
bitwise identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .learner import Learner
from .metrics import nll_nats_sum

_TINY = 1e-7


def step_loss(kind: str, pred: np.ndarray, target: np.ndarray, score: np.ndarray) -> float:
    """Summed loss of one step over scored rows: NLL (nats) for one-hot data, BCE
    summed over units (nats per frame) for binary data."""
    if kind == "onehot":
        return nll_nats_sum(pred, target, score)
    p = np.clip(np.asarray(pred, np.float64), _TINY, 1 - _TINY)
    bce = -(target * np.log(p) + (1 - target) * np.log1p(-p)).sum(axis=-1, keepdims=True)
    return float((bce * score).sum())


def step_sq_error(pred: np.ndarray, target: np.ndarray, score: np.ndarray) -> float:
    """Squared error summed over units and scored rows."""
    d = np.asarray(pred, np.float64) - target
    return float(((d * d).sum(axis=-1, keepdims=True) * score).sum())


@dataclass
class BatchResult:
    """Summed loss and token count of one batch (first prediction of each sequence skipped)."""

    loss_sum: float
    tokens: float

    @property
    def mean(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else float("nan")


def run_batch(learner: Learner, x: np.ndarray, mask: np.ndarray, learn: bool = True,
              skip_first: bool = True, kind: str = "onehot", score=None) -> BatchResult:
    """Reset ``learner`` and step it through ``x`` (T, B, X) with ``mask`` (T, B, 1).

    The prediction returned at step t was made before seeing ``x[t]`` and is
    scored against it where ``score`` is 1 (default: the mask, without step 0,
    whose prediction comes from an all-zero state, unless ``skip_first=False``).
    """
    x = np.asarray(x)
    mask = np.asarray(mask, dtype=np.float32)
    if x.ndim != 3 or mask.shape != (*x.shape[:2], 1):
        raise ValueError(f"expected x (T, B, X) and mask (T, B, 1); got {x.shape} and {mask.shape}")
    if score is None:
        score = mask.copy()
        if skip_first:
            score[0] = 0
    learner.reset(x.shape[1])
    loss, tokens = 0.0, 0.0
    for t in range(x.shape[0]):
        pred = learner.step(x[t], mask[t], learn=learn)
        n = float(score[t].sum())
        if n:
            loss += step_loss(kind, pred, x[t], score[t])
            tokens += n
    learner.end_sequence(learn=learn)
    return BatchResult(loss, tokens)


@dataclass
class RunResult:
    steps: int
    batches: int
    seconds: float
    train_loss: list = field(default_factory=list)   # mean loss per batch (nats/token)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else float("nan")


class Simulation:
    """Run ``learner`` online over ``task`` batches, with optional recording and checkpoints."""

    def __init__(self, learner: Learner, task, n_batches: int, *, recorder=None,
                 checkpoint_every: int = 0, checkpoint_path=None, learn: bool = True,
                 progress: bool | None = None, attrs: dict | None = None):
        if checkpoint_every and checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
        self.learner, self.task, self.n_batches = learner, task, int(n_batches)
        self.recorder = recorder
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_path = os.fspath(checkpoint_path) if checkpoint_path else None
        self.learn = learn
        self.progress = progress
        self.attrs = dict(attrs or {})
        self.position = (0, 0)        # (batch index, time step within it) of the next step
        self.step = 0                 # global step counter
        self.on_step = None           # optional callback(sim) after every step (tests, tools)
        self.on_batch_end = None      # optional callback(sim, batch_index, mean_loss_nats)
        self.stop = False             # set (e.g. from a callback) to end after the current batch
        self._resume_from = None

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        b, t = self.position
        self.learner.save(self.checkpoint_path, include_state=True,
                          extra_meta={"position": [b, t], "step": self.step,
                                      "n_batches": self.n_batches,
                                      "data": self.task.identity()})

    @classmethod
    def resume(cls, checkpoint_path, task, n_batches: int | None = None, *, recorder=None,
               learner_cls=None, **kw) -> "Simulation":
        """A simulation continuing from ``checkpoint_path`` (same task; recorder optional).

        If ``recorder`` points at the earlier run file, its records before the
        checkpoint step are kept and later ones are written again by the resumed run.
        """
        from .learner import load_learner
        learner = (learner_cls.load(checkpoint_path) if learner_cls is not None
                   else load_learner(checkpoint_path))
        meta = learner.extra_meta
        if meta.get("data") != task.identity():
            raise ValueError(f"checkpoint {checkpoint_path} was taken on data {meta.get('data')}, "
                             f"not {task.identity()}")
        sim = cls(learner, task, n_batches if n_batches is not None else meta["n_batches"],
                  recorder=recorder, checkpoint_path=checkpoint_path, **kw)
        sim.position = tuple(meta["position"])
        sim.step = int(meta["step"])
        if recorder is not None and os.path.exists(recorder.path):
            from .record import open_recording
            sim._resume_from = open_recording(recorder.path)
        return sim

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> RunResult:
        learner, task, rec = self.learner, self.task, self.recorder
        kind = getattr(task, "kind", "onehot")
        b0, t0 = self.position
        x0 = task.batch(b0 if b0 < self.n_batches else 0).x
        if rec is not None and rec.file is None:
            rec.start(learner, batch=x0.shape[1], metrics=["loss"],
                      attrs={**self.attrs, "data_identity": task.identity()},
                      resume_from=self._resume_from, resume_step=self.step)
        bar = self._progress_bar(x0.shape[0] * self.n_batches, self.step)
        result = RunResult(0, 0, 0.0)
        t_start = time.perf_counter()
        seen_tokens = 0.0         # scored tokens (frames) so far, for the tokens/s display
        try:
            for b in range(b0, self.n_batches):
                if self.stop:
                    break
                x, m, sc = task.batch(b)
                start_t = t0 if b == b0 else 0
                if start_t == 0:
                    learner.reset(x.shape[1])
                loss, tokens = 0.0, 0.0
                for t in range(start_t, x.shape[0]):
                    if rec is not None:
                        rec.before_step(self.step, learner)
                    pred = learner.step(x[t], m[t], learn=self.learn)
                    step_l = float("nan")
                    n = float(sc[t].sum())
                    if n:
                        s = step_loss(kind, pred, x[t], sc[t])
                        loss, tokens, step_l = loss + s, tokens + n, s / n
                    if rec is not None:
                        rec.after_step(self.step, learner, {"loss": step_l})
                    self.step += 1
                    result.steps += 1
                    self.position = (b, t + 1)
                    if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                        if rec is not None:
                            rec.flush()
                        self.save_checkpoint()
                    if bar is not None:
                        seen_tokens += n
                        bar.update(1)
                        if np.isfinite(step_l):
                            rate = seen_tokens / max(time.perf_counter() - t_start, 1e-9)
                            bar.set_postfix(loss=f"{step_l:.3f}", tok_s=f"{rate:.0f}",
                                            refresh=False)
                    if self.on_step is not None:
                        self.on_step(self)
                learner.end_sequence(learn=self.learn)
                result.batches += 1
                result.train_loss.append(loss / tokens if tokens else float("nan"))
                if self.on_batch_end is not None:
                    self.on_batch_end(self, b, result.train_loss[-1])
            if not self.stop:
                self.position = (self.n_batches, 0)
        finally:
            if bar is not None:
                bar.close()
            if rec is not None:
                rec.close()
        result.seconds = time.perf_counter() - t_start
        return result

    def _progress_bar(self, total: int, initial: int):
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        if not show:
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                    desc=type(self.learner).__name__)
