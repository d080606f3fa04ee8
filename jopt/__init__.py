"""jopt: functional, vmap-safe gradient transformations and vectorized hyperparameter sweeps.

Everything public lives in this flat namespace, plus the subpackages
:mod:`jopt.schedules`, :mod:`jopt.sweep`, :mod:`jopt.distributed`,
:mod:`jopt.precision` and :mod:`jopt.datasets`.
"""

from jopt import datasets, distributed, hyperparams, nn, precision, schedules, sweep, tree  # noqa: F401
from jopt.batched_cond import cond_across_batch  # noqa: F401
from jopt.core import *  # noqa: F401,F403
from jopt.distributed import mean_gradients_over  # noqa: F401
from jopt.hyperparams import check_hyperparam, resolve  # noqa: F401
from jopt.optimizers import *  # noqa: F401,F403
from jopt.precision import (  # noqa: F401
    LossScaleState,
    Policy,
    dynamic_loss_scale,
    scale_loss,
    unscale_grads,
)
from jopt.schedules.plateau import reduce_on_plateau, scale_by_plateau  # noqa: F401
from jopt.schedules import (  # noqa: F401  (optax's schedules, as optax.<name>)
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    exponential_decay,
    join_schedules,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)
from jopt.transforms import *  # noqa: F401,F403
from jopt import contrib, numerics, projections, tree_utils  # noqa: F401
from jopt.numerics import safe_increment, safe_int32_increment, safe_norm, safe_root_mean_squares  # noqa: F401
from jopt.tree import bias_correction, global_norm, map_params as tree_map_params  # noqa: F401
from jopt.tree import update_infinity_moment, update_moment, update_moment_per_elem_norm  # noqa: F401
from jopt.fused import fuse  # noqa: F401  (fused multi-tensor steps; the package is jopt.fused)

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``jopt.losses`` is optax's (an optional dependency), imported on first use.
    if name == "losses":
        import importlib

        return importlib.import_module("jopt.losses")
    raise AttributeError(f"module 'jopt' has no attribute {name!r}")
