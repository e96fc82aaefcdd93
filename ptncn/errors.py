"""Exceptions raised by ptncn (all subclass ValueError or RuntimeError)."""


class DivergenceError(FloatingPointError):
    """A step produced NaN or inf.  Parameters are left as they were before that step."""

    def __init__(self, step: int, quantity: str, detail: str = ""):
        self.step = step
        self.quantity = quantity
        msg = f"non-finite value (NaN/inf) in {quantity!r} at step {step}"
        if detail:
            msg += f" ({detail})"
        msg += "; parameters were left as they were before this step"
        super().__init__(msg)


class ModelFileError(ValueError):
    """A saved model file is corrupt, truncated, or not a ptncn model file."""


class FormatVersionError(ModelFileError):
    """A saved model file was written by another (incompatible) format version."""
