"""Progress of long loops (training, evaluation): a bar on a terminal, log lines elsewhere.

A run whose stderr is a terminal shows a tqdm bar.  Otherwise (a log file, a
batch job, a notebook) it writes one line every ``PTNCN_PROGRESS_SECONDS``
seconds (default 30) through the ``logging`` logger ``"ptncn.progress"``: done /
total, rate, the estimated time left and the last metric.  The ``ptncn`` command
shows these lines on stderr (``--quiet`` hides them); from Python,
``logging.basicConfig(level=logging.INFO)`` shows them.

The estimate of the time left counts what the loop will still spend outside its
steps (``extra_s``: e.g. periodic and final evaluation, as estimated by the
caller) and stops at a time budget (``deadline``, a ``time.perf_counter`` value):
``min(left / rate + extra_s(), deadline - now + after_deadline_s)``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable

LOG = logging.getLogger("ptncn.progress")
MODES = ("bar", "log", "off")


def log_interval() -> float:
    """Seconds between progress lines: ``$PTNCN_PROGRESS_SECONDS`` or 30."""
    try:
        return max(0.0, float(os.environ.get("PTNCN_PROGRESS_SECONDS", 30)))
    except ValueError:
        return 30.0


def resolve_mode(progress) -> str:
    """``progress`` (True/False/None or a mode name) as one of :data:`MODES`:
    None picks ``"bar"`` when stderr is a terminal and ``"log"`` otherwise."""
    if progress is None:
        return "bar" if sys.stderr.isatty() else "log"
    if progress is True:
        return "bar"
    if progress is False:
        return "off"
    if progress not in MODES:
        raise ValueError(f"progress must be one of {MODES}, True, False or None; got {progress!r}")
    return progress


def duration(seconds: float) -> str:
    """``seconds`` as ``"42 s"``, ``"3 min 05 s"`` or ``"2 h 07 min"``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Progress of a loop of ``total`` units (``unit``: "step", "batch").

    ``update(n, **postfix)`` after each unit; ``note`` holds the last metric to
    show (e.g. ``"valid bce 113.3"``); ``extra_s`` and ``deadline`` refine the
    estimate of the time left (module docstring).
    """

    def __init__(self, total: int, *, desc: str, unit: str = "step", initial: int = 0,
                 mode=None, every_s: float | None = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self.start = int(initial)
        self.mode = resolve_mode(mode)
        self.every_s = log_interval() if every_s is None else every_s
        self.note = ""
        self.postfix: dict = {}
        self.extra_s: Callable[[], float] = lambda: 0.0
        self.deadline: float | None = None
        self.after_deadline_s: Callable[[], float] = lambda: 0.0
        self.t0 = self._last = time.perf_counter()
        self._logged = self.n
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, initial=self.n, unit=unit, dynamic_ncols=True,
                             desc=desc)

    def rate(self) -> float:
        """Units per second since this object was made."""
        return (self.n - self.start) / max(time.perf_counter() - self.t0, 1e-9)

    def eta_s(self) -> float:
        """Seconds left: the remaining units at the current rate, plus ``extra_s()``,
        capped at the deadline (plus ``after_deadline_s()``)."""
        rate = self.rate()
        left = max(self.total - self.n, 0) / rate if rate > 0 else float("inf")
        eta = left + self.extra_s()
        if self.deadline is not None:
            eta = min(eta, max(self.deadline - time.perf_counter(), 0.0) + self.after_deadline_s())
        return eta

    def line(self) -> str:
        """The log line: ``desc: done/total unit (pct), rate, time left, note``."""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.unit} {self.n}/{self.total}{pct}",
                 f"{self.rate():.3g} {self.unit}s/s",
                 f"elapsed {duration(time.perf_counter() - self.t0)}",
                 f"left ~{duration(self.eta_s())}"]
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if postfix:
            self.postfix = postfix
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(refresh=False, **postfix)
        elif self.mode == "log":
            now = time.perf_counter()
            if now - self._last >= self.every_s:
                self._last, self._logged = now, self.n
                LOG.info(self.line())

    def close(self) -> None:
        """Close the bar (or write a last line when anything was logged)."""
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and self._last > self.t0 and self._logged != self.n:
            LOG.info(self.line())


def progress_or_none(total: int, *, desc: str, unit: str = "step", initial: int = 0,
                     mode=None) -> Progress | None:
    """A :class:`Progress`, or None when ``mode`` resolves to ``"off"``."""
    if resolve_mode(mode) == "off":
        return None
    return Progress(total, desc=desc, unit=unit, initial=initial, mode=mode)
