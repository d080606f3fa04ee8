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
from jopt.optimizers.second_order import *  # noqa: F401,F403
from jopt.optimizers.dual_averaging import *  # noqa: F401,F403
from jopt.optimizers.low_rank import *  # noqa: F401,F403
from jopt.optimizers.learning_rate_free import *  # noqa: F401,F403
from jopt.optimizers.kron import *  # noqa: F401,F403
from jopt.optimizers.kronecker import *  # noqa: F401,F403
from jopt.optimizers.muon import *  # noqa: F401,F403

# The public surface is what the submodules export (their ``__all__``), never a submodule itself:
# without this, ``from jopt.<package> import *`` would also export submodule objects, and one named
# like a function (e.g. a module ``sophia``) would shadow that function in ``jopt``.
import types as _types  # noqa: E402

__all__ = sorted(
    n for n, v in list(globals().items()) if n[0] != "_" and not isinstance(v, _types.ModuleType)
)
