"""Optimizers: short compositions of transforms. Re-exported as ``jopt.*``."""

from jopt.optimizers.gradient_descent import *  # noqa: F401,F403
from jopt.optimizers.adaptive import *  # noqa: F401,F403
from jopt.optimizers.adam_family import *  # noqa: F401,F403
from jopt.optimizers.sign import *  # noqa: F401,F403
from jopt.optimizers.layerwise import *  # noqa: F401,F403
from jopt.optimizers.factored import *  # noqa: F401,F403
from jopt.optimizers.adam_variants import *  # noqa: F401,F403
from jopt.optimizers.sgd_variants import *  # noqa: F401,F403
from jopt.optimizers.memory_efficient import *  # noqa: F401,F403
from jopt.optimizers.quasi_newton import *  # noqa: F401,F403
from jopt.optimizers.schedule_free import *  # noqa: F401,F403
from jopt.optimizers.momentum_variants import *  # noqa: F401,F403
from jopt.optimizers.sophia import *  # noqa: F401,F403
from jopt.optimizers.madgrad import *  # noqa: F401,F403
from jopt.optimizers.galore import *  # noqa: F401,F403
