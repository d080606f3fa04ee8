r"""Decoupled weight decay (Loshchilov & Hutter, 2019).

.. math:: u \leftarrow u + \lambda_t\,\theta

Applied *after* preconditioning (as in AdamW), so the decay is not rescaled by
the second-moment estimate. Compare :func:`jopt.add_l2_penalty`, which adds the
penalty's gradient *before* preconditioning ("Adam + L2").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import (
    GradientTransformation,
    initial_count,
    next_count,
    resolve_hyperparams,
    stored_hyperparams,
    transformation,
)
from jopt.hyperparams import Hyperparam, check_hyperparam, compute_dtype

Array = jax.Array
MaskOrFn = Any | Callable[[Any], Any] | None

__all__ = ["AddDecayedWeightsState", "add_decayed_weights", "resolve_mask"]


def resolve_mask(mask: MaskOrFn | bool, params: Any) -> Any:
    """One mask entry per leaf of ``params``.

    ``mask`` is ``None`` or ``True`` (every leaf), ``False`` (none), a pytree of
    bools with the structure of ``params`` or a prefix of it (``{"encoder": True,
    "head": False}``: an entry covers every leaf below it), or a function
    ``params -> pytree`` returning one of these. Entries may be Python bools or
    boolean arrays (traced masks select with ``jnp.where``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> params = {"enc": {"w": jnp.ones(2), "b": jnp.ones(1)}, "head": jnp.ones(3)}
      >>> jopt.resolve_mask({"enc": True, "head": False}, params)
      {'enc': {'b': True, 'w': True}, 'head': False}
    """
    if mask is None:
        mask = True
    prefix = mask(params) if callable(mask) else mask
    return jax.tree.map(lambda on, sub: jax.tree.map(lambda _: on, sub), prefix, params)


class AddDecayedWeightsState(NamedTuple):
    """Step counter (``None`` without a schedule) and the weight decay (if not a constant)."""

    count: Array | None
    hyperparams: dict[str, Array]


def add_decayed_weights(weight_decay: Hyperparam = 0.0, mask: MaskOrFn = None) -> GradientTransformation:
    r"""Add :math:`\lambda_t\,\theta` to the updates (decoupled weight decay).

    Args:
      weight_decay: :math:`\lambda \ge 0`; number, array or schedule.
      mask: pytree of bools (or a function ``params -> pytree``) selecting the
        leaves to decay, e.g. ``lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``
        to skip biases and norm scales.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.add_decayed_weights(0.1)
      >>> p = {"w": jnp.ones(2)}
      >>> u, _ = tx.update({"w": jnp.zeros(2)}, tx.init(p), p)
    """
    check_hyperparam(weight_decay, "weight_decay", low=0.0, owner="add_decayed_weights")
    hp = {"weight_decay": weight_decay}

    def init(params):
        del params
        count = initial_count(hp)
        return AddDecayedWeightsState(count, stored_hyperparams(hp, resolve_hyperparams(hp, count)))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("add_decayed_weights needs params: call update(updates, state, params)")
        h = resolve_hyperparams(hp, state.count)
        wd = h["weight_decay"]

        def decay(u, p, on):
            dt = compute_dtype(u.dtype)
            new = (u.astype(dt) + wd.astype(dt) * p.astype(dt)).astype(u.dtype)
            return new if on is True else jnp.where(on, new, u)

        selected = resolve_mask(mask, params)
        updates = jax.tree.map(
            lambda on, u, p: decay(u, p, on) if on is not False else u,
            selected,
            updates,
            params,
        )
        return updates, AddDecayedWeightsState(next_count(state.count), stored_hyperparams(hp, h))

    return transformation(init, update)
