"""Studies: sweeps over config values and seeds, on Dask workers (``ptncn sweep``).

:func:`run_sweep` runs a spec (:mod:`ptncn.sweep.spec`) into a folder
(:mod:`ptncn.sweep.engine`); :mod:`ptncn.sweep.results` turns its rows into
``results.csv``, ``results.nc`` and the report (``ptncn sweep-report``).
"""

from .engine import SweepResult, run_sweep
from .spec import Spec, load_spec, plan_runs

__all__ = ["SweepResult", "Spec", "load_spec", "plan_runs", "run_sweep"]
