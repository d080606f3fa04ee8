"""Learning-rate (and any hyperparameter) schedules: ``step -> value`` functions.

Every optax schedule exists here under optax's name, with optax's arguments and,
for Python-number arguments, optax's float32 values bit for bit; jopt's shorter
names (``constant``, ``linear``, ``cosine_decay``, ``warmup_cosine_decay``,
``one_cycle``, ``join``, ``sgdr``, ...) are the same functions. Every numeric
argument of every schedule may also be a traced array (vmap over it).
"""

from jopt.schedules.basic import *  # noqa: F401,F403
from jopt.schedules.piecewise import *  # noqa: F401,F403
from jopt.schedules.warmup import *  # noqa: F401,F403
from jopt.schedules.cyclic import *  # noqa: F401,F403
from jopt.schedules.plateau import *  # noqa: F401,F403

# optax has the hyperparameter-injection wrappers under optax.schedules too.
from jopt.transforms.injection import *  # noqa: F401,F403
