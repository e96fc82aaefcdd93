"""Echo state network baseline: a fixed random reservoir and a trained
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

The readout statistics outlive sequences and are saved with the model: they are
the learner's ``extra`` arrays (ridge ``A``, ``B``, ``n_pending``; RLS ``P``; both
``n_rows``, the pairs learnt from, and ``n_solves``).  ``dWout`` is the change the
readout made at the last step (RLS) or at the last ``end_sequence`` (the ridge
solve); zero otherwise.

The ESN has no gradient optimizer: the harness's ``optimizer``, ``lr``,
``momentum``, ``weight_decay``, ``max_norm`` and ``optimizer_options`` are
accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..learner import (Learner, LearnerConfig, Quantity, Updates, check_finite_numbers,
                       check_positive_ints, rows)

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
class ESNConfig(LearnerConfig):
    """Everything that defines an ESN (see the module docstring)."""

    label: ClassVar[str] = "ESN"
    renamed: ClassVar[dict] = {"units": "hidden"}

    x_dim: int
    hidden: int = 500
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
        check_positive_ints(self, "x_dim", "hidden")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed:
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)
        check_finite_numbers(self, "sr", "leak", "input_scaling", "bias_scaling",
                             "rc_connectivity", "input_connectivity", "ridge", "forgetting",
                             "rls_delta", "eps")
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
        return self.hidden + 1

    def neutral(self) -> float:
        """The readout's intercept before learning (uniform / 0.5 / 0)."""
        return {"softmax": 1.0 / self.x_dim, "sigmoid": 0.5, "identity": 0.0}[self.out]


def generate_reservoir(cfg: ESNConfig) -> dict[str, np.ndarray]:
    """W (spectral radius ``sr``), Win (+-input_scaling) and bias (+-bias_scaling), made by
    reservoirpy's generators (as its ``Reservoir`` node does) from ``cfg.seed``; float32."""
    mat_gen = _reservoirpy_mat_gen()
    from scipy import sparse

    N, X = cfg.hidden, cfg.x_dim
    rng_w, rng_in, rng_b = (np.random.default_rng([cfg.seed, k]) for k in (1, 2, 3))

    def dense(a):
        a = a.toarray() if sparse.issparse(a) else np.asarray(a)
        return np.ascontiguousarray(a, dtype=F32)

    W = mat_gen.normal(N, N, sr=cfg.sr, connectivity=cfg.rc_connectivity, seed=rng_w)
    Win = mat_gen.bernoulli(N, X, input_scaling=cfg.input_scaling,
                            connectivity=cfg.input_connectivity, seed=rng_in)
    bias = mat_gen.bernoulli(N, 1, input_scaling=cfg.bias_scaling, connectivity=1.0, seed=rng_b)
    return {"W": dense(W), "Win": dense(Win), "bias": dense(bias).reshape(N)}


@dataclass
class ESNState:
    """What the current sequences carry."""

    r: np.ndarray        # (batch, units) reservoir state after the last input
    t: int = 0           # steps taken in the current sequences


class ReadoutChange(Updates):
    """The readout set to ``new`` exactly (the ESN has no optimizer): ``self["Wout"]`` is
    the change it makes (what ``dWout`` records), ``self.new`` the readout itself."""

    def __init__(self, old: np.ndarray, new: np.ndarray, extra: dict):
        self.new = new
        super().__init__({"Wout": new.astype(F32) - old}, extra=extra)


def _count(n) -> np.ndarray:
    """A counter as a 0-d array (how ``extra`` stores it)."""
    return np.array(n, np.int64)


_MEANINGS = {
    "W": "recurrent reservoir weights (fixed; row i feeds unit i)",
    "Win": "input weights (fixed; row i feeds unit i)",
    "bias": "reservoir bias (fixed)",
    "Wout": "readout weights; last row is the intercept",
}


class ESN(Learner):
    """Echo state network with a ridge or RLS readout (see the module docstring).

    ``x_dim`` input (= output) units, ``hidden`` reservoir units (the old name
    ``units`` still works); ``sr`` spectral radius of W, ``leak`` leak rate,
    ``input_scaling``/``bias_scaling`` the magnitudes of Win's and the bias's +-1 entries, ``rc_connectivity`` /
    ``input_connectivity`` the densities of W / Win; ``readout`` "ridge" (penalty
    ``ridge``) or "rls" (``forgetting``, ``rls_delta``); ``out`` the output
    mapping ("softmax", "sigmoid", "identity") with floor ``eps``.  The
    optimizer arguments exist for the harness and are ignored.
    """

    name = "esn"
    Config = ESNConfig
    State = ESNState
    default_optimizer = None
    update_meaning = ("change applied to the readout (RLS: at this step; ridge: by the "
                      "solve at the end of the sequences)")

    def __init__(self, x_dim: int, hidden: int | None = None, **options):
        if hidden is not None or "units" not in options:
            options["hidden"] = ESNConfig.hidden if hidden is None else hidden
        super().__init__(x_dim, **options)
        self.params.update(generate_reservoir(self.config))

    def _build(self) -> dict[str, np.ndarray]:
        """A zero reservoir (the constructor fills it from reservoirpy's generators,
        ``load`` from the file), the neutral readout and empty readout statistics."""
        cfg = self.config
        N, X, D = cfg.hidden, cfg.x_dim, cfg.D
        arrays = {"W": np.zeros((N, N), F32), "Win": np.zeros((N, X), F32),
                  "bias": np.zeros(N, F32), "Wout": np.zeros((D, X), F32)}
        arrays["Wout"][N] = cfg.neutral()
        if cfg.readout == "ridge":
            self.extra.update(A=np.zeros((D, D), F64),     # sum phi^T phi
                              B=np.zeros((D, X), F64),     # sum phi^T x
                              n_pending=_count(0))         # pairs since the last solve
        else:
            self.extra["P"] = np.eye(D, dtype=F64) / cfg.rls_delta
        self.extra.update(n_rows=_count(0), n_solves=_count(0))
        return arrays

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """W, Win, bias, Wout, and the readout's float64 (D, D) statistics counted as two
        more (D, D) float32 arrays."""
        N, X, D = self.config.hidden, self.config.x_dim, self.config.D
        return {"W": (N, N), "Win": (N, X), "bias": (N,), "Wout": (D, X), "stats": (2 * D, D)}

    def quantity_table(self) -> dict[str, Quantity]:
        X, N = rows(self.config.x_dim), rows(self.config.hidden)
        return {
            "x": Quantity(X, "input x_t (the target of the prediction x_mu)", "input units"),
            "x_mu": Quantity(X, "prediction of x_t from the reservoir state after x_{t-1}, "
                                "out(lin)", "output units"),
            "lin": Quantity(X, "linear readout [r_{t-1}, 1] @ Wout before the output mapping",
                            "output units"),
            "e0": Quantity(X, "prediction error (x_mu - x) * m", "output units"),
            "r": Quantity(N, "reservoir state after the input x_t (held on masked rows)",
                          "activation"),
        }

    def param_meaning(self, name: str) -> str:
        return _MEANINGS[name]

    @property
    def trained_params(self) -> tuple[str, ...]:
        return ("Wout",)

    def init_state(self, batch: int) -> ESNState:
        return ESNState(np.zeros((batch, self.config.hidden), F32))

    # -- the step ------------------------------------------------------------------------
    def _step(self, params, state: ESNState, x, m, learn):
        """Predict ``x`` from the state after the previous input, learn, then advance."""
        r = state.r
        lin = self.readout_linear(params, r)
        x_mu = self.output(lin)
        if not np.isfinite(x_mu).all():      # before learning: a readout cannot explain it
            raise self.diverged("x_mu")
        updates = Updates()
        sel = m[:, 0] > 0
        if learn and state.t > 0 and sel.any():
            updates = self._learn(params["Wout"], r[sel], x[sel])
        r_next = np.where(m > 0, self.advance(params, r, x), r)
        q = {"x": x, "x_mu": x_mu, "lin": lin, "e0": (x_mu - x) * m, "r": r_next}
        return ESNState(r_next, state.t + 1), q, updates

    def readout_linear(self, params, r: np.ndarray) -> np.ndarray:
        """The linear readout ``[r, 1] @ Wout`` of states ``r`` (batch, units)."""
        Wout, N = params["Wout"], self.config.hidden
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

    def advance(self, params, r: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The reservoir's next state from ``r`` after input ``x`` (float32, every row)."""
        a = F32(self.config.leak)
        pre = r @ params["W"].T
        pre += x @ params["Win"].T
        pre += params["bias"]
        return (F32(1.0) - a) * r + a * np.tanh(pre)

    def _learn(self, Wout: np.ndarray, r: np.ndarray, y: np.ndarray) -> Updates:
        """The readout's learning from the pairs ``([r, 1], y)``.  NumPy only in the step
        loop: SciPy's BLAS would start a second OpenBLAS thread pool that fights NumPy's
        for the cores (see ptncn/blas.py)."""
        phi = np.empty((r.shape[0], self.config.D), F64)
        phi[:, :-1] = r
        phi[:, -1] = 1.0
        y = y.astype(F64)
        ex, k = self.extra, phi.shape[0]
        counts = {"n_rows": _count(ex["n_rows"] + k)}
        if self.config.readout == "ridge":
            return Updates(extra={"A": ex["A"] + phi.T @ phi, "B": ex["B"] + phi.T @ y,
                                  "n_pending": _count(ex["n_pending"] + k), **counts})
        W, P = self._rls_update(Wout, ex["P"], phi, y)
        return ReadoutChange(Wout, W, {"P": P, **counts})

    def _rls_update(self, Wout, P, phi: np.ndarray, y: np.ndarray):
        """Block RLS with forgetting lam: S = lam I + phi P phi^T, Wout += (S^-1 phi P)^T
        (y - phi Wout), P = (P - (phi P)^T S^-1 phi P) / lam; returns the new (Wout, P)."""
        lam = self.config.forgetting
        PhiP = phi @ P                                   # (k, D); P is symmetric
        S = PhiP @ phi.T
        S[np.diag_indices_from(S)] += lam
        G = np.linalg.solve(S, PhiP)                     # S^-1 phi P   (k, k) system
        W = Wout.astype(F64)
        W += G.T @ (y - phi @ W)
        P = P - PhiP.T @ G
        if lam != 1.0:
            P /= lam
        P += P.T
        P *= 0.5
        if not np.isfinite(P).all():
            raise self.diverged("Wout", "RLS update")
        return self._readout(W, "RLS update"), P

    def _readout(self, W: np.ndarray, where: str) -> np.ndarray:
        """The readout ``W`` (float64) as stored, float32; DivergenceError naming Wout
        when it is not finite there (a finite float64 value can overflow the cast)."""
        W = W.astype(F32)
        if not np.isfinite(W).all():
            raise self.diverged("Wout", where)
        return W

    def _apply(self, updates: ReadoutChange) -> None:
        """Set the readout exactly (no optimizer)."""
        self.params["Wout"] = updates.new

    # -- the ridge solve -----------------------------------------------------------------
    def end_sequence(self, learn: bool = True) -> None:
        """Ridge readout: solve for Wout from every pair accumulated so far (if any is new)."""
        if learn and self.config.readout == "ridge" and self.extra["n_pending"]:
            self.solve()

    def solve(self) -> None:
        """Set Wout to the ridge solution of the accumulated statistics (NumPy's LAPACK,
        so no second BLAS thread pool; a singular system falls back to least squares)."""
        cfg, ex = self.config, self.extra
        A = ex["A"].copy()
        idx = np.arange(cfg.hidden)
        A[idx, idx] += cfg.ridge                          # the intercept is not penalised
        try:
            W = np.linalg.solve(A, ex["B"])
        except np.linalg.LinAlgError:
            W = np.linalg.lstsq(A, ex["B"], rcond=None)[0]
        W = self._readout(W, "ridge solve")
        self.commit(ReadoutChange(self.params["Wout"], W,
                                  {"n_pending": _count(0),
                                   "n_solves": _count(ex["n_solves"] + 1)}))
