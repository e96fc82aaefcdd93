"""Shared base of the gradient-based baselines (RTRL, UORO, NoBackTrack, TBPTT, BPTT).

Step semantics are P-TNCN's (see :mod:`ptncn.learner`): ``step(x_t, mask_t, learn)``
returns the prediction of ``x_t`` made from ``h_{t-1}`` before seeing it (at
t = 0 from the zero state), the batch-mean loss ``L_t`` of that prediction on the
rows with mask 1 is what the methods minimise, then the state advances
``h_t = f(h_{t-1}, x_t)`` (rows with mask 0: no loss, state held).

Every quantity of a step (prediction, loss gradient, transition, carried
sensitivities) is computed with the parameters as they are at the start of the
step; a parameter update, when the method makes one at this step, is applied
at its end.  One update = one optimizer step on the gradient of the method's
batch-mean loss, clipped to global L2 norm ``clip`` (0 = off).  Steps with no
unmasked row make no update.

A step with ``learn=False`` does only the forward pass and drops whatever the
method carries for learning (sensitivities, tape): if learning resumes in the
same sequence it starts again from zero there (a truncation).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DivergenceError, ModelFileError
from ..learner import (FORMAT_NAME, Learner, ParamDict, check_step_input, pack_params,
                       read_model_file, unpack_params,
                       write_model_file)
from ..optim import clip_grad_norm, make_optimizer, resolve_optimizer
from . import rnn

FORMAT_VERSION = 1

#: constructor keywords shared by every gradient learner (besides x_dim and the optimizer's)
MODEL_KEYS = ("hidden", "act", "leak", "out", "init_scale", "clip", "dtype", "seed")


class GradientLearner(Learner):
    """Base class; subclasses implement ``_grad_rec`` / ``_carry`` / ``_updates_now`` etc."""

    #: method-specific constructor keywords (stored in the model file's config)
    method_keys: tuple[str, ...] = ()

    def _setup(self, x_dim, *, hidden, act, leak, out, init_scale, clip, dtype, seed,
               optimizer, lr, momentum, weight_decay, max_norm, optimizer_options,
               **method) -> None:
        self.rnn_config = rnn.RNNConfig(x_dim=x_dim, hidden=hidden, act=act, leak=leak, out=out,
                                        init_scale=init_scale, dtype=dtype)
        if not np.isfinite(clip) or clip < 0:
            raise ValueError(f"clip must be a finite number >= 0 (0 = off), got {clip!r}")
        if isinstance(seed, bool) or int(seed) != seed:
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.clip = float(clip)
        self.seed = int(seed)
        self.method = dict(method)
        self.dtype = self.rnn_config.np_dtype
        self.rng = np.random.default_rng(self.seed)
        self.params = ParamDict(rnn.init_params(self.rnn_config, self.rng))
        self.optimizer = resolve_optimizer(optimizer, lr, momentum, weight_decay, max_norm,
                                           optimizer_options)
        self.h: np.ndarray | None = None
        self.t = 0                      # steps taken in the current sequences
        self.steps_taken = 0            # steps taken in all
        self.updates_taken = 0
        self.quantities: dict[str, np.ndarray] = {}
        self.updates: dict[str, np.ndarray] = {}
        self.last_grad_norm = float("nan")
        self.extra_meta: dict = {}

    # -- config --------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """Everything the constructor needs besides the optimizer (JSON-able)."""
        c = self.rnn_config.to_dict()
        c.update(clip=self.clip, seed=self.seed, **self.method)
        return c

    @property
    def batch(self) -> int | None:
        return None if self.h is None else self.h.shape[0]

    # -- hooks for the methods -----------------------------------------------------------
    def _reset_carry(self, batch: int) -> None:
        """Zero what the method carries (sensitivities, tape) for ``batch`` rows."""

    def _drop_carry(self) -> None:
        """A step without learning: forget the carried learning state (default: reset it)."""
        self._reset_carry(self.h.shape[0])

    def _online(self, h_prev, x, m, do, g_h, tr, n) -> tuple[dict | None, dict]:
        """Given the step's loss gradients (``do`` on the logits, ``g_h = dL_t/dh_{t-1}``)
        and its transition ``tr``: return (gradient of this update or None, new carried
        state to commit).  Must not mutate the learner (commit happens in ``_commit``)."""
        raise NotImplementedError

    def _commit(self, carry: dict) -> None:
        for k, v in carry.items():
            setattr(self, k, v)

    def _carry_arrays(self) -> dict[str, np.ndarray]:
        """Carried learning state to store in a checkpoint (name -> array)."""
        return {}

    def _carry_meta(self) -> dict:
        return {}

    def _load_carry(self, arrays: dict, meta: dict) -> None:
        pass

    def _persistent_arrays(self) -> dict[str, np.ndarray]:
        """Learning state kept across sequences, saved with every save (name -> array)."""
        return {}

    def _load_persistent(self, arrays: dict) -> None:
        pass

    # -- learner interface ---------------------------------------------------------------
    def reset(self, batch: int) -> None:
        if isinstance(batch, bool) or int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        batch = int(batch)
        self.h = np.zeros((batch, self.rnn_config.hidden), self.dtype)
        self.t = 0
        self.quantities = {}
        self.updates = {}
        self._reset_carry(batch)

    def _check_input(self, x, mask):
        x, m = check_step_input(x, mask, self.rnn_config.x_dim,
                                None if self.h is None else self.h.shape[0], self.dtype)
        if self.h is None:
            self.reset(x.shape[0])
        return x, m

    def step(self, x, mask=None, learn: bool = True) -> np.ndarray:
        """Advance one step; learn (if ``learn``); return the prediction of ``x``."""
        x, m = self._check_input(x, mask)
        cfg, p = self.rnn_config, self.params
        h_prev = self.h
        rng_state = self.rng.bit_generator.state

        def diverged(what):
            self.rng.bit_generator.state = rng_state
            return DivergenceError(self.steps_taken, what, f"t={self.t} of the sequence")

        logits = h_prev @ p["W_out"]
        logits += p["c"]
        y = rnn.output(cfg.out, logits)
        if not np.isfinite(y).all():
            raise diverged("x_mu")
        h, tr = rnn.transition(cfg, p, h_prev, x, m)
        if not np.isfinite(h).all():
            raise diverged("h")
        grads = None
        if learn:
            n = float(m.sum())
            do = rnn.logit_grad(cfg.out, y, x, m, n)
            g_h = do @ p["W_out"].T
            grads, carry = self._online(h_prev, x, m, do, g_h, tr, n)
            if grads is not None:
                norm = clip_grad_norm(grads, self.clip)
                if not np.isfinite(norm):
                    bad = next(k for k, g in grads.items() if not np.isfinite(g).all())
                    raise diverged(f"d{bad}")
                self.last_grad_norm = norm
            self._commit(carry)
        else:
            self._drop_carry()
        self.updates = {}
        if grads is not None:
            self.updates = {f"d{k}": g.copy() for k, g in grads.items()}
            self.optimizer.step(self.params, grads)
            self.updates_taken += 1
        self.quantities = {"x": x, "x_mu": y, "h": h}
        self.h = h
        self.t += 1
        self.steps_taken += 1
        return y

    def _apply(self, grads: dict) -> None:
        """Clip and apply an update outside ``step`` (whole-sequence methods)."""
        norm = clip_grad_norm(grads, self.clip)
        if not np.isfinite(norm):
            bad = next(k for k, g in grads.items() if not np.isfinite(g).all())
            raise DivergenceError(self.steps_taken, f"d{bad}", "at the end of the sequence")
        self.last_grad_norm = norm
        self.updates = {f"d{k}": g.copy() for k, g in grads.items()}
        self.optimizer.step(self.params, grads)
        self.updates_taken += 1

    def _zero_grads(self) -> dict[str, np.ndarray]:
        return {k: np.zeros_like(v) for k, v in self.params.items()}

    # -- recording -----------------------------------------------------------------------
    @property
    def recordable(self) -> tuple[str, ...]:
        return ("x", "x_mu", "h", *self.params, *(f"d{k}" for k in self.params))

    def quantity_shape(self, name: str, batch: int) -> tuple[int, ...]:
        if name in self.params:
            return self.params[name].shape
        if name.startswith("d") and name[1:] in self.params:
            return self.params[name[1:]].shape
        if name in ("x", "x_mu"):
            return (batch, self.rnn_config.x_dim)
        if name == "h":
            return (batch, self.rnn_config.hidden)
        raise KeyError(f"unknown quantity {name!r}; recordable: {', '.join(self.recordable)}")

    _MEANINGS = {
        "x": ("input x_t (the target of the prediction x_mu)", "input units"),
        "x_mu": ("prediction of x_t made from h_{t-1} before seeing it", "output units"),
        "h": ("recurrent state h_t after the step", "activation"),
    }

    def describe(self, name: str) -> tuple[str, str]:
        if name in self._MEANINGS:
            return self._MEANINGS[name]
        if name in self.params:
            return (f"parameter {name} (see docs/baselines.md)", "weight")
        if name.startswith("d") and name[1:] in self.params:
            return (f"gradient of the batch-mean loss w.r.t. {name[1:]} handed to the optimizer "
                    f"at this step ({type(self).__name__}; clipped; zero without an update)",
                    "weight / step")
        raise KeyError(f"unknown quantity {name!r}; recordable: {', '.join(self.recordable)}")

    # -- persistence ---------------------------------------------------------------------
    def save(self, path, include_state: bool = False, extra_meta: dict | None = None) -> None:
        """Write config, params, optimizer state and RNG state to ``path`` (.npz).

        ``include_state`` also stores everything the current sequences carry (state,
        sensitivities, tape), so a resumed run is bitwise identical; ``extra_meta``
        comes back as ``model.extra_meta``.
        """
        opt_state = self.optimizer.state_dict()
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "class": type(self).__name__,
                "config": self.config, "optimizer": opt_state["hyperparams"],
                "optimizer_t": opt_state["t"], "steps_taken": self.steps_taken,
                "updates_taken": self.updates_taken, "rng": self.rng.bit_generator.state}
        if extra_meta:
            meta["extra"] = extra_meta
        arrays = pack_params(self.params, self.optimizer)
        arrays.update(self._persistent_arrays())
        if include_state and self.h is not None:
            meta["state_t"] = self.t
            meta["carry"] = self._carry_meta()
            arrays["state/h"] = self.h
            for k, v in self._carry_arrays().items():
                arrays[f"carry/{k}"] = v
        write_model_file(os.fspath(path), meta, arrays)

    @classmethod
    def load(cls, path, **overrides):
        """Read a learner written by :meth:`save`."""
        path = os.fspath(path)
        meta, arrays = read_model_file(path, FORMAT_VERSION)
        if meta.get("class") != cls.__name__:
            raise ModelFileError(f"{path}: holds a {meta.get('class')!r}, not a {cls.__name__!r}; "
                                 "use ptncn.learner.load_learner")
        cfg = dict(meta["config"])
        cfg.update(overrides)
        x_dim = cfg.pop("x_dim")
        hp = dict(meta["optimizer"])
        opt = make_optimizer(hp.pop("name"), **hp)
        model = cls(x_dim, optimizer=opt, **cfg)
        unpack_params(path, arrays, model.params, opt, meta["optimizer_t"])
        # load_state_dict casts slots to float32; keep the model's dtype (float64 resumes exactly)
        opt.slots = {s: {k: np.array(arrays[f"opt/{s}/{k}"], dtype=model.dtype) for k in d}
                     for s, d in opt.slots.items()}
        model._load_persistent(arrays)
        model.rng.bit_generator.state = meta["rng"]
        model.steps_taken = int(meta["steps_taken"])
        model.updates_taken = int(meta.get("updates_taken", 0))
        model.extra_meta = meta.get("extra", {})
        if "state_t" in meta:
            try:
                model.h = np.array(arrays["state/h"], dtype=model.dtype)
                model.t = int(meta["state_t"])
                model._reset_carry(model.h.shape[0])
                model._load_carry({k[6:]: v for k, v in arrays.items() if k.startswith("carry/")},
                                  meta.get("carry", {}))
            except KeyError as exc:
                raise ModelFileError(f"{path}: state array {exc} missing") from None
        return model
