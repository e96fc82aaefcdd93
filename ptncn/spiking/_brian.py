"""Lazy, checked import of Brian2.

Brian2 2.9 (the last release for Python 3.11) reads ``numpy.ndarray.ptp`` while
defining its ``Quantity`` class, and NumPy 2.4 removed that method, so a plain
``import brian2`` fails there with AttributeError.  :func:`import_brian2` works
around it for the duration of the import only: ``numpy.ndarray`` is replaced by a
subclass that has ``ptp`` (so ``Quantity`` derives from it), and restored at once.
Nothing else in NumPy is changed; a Brian2 that imports cleanly is imported as is.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

INSTALL_HINT = ("the spiking P-TNCN needs Brian2: pip install 'ptncn[spiking]' "
                "(brian2 >= 2.9)")


class SpikingUnavailable(ImportError):
    """Brian2 is not installed, or fails to import."""


_B2 = None


def _import_with_ptp_shim():
    import numpy.fft  # noqa: F401  (numpy's lazy submodules must exist before the swap)
    import numpy.linalg  # noqa: F401
    import numpy.ma  # noqa: F401
    import numpy.polynomial  # noqa: F401
    import numpy.random  # noqa: F401

    real = np.ndarray

    class ndarray(real):          # noqa: N801  (stands in for numpy.ndarray during import)
        def ptp(self, axis=None, out=None, keepdims=False):
            return np.ptp(np.asarray(self).view(real), axis=axis, out=out, keepdims=keepdims)

    np.ndarray = ndarray
    try:
        return importlib.import_module("brian2")
    finally:
        np.ndarray = real


def import_brian2():
    """Return the ``brian2`` module or raise :class:`SpikingUnavailable`."""
    global _B2
    if _B2 is not None:
        return _B2
    try:
        with warnings.catch_warnings():      # brian2 2.9 uses pyparsing's deprecated names
            warnings.simplefilter("ignore", DeprecationWarning)
            b2 = importlib.import_module("brian2")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "brian2":
            raise SpikingUnavailable(INSTALL_HINT) from None
        raise SpikingUnavailable(f"{INSTALL_HINT}; importing it failed: {exc}") from None
    except AttributeError as exc:
        if "ptp" not in str(exc):
            raise SpikingUnavailable(f"{INSTALL_HINT}; importing it failed: {exc}") from None
        import sys
        for name in [m for m in sys.modules if m == "brian2" or m.startswith("brian2.")]:
            del sys.modules[name]
        try:
            b2 = _import_with_ptp_shim()
        except Exception as exc2:  # noqa: BLE001
            raise SpikingUnavailable(f"{INSTALL_HINT}; importing it failed: {exc2}") from None
    b2.prefs.logging.display_brian_error_message = False
    _B2 = b2
    return b2


def brian2_available() -> bool:
    try:
        import_brian2()
    except SpikingUnavailable:
        return False
    return True
