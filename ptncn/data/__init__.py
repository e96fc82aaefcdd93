"""Sequence tasks: each yields batches ``(x, mask)`` of shape (T, B, X) and (T, B, 1)."""

from .synthetic import cyclic_symbols

__all__ = ["cyclic_symbols"]
