"""Data: file lookup/verification and the benchmark tasks (see :mod:`ptncn.data.base`).

Tasks are imported lazily by name (``ptncn.data.PTBChar`` etc.) so that using
one never loads the others' data.
"""

from .base import Batch, BinaryTask, OneHotTask, Task, default_score
from .files import DataError, find
from .synthetic import CyclicSymbols, cyclic_symbols

_LAZY = {"PTBChar": ".ptb", "PTBWord": ".ptb", "BouncingDigits": ".bouncing",
         "BitRecall": ".bitrecall", "ArrayTask": ".arrays"}

__all__ = ["Batch", "Task", "OneHotTask", "BinaryTask", "default_score", "DataError", "find",
           "CyclicSymbols", "cyclic_symbols", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
