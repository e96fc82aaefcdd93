"""Memory limits: what a model, a batch or a file may allocate, checked before allocating.

The limit is the memory available now (``MemAvailable`` of /proc/meminfo), or
``PTNCN_MEMORY_LIMIT_GB`` when set; where neither is known nothing is refused.
"""

from __future__ import annotations

import math
import os

from .errors import ResourceLimitError

ENV = "PTNCN_MEMORY_LIMIT_GB"


def memory_limit() -> tuple[float, str]:
    """(bytes that may be allocated, where that figure comes from); inf when unknown."""
    raw = os.environ.get(ENV)
    if raw:
        try:
            gb = float(raw)
        except ValueError:
            gb = float("nan")
        if not gb > 0:
            raise ValueError(f"{ENV}={raw!r}: expected a number of GB > 0")
        return gb * 1e9, f"{ENV}={raw}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, \
                        f"MemAvailable, the memory available now; set {ENV} to change"
    except (OSError, ValueError, IndexError):
        pass
    return math.inf, "unknown"


def check_memory(what: str, parts: dict[str, int]) -> None:
    """Refuse (:class:`ResourceLimitError`) when the estimated ``parts`` (name -> bytes)
    of ``what`` exceed the limit, naming the estimate and the limit."""
    total = sum(parts.values())
    limit, source = memory_limit()
    if total > limit:
        detail = ", ".join(f"{k} {v / 1e9:.3g}" for k, v in parts.items() if v)
        raise ResourceLimitError(f"{what} needs about {total / 1e9:.3g} GB ({detail} GB), "
                                 f"over the limit of {limit / 1e9:.3g} GB ({source})")
