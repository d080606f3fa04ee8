r"""Lookahead (Zhang et al., 2019): ``k`` fast steps forward, one slow step back (``optax.lookahead``).

The parameters are a pair :class:`LookaheadParams` ``(fast, slow)``. Gradients
are taken at the fast parameters; every ``sync_period`` steps the slow
parameters move a fraction :math:`\alpha` (``slow_step_size``) towards the fast
ones and the fast parameters are reset to the new slow ones. Evaluate with the
slow parameters. The updates returned are of the type of the parameters
(:class:`LookaheadParams`, or optax's) and must be applied unchanged
(``jopt.apply_updates(params, updates)``).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import (
    GradientTransformation,
    as_transformation,
    initial_count,
    next_count,
    resolve_hyperparams,
    stored_hyperparams,
    transformation,
)
from jopt.hyperparams import PROBABILITY, Hyperparam, cast_hyperparam, check_hyperparams, is_python_number
from jopt.hyperparams import Range as _Range
from jopt.transforms.parameter_groups import _forwarded

Array = jax.Array
PyTree = Any

__all__ = ["LookaheadParams", "LookaheadState", "lookahead"]

_log = logging.getLogger(__name__)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead` (optax's fields, plus jopt's ``count`` and ``hyperparams``).

    Attributes:
      fast_state: state of the fast optimizer.
      steps_since_sync: fast steps since the last synchronization.
      count: number of ``update`` calls, only when ``slow_step_size`` is a schedule.
      hyperparams: ``slow_step_size`` used at the latest step, when it is an array or a schedule.
    """

    fast_state: Any
    steps_since_sync: Array
    count: Array | None = None
    hyperparams: dict[str, Array] = {}


class LookaheadParams(NamedTuple):
    """The fast parameters (take gradients here) and the slow ones (evaluate these)."""

    fast: PyTree
    slow: PyTree

    @classmethod
    def init_synced(cls, params: PyTree) -> LookaheadParams:
        """Fast and slow parameters both equal to ``params``."""
        return cls(fast=params, slow=params)


def _lookahead_updates(updates, sync, params: LookaheadParams, alpha) -> LookaheadParams:
    """Updates of the pair after one fast step; ``sync`` moves slow towards fast and resets fast."""

    def one(f, u, s):
        diff = f + u - s
        a = cast_hyperparam(alpha, diff.dtype)
        return a * sync * diff, u - sync * (1 - a) * diff

    pairs = jax.tree.map(one, params.fast, updates, params.slow)
    treedef = jax.tree.structure(updates)
    rows = treedef.flatten_up_to(pairs)
    slow = jax.tree.unflatten(treedef, [r[0] for r in rows])
    fast = jax.tree.unflatten(treedef, [r[1] for r in rows])
    return params._replace(fast=fast, slow=slow)


def lookahead(
    fast_optimizer: Any,
    sync_period: Hyperparam,
    slow_step_size: Hyperparam,
    reset_state: bool = False,
) -> GradientTransformation:
    r"""Lookahead around ``fast_optimizer``.

    With :math:`\phi` the slow and :math:`\theta` the fast parameters, :math:`f`
    the fast optimizer and :math:`k` = ``sync_period``:

    .. math::
       \theta_{t+1} &= \theta_t + f(g_t) \\
       \text{every } k \text{ steps:}\quad \phi &\leftarrow \phi + \alpha(\theta_{t+1} - \phi),
       \qquad \theta_{t+1} \leftarrow \phi

    Args:
      fast_optimizer: the inner optimizer (jopt or optax), run on the fast parameters.
      sync_period: :math:`k \ge 1` fast steps between synchronizations; an int or
        an int array (may be traced).
      slow_step_size: :math:`\alpha \in [0, 1]`; number, array or schedule.
      reset_state: re-initialize the fast optimizer's state after each synchronization.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.lookahead(jopt.sgd(0.5), sync_period=2, slow_step_size=0.5)
      >>> params = jopt.LookaheadParams.init_synced(jnp.ones(1))
      >>> state = opt.init(params)
      >>> for _ in range(2):
      ...     grads = jax.grad(lambda w: jnp.sum(w**2))(params.fast)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> params.slow.tolist(), params.fast.tolist()
      ([0.5], [0.5])
    """
    fast_optimizer = as_transformation(fast_optimizer)
    check_hyperparams(
        "lookahead",
        {"sync_period": _Range(1, integer=True), "slow_step_size": PROBABILITY},
        {"sync_period": sync_period, "slow_step_size": slow_step_size},
    )
    if callable(sync_period):
        raise TypeError("lookahead: sync_period must be an integer or an array, not a schedule")
    period = sync_period if is_python_number(sync_period) else jnp.asarray(sync_period)
    hp = {"slow_step_size": slow_step_size}

    def init(params):
        fast = getattr(params, "fast", None)
        if fast is None:
            _log.warning("lookahead: params has no attribute `fast`; taking them as the fast parameters")
            fast = params
        count = initial_count(hp)
        h = stored_hyperparams(hp, resolve_hyperparams(hp, count))
        return LookaheadState(fast_optimizer.init(fast), jnp.zeros([], jnp.int32), count, h)

    def update(updates, state, params=None, **extra_args):
        if not (hasattr(params, "fast") and hasattr(params, "slow")):
            raise ValueError("lookahead needs params: call update(grads, state, LookaheadParams(fast, slow))")
        h = resolve_hyperparams(hp, state.count)
        kwargs = _forwarded(fast_optimizer, extra_args)
        updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast, **kwargs)
        sync = state.steps_since_sync == period - 1
        new_updates = _lookahead_updates(updates, sync, params, h["slow_step_size"])
        if reset_state:
            fresh = fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(lambda cur, new: jnp.where(sync, new, cur), fast_state, fresh)
        steps = ((state.steps_since_sync + 1) % period).astype(jnp.int32)
        new_state = LookaheadState(fast_state, steps, next_count(state.count), stored_hyperparams(hp, h))
        return new_updates, new_state

    return transformation(init, update, extra_args=fast_optimizer.extra_args)
