"""Gradient transforms, one module per family. Everything here is re-exported as ``jopt.*``."""

from jopt.transforms.scaling import *  # noqa: F401,F403
from jopt.transforms.weight_decay import *  # noqa: F401,F403
from jopt.transforms.moments import *  # noqa: F401,F403
from jopt.transforms.adaptive import *  # noqa: F401,F403
from jopt.transforms.momentum import *  # noqa: F401,F403
from jopt.transforms.factored import *  # noqa: F401,F403
from jopt.transforms.layerwise import *  # noqa: F401,F403
from jopt.transforms.sign import *  # noqa: F401,F403
from jopt.transforms.clipping import *  # noqa: F401,F403
from jopt.transforms.regularization import *  # noqa: F401,F403
from jopt.transforms.parameter_groups import *  # noqa: F401,F403
from jopt.transforms.accumulation import *  # noqa: F401,F403
from jopt.transforms.conditionals import *  # noqa: F401,F403
from jopt.transforms.averaging import *  # noqa: F401,F403
from jopt.transforms.gradient_history import *  # noqa: F401,F403
from jopt.transforms.memory_efficient import *  # noqa: F401,F403
from jopt.transforms.step_size import *  # noqa: F401,F403
from jopt.transforms.injection import *  # noqa: F401,F403
from jopt.transforms.lookahead import *  # noqa: F401,F403
from jopt.transforms.monitoring import *  # noqa: F401,F403
from jopt.transforms.layouts import *  # noqa: F401,F403
from jopt.transforms.quasi_newton import *  # noqa: F401,F403
from jopt.transforms.linesearch import *  # noqa: F401,F403
from jopt.transforms.zoom_linesearch import *  # noqa: F401,F403
from jopt.transforms.noise import *  # noqa: F401,F403
