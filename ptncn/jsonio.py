"""Strict JSON for the files and lines ptncn writes.

Python's :mod:`json` writes ``NaN`` and ``Infinity`` for non-finite floats, which is not
JSON: ``jq``, JavaScript and most other readers refuse the whole file.  Here they are
written as ``null`` (a mean over one seed has no confidence interval, a loss that
diverged has no value); numpy scalars and arrays become plain numbers and lists.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile

import numpy as np


def jsonable(obj, default=None):
    """``obj`` with every non-finite float replaced by None, numpy scalars and arrays as
    Python numbers and lists, tuples as lists; ``default(o)`` (if given) converts any other
    object json cannot write, and its result is converted the same way."""
    if isinstance(obj, dict):
        return {k: jsonable(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, default) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), default)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    if default is not None:
        return jsonable(default(obj))
    return obj                       # json.dump raises its own TypeError for it


def dump_json(obj, f, *, default=None, **kw) -> None:
    """:func:`json.dump` of :func:`jsonable` ``(obj)``: NaN and infinities as ``null``."""
    json.dump(jsonable(obj, default), f, allow_nan=False, **kw)


def dumps_json(obj, *, default=None, **kw) -> str:
    """:func:`json.dumps` of :func:`jsonable` ``(obj)``: NaN and infinities as ``null``."""
    return json.dumps(jsonable(obj, default), allow_nan=False, **kw)


@contextlib.contextmanager
def replacing(path):
    """Write a file atomically: yields a temporary path in ``path``'s folder (same file
    system), renamed over ``path`` when the block succeeds, removed when it fails, so a
    reader sees the old file or the whole new one."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, obj, **kw) -> None:
    """:func:`dump_json` ``obj`` to ``path`` atomically (:func:`replacing`)."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        dump_json(obj, f, **kw)
