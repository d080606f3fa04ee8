r"""Normalizing updates: centering, dividing by the update norm, scaling by parameter-block size.

* :func:`centralize` subtracts from each leaf its mean over all but the leading axis
  (gradient centralization, Yong et al. 2020);
* :func:`normalize_by_update_norm` divides all updates by their global norm;
* :func:`scale_by_param_block_norm` / :func:`scale_by_param_block_rms` multiply each
  leaf's update by the norm / RMS of the matching parameter block (Adafactor's
  relative step size).

Hyperparameters are numbers, arrays, traced values or schedules; arithmetic is
done in at least float32 in optax's order, so Python-number hyperparameters give
optax's float32 results bit for bit. Returned updates keep their dtypes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation, stateless
from jopt.hyperparams import ANY, NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype
from jopt.numerics import safe_norm, safe_root_mean_squares
from jopt.tree import norm

Array = jax.Array

__all__ = [
    "NormalizeState",
    "centralize",
    "normalize_by_update_norm",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
]


class NormalizeState(NamedTuple):
    """Step counter (``None`` without schedules) and the non-constant hyperparameters of the latest step."""

    count: Array | None
    hyperparams: dict[str, Array]


def _subtract_mean(g: Array) -> Array:
    if g.ndim <= 1:
        return g
    return g - g.mean(tuple(range(1, g.ndim)), keepdims=True)


def centralize() -> GradientTransformation:
    r"""Subtract from each leaf (of rank :math:`\ge 2`) its mean over all axes but the first.

    .. math:: u_{i,\cdot} \leftarrow u_{i,\cdot} - \operatorname{mean}(u_{i,\cdot})

    Vectors and scalars pass unchanged.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.centralize()
      >>> tx.update(jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]]), tx.init(None))[0].tolist()
      [[-1.0, 0.0, 1.0], [-2.0, -1.0, 3.0]]
    """
    return stateless(lambda updates, params: jax.tree.map(_subtract_mean, updates))


def normalize_by_update_norm(
    scale_factor: Hyperparam = 1.0, eps: Hyperparam = 1e-6
) -> GradientTransformation:
    r"""Divide all updates by their global norm: :math:`u \leftarrow u \cdot s / (\|u\|_2 + \epsilon)`.

    Computed as :math:`u / ((\|u\|_2 + \epsilon) / s)` (optax's order).

    Args:
      scale_factor: :math:`s`, the norm of the result (negative for descent); number, array or schedule.
      eps: :math:`\epsilon \ge 0`, keeps zero updates finite.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.normalize_by_update_norm(eps=0.0)
      >>> tx.update(jnp.array([3.0, 4.0]), tx.init(None))[0].tolist()
      [0.6000000238418579, 0.800000011920929]
    """

    def step(updates, state, params, h, count):
        del state, params, count
        total = norm(updates)
        dt = total.dtype
        scale = (total + cast_hyperparam(h["eps"], dt)) / cast_hyperparam(h["scale_factor"], dt)
        return jax.tree.map(lambda g: g / scale, updates), ()

    return hyperparam_transformation(
        "normalize_by_update_norm",
        {"scale_factor": scale_factor, "eps": eps},
        {"scale_factor": ANY, "eps": NONNEGATIVE},
        NormalizeState,
        step,
    )


def _block_scaling(owner: str, min_scale: Hyperparam, block_size: Any) -> GradientTransformation:
    """``u * block_size(p, min_scale)`` per leaf, in at least float32."""

    def step(updates, state, params, h, count):
        del state, count

        def one(u, p):
            dt = compute_dtype(jnp.promote_types(u.dtype, p.dtype))
            return u.astype(dt) * block_size(p.astype(dt), cast_hyperparam(h["min_scale"], dt))

        return jax.tree.map(one, updates, params), ()

    return hyperparam_transformation(
        owner, {"min_scale": min_scale}, {"min_scale": NONNEGATIVE}, NormalizeState, step, needs_params=True
    )


def scale_by_param_block_norm(min_scale: Hyperparam = 1e-3) -> GradientTransformation:
    r"""Scale each leaf's update by the norm of its parameter block.

    .. math:: u \leftarrow u \cdot \max(\|\theta\|_2, s_{min})

    Needs ``params``.

    Args:
      min_scale: :math:`s_{min} \ge 0`, the smallest factor (zero parameters still move).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_param_block_norm()
      >>> p = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.ones(2), tx.init(p), p)[0].tolist()
      [5.0, 5.0]
    """
    return _block_scaling("scale_by_param_block_norm", min_scale, safe_norm)


def scale_by_param_block_rms(min_scale: Hyperparam = 1e-3) -> GradientTransformation:
    r"""Scale each leaf's update by the RMS of its parameter block.

    .. math:: u \leftarrow u \cdot \max(\operatorname{rms}(\theta), s_{min})

    Needs ``params``.

    Args:
      min_scale: :math:`s_{min} \ge 0`, the smallest factor.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_param_block_rms()
      >>> p = jnp.array([2.0, -2.0])
      >>> tx.update(jnp.ones(2), tx.init(p), p)[0].tolist()
      [2.0, 2.0]
    """
    return _block_scaling("scale_by_param_block_rms", min_scale, safe_root_mean_squares)
