"""Learning-rate (and any hyperparameter) schedules: ``step -> value`` functions.

Every argument of every schedule may be a Python number or a traced array.
"""

from jopt.schedules.basic import *  # noqa: F401,F403
from jopt.schedules.cyclic import *  # noqa: F401,F403
from jopt.schedules.plateau import *  # noqa: F401,F403
