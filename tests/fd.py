"""Central finite differences, the reference of every gradient test."""

import numpy as np


def central_differences(loss, params: dict, eps: float = 1e-6) -> dict:
    """d loss(params) / d params[name] for every entry, by central differences
    (``loss`` takes a dict of arrays and returns a float; ``params`` is not changed)."""
    out = {}
    for name, v in params.items():
        g = np.zeros_like(v)
        for i in np.ndindex(v.shape):
            q = {k: a.copy() for k, a in params.items()}
            q[name][i] = v[i] + eps
            plus = loss(q)
            q[name][i] = v[i] - eps
            g[i] = (plus - loss(q)) / (2 * eps)
        out[name] = g
    return out
