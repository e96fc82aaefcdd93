"""Exceptions raised by ptncn (all subclass ValueError or RuntimeError)."""


class DivergenceError(FloatingPointError):
    """A step produced NaN or inf.  Parameters are left as they were before that step.

    ``checkpoint``: where a training run saved that last good state (None otherwise)."""

    checkpoint: str | None = None

    def __init__(self, step: int, quantity: str, detail: str = ""):
        self.step = step
        self.quantity = quantity
        msg = f"non-finite value (NaN/inf) in {quantity!r} at step {step}"
        if detail:
            msg += f" ({detail})"
        msg += "; parameters were left as they were before this step"
        super().__init__(msg)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT (Ctrl-C) after finishing its current step, its checkpoint
    written and its recording closed (a KeyboardInterrupt, so code that handles Ctrl-C
    keeps working).  ``step``: the steps taken; ``checkpoint``: the file to resume from."""

    def __init__(self, message: str, step: int, checkpoint: str | None = None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


class ModelFileError(ValueError):
    """A saved model file is corrupt, truncated, or not a ptncn model file."""


class FormatVersionError(ModelFileError):
    """A saved model file was written by another (incompatible) format version."""


class ResourceLimitError(MemoryError, ValueError):
    """A model, batch or file would need more memory than the limit allows."""


class NonFiniteStepError(RuntimeError):
    """An optimizer step would have left parameter ``name`` (or one of its optimizer
    slots, ``slot``) NaN or inf; the step was undone (parameters, slots and step count
    as before it)."""

    def __init__(self, name: str, slot: str | None = None):
        self.name, self.slot = name, slot
        what = f"parameter {name!r}" if slot is None else f"optimizer slot {slot!r} of {name!r}"
        super().__init__(f"the optimizer step would make {what} non-finite (NaN/inf); undone")
