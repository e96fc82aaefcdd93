"""The spiking P-TNCN (Brian2): :class:`SpikingPTNCN` (config
:class:`SpikingConfig`), see docs/spiking.md.

Importing this package never imports Brian2; constructing a :class:`SpikingPTNCN`
does, and raises :class:`SpikingUnavailable` (an ImportError) with the install
hint ``pip install 'ptncn[spiking]'`` when Brian2 is missing or broken.
"""

from ._brian import SpikingUnavailable, brian2_available, import_brian2
from .config import SpikingConfig
from .model import SpikingPTNCN

__all__ = ["SpikingPTNCN", "SpikingConfig", "SpikingUnavailable", "brian2_available",
           "import_brian2"]
