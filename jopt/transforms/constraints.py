r"""Transforms that enforce constraints on updates or parameters.

* :func:`keep_params_nonnegative` changes updates so that :math:`\theta + u \ge 0`
  (put it last in a chain);
* :func:`zero_nans` replaces NaN updates by zero and records, per leaf, whether
  it did.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import EmptyState, GradientTransformation, transformation

Array = jax.Array
PyTree = Any

__all__ = ["NonNegativeParamsState", "ZeroNansState", "keep_params_nonnegative", "zero_nans"]

NonNegativeParamsState = EmptyState
"""State of :func:`keep_params_nonnegative` (empty)."""


def keep_params_nonnegative() -> GradientTransformation:
    r"""Clip updates so that parameters stay non-negative.

    .. math:: u \leftarrow \begin{cases} -\theta & \theta + u < 0 \\ u & \text{else} \end{cases}

    Parameters that are already negative are moved to 0. Needs ``params``;
    ``None`` parameter leaves stay ``None``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.keep_params_nonnegative()
      >>> p = jnp.array([1.0, 2.0])
      >>> tx.update(jnp.array([-3.0, -1.0]), tx.init(p), p)[0].tolist()
      [-1.0, -1.0]
    """

    def init(params):
        del params
        return NonNegativeParamsState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("keep_params_nonnegative needs params: call update(updates, state, params)")
        updates = jax.tree.map(
            lambda p, u: None if p is None else jnp.where((p + u) < 0.0, -p, u),
            params,
            updates,
            is_leaf=lambda x: x is None,
        )
        return updates, state

    return transformation(init, update)


class ZeroNansState(NamedTuple):
    """Per leaf of the updates, a scalar bool: whether the latest update contained a NaN."""

    found_nan: PyTree


def zero_nans() -> GradientTransformation:
    r"""Replace NaN entries of the updates by zero: :math:`u_i \leftarrow 0` where :math:`u_i` is NaN.

    The state records, per leaf, whether a NaN was found at the latest step.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.zero_nans()
      >>> u, state = tx.update({"w": jnp.array([jnp.nan, 1.0])}, tx.init({"w": jnp.zeros(2)}))
      >>> u["w"].tolist(), bool(state.found_nan["w"])
      ([0.0, 1.0], True)
    """

    def init(params):
        return ZeroNansState(jax.tree.map(lambda p: jnp.array(False, jnp.bool_), params))

    def update(updates, state, params=None, **extra_args):
        del state, params, extra_args
        found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        cleaned = jax.tree.map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates)
        return cleaned, ZeroNansState(found)

    return transformation(init, update)
