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
3. else ``auto``: the cores this process may use minus the ones already busy
   (the one-minute load average, rounded), at least 1.

From Python, call :func:`set_threads` yourself (nothing is changed on import).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

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


_LIMITS = []      # the active threadpoolctl limiter (kept so that it is not collected)
_CHOICE: list = []   # the last choice made by set_threads


def set_threads(requested="auto") -> ThreadChoice:
    """Limit the BLAS thread pools to :func:`choose_threads` ``(requested)``; returns
    the choice.  Needs threadpoolctl (a dependency of ptncn)."""
    choice = choose_threads(requested)
    if choice.threads is not None:
        from threadpoolctl import threadpool_limits
        _LIMITS[:] = [threadpool_limits(limits=choice.threads, user_api="blas")]
    _CHOICE[:] = [choice]
    return choice


def reset_threads() -> None:
    """Undo :func:`set_threads`: the thread pools as they were, no choice to note."""
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
    return f"BLAS threads: {choice.threads} thread{s} ({choice.reason}; --threads N to change)"
