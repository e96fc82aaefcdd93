"""Echo state network baseline (issue #7): a fixed random reservoir and a trained
linear readout, stepped with P-TNCN's semantics.

The reservoir matrices are generated with reservoirpy (the optional extra
``esn``: ``pip install 'ptncn[esn]'``), which is imported only when an ESN is
constructed, so ``import ptncn`` works without it.  Running the reservoir
does not use reservoirpy: its nodes run one sequence at a time, so the update
below is run here in float32 numpy, vectorised over the batch rows, with
exactly the equation of ``reservoirpy.nodes.Reservoir`` (tests check the two
trajectories agree)::

    r_t = (1 - leak) * r_{t-1} + leak * tanh(W r_{t-1} + Win x_t + bias)

(row convention in the code: ``r @ W.T + x @ Win.T + bias``; ``W`` is (N, N),
``Win`` (N, X), ``bias`` (N,), as reservoirpy stores them).

One step ``step(x_t, mask_t, learn)``, as for P-TNCN:

1. the prediction of ``x_t`` is read out from the state after ``x_{t-1}``
   (all zeros at t = 0): ``lin = [r_{t-1}, 1] @ Wout`` (``Wout`` is (N+1, X); its
   last row is the readout's intercept), ``x_mu = out(lin)``;
2. if ``learn`` and t > 0 (as P-TNCN, nothing is learnt from the first step of a
   sequence, whose state is the all-zero reset), the pair ([r_{t-1}, 1], x_t) of
   every row with mask 1 is added to the readout's statistics;
3. the reservoir advances with ``x_t``; rows with mask 0 keep their state.

Readouts (``readout=``):

* ``"ridge"``: offline ridge regression over every pair seen so far.  The step
  accumulates ``A = sum phi^T phi`` and ``B = sum phi^T x`` (float64);
  :meth:`end_sequence` with ``learn=True`` (called by the Simulation after the
  last step of every batch) solves ``(A + ridge * I') Wout = B``, where ``I'``
  is the identity without the intercept's entry (the intercept is not
  penalised).  Until the first solve the readout predicts a neutral output.
* ``"rls"``: recursive least squares, updated at every step with the block of
  masked-in rows (Woodbury form, float64 inverse-correlation matrix ``P``), with
  forgetting factor ``forgetting`` applied once per step.  ``P`` starts at
  ``I / rls_delta``: with ``forgetting = 1`` the readout is, after every step,
  the ridge solution with penalty ``rls_delta * ||Wout - Wout_0||^2``.

Output mapping (``out=``), turning the linear readout into a valid prediction
for the task's loss (``eps`` default 1e-3):

* ``"softmax"`` (one-hot tasks): ``p = clip(lin, eps, 1)``, then divided by its
  row sum -- a least-squares readout of one-hot targets estimates the
  conditional class probabilities, so it is floored and renormalised (no
  exponentiation); every row is positive and sums to 1.
* ``"sigmoid"`` (binary tasks): ``clip(lin, eps, 1 - eps)``.
* ``"identity"``: ``lin`` unchanged.

The neutral output before any learning is the uniform distribution (softmax),
0.5 (sigmoid) or 0 (identity): ``Wout`` starts at zero with that value in its
intercept row.

The ESN has no gradient optimizer: the harness's ``optimizer``, ``lr``,
``momentum``, ``weight_decay``, ``max_norm`` and ``optimizer_options`` are
accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DivergenceError, ModelFileError
from ..learner import (FORMAT_NAME, Learner, ParamDict, check_step_input, read_model_file,
                       write_model_file)

FORMAT_VERSION = 1
F32 = np.float32
F64 = np.float64
READOUTS = ("ridge", "rls")
OUTS = ("softmax", "sigmoid", "identity")
INSTALL_HINT = "pip install 'ptncn[esn]'"


def _reservoirpy_mat_gen():
    """reservoirpy's matrix generators, or one clear ImportError."""
    try:
        from reservoirpy import mat_gen
    except ImportError as exc:
        raise ImportError(f"the ESN baseline needs reservoirpy to generate its reservoir "
                          f"({exc}); install it with: {INSTALL_HINT}") from None
    return mat_gen


@dataclass
class ESNConfig:
    """Everything that defines an ESN (see the module docstring)."""

    x_dim: int
    units: int = 500
    sr: float = 0.9
    leak: float = 0.3
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    rc_connectivity: float = 0.1
    input_connectivity: float = 0.1
    readout: str = "ridge"
    ridge: float = 1e-6
    forgetting: float = 1.0
    rls_delta: float = 1e-2
    out: str = "softmax"
    eps: float = 1e-3
    seed: int = 1234

    def __post_init__(self):
        for name in ("x_dim", "units"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        if isinstance(self.seed, bool) or int(self.seed) != self.seed:
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)
        for name in ("sr", "leak", "input_scaling", "bias_scaling", "rc_connectivity",
                     "input_connectivity", "ridge", "forgetting", "rls_delta", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        checks = [("sr", self.sr >= 0, ">= 0"), ("leak", 0 < self.leak <= 1, "in (0, 1]"),
                  ("rc_connectivity", 0 < self.rc_connectivity <= 1, "in (0, 1]"),
                  ("input_connectivity", 0 < self.input_connectivity <= 1, "in (0, 1]"),
                  ("ridge", self.ridge >= 0, ">= 0"),
                  ("forgetting", 0 < self.forgetting <= 1, "in (0, 1]"),
                  ("rls_delta", self.rls_delta > 0, "> 0"),
                  ("eps", 0 < self.eps < 0.5, "in (0, 0.5)")]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.out not in OUTS:
            raise ValueError(f"out must be one of {OUTS}, got {self.out!r}")

    @property
    def D(self) -> int:
        """Number of readout regressors: the reservoir units and the intercept."""
        return self.units + 1

    def neutral(self) -> float:
        """The readout's intercept before learning (uniform / 0.5 / 0)."""
        return {"softmax": 1.0 / self.x_dim, "sigmoid": 0.5, "identity": 0.0}[self.out]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ESNConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ESN config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def generate_reservoir(cfg: ESNConfig) -> dict[str, np.ndarray]:
    """W (spectral radius ``sr``), Win (+-input_scaling) and bias (+-bias_scaling), made by
    reservoirpy's generators (as its ``Reservoir`` node does) from ``cfg.seed``; float32."""
    mat_gen = _reservoirpy_mat_gen()
    from scipy import sparse

    N, X = cfg.units, cfg.x_dim
    rng_w, rng_in, rng_b = (np.random.default_rng([cfg.seed, k]) for k in (1, 2, 3))

    def dense(a):
        a = a.toarray() if sparse.issparse(a) else np.asarray(a)
        return np.ascontiguousarray(a, dtype=F32)

    W = mat_gen.normal(N, N, sr=cfg.sr, connectivity=cfg.rc_connectivity, seed=rng_w)
    Win = mat_gen.bernoulli(N, X, input_scaling=cfg.input_scaling,
                            connectivity=cfg.input_connectivity, seed=rng_in)
    bias = mat_gen.bernoulli(N, 1, input_scaling=cfg.bias_scaling, connectivity=1.0, seed=rng_b)
    return {"W": dense(W), "Win": dense(Win), "bias": dense(bias).reshape(N)}


class ESN(Learner):
    """Echo state network with a ridge or RLS readout (see the module docstring).

    ``x_dim`` input (= output) units, ``units`` reservoir units; ``sr`` spectral
    radius of W, ``leak`` leak rate, ``input_scaling``/``bias_scaling`` the
    magnitudes of Win's and the bias's +-1 entries, ``rc_connectivity`` /
    ``input_connectivity`` the densities of W / Win; ``readout`` "ridge" (penalty
    ``ridge``) or "rls" (``forgetting``, ``rls_delta``); ``out`` the output
    mapping ("softmax", "sigmoid", "identity") with floor ``eps``.  The
    optimizer arguments exist for the harness and are ignored.
    """

    def __init__(self, x_dim: int, units: int = 500, *, sr: float = 0.9, leak: float = 0.3,
                 input_scaling: float = 1.0, bias_scaling: float = 0.0,
                 rc_connectivity: float = 0.1, input_connectivity: float = 0.1,
                 readout: str = "ridge", ridge: float = 1e-6, forgetting: float = 1.0,
                 rls_delta: float = 1e-2, out: str = "softmax", eps: float = 1e-3,
                 seed: int = 1234, optimizer=None, lr: float | None = None,
                 momentum: float | None = None, weight_decay: float | None = None,
                 max_norm: float | None = None, optimizer_options: dict | None = None):
        cfg = ESNConfig(x_dim=x_dim, units=units, sr=sr, leak=leak, input_scaling=input_scaling,
                        bias_scaling=bias_scaling, rc_connectivity=rc_connectivity,
                        input_connectivity=input_connectivity, readout=readout, ridge=ridge,
                        forgetting=forgetting, rls_delta=rls_delta, out=out, eps=eps, seed=seed)
        self._setup(cfg, generate_reservoir(cfg))

    def _setup(self, cfg: ESNConfig, reservoir: dict | None) -> None:
        self.config = cfg
        N, X, D = cfg.units, cfg.x_dim, cfg.D
        arrays = {"W": np.zeros((N, N), F32), "Win": np.zeros((N, X), F32),
                  "bias": np.zeros(N, F32), "Wout": np.zeros((D, X), F32)}
        arrays["Wout"][N] = cfg.neutral()
        self.params = ParamDict(arrays)
        if reservoir is not None:
            for k, v in reservoir.items():
                self.params[k] = v
        # the ESN draws no random numbers while running; the generator is kept (and
        # saved) so that the learner interface and its checkpoints match the others
        self.rng = np.random.default_rng(cfg.seed)
        self.optimizer = None
        if cfg.readout == "ridge":
            self._A = np.zeros((D, D), F64)              # sum phi^T phi
            self._B = np.zeros((D, X), F64)              # sum phi^T x
            self._P = None
        else:
            self._A = self._B = None
            self._P = np.eye(D, dtype=F64) / cfg.rls_delta
        self.n_rows = 0          # (state, target) pairs learnt from
        self.n_pending = 0       # ridge: pairs accumulated since the last solve
        self.n_solves = 0
        self.r: np.ndarray | None = None     # (batch, units) reservoir state
        self.t = 0                           # steps taken in the current sequences
        self.quantities: dict[str, np.ndarray] = {}
        self.steps_taken = 0
        self.extra_meta: dict = {}

    # -- learner interface ---------------------------------------------------------------
    def reset(self, batch: int) -> None:
        if isinstance(batch, bool) or int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self.r = np.zeros((int(batch), self.config.units), F32)
        self.t = 0
        self.quantities = {}

    @property
    def batch(self) -> int | None:
        return None if self.r is None else self.r.shape[0]

    def _check_input(self, x, mask):
        x, m = check_step_input(x, mask, self.config.x_dim,
                                None if self.r is None else self.r.shape[0])
        if self.r is None:
            self.reset(x.shape[0])
        return x, m

    def readout_linear(self, r: np.ndarray) -> np.ndarray:
        """The linear readout ``[r, 1] @ Wout`` of states ``r`` (batch, units)."""
        Wout = self.params["Wout"]
        N = self.config.units
        return r @ Wout[:N] + Wout[N]

    def output(self, lin: np.ndarray) -> np.ndarray:
        """Map the linear readout to a prediction (see "Output mapping" in the module doc)."""
        cfg = self.config
        if cfg.out == "softmax":
            p = np.clip(lin, F32(cfg.eps), F32(1.0))
            return p / p.sum(axis=1, keepdims=True)
        if cfg.out == "sigmoid":
            return np.clip(lin, F32(cfg.eps), F32(1.0 - cfg.eps))
        return lin

    def advance(self, r: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The reservoir's next state from ``r`` after input ``x`` (float32, every row)."""
        p, a = self.params, F32(self.config.leak)
        pre = r @ p["W"].T
        pre += x @ p["Win"].T
        pre += p["bias"]
        return (F32(1.0) - a) * r + a * np.tanh(pre)

    def step(self, x, mask=None, learn: bool = True) -> np.ndarray:
        """Predict ``x`` from the state after the previous input, learn, then advance."""
        x, m = self._check_input(x, mask)
        r = self.r
        lin = self.readout_linear(r)
        x_mu = self.output(lin)
        if not np.isfinite(x_mu).all():
            raise DivergenceError(self.steps_taken, "x_mu", f"t={self.t} of the sequence")
        if learn and self.t > 0:
            sel = m[:, 0] > 0
            if sel.any():
                self._learn(r[sel], x[sel])
        cand = self.advance(r, x)
        r_next = np.where(m > 0, cand, r)
        self.quantities = {"x": x, "x_mu": x_mu, "lin": lin, "e0": (x_mu - x) * m,
                           "r": r_next}
        self.r = r_next
        self.t += 1
        self.steps_taken += 1
        return x_mu

    def _features(self, r: np.ndarray) -> np.ndarray:
        phi = np.empty((r.shape[0], self.config.D), F64)
        phi[:, :-1] = r
        phi[:, -1] = 1.0
        return phi

    def _learn(self, r: np.ndarray, y: np.ndarray) -> None:
        phi = self._features(r)
        y = y.astype(F64)
        if self.config.readout == "ridge":
            # NumPy only in the step loop: SciPy's BLAS would start a second OpenBLAS
            # thread pool that fights NumPy's for the cores (see ptncn/blas.py)
            self._A += phi.T @ phi
            self._B += phi.T @ y
            self.n_pending += phi.shape[0]
        else:
            self._rls_update(phi, y)
        self.n_rows += phi.shape[0]

    def _rls_update(self, phi: np.ndarray, y: np.ndarray) -> None:
        """Block RLS with forgetting lam: S = lam I + phi P phi^T, Wout += (S^-1 phi P)^T
        (y - phi Wout), P = (P - (phi P)^T S^-1 phi P) / lam.  (NumPy only, as _learn.)"""
        lam = self.config.forgetting
        P = self._P
        PhiP = phi @ P                                   # (k, D); P is symmetric
        S = PhiP @ phi.T
        S[np.diag_indices_from(S)] += lam
        G = np.linalg.solve(S, PhiP)                     # S^-1 phi P   (k, k) system
        W = self.params["Wout"].astype(F64)
        W += G.T @ (y - phi @ W)
        P -= PhiP.T @ G
        if lam != 1.0:
            P /= lam
        P += P.T
        P *= 0.5
        if not (np.isfinite(W).all() and np.isfinite(P).all()):
            raise DivergenceError(self.steps_taken, "Wout", "RLS update")
        self.params["Wout"] = W

    def end_sequence(self, learn: bool = True) -> None:
        """Ridge readout: solve for Wout from every pair accumulated so far (if any is new)."""
        if learn and self.config.readout == "ridge" and self.n_pending:
            self.solve()

    def ridge_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, B): ``sum phi^T phi`` and ``sum phi^T x`` over the pairs so far (ridge)."""
        if self.config.readout != "ridge":
            raise ValueError("ridge_matrices: this ESN has an RLS readout")
        return self._A.copy(), self._B.copy()

    def solve(self) -> None:
        """Set Wout to the ridge solution of the accumulated statistics (NumPy's LAPACK,
        so no second BLAS thread pool; a singular system falls back to least squares)."""
        cfg = self.config
        A, B = self.ridge_matrices()
        idx = np.arange(cfg.units)
        A[idx, idx] += cfg.ridge                          # the intercept is not penalised
        try:
            W = np.linalg.solve(A, B)
        except np.linalg.LinAlgError:
            W = np.linalg.lstsq(A, B, rcond=None)[0]
        if not np.isfinite(W).all():
            raise DivergenceError(self.steps_taken, "Wout", "ridge solve")
        self.params["Wout"] = W
        self.n_pending = 0
        self.n_solves += 1

    # -- recording -----------------------------------------------------------------------
    _MEANINGS = {
        "x": ("input x_t (the target of the prediction x_mu)", "input units"),
        "x_mu": ("prediction of x_t from the reservoir state after x_{t-1}, out(lin)",
                 "output units"),
        "lin": ("linear readout [r_{t-1}, 1] @ Wout before the output mapping", "output units"),
        "e0": ("prediction error (x_mu - x) * m", "output units"),
        "r": ("reservoir state after the input x_t (held on masked rows)", "activation"),
        "W": ("recurrent reservoir weights (fixed; row i feeds unit i)", "weight"),
        "Win": ("input weights (fixed; row i feeds unit i)", "weight"),
        "bias": ("reservoir bias (fixed)", "weight"),
        "Wout": ("readout weights; last row is the intercept", "weight"),
    }

    @property
    def recordable(self) -> tuple[str, ...]:
        return ("x", "x_mu", "lin", "e0", "r", *self.params)

    def quantity_shape(self, name: str, batch: int) -> tuple[int, ...]:
        if name in self.params:
            return self.params[name].shape
        if name in ("x", "x_mu", "lin", "e0"):
            return (batch, self.config.x_dim)
        if name == "r":
            return (batch, self.config.units)
        raise KeyError(f"unknown quantity {name!r}; recordable: {', '.join(self.recordable)}")

    def describe(self, name: str) -> tuple[str, str]:
        if name in self._MEANINGS:
            return self._MEANINGS[name]
        raise KeyError(f"unknown quantity {name!r}; recordable: {', '.join(self.recordable)}")

    # -- persistence ---------------------------------------------------------------------
    def save(self, path, include_state: bool = False, extra_meta: dict | None = None) -> None:
        """Write config, params, readout statistics (ridge A, B or RLS P) and RNG state.

        ``include_state`` also stores the reservoir state of the current sequences
        (a checkpoint taken mid-sequence resumes exactly); ``extra_meta`` comes back
        as ``model.extra_meta``.  Written atomically (see :func:`write_model_file`).
        """
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "class": type(self).__name__,
                "config": self.config.to_dict(), "steps_taken": self.steps_taken,
                "rng": self.rng.bit_generator.state, "n_rows": self.n_rows,
                "n_pending": self.n_pending, "n_solves": self.n_solves}
        if extra_meta:
            meta["extra"] = extra_meta
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        if self.config.readout == "ridge":
            arrays["readout/A"] = self._A
            arrays["readout/B"] = self._B
        else:
            arrays["readout/P"] = self._P
        if include_state and self.r is not None:
            meta["state_t"] = self.t
            arrays["state/r"] = self.r
        write_model_file(os.fspath(path), meta, arrays)

    @classmethod
    def load(cls, path, **overrides) -> "ESN":
        """Read an ESN written by :meth:`save` (needs no reservoirpy).  ``overrides`` change
        config entries that do not alter shapes (e.g. ``out``, ``eps``, ``ridge``)."""
        path = os.fspath(path)
        meta, arrays = read_model_file(path, FORMAT_VERSION)
        if meta.get("class") != cls.__name__:
            raise ModelFileError(f"{path}: holds a {meta.get('class')!r} model, not an ESN")
        cfg_d = dict(meta["config"])
        cfg_d.update(overrides)
        cfg = ESNConfig.from_dict(cfg_d)
        model = cls.__new__(cls)
        model._setup(cfg, None)
        try:
            for k in model.params:
                model.params[k] = arrays[f"param/{k}"]
            if cfg.readout == "ridge":
                model._A = np.array(arrays["readout/A"], F64)
                model._B = np.array(arrays["readout/B"], F64)
                shapes = [(model._A, (cfg.D, cfg.D)), (model._B, (cfg.D, cfg.x_dim))]
            else:
                model._P = np.array(arrays["readout/P"], F64)
                shapes = [(model._P, (cfg.D, cfg.D))]
        except KeyError as exc:
            raise ModelFileError(f"{path}: array {exc} missing (was it saved with another "
                                 f"readout?)") from None
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        for a, shape in shapes:
            if a.shape != shape:
                raise ModelFileError(f"{path}: readout statistics have shape {a.shape}, "
                                     f"expected {shape}")
        model.rng.bit_generator.state = meta["rng"]
        model.steps_taken = int(meta["steps_taken"])
        model.n_rows = int(meta.get("n_rows", 0))
        model.n_pending = int(meta.get("n_pending", 0))
        model.n_solves = int(meta.get("n_solves", 0))
        model.extra_meta = meta.get("extra", {})
        if "state_t" in meta:
            if "state/r" not in arrays:
                raise ModelFileError(f"{path}: state array 'state/r' missing")
            r = np.array(arrays["state/r"], F32)
            if r.ndim != 2 or r.shape[1] != cfg.units:
                raise ModelFileError(f"{path}: state/r has shape {r.shape}, expected "
                                     f"(batch, {cfg.units})")
            model.r = r
            model.t = int(meta["state_t"])
        return model
