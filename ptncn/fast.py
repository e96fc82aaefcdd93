"""The fast P-TNCN engine: stacked weights, factorised clipping, fused BLAS updates.

Same equations as :mod:`ptncn.ptncn` (tested against it to 1e-6); three things
make it fast (see docs/performance.md):

1. **Stacked bottom-up/recurrent/top-down weights.**  Layer l's ``M_l, V_l, U_l``
   live in one contiguous block ``R_l = [M_l; V_l; U_l]``, so
   ``h_l = [s_{l-1} | s_l | s_{l+1}] @ R_l`` is a single GEMM, and the three
   parameter updates are a single GEMM too.  ``params["M1"]`` etc. are views.

2. **Clipping without forming the update.**  Every LRA update is a rank-B
   product ``A.T @ R`` (B = batch).  Its Frobenius norm is
   ``||A.T R||^2 = sum((A A.T) * (R R.T))`` — two B x B Gram matrices — so the
   clip factor is known before the update exists and is folded into ``A``.

3. **The optimizer fused into the GEMM.**  BLAS ``sgemm`` computes
   ``C = alpha A B + beta C`` in place, so for the momentum family the
   accumulator update ``a = mu a + G`` *is* the GEMM; the parameter update is
   one or two ``saxpy`` passes:

   * sgd:       ``p = p - lr G``                          (one sgemm, beta = 1)
   * momentum:  ``a = mu a + G;  p -= lr a``              (sgemm + saxpy)
   * nesterov:  ``p += lr mu a_old;  a = mu a + G;  p -= lr (1 + mu) a``
                (= TF's ``p -= lr (G + mu a_new)``; sgemm + 2 saxpy)

   Other optimizers, weight decay and max-norm materialise ``G`` into a reused
   buffer and call the generic optimizer (:mod:`ptncn.optim`).  The BLAS calls
   go through :mod:`ptncn.blas` (NumPy's own OpenBLAS, one thread pool).

The applied updates stay available by name (``dW1`` ...) as factored products,
formed only when someone reads them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .blas import get_backend

F32 = np.float32


def clip_scale(norm: float, radius: float) -> float:
    """The factor tf.clip_by_norm applies: radius / max(norm, radius) (1 when off)."""
    if radius <= 0 or not norm > radius:
        return 1.0
    return radius / norm


def gram(a: np.ndarray) -> np.ndarray:
    """a @ a.T in float64 (B x B)."""
    g = a @ a.T
    return g.astype(np.float64)


def product_norm(ga: np.ndarray, gr: np.ndarray) -> float:
    """||A.T @ R||_F from the Gram matrices A A.T and R R.T."""
    return float(np.sqrt(max(float(np.vdot(ga, gr)), 0.0)))


class Block:
    """One contiguous parameter block updated by a single rank-B product.

    ``parts`` lists (name, row_start, row_end) of the named parameters it holds.
    """

    __slots__ = ("name", "array", "parts", "accum", "slot_views")

    def __init__(self, name, array, parts):
        self.name, self.array, self.parts = name, array, parts
        self.accum = None
        self.slot_views = ()


class FactoredUpdates(Mapping):
    """The last applied update directions, by name (``dW1``...), formed on demand.

    Each is ``left.T @ right`` restricted to the parameter's rows: exactly the
    clipped, batch-divided direction the optimizer received.
    """

    def __init__(self, factors: dict[str, tuple[np.ndarray, np.ndarray, int, int]]):
        self._f = factors
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, key):
        if key not in self._cache:
            left, right, a, b = self._f[key]
            self._cache[key] = np.ascontiguousarray(left[:, a:b].T @ right)
        return self._cache[key]

    def __iter__(self):
        return iter(self._f)

    def __len__(self):
        return len(self._f)


class FastEngine:
    """Owns the parameter storage (stacked) and performs P-TNCN's fast step pieces."""

    def __init__(self, cfg, init: dict[str, np.ndarray], blas: str | None = None):
        self.cfg = cfg
        self.blas = get_backend(blas)
        n, L, on = cfg.sizes, cfg.L, cfg.zeta > 0
        self.blocks: list[Block] = []
        self.R: list[Block] = []
        self.views: dict[str, np.ndarray] = {}
        for l in range(1, L + 1):
            parts = [(f"M{l}", n[l - 1]), (f"V{l}", n[l])]
            if on and l < L:
                parts.append((f"U{l}", n[l + 1]))
            rows = sum(r for _, r in parts)
            arr = np.empty((rows, n[l]), F32)
            spans, r0 = [], 0
            for name, r in parts:
                spans.append((name, r0, r0 + r))
                self.views[name] = arr[r0:r0 + r]
                r0 += r
            blk = Block(f"R{l}", arr, spans)
            self.R.append(blk)
            self.blocks.append(blk)
        self.W, self.E = [], []
        for l in range(1, L + 1):
            for kind, store in (("W", self.W), ("E", self.E)):
                name = f"{kind}{l}"
                arr = np.empty(init[name].shape, F32)
                self.views[name] = arr
                blk = Block(name, arr, [(name, 0, arr.shape[0])])
                store.append(blk)
                self.blocks.append(blk)
        for name, v in init.items():
            np.copyto(self.views[name], v)
        self._gbuf = None

    # -- forward ---------------------------------------------------------------
    def layer_input(self, state, l: int) -> np.ndarray:
        """[s_{l-1} | s_l | s_{l+1}] (the rows of R_l it multiplies), C-contiguous."""
        s = [state.x_prev, *state.s]
        names = [name for name, _, _ in self.R[l - 1].parts]
        cols = [s[l - 1], s[l]] + ([s[l + 1]] if len(names) == 3 else [])
        return np.concatenate(cols, axis=1)

    def preactivations(self, state) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """h_1..h_L by one GEMM per layer; also returns the layer inputs (reused by updates)."""
        L, on = self.cfg.L, self.cfg.zeta > 0
        hs, inputs = [], []
        for l in range(1, L + 1):
            S = self.layer_input(state, l)
            inputs.append(S)
            R = self.R[l - 1].array
            if l == L and not on:       # zeta == 0: the top layer uses V_L only
                _, v0, _ = self.R[l - 1].parts[1]
                hs.append(state.s[l - 1] @ R[v0:])
            else:
                hs.append(S @ R)
        return hs, inputs

    # -- updates -----------------------------------------------------------------
    def factors(self, state, q, inputs, batch: int):
        """Left/right factors of every block's clipped, batch-divided update.

        Returns ``[(block, left, right)]`` and the per-name factor table for
        :class:`FactoredUpdates`.
        """
        cfg, L = self.cfg, self.cfg.L
        r, gamma, inv_b = cfg.clip, cfg.gamma, 1.0 / batch
        clipping = r > 0
        s = [state.x_prev, *state.s]
        grams: dict[int, np.ndarray] = {}

        def G(a):
            if not clipping:
                return None
            k = id(a)
            if k not in grams:
                grams[k] = gram(a)
            return grams[k]

        def scale_of(a, b, extra=1.0):
            if not clipping:
                return 1.0
            return clip_scale(abs(extra) * product_norm(G(a), G(b)), r)

        out, table = [], {}
        for l in range(1, L + 1):
            z = q[f"z{l}"]
            err = q["e0"] if l == 1 else q[f"eps{l - 1}"]
            cW = scale_of(z, err)
            left = z * F32(cW * inv_b)
            out.append((self.W[l - 1], left, err))
            table[f"dW{l}"] = (left, err, 0, left.shape[1])
            if cfg.temporal_error_rule:
                e_in = q[f"e{l - 1}"]
                dv = q[f"eps{l}"] - state.eps_prev[l - 1]
                cE = scale_of(e_in, dv, gamma)
                leftE, rightE = e_in * F32(-gamma * cE * inv_b), dv
            else:
                nW = product_norm(G(z), G(err)) if clipping else 0.0
                cE = clip_scale(abs(gamma) * cW * nW, r) if clipping else 1.0
                leftE, rightE = err * F32(gamma * cW * cE * inv_b), z
            out.append((self.E[l - 1], leftE, rightE))
            table[f"dE{l}"] = (leftE, rightE, 0, leftE.shape[1])
        for l in range(1, L + 1):
            blk, S, eps = self.R[l - 1], inputs[l - 1], q[f"eps{l}"]
            left = np.empty_like(S)
            src = {"M": s[l - 1], "V": s[l], "U": s[l + 1] if l < L else None}
            for name, a, b in blk.parts:
                c = scale_of(src[name[0]], eps)
                np.multiply(S[:, a:b], F32(c * inv_b), out=left[:, a:b])
                table[f"d{name}"] = (left, eps, a, b)
            out.append((blk, left, eps))
        return out, table

    # -- the fused optimizer -------------------------------------------------------
    def bind_accumulators(self, optimizer) -> None:
        """Give each block a stacked accumulator whose named views are the optimizer's slots."""
        slots = optimizer.slots.setdefault("accum", {})
        for blk in self.blocks:
            acc = np.zeros_like(blk.array)
            views = []
            for name, a, b in blk.parts:
                if name in slots and slots[name].shape == (b - a, acc.shape[1]):
                    acc[a:b] = slots[name]
                slots[name] = acc[a:b]
                views.append(slots[name])
            blk.accum, blk.slot_views = acc, tuple(views)

    def _accumulators_bound(self, optimizer) -> bool:
        slots = optimizer.slots.get("accum", {})
        return all(blk.accum is not None and len(blk.slot_views) == len(blk.parts)
                   and all(slots.get(name) is v for (name, _, _), v in
                           zip(blk.parts, blk.slot_views))
                   for blk in self.blocks)

    def fusable(self, optimizer) -> bool:
        return (optimizer.name in ("sgd", "momentum", "nesterov")
                and optimizer.weight_decay == 0.0 and optimizer.max_norm == 0.0)

    def apply(self, optimizer, factors) -> None:
        """One optimizer step on every block, G = left.T @ right."""
        if not self.fusable(optimizer):
            self._apply_generic(optimizer, factors)
            return
        optimizer.t += 1
        lr = float(optimizer.lr)
        if optimizer.name != "sgd":
            if not self._accumulators_bound(optimizer):
                self.bind_accumulators(optimizer)
            mu = float(optimizer.momentum)
        gemm, axpy = self.blas.gemm, self.blas.axpy
        for blk, left, right in factors:
            p = blk.array
            if optimizer.name == "sgd":                      # p -= lr G
                gemm(-lr, left, True, right, False, 1.0, p)
                continue
            a = blk.accum
            if optimizer.name == "nesterov":
                axpy(lr * mu, a, p)                           # p += lr mu a_old
                gemm(1.0, left, True, right, False, mu, a)    # a = mu a + G
                axpy(-lr * (1.0 + mu), a, p)                  # p -= lr (1 + mu) a
            else:                                             # momentum
                gemm(1.0, left, True, right, False, mu, a)
                axpy(-lr, a, p)

    def _apply_generic(self, optimizer, factors) -> None:
        size = max(blk.array.size for blk, _, _ in factors)
        if self._gbuf is None or self._gbuf.size < size:
            self._gbuf = np.empty(size, F32)
        optimizer.t += 1
        # one materialised block at a time keeps the scratch memory to one block
        for blk, left, right in factors:
            g = self._gbuf[:blk.array.size].reshape(blk.array.shape)
            np.matmul(left.T, right, out=g)
            optimizer.apply(self.views, {name: g[a:b] for name, a, b in blk.parts})
