r"""Slow copies of parameters kept outside the optimizer: Polyak averages and periodic targets.

* :func:`incremental_update`: :math:`\bar\theta \leftarrow \tau\theta + (1 - \tau)\bar\theta`
  (Polyak averaging, soft target networks);
* :func:`periodic_update`: :math:`\bar\theta \leftarrow \theta` every :math:`K` steps
  (hard target networks in DQN, BYOL).

Both are jit- and vmap-compatible: the step size and the step count may be traced.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt.hyperparams import PROBABILITY, Range, cast_hyperparam, compute_dtype

Array = jax.Array
PyTree = Any

__all__ = ["incremental_update", "periodic_update"]

_PERIOD = Range(0.0, low_open=True, integer=True)


def incremental_update(new_tensors: PyTree, old_tensors: PyTree, step_size: Array | float) -> PyTree:
    r"""Polyak (exponential moving) average of parameters.

    .. math:: \bar\theta \leftarrow \tau\theta + (1 - \tau)\bar\theta

    Computed in at least float32 in optax's order, with a Python-number
    ``step_size`` weakly typed; floating results keep the promoted dtype of the
    two leaves. ``None`` leaves of ``new_tensors`` stay ``None``.

    Args:
      new_tensors: the latest parameters :math:`\theta`.
      old_tensors: the running average :math:`\bar\theta`.
      step_size: :math:`\tau \in [0, 1]`.

    Raises:
      ValueError: when a concrete ``step_size`` is outside [0, 1].

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.incremental_update({"w": jnp.ones(2)}, {"w": jnp.zeros(2)}, 0.25)["w"].tolist()
      [0.25, 0.25]
    """
    PROBABILITY.check(step_size, "step_size", "incremental_update")

    def one(new, old):
        if new is None:
            return None
        new, old = jnp.asarray(new), jnp.asarray(old)
        dtype = jnp.promote_types(new.dtype, old.dtype)
        dt = compute_dtype(dtype)
        tau = cast_hyperparam(step_size, dt)
        out = tau * new.astype(dt) + (1.0 - tau) * old.astype(dt)
        return out.astype(dtype) if jnp.issubdtype(dtype, jnp.inexact) else out

    return jax.tree.map(one, new_tensors, old_tensors, is_leaf=lambda x: x is None)


def periodic_update(
    new_tensors: PyTree, old_tensors: PyTree, steps: Array | int, update_period: Array | int
) -> PyTree:
    r"""The new parameters every ``update_period`` steps, else the old copy.

    .. math:: \bar\theta \leftarrow \theta \quad \text{if } t \bmod K = 0

    Args:
      new_tensors: the latest parameters.
      old_tensors: the slow copy.
      steps: the current step :math:`t` (may be traced).
      update_period: :math:`K`, a positive integer.

    Raises:
      ValueError: when a concrete ``update_period`` is not a positive integer.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.periodic_update({"w": jnp.ones(1)}, {"w": jnp.zeros(1)}, 10, 5)["w"].tolist()
      [1.0]
    """
    _PERIOD.check(update_period, "update_period", "periodic_update")
    return jax.lax.cond(jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors)
