"""The spiking P-TNCN's config: the rate model's hyperparameters, the LIF operating
point, the window and the Brian2 target (docs/spiking.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


from .. import activations as acts
from ..activations import LIF_RATE_DEFAULTS
from ..learner import LearnerConfig, check_finite_numbers, int_list
from ..ptncn import LRA_NUMBERS, LRAOptions, PTNCNConfig, refuse_callables

#: Brian2 code-generation targets: runtime (numpy, cython) or the compiled server
TARGETS = ("numpy", "cython", "cpp_standalone")
#: the fields shared with the rate model (:class:`~ptncn.ptncn.PTNCNConfig`)
RATE_FIELDS = (*LRAOptions.shared_fields(), "out", "seed")
_NUMBERS = (*LRA_NUMBERS, "window_ms", "tau_m", "tau_ref", "gain", "bias", "dt_ms",
            "err_theta")

#: the numbers that must be > 0 (time constants, the step, the window, the input gain)
_POSITIVE = ("window_ms", "tau_m", "tau_ref", "gain", "dt_ms", "err_theta")


@dataclass
class SpikingConfig(LRAOptions, LearnerConfig):
    """Everything that defines a :class:`~ptncn.spiking.SpikingPTNCN`.

    The P-TNCN fields mean what they mean in :class:`~ptncn.ptncn.PTNCNConfig`.  One
    step is a window of ``window_ms`` simulated with step ``dt_ms``; LIF neurons have
    membrane and refractory time constants ``tau_m``, ``tau_ref`` (ms) and take the
    current ``gain * h + bias``; error units emit an event per ``err_theta`` of
    accumulated input.  ``target`` picks the Brian2 code generation;
    ``record_spikes`` / ``record_membrane`` (layer-1 unit indices) write spike events
    and membrane traces of batch row 0 into the run file.
    """

    hidden: tuple[int, ...] = (64, 64)
    out: Any = "sigmoid"
    window_ms: float = 50.0
    tau_m: float = LIF_RATE_DEFAULTS["tau_m"]
    tau_ref: float = LIF_RATE_DEFAULTS["tau_ref"]
    gain: float = LIF_RATE_DEFAULTS["gain"]
    bias: float = LIF_RATE_DEFAULTS["bias"]
    dt_ms: float = LIF_RATE_DEFAULTS["dt"]
    err_theta: float = 0.5
    target: str = "cython"
    record_spikes: bool = False
    record_membrane: tuple[int, ...] = ()
    seed: int = 1234
    label: ClassVar[str] = "spiking P-TNCN"

    def __post_init__(self):
        self.hidden = int_list("hidden", self.hidden)
        check_finite_numbers(self, *_NUMBERS)
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("temporal_error_rule", "record_spikes"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))
        self.record_membrane = int_list("record_membrane", self.record_membrane)
        self.seed = int(self.seed)
        rate = self.rate_config()            # the rate model's checks and the LIF constants'
        self.x_dim = rate.x_dim
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        self._check_window()
        self._check_recording()

    def _check_window(self) -> None:
        half = self.window_ms / 2.0
        nsteps = half / self.dt_ms
        if abs(nsteps - round(nsteps)) > 1e-6 or round(nsteps) < 1:
            raise ValueError(f"window_ms/2 = {half} must be a whole number of dt_ms = "
                             f"{self.dt_ms} steps")
        if not half > self.tau_ref:
            raise ValueError(f"window_ms/2 = {half} must exceed tau_ref = {self.tau_ref}")
        if not self.err_theta > 0:
            raise ValueError("err_theta must be > 0")

    def _check_recording(self) -> None:
        if self.target == "cpp_standalone" and self.record_membrane:
            raise ValueError("SpikingPTNCN: record_membrane needs a runtime target "
                             "('cython' or 'numpy'); the cpp_standalone server returns "
                             "spike counts and spike events only")
        bad = [u for u in self.record_membrane if not 0 <= u < self.hidden[0]]
        if bad:
            raise ValueError(f"record_membrane: units {bad} outside layer 1 "
                             f"(0..{self.hidden[0] - 1})")

    @property
    def half_ms(self) -> float:
        return self.window_ms / 2.0

    def lif_rate(self, dt: bool = True):
        """The LIF f-I curve of these neurons (Brian2's dt-rounded one if ``dt``)."""
        return acts.make_lif_rate(self.tau_m, self.tau_ref, 1.0, 1.0, self.gain, self.bias,
                                  self.dt_ms if dt else None)

    def rate_config(self, dt: bool = True) -> PTNCNConfig:
        """The config of the rate twin, ``PTNCN(act=lif_rate)``: the equations' constants."""
        return PTNCNConfig(**{k: getattr(self, k) for k in RATE_FIELDS}, act=self.lif_rate(dt),
                           K=1, engine="reference")

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["out"] = acts.name_of(self.out)
        return d

    @classmethod
    def from_file(cls, path, meta: dict, overrides: dict) -> "SpikingConfig":
        """The config of a model file: format 2 stores it under "config", format 1 under
        "options" beside "x_dim"; a user-callable ``out`` must be passed again."""
        d = meta["config"] if "config" in meta else {"x_dim": meta["x_dim"], **meta["options"]}
        d = {**d, **overrides}
        refuse_callables(path, d, ("out",))
        return cls.from_dict(d)
