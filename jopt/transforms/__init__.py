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
from jopt.transforms.basic import *  # noqa: F401,F403
from jopt.transforms.constraints import *  # noqa: F401,F403
from jopt.transforms.gradient_scaling import *  # noqa: F401,F403
from jopt.transforms.normalization import *  # noqa: F401,F403
from jopt.transforms.per_example import *  # noqa: F401,F403
from jopt.transforms.target_updates import *  # noqa: F401,F403
from jopt.transforms.schedule_free import *  # noqa: F401,F403
from jopt.transforms.ema_mixture import *  # noqa: F401,F403
from jopt.transforms.decorrelated_moments import *  # noqa: F401,F403
from jopt.transforms.variance_reduction import *  # noqa: F401,F403
from jopt.transforms.cautious import *  # noqa: F401,F403
from jopt.transforms.sam import *  # noqa: F401,F403
from jopt.transforms.second_order import *  # noqa: F401,F403
from jopt.transforms.dual_averaging import *  # noqa: F401,F403
from jopt.transforms.low_rank import *  # noqa: F401,F403
from jopt.transforms.distance_estimates import *  # noqa: F401,F403
from jopt.transforms.learning_rate_free import *  # noqa: F401,F403
from jopt.transforms.psgd import *  # noqa: F401,F403
from jopt.transforms.kronecker_soap import *  # noqa: F401,F403
from jopt.transforms.kronecker_shampoo import *  # noqa: F401,F403
from jopt.transforms.muon import *  # noqa: F401,F403

# The public surface is what the submodules export (their ``__all__``), never a submodule itself:
# without this, ``from jopt.<package> import *`` would also export submodule objects, and one named
# like a function (e.g. a module ``sophia``) would shadow that function in ``jopt``.
import types as _types  # noqa: E402

__all__ = sorted(
    n for n, v in list(globals().items()) if n[0] != "_" and not isinstance(v, _types.ModuleType)
)
