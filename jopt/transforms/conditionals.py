r"""Conditional updates: skip steps whose gradients are not finite.

:func:`skip_non_finite` wraps an optimizer so that a gradient containing a NaN
or an infinity produces a zero update and leaves the optimizer state (moments,
step counts, schedules) untouched, as if the step had not happened. The wrapper
counts skipped steps so that training loops can log or stop on them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, transformation
from jopt.hyperparams import Hyperparam, check_hyperparam, resolve
from jopt.transforms.parameter_groups import _forwarded
from jopt.tree import safe_increment, tree_all_finite

Array = jax.Array

__all__ = ["SkipNonFiniteState", "skip_non_finite"]


class SkipNonFiniteState(NamedTuple):
    """State of :func:`skip_non_finite`.

    Attributes:
      count: number of ``update`` calls so far.
      consecutive_skips: non-finite gradients in a row up to the latest call
        (reset to 0 by a finite gradient).
      total_skips: non-finite gradients seen since ``init`` (never reset).
      last_finite: whether the latest gradient was finite.
      inner_state: state of the wrapped optimizer.
      hyperparams: ``max_consecutive_errors`` used at the latest call (empty
        when it is ``None``).
    """

    count: Array
    consecutive_skips: Array
    total_skips: Array
    last_finite: Array
    inner_state: Any
    hyperparams: dict[str, Array]


def skip_non_finite(inner: Any, max_consecutive_errors: Hyperparam | None = None) -> GradientTransformation:
    r"""Skip updates whose gradients contain NaN or Inf: zero update, inner state unchanged.

    With :math:`c` the number of consecutive non-finite gradients including the
    current one and :math:`M` = ``max_consecutive_errors``:

    .. math::
       (u, s) \leftarrow \begin{cases}
         f(g, s) & g \text{ finite, or } c > M \\
         (0, s) & \text{otherwise}
       \end{cases}

    The inner update runs under ``lax.cond``, so it is not computed on skipped
    steps.

    Args:
      inner: the wrapped optimizer (jopt or optax).
      max_consecutive_errors: :math:`M \ge 0`: after more than ``M`` non-finite
        gradients in a row the update is applied anyway (as
        ``optax.apply_if_finite``), so a persistent problem surfaces as NaN
        parameters instead of silently stalling. ``None`` (default) always skips.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.skip_non_finite(jopt.scale_by_learning_rate(0.1))
      >>> p = {"w": jnp.ones(2)}
      >>> u, s = tx.update({"w": jnp.array([1.0, jnp.nan])}, tx.init(p), p)
      >>> u["w"].tolist(), int(s.total_skips)
      ([0.0, 0.0], 1)
    """
    inner = as_transformation(inner)
    check_hyperparam(
        max_consecutive_errors, "max_consecutive_errors", low=0, integer=True, owner="skip_non_finite"
    )
    hp = {} if max_consecutive_errors is None else {"max_consecutive_errors": max_consecutive_errors}

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        return SkipNonFiniteState(
            count=zero,
            consecutive_skips=zero,
            total_skips=zero,
            last_finite=jnp.array(True),
            inner_state=inner.init(params),
            hyperparams={k: resolve(v, zero) for k, v in hp.items()},
        )

    def update(updates, state, params=None, **extra_args):
        kwargs = _forwarded(inner, extra_args)
        h = {k: resolve(v, state.count) for k, v in hp.items()}
        finite = tree_all_finite(updates)
        consecutive = jnp.where(finite, 0, safe_increment(state.consecutive_skips))
        apply = finite
        if "max_consecutive_errors" in h:
            apply = finite | (
                consecutive.astype(h["max_consecutive_errors"].dtype) > h["max_consecutive_errors"]
            )

        def run_inner(inner_state):
            return inner.update(updates, inner_state, params, **kwargs)

        out_shape = jax.eval_shape(run_inner, state.inner_state)

        def reject(inner_state):
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape[0])
            same = jax.tree.map(lambda x, s: jnp.asarray(x, s.dtype), inner_state, out_shape[1])
            return zeros, same

        new_updates, inner_state = jax.lax.cond(apply, run_inner, reject, state.inner_state)
        new_state = SkipNonFiniteState(
            count=safe_increment(state.count),
            consecutive_skips=consecutive,
            total_skips=jnp.where(finite, state.total_skips, safe_increment(state.total_skips)),
            last_finite=finite,
            inner_state=inner_state,
            hyperparams=h,
        )
        return new_updates, new_state

    return transformation(init, update, extra_args=inner.extra_args)
