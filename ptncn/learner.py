"""The one interface every learner implements (P-TNCN, its spiking twin, each baseline).

The simulation loop, the recorder, the metrics and the CLI only talk to this
interface, so they never special-case a model:

* ``reset(batch)``          start new sequences for ``batch`` rows (state to zero)
* ``step(x, mask, learn)``  advance one time step; returns the prediction made
                            *before* seeing ``x`` (e.g. P-TNCN's ``x_mu``)
* ``quantities``            the named per-step arrays of the last step
* ``recordable``            every name ``quantity()`` accepts
* ``quantity_shape(name, batch)``, ``describe(name)``  shapes and meanings, for recorders
* ``params``                dict of named parameter arrays (assignable)
* ``save(path)`` / ``load(path)``
"""

from __future__ import annotations

import abc
from typing import Mapping

import numpy as np


class ParamDict(dict):
    """A dict of named float32 parameter arrays with fixed names and shapes.

    Assigning ``params["W1"] = a`` checks the name, the shape and finiteness and
    copies ``a`` (cast to float32) into the parameter's storage, so a model
    never aliases a caller's array.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        super().__init__()
        for k, v in arrays.items():
            dict.__setitem__(self, k, v)

    def __setitem__(self, key, value):
        if key not in self:
            raise KeyError(f"unknown parameter {key!r}; parameters: {', '.join(self)}")
        target = dict.__getitem__(self, key)
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"parameter {key!r}: dtype {arr.dtype} is not a real number type")
        if arr.shape != target.shape:
            raise ValueError(f"parameter {key!r}: shape {arr.shape} != expected {target.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"parameter {key!r}: contains NaN or inf")
        np.copyto(target, arr, casting="unsafe")

    def update(self, other=(), **kw):  # route through __setitem__'s checks
        for k, v in dict(other, **kw).items():
            self[k] = v

    def __delitem__(self, key):
        raise TypeError("parameters cannot be deleted")

    def copy(self) -> dict:
        """A plain dict of copies of every parameter."""
        return {k: v.copy() for k, v in self.items()}


class Learner(abc.ABC):
    """Abstract base of every learner."""

    params: ParamDict

    @abc.abstractmethod
    def reset(self, batch: int) -> None:
        """Start new sequences: zero the carried state for ``batch`` rows."""

    @abc.abstractmethod
    def step(self, x, mask=None, learn: bool = True) -> np.ndarray:
        """Advance one time step and return the prediction of ``x``."""

    @property
    @abc.abstractmethod
    def recordable(self) -> tuple[str, ...]:
        """All names accepted by :meth:`quantity`."""

    @abc.abstractmethod
    def quantity(self, name: str) -> np.ndarray:
        """The named array of the last step (a per-step quantity or a parameter)."""

    @abc.abstractmethod
    def quantity_shape(self, name: str, batch: int) -> tuple[int, ...]:
        """Shape of ``quantity(name)`` for a batch of ``batch`` rows (known before stepping)."""

    def quantity_norm(self, name: str) -> float:
        """Frobenius norm of ``quantity(name)`` (learners may compute it without forming it)."""
        a = self.quantity(name)
        return float(np.sqrt(np.vdot(a, a)))

    def describe(self, name: str) -> tuple[str, str]:
        """(meaning, units) of a recordable name, written into recordings."""
        return (name, "a.u.")

    @abc.abstractmethod
    def save(self, path) -> None:
        """Write the learner (config, params, optimizer state) to ``path``."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path):
        """Read a learner written by :meth:`save`."""
