"""Activation and output functions, looked up by name.

P-TNCN never differentiates its activations (LRA needs no derivatives), so any
function of the pre-activation works: smooth ones (tanh), piecewise ones (relu),
non-differentiable ones (sign, step) and stochastic ones (binary Bernoulli units).

Every activation has the signature ``f(h, rng) -> array``: ``h`` is a float32
array, ``rng`` the model's seeded ``numpy.random.Generator`` (only stochastic
units use it).  A user callable of one argument ``f(h)`` is accepted too and
wrapped.  Functions return new arrays and never modify ``h``.
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np

Activation = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_GELU_C = np.float32(np.sqrt(2.0 / np.pi))


def tanh(h, rng=None):
    return np.tanh(h)


def ltanh(h, rng=None):
    """LeCun's scaled tanh, 1.7159 * tanh(2h/3)."""
    return np.float32(1.7159) * np.tanh(h * np.float32(2.0 / 3.0))


def relu(h, rng=None):
    return np.maximum(h, np.float32(0.0))


def relu6(h, rng=None):
    return np.clip(h, np.float32(0.0), np.float32(6.0))


def sigmoid(h, rng=None):
    # 0.5 * (1 + tanh(h/2)) is exact in float32 and never overflows.
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * h))


def sign(h, rng=None):
    """-1, 0 or +1; sign(0) = 0."""
    return np.sign(h)


def step(h, rng=None):
    """Heaviside step: 1 where h >= 0, else 0."""
    return (h >= 0).astype(h.dtype)


def gelu(h, rng=None):
    """GELU, tanh approximation: h/2 * (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))."""
    inner = _GELU_C * (h + np.float32(0.044715) * h * h * h)
    return np.float32(0.5) * h * (np.float32(1.0) + np.tanh(inner))


def identity(h, rng=None):
    return h.copy()


def stochastic_binary(h, rng):
    """Bernoulli(sigmoid(h)) samples (0/1), drawn from the model's generator."""
    if rng is None:
        raise ValueError("stochastic_binary needs the model's random generator")
    p = sigmoid(h)
    return (rng.random(h.shape, dtype=np.float32) < p).astype(h.dtype)


def softmax(h, rng=None):
    """Row-wise softmax with the row maximum subtracted before exponentiating."""
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


# -- LIF steady-state rate (the rate twin of the spiking P-TNCN, ptncn.spiking) --------
#: defaults shared by ``lif_rate`` and :class:`ptncn.spiking.SpikingPTNCN`: membrane and
#: refractory time constants (ms), threshold and resistance (v and R I are in units of
#: the threshold), the input map I = gain * h + bias, and the simulation step (ms)
LIF_RATE_DEFAULTS = {"tau_m": 10.0, "tau_ref": 2.0, "theta": 1.0, "R": 1.0,
                     "gain": 2.0, "bias": 2.0, "dt": 0.1}


def make_lif_rate(tau_m=10.0, tau_ref=2.0, theta=1.0, R=1.0, gain=2.0, bias=2.0, dt=None):
    """The normalised f-I curve of a leaky integrate-and-fire neuron as an activation.

    For a constant current I = gain * h + bias the neuron (dv/dt = (R I - v)/tau_m,
    spike and reset to 0 at v > theta, refractory tau_ref) fires every
    ``ISI = tau_ref + tau_m ln(R I / (R I - theta))`` ms when R I > theta and never
    otherwise.  The activation is ``tau_ref / ISI`` (the rate times tau_ref), in [0, 1).

    ``dt`` (ms) gives the rate of Brian2's clock-driven version instead (exact
    integration, threshold tested once per step, refractoriness in whole steps):
    ``ISI = dt * (round(tau_ref / dt) + floor(t_cross / dt))`` with
    ``t_cross = tau_m ln(R I / (R I - theta))``.
    """
    tau_m, tau_ref, theta, R = float(tau_m), float(tau_ref), float(theta), float(R)
    gain, bias = float(gain), float(bias)
    if tau_m <= 0 or tau_ref <= 0 or theta <= 0 or R <= 0:
        raise ValueError("lif_rate needs tau_m, tau_ref, theta, R > 0")
    if dt is not None and not dt > 0:
        raise ValueError(f"lif_rate: dt must be > 0 or None, got {dt!r}")
    n_ref = None if dt is None else round(tau_ref / dt)

    def lif_rate(h, rng=None):
        ri = R * (gain * np.asarray(h, np.float64) + bias)
        on = ri > theta
        ratio = np.where(on, ri / np.where(on, ri - theta, 1.0), 2.0)
        t_cross = tau_m * np.log(ratio)
        if dt is None:
            isi = tau_ref + t_cross
        else:
            isi = dt * (n_ref + np.floor(t_cross / dt * (1 + 1e-12)))
        out = np.where(on, tau_ref / np.maximum(isi, 1e-12), 0.0)
        return out.astype(np.asarray(h).dtype if np.asarray(h).dtype.kind == "f" else np.float32)

    lif_rate.params = {"tau_m": tau_m, "tau_ref": tau_ref, "theta": theta, "R": R,
                       "gain": gain, "bias": bias, "dt": dt}
    return lif_rate


lif_rate = make_lif_rate(**{**LIF_RATE_DEFAULTS, "dt": None})
lif_rate.__name__ = "lif_rate"
lif_rate_dt = make_lif_rate(**LIF_RATE_DEFAULTS)
lif_rate_dt.__name__ = "lif_rate_dt"


ACTIVATIONS: dict[str, Activation] = {
    "tanh": tanh,
    "ltanh": ltanh,
    "relu": relu,
    "relu6": relu6,
    "sigmoid": sigmoid,
    "sign": sign,
    "step": step,
    "gelu": gelu,
    "identity": identity,
    "stochastic_binary": stochastic_binary,
    "lif_rate": lif_rate,
    "lif_rate_dt": lif_rate_dt,
}

OUTPUTS: dict[str, Activation] = {
    "softmax": softmax,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "identity": identity,
}


def _wrap_user(fn: Callable) -> Activation:
    """Accept f(h) or f(h, rng): the generator is passed when a second parameter
    has no default or is named ``rng``."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # builtins / ufuncs without a signature
        params = []
    if len(params) >= 2 and (params[1].default is inspect.Parameter.empty
                             or params[1].name == "rng"):
        return fn

    def wrapped(h, rng=None):
        out = np.asarray(fn(h))
        return out if out.dtype.kind not in "fiub" else out.astype(h.dtype, copy=False)

    wrapped.__name__ = getattr(fn, "__name__", "user_activation")
    return wrapped


#: the input a user function is tried on once: (2, 5) float32 values in [-3, 3]
PROBE = np.linspace(-3.0, 3.0, 10, dtype=np.float32).reshape(2, 5)


def _probe(fn: Activation, name: str, kind: str) -> None:
    """Call a (wrapped) user function once on :data:`PROBE`; refuse it, naming it, when
    it fails or returns anything but finite real numbers of the input's shape."""
    what = f"{kind} {name!r}"
    try:
        out = np.asarray(fn(PROBE.copy(), np.random.default_rng(0)))
    except Exception as exc:         # noqa: BLE001 - any failure of the user's code
        raise ValueError(f"{what} fails on a (2, 5) float32 probe input: "
                         f"{type(exc).__name__}: {exc}") from None
    if out.dtype.kind not in "fiub":
        raise ValueError(f"{what} returned dtype {out.dtype} on a float32 probe input; "
                         "expected real numbers")
    if out.shape != PROBE.shape:
        raise ValueError(f"{what} returned shape {out.shape} on a probe input of shape "
                         f"{PROBE.shape}; expected the input's shape")
    if not np.isfinite(out).all():
        raise ValueError(f"{what} returned NaN or inf on finite probe input in [-3, 3]")


def _resolve(spec, table: dict, kind: str) -> Activation:
    if callable(spec):
        fn = _wrap_user(spec)
        _probe(fn, getattr(spec, "__name__", "anonymous"), kind)
        return fn
    if isinstance(spec, str) and spec in table:
        return table[spec]
    raise ValueError(f"unknown {kind} {spec!r}; known: {', '.join(sorted(table))} "
                     "(or pass a callable)")


def get_activation(spec) -> Activation:
    """Return the activation for a registry name or a user callable."""
    return _resolve(spec, ACTIVATIONS, "activation")


def get_output(spec) -> Activation:
    """Return the output function for a registry name or a user callable."""
    return _resolve(spec, OUTPUTS, "output function")


def name_of(spec) -> str:
    """The name recorded in configs/save files ('<callable:name>' for user functions)."""
    if isinstance(spec, str):
        return spec
    return f"<callable:{getattr(spec, '__name__', 'anonymous')}>"
