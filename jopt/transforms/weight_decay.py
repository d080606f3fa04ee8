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

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype, is_python_number

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
    from jopt.transforms.parameter_groups import calls_mask  # parameter_groups imports this module

    prefix = mask(params) if calls_mask(mask) else mask
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

    def step(updates, state, params, h, count):
        if is_python_number(h["weight_decay"]) and h["weight_decay"] == 0:
            return updates, ()  # a constant zero adds nothing (and optax emits no operation for it)
        wd = h["weight_decay"]

        def decay(u, p, on):
            dt = compute_dtype(u.dtype)
            new = (u.astype(dt) + cast_hyperparam(wd, dt) * p.astype(dt)).astype(u.dtype)
            return new if on is True else jnp.where(on, new, u)

        if updates is None:  # optax passes None updates through
            return None, ()
        selected = resolve_mask(mask, params)
        new = jax.tree.map(
            lambda on, u, p: decay(u, p, on) if on is not False else u, selected, updates, params
        )
        return new, ()

    hp, ranges = {"weight_decay": weight_decay}, {"weight_decay": NONNEGATIVE}
    return hyperparam_transformation(
        "add_decayed_weights", hp, ranges, AddDecayedWeightsState, step, needs_params=True
    )
