"""ptncn: a simulator for local-learning recurrent networks (P-TNCN and baselines)."""

from .activations import ACTIVATIONS, OUTPUTS, get_activation, get_output
from .errors import DivergenceError, FormatVersionError, ModelFileError
from .learner import Learner, ParamDict
from .optim import make_optimizer
from .ptncn import PTNCN, PTNCNConfig, State, load
from .record import Recorder, RecordingError, open_recording
from .simulate import Simulation

__version__ = "0.1.0"

__all__ = ["PTNCN", "PTNCNConfig", "State", "Learner", "ParamDict", "load", "make_optimizer",
           "Recorder", "RecordingError", "open_recording", "Simulation",
           "ACTIVATIONS", "OUTPUTS", "get_activation", "get_output", "DivergenceError",
           "ModelFileError", "FormatVersionError", "__version__"]
