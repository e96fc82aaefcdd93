"""How many BLAS threads a run uses.

OpenBLAS starts one thread per core and keeps them spinning between calls.  When
another busy process shares the cores (a second run, a sweep worker, a
browser), those threads fight it for the cores and a step can run ten times
slower than on one thread (measured in docs/performance.md).  One thread never
collapses like that; more threads pay only when the cores are free.

So the ``ptncn`` command chooses at start-up, through threadpoolctl:

1. ``--threads N`` when given;
2. else nothing, when the user already chose (``OPENBLAS_NUM_THREADS``,
   ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set): their choice stands;
3. else ``auto``: start with the cores this process may use minus the ones
   already busy (the one-minute load average, rounded, at least 1), then let a
   :class:`ThreadTuner` choose from the loop's own step times.

The load average lags by a minute and cannot tell whether a second thread pays
at a given shape; measured step times can.  The tuner times a few steps with
each candidate count (1, half the cores, all of them), keeps the fastest (more
threads only when clearly faster), and measures again when the steps slow down
(another process started) and, less and less often, while they do not.  The
simulation loop (:func:`ptncn.simulate.simulate`) reports every step's time to
it through :func:`step_done`, per learner, learning mode and batch size.

From Python, call :func:`set_threads` yourself (nothing is changed on import).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadChoice:
    """The BLAS threads chosen (None: left as they were) and why."""
    threads: int | None
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores() -> float:
    """Cores already busy: the one-minute load average (0 where it cannot be read)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def auto_threads(cores: int | None = None, busy: float | None = None) -> int:
    """Free cores: ``cores - round(busy)``, between 1 and ``cores``."""
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores, cores - int(round(busy))))


def parse_threads(text) -> int | str:
    """``--threads`` as given: a positive integer or ``"auto"`` (ValueError otherwise)."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"threads: expected a positive integer or 'auto', got {text!r}")
    return n


def choose_threads(requested=None, environ=None) -> ThreadChoice:
    """The choice of the module docstring; ``requested`` is ``--threads`` (or None)."""
    environ = os.environ if environ is None else environ
    if requested is not None and requested != "auto":
        return ThreadChoice(parse_threads(requested), "--threads")
    set_by = [v for v in ENV_VARS if environ.get(v)]
    if requested is None and set_by:
        return ThreadChoice(None, f"${set_by[0]}={environ[set_by[0]]}")
    cores, busy = usable_cores(), busy_cores()
    return ThreadChoice(auto_threads(cores, busy),
                        f"auto: {cores} cores, load {busy:.1f}")


def candidates(cores: int) -> tuple[int, ...]:
    """Thread counts a tuner tries on ``cores`` cores: 1, half of them, all of them."""
    return tuple(sorted({1, max(1, cores // 2), max(1, cores)}))


@dataclass
class _Context:
    """A tuner's record for one kind of step (learner, mode, batch size)."""
    results: dict = field(default_factory=dict)   # threads -> median seconds per step
    queue: list = field(default_factory=list)     # counts still to probe
    samples: list = field(default_factory=list)
    threads: int = 1                              # the count in use
    chosen: int | None = None                     # None while probing
    last: int | None = None                       # the previous probe's choice
    skip: int = 0                                 # untimed steps before sampling again
    settle_until: float = 0.0                     # and no sampling before this time
    recent: deque = field(default_factory=deque)
    next_check: float = 0.0
    interval: float = 0.0


class ThreadTuner:
    """Chooses the BLAS thread count of a running loop from its own step times.

    ``candidates``: counts to try; ``apply(n)`` sets the count.  For each kind of
    step (``key``) every candidate runs ``warmup`` untimed steps and ``probe`` timed
    ones; the smallest median wins, a larger count only when ``gain`` times faster
    than every smaller one.  After lowering the count, sampling also waits
    ``settle`` seconds: OpenBLAS threads no longer used keep spinning for a while
    and would slow the steps timed.  The choice is probed again after ``recheck``
    seconds (doubling while it holds, up to ``max_recheck``), or at once when the
    median of the last ``probe`` steps is ``slowdown`` times the chosen count's probe.
    """

    def __init__(self, candidates, apply, *, first: int | None = None, probe: int = 5,
                 warmup: int = 1, settle: float = 0.2, gain: float = 1.1,
                 slowdown: float = 1.5, recheck: float = 30.0, max_recheck: float = 960.0,
                 clock=time.monotonic):
        self.candidates = tuple(sorted(set(candidates)))
        self.apply, self.clock = apply, clock
        self.first = first if first in self.candidates else self.candidates[0]
        self.probe, self.warmup, self.gain, self.slowdown = probe, warmup, gain, slowdown
        self.settle = settle
        self.recheck, self.max_recheck = recheck, max_recheck
        self.contexts: dict = {}
        self.key = object()          # the kind of step that ran last
        self.threads: int | None = None

    def _use(self, ctx: _Context, n: int) -> None:
        ctx.threads = n
        ctx.skip = self.warmup
        if n != self.threads:
            if self.threads is not None and n < self.threads:
                ctx.settle_until = self.clock() + self.settle
            self.threads = n
            self.apply(n)

    def _start_probe(self, ctx: _Context) -> None:
        order = [ctx.threads] + [c for c in self.candidates if c != ctx.threads]
        ctx.queue, ctx.samples, ctx.results = order[1:], [], {}
        ctx.recent = deque(maxlen=self.probe)
        self._use(ctx, order[0])

    def step_done(self, seconds: float, key=None) -> None:
        """Note one step of kind ``key`` that took ``seconds``."""
        ctx = self.contexts.get(key)
        if ctx is None:
            ctx = self.contexts[key] = _Context(threads=self.first, interval=self.recheck)
            self.key = key
            self._start_probe(ctx)
            return
        if key != self.key:               # another kind of step: its own count, re-warmed
            self.key = key
            self._use(ctx, ctx.threads)
            return
        if ctx.skip or self.clock() < ctx.settle_until:
            ctx.skip = max(0, ctx.skip - 1)
        elif ctx.chosen is None:
            self._sample(ctx, seconds)
        else:
            self._watch(ctx, seconds)

    def _sample(self, ctx: _Context, seconds: float) -> None:
        ctx.samples.append(seconds)
        if len(ctx.samples) < self.probe:
            return
        ctx.results[ctx.threads] = statistics.median(ctx.samples)
        ctx.samples = []
        if ctx.queue:
            self._use(ctx, ctx.queue.pop(0))
            return
        best = min(ctx.results)
        for n in sorted(ctx.results):
            if ctx.results[n] * self.gain < ctx.results[best]:
                best = n
        held = best == ctx.last
        ctx.interval = min(2 * ctx.interval, self.max_recheck) if held else self.recheck
        ctx.chosen = ctx.last = best
        ctx.next_check = self.clock() + ctx.interval
        self._use(ctx, best)
        logging.getLogger("ptncn").debug(
            "BLAS threads: %d (seconds per step: %s)", best,
            ", ".join(f"{n}: {t:.2g}" for n, t in sorted(ctx.results.items())))

    def _watch(self, ctx: _Context, seconds: float) -> None:
        ctx.recent.append(seconds)
        slower = (len(ctx.recent) == self.probe and
                  statistics.median(ctx.recent) > self.slowdown * ctx.results[ctx.chosen])
        if slower:
            ctx.last = None               # the situation changed: recheck soon again
        if slower or self.clock() >= ctx.next_check:
            ctx.chosen = None
            self._start_probe(ctx)


_LIMITS = []      # the active threadpoolctl limiter (kept so that it is not collected)
_CHOICE: list = []   # the last choice made by set_threads
_TUNER: list = []    # the active ThreadTuner, if any


def set_threads(requested="auto") -> ThreadChoice:
    """Limit the BLAS thread pools to :func:`choose_threads` ``(requested)``; returns
    the choice.  ``auto`` (and no thread variable set) also starts a
    :class:`ThreadTuner` on a machine with more than one core.  Needs threadpoolctl
    (a dependency of ptncn)."""
    reset_threads()
    choice = choose_threads(requested)
    if choice.threads is not None:
        from threadpoolctl import ThreadpoolController, threadpool_limits
        _LIMITS[:] = [threadpool_limits(limits=choice.threads, user_api="blas")]
        cores = usable_cores()
        if choice.reason.startswith("auto") and cores > 1:
            ctl = ThreadpoolController()
            _TUNER[:] = [ThreadTuner(candidates(cores), first=choice.threads,
                                     apply=lambda n: ctl.limit(limits=n, user_api="blas"))]
            choice = ThreadChoice(choice.threads, choice.reason + "; then tuned from step times")
    _CHOICE[:] = [choice]
    return choice


def step_done(seconds: float, key=None) -> None:
    """Report one step's time to the active :class:`ThreadTuner` (none: nothing)."""
    if _TUNER:
        _TUNER[0].step_done(seconds, key)


def reset_threads() -> None:
    """Undo :func:`set_threads`: the thread pools as they were, no choice to note,
    no tuner."""
    _TUNER.clear()
    while _LIMITS:
        _LIMITS.pop().restore_original_limits()
    _CHOICE.clear()


def note_choice() -> None:
    """Log (``logging``, logger ``ptncn``) the choice :func:`set_threads` made, if any:
    called by a command when its computing starts."""
    if _CHOICE:
        logging.getLogger("ptncn").info(describe(_CHOICE[0]))


def describe(choice: ThreadChoice) -> str:
    """One line for a run's log."""
    if choice.threads is None:
        return f"BLAS threads: as set by {choice.reason}"
    s = "" if choice.threads == 1 else "s"
    start = "to start with, " if _TUNER else ""
    return (f"BLAS threads: {start}{choice.threads} thread{s} ({choice.reason}; "
            f"--threads N to fix)")
