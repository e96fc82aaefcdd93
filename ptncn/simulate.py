"""The time-stepped loop: batches of masked sequences, online learning, recording,
checkpoints and exact resume.

A *task* is any object implementing the interface of :mod:`ptncn.data.base`:
``batch(i) -> Batch(x, mask, score)``, deterministic in ``i``, ``identity()``,
``step_loss(pred, x, score)`` (one step's loss summed over scored rows).

:func:`simulate` is the one stepping loop: training (:class:`Simulation`),
evaluation (:func:`ptncn.harness.evaluate`), the zero-shot protocol and
:func:`run_batch` all step a learner through it.

:class:`Simulation` steps a learner through batches ``0..n_batches-1``.  Every
``checkpoint_every`` steps it writes a checkpoint (learner, optimizer, RNG,
the current sequences' state and the position in the data) beside the run;
:meth:`Simulation.resume` continues from it so that the final parameters are
bitwise identical to an uninterrupted run.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .data.base import TASK_KINDS, Batch
from .errors import RunInterrupted
from .learner import Learner
from .threads import step_done


class Step(NamedTuple):
    """One step, as :func:`simulate` hands it to ``on_step``."""

    batch: int             # batch index
    t: int                 # time step within the batch
    x: np.ndarray          # (B, X) this step's input
    mask: np.ndarray       # (B, 1)
    score: np.ndarray      # (B, 1): 1 where the prediction counts
    pred: np.ndarray       # the prediction of x, made before seeing it
    loss: float            # the loss summed over the scored rows (0.0 when none)
    scored: float          # the number of scored rows


@dataclass
class BatchResult:
    """Summed loss and scored-token count of one batch (``rows``: its sequences)."""

    index: int
    loss_sum: float
    tokens: float
    rows: int

    @property
    def mean(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else float("nan")


def simulate(learner: Learner, task, batches: Iterable[int], *, learn: bool = True,
             start_t: int = 0, before_step: Callable[[], None] | None = None,
             on_step: Callable[[Step], None] | None = None) -> Iterator[BatchResult]:
    """Step ``learner`` through ``task``'s batches ``batches``; yield each one's result.

    Every batch starts new sequences (``learner.reset``), except that the first
    continues the learner's current ones at step ``start_t`` when ``start_t`` > 0
    (a resumed checkpoint).  Each step: ``before_step()``, ``learner.step`` (learning
    unless ``learn=False``), the prediction scored by ``task.step_loss`` where the
    batch's score is 1, ``on_step(Step)``.  After the last step of a batch:
    ``learner.end_sequence(learn)``.  Lazy: a batch runs when its result is asked for.
    Each step's time goes to the BLAS thread tuner (:func:`ptncn.threads.step_done`).
    """
    for k, b in enumerate(batches):
        x, m, sc = task.batch(b)
        t0 = start_t if k == 0 else 0
        if t0 == 0:
            learner.reset(x.shape[1])
        loss = tokens = 0.0
        for t in range(t0, x.shape[0]):
            if before_step is not None:
                before_step()
            started = time.perf_counter()
            pred = learner.step(x[t], m[t], learn=learn)
            step_done(time.perf_counter() - started, (id(learner), learn, x.shape[1]))
            n = float(sc[t].sum())
            s = task.step_loss(pred, x[t], sc[t]) if n else 0.0
            loss, tokens = loss + s, tokens + n
            if on_step is not None:
                on_step(Step(b, t, x[t], m[t], sc[t], pred, s, n))
        learner.end_sequence(learn=learn)
        yield BatchResult(b, loss, tokens, x.shape[1])


class _Arrays:
    """Given arrays as a one-batch task, scored as tasks of ``kind`` are."""

    def __init__(self, batch: Batch, kind: str):
        self._batch = batch
        self.step_loss = TASK_KINDS[kind].step_loss

    def batch(self, i: int) -> Batch:
        return self._batch


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
    (result,) = simulate(learner, _Arrays(Batch(x, mask, score), kind), [0], learn=learn)
    return result


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
                 progress: bool | str | None = None, attrs: dict | None = None):
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
        self.tokens = 0.0             # scored rows (tokens, frames) stepped through so far
        self.on_step = None           # optional callback(sim) after every step (tests, tools)
        self.on_batch_end = None      # optional callback(sim, batch_index, mean_loss_nats)
        self.stop = False             # set (e.g. from a callback) to end after the current batch
        self.checkpoint_meta: dict = {}   # the caller's JSON kept in every checkpoint
        self._resume_from = None
        self._sigint = _Sigint()
        self.progress_bar = None      # the running loop's Progress (None when quiet)
        self.progress_setup = None    # optional callback(progress) when that Progress is made

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        b, t = self.position
        self.learner.save(self.checkpoint_path, include_state=True,
                          extra_meta={**self.checkpoint_meta, "position": [b, t],
                                      "step": self.step, "tokens": self.tokens,
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
        sim.tokens = float(meta.get("tokens", 0.0))
        if recorder is not None and os.path.exists(recorder.path):
            from .record import open_recording
            sim._resume_from = open_recording(recorder.path)
        return sim

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> RunResult:
        """Step through the remaining batches.  SIGINT (in the main thread) ends the run
        after the current step: the recording is flushed, a checkpoint written (with a
        ``checkpoint_path``), the recording closed, and :class:`RunInterrupted` raised."""
        with self._sigint:
            return self._run()

    def _run(self) -> RunResult:
        learner, task, rec = self.learner, self.task, self.recorder
        b0, t0 = self.position
        x0 = task.batch(b0 if b0 < self.n_batches else 0).x
        if rec is not None and rec.file is None:
            rec.start(learner, batch=x0.shape[1], metrics=["loss"],
                      attrs={**self.attrs, "data_identity": task.identity(),
                             "task_kind": getattr(task, "kind", "")},
                      resume_from=self._resume_from, resume_step=self.step)
        bar = self._progress_bar(x0.shape[0] * self.n_batches, self.step)
        result, interrupted = RunResult(0, 0, 0.0), False
        t_start = time.perf_counter()
        batches = itertools.takewhile(lambda b: not self.stop, range(b0, self.n_batches))
        try:
            for r in simulate(learner, task, batches, learn=self.learn, start_t=t0,
                              before_step=None if rec is None else
                              (lambda: rec.before_step(self.step, learner)),
                              on_step=lambda s: self._after_step(s, result, bar)):
                result.batches += 1
                result.train_loss.append(r.mean)
                self.position = (r.index + 1, 0)     # the batch is over (end_sequence ran)
                if self.on_batch_end is not None:
                    self.on_batch_end(self, r.index, r.mean)
            if not self.stop:
                self.position = (self.n_batches, 0)
        except _Interrupted:
            interrupted = True
            self._save_interrupted()
        finally:
            if bar is not None:
                bar.close()
            if rec is not None:
                rec.close()
        result.seconds = time.perf_counter() - t_start
        if interrupted:
            where = f"; checkpoint {self.checkpoint_path}" if self.checkpoint_path else ""
            raise RunInterrupted(f"interrupted at step {self.step}{where}", self.step,
                                 self.checkpoint_path)
        return result

    def _save_interrupted(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()
        if self.checkpoint_path:
            self.save_checkpoint()

    def _after_step(self, s: Step, result: RunResult, bar) -> None:
        """Record, count, checkpoint, show progress and call ``on_step`` after a step."""
        step_loss = s.loss / s.scored if s.scored else float("nan")
        if self.recorder is not None:
            self.recorder.after_step(self.step, self.learner, {"loss": step_loss})
        self.step += 1
        self.tokens += s.scored
        result.steps += 1
        self.position = (s.batch, s.t + 1)
        if self.checkpoint_every and self.step % self.checkpoint_every == 0:
            if self.recorder is not None:
                self.recorder.flush()
            self.save_checkpoint()
        if bar is not None:
            bar.update(s.scored, step_loss)
        if self.on_step is not None:
            self.on_step(self)
        if self._sigint.caught:
            raise _Interrupted

    def _progress_bar(self, total: int, initial: int):
        from .progress import progress_or_none
        bar = progress_or_none(total, desc="train" if self.learn else "run", initial=initial,
                               mode=self.progress)
        self.progress_bar = bar
        if bar is not None and self.progress_setup is not None:
            self.progress_setup(bar)
        return None if bar is None else _Progress(bar)


class _Interrupted(Exception):
    """Raised after a step when SIGINT was caught, to leave the stepping loop."""


class _Sigint:
    """While entered in the main thread (and SIGINT has Python's default handler), the
    first SIGINT only sets ``caught``; a second one interrupts at once."""

    def __init__(self):
        self.caught, self._old = False, None

    def _handle(self, signum, frame) -> None:
        if self.caught:
            raise KeyboardInterrupt
        self.caught = True

    def __enter__(self) -> "_Sigint":
        self.caught = False
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class _Progress:
    """A run's progress: steps, the last step's loss, scored tokens (frames) per second."""

    def __init__(self, bar):
        self.bar, self.seen, self.t0 = bar, 0.0, time.perf_counter()

    def update(self, scored: float, step_loss: float) -> None:
        self.seen += scored
        if np.isfinite(step_loss):
            rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(1, loss=f"{step_loss:.3f}", tok_s=f"{rate:.0f}")
        else:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
