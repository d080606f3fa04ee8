"""jopt: functional, vmap-safe gradient transformations and vectorized hyperparameter sweeps.

Everything public lives in this flat namespace, plus the subpackages
:mod:`jopt.schedules` and :mod:`jopt.sweep`.
"""

from jopt import hyperparams, schedules, tree  # noqa: F401
from jopt.core import *  # noqa: F401,F403
from jopt.hyperparams import check_hyperparam, resolve  # noqa: F401
from jopt.optimizers import *  # noqa: F401,F403
from jopt.transforms import *  # noqa: F401,F403

__version__ = "0.1.0"
