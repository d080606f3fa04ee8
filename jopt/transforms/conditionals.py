r"""Conditional updates: run an inner transform only at some steps (optax's names and semantics).

* :func:`apply_if_finite` (and jopt's :func:`skip_non_finite`) -- a gradient
  containing a NaN or an infinity gives a zero update and leaves the inner state
  (moments, step counts, schedules) untouched, as if the step had not happened.
* :func:`conditionally_transform` -- the inner transform runs when a predicate of
  the step count holds; otherwise the updates pass through unchanged.
* :func:`conditionally_mask` -- the same, with zero updates when it does not run.

The inner update runs under ``lax.cond``, so it is not computed on skipped
steps (under ``jax.vmap`` with a batched predicate both branches run, as
``lax.cond`` becomes a select). Extra arguments are forwarded to the inner
transform when it declares them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, transformation
from jopt.hyperparams import Hyperparam, check_hyperparam, is_python_number
from jopt.transforms.parameter_groups import _forwarded
from jopt.tree import safe_increment, tree_all_finite

Array = jax.Array

__all__ = [
    "ApplyIfFiniteState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "SkipNonFiniteState",
    "apply_if_finite",
    "conditionally_mask",
    "conditionally_transform",
    "skip_non_finite",
]


def run_inner_if(
    condition: Array,
    inner: GradientTransformation,
    updates: Any,
    inner_state: Any,
    params: Any,
    extra_args: dict[str, Any],
    *,
    otherwise: str = "zeros",
    prepare: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any]:
    """``inner.update(...)`` when ``condition`` holds, else (zeros or ``updates``, ``inner_state``).

    Shared by every conditional wrapper. ``otherwise`` is ``"zeros"`` (zero
    updates of the inner's output shapes and dtypes) or ``"pass"`` (the updates
    unchanged). The inner state keeps its dtypes on both branches. ``prepare``
    maps ``updates`` to the inner's input inside the taken branch, so that XLA
    fuses it with the inner update as it would without the condition (float32
    results then do not depend on the branch structure).
    """
    kwargs = _forwarded(inner, extra_args)

    def run(operands):
        u, state = operands
        return inner.update(prepare(u) if prepare else u, state, params, **kwargs)

    out_updates, out_state = jax.eval_shape(run, (updates, inner_state))

    def hold(operands):
        u, state = operands
        same = jax.tree.map(lambda x, s: jnp.asarray(x, s.dtype), state, out_state)
        if otherwise == "pass":
            return u, same
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_updates), same

    return jax.lax.cond(condition, run, hold, (updates, inner_state))


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite` (optax's fields, plus jopt's ``hyperparams``).

    Attributes:
      notfinite_count: non-finite gradients in a row up to the latest call
        (reset to 0 by a finite gradient). Also readable as ``consecutive_skips``.
      last_finite: whether the latest gradient was finite.
      total_notfinite: non-finite gradients since ``init`` (never reset). Also
        readable as ``total_skips``.
      inner_state: state of the wrapped optimizer.
      hyperparams: ``max_consecutive_errors`` when it is an array (e.g. traced
        in a sweep); empty otherwise.
    """

    notfinite_count: Array
    last_finite: Array
    total_notfinite: Array
    inner_state: Any
    hyperparams: dict[str, Array] = {}

    @property
    def consecutive_skips(self) -> Array:
        """jopt's name for ``notfinite_count``."""
        return self.notfinite_count

    @property
    def total_skips(self) -> Array:
        """jopt's name for ``total_notfinite``."""
        return self.total_notfinite


SkipNonFiniteState = ApplyIfFiniteState


def _finite_wrapper(inner: Any, max_consecutive_errors: Any, owner: str) -> GradientTransformation:
    inner = as_transformation(inner)
    if callable(max_consecutive_errors):
        raise TypeError(f"{owner}: max_consecutive_errors must be an integer or an array, not a schedule")
    check_hyperparam(max_consecutive_errors, "max_consecutive_errors", low=0, integer=True, owner=owner)
    limit = max_consecutive_errors
    if limit is not None and not is_python_number(limit):
        limit = jnp.asarray(limit)
    stored = {} if limit is None or is_python_number(limit) else {"max_consecutive_errors": limit}

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        return ApplyIfFiniteState(zero, jnp.array(True), zero, inner.init(params), dict(stored))

    def update(updates, state, params=None, **extra_args):
        finite = tree_all_finite(updates)
        notfinite_count = jnp.where(finite, jnp.zeros([], jnp.int32), safe_increment(state.notfinite_count))
        apply = finite if limit is None else finite | (notfinite_count > limit)
        new_updates, inner_state = run_inner_if(apply, inner, updates, state.inner_state, params, extra_args)
        total = jnp.where(finite, state.total_notfinite, safe_increment(state.total_notfinite))
        return new_updates, ApplyIfFiniteState(notfinite_count, finite, total, inner_state, dict(stored))

    return transformation(init, update, extra_args=inner.extra_args)


def apply_if_finite(inner: Any, max_consecutive_errors: Hyperparam) -> GradientTransformation:
    r"""Skip updates whose gradients contain NaN or Inf, up to ``max_consecutive_errors`` in a row.

    With :math:`c` the number of consecutive non-finite gradients including the
    current one and :math:`M` = ``max_consecutive_errors``:

    .. math::
       (u, s) \leftarrow \begin{cases}
         f(g, s) & g \text{ finite, or } c > M \\
         (0, s) & \text{otherwise}
       \end{cases}

    After more than :math:`M` non-finite gradients in a row the update is
    applied anyway, so a persistent problem surfaces as NaN parameters instead
    of silently stalling training.

    Args:
      inner: the wrapped optimizer (jopt or optax).
      max_consecutive_errors: :math:`M \ge 0`, an integer or an integer array
        (may be traced, e.g. vmapped over).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.apply_if_finite(jopt.scale_by_learning_rate(0.1), max_consecutive_errors=2)
      >>> p = {"w": jnp.ones(2)}
      >>> u, s = tx.update({"w": jnp.array([1.0, jnp.nan])}, tx.init(p), p)
      >>> u["w"].tolist(), int(s.total_notfinite)
      ([0.0, 0.0], 1)
    """
    return _finite_wrapper(inner, max_consecutive_errors, "apply_if_finite")


def skip_non_finite(inner: Any, max_consecutive_errors: Hyperparam | None = None) -> GradientTransformation:
    r""":func:`apply_if_finite` whose ``max_consecutive_errors`` defaults to ``None``: always skip.

    .. math::
       (u, s) \leftarrow \begin{cases} f(g, s) & g \text{ finite} \\ (0, s) & \text{otherwise} \end{cases}

    With an integer ``max_consecutive_errors`` it is :func:`apply_if_finite`.
    The state is :class:`ApplyIfFiniteState`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.skip_non_finite(jopt.scale_by_learning_rate(0.1))
      >>> p = {"w": jnp.ones(2)}
      >>> u, s = tx.update({"w": jnp.array([1.0, jnp.nan])}, tx.init(p), p)
      >>> u["w"].tolist(), int(s.total_skips)
      ([0.0, 0.0], 1)
    """
    return _finite_wrapper(inner, max_consecutive_errors, "skip_non_finite")


class ConditionFn(Protocol):
    """``should_transform_fn(step, **extra_args) -> bool scalar``: whether the inner transform runs."""

    def __call__(self, step: Array, **extra_args: Any) -> Array: ...


class ConditionallyTransformState(NamedTuple):
    """State of :func:`conditionally_transform`: the inner state and the number of calls so far."""

    inner_state: Any
    step: Array


class ConditionallyMaskState(NamedTuple):
    """State of :func:`conditionally_mask`: the number of calls so far and the inner state."""

    step: Array
    inner_state: Any


def _condition_names(fn: Callable[..., Any]) -> frozenset[str]:
    """The named parameters of ``fn`` after ``step``: the extra arguments it reads."""
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return frozenset()
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(p.name for p in params if p.kind in kinds)


def _conditional(inner, should_transform_fn, forward_extra_args, otherwise, make_state, read):
    inner = as_transformation(inner)
    names = inner.extra_args | (_condition_names(should_transform_fn) if forward_extra_args else frozenset())

    def init(params):
        return make_state(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None, **extra_args):
        step, inner_state = read(state)
        condition = should_transform_fn(step, **(extra_args if forward_extra_args else {}))
        new_updates, inner_state = run_inner_if(
            condition, inner, updates, inner_state, params, extra_args, otherwise=otherwise
        )
        return new_updates, make_state(safe_increment(step), inner_state)

    return transformation(init, update, extra_args=names)


def conditionally_transform(
    inner: Any, should_transform_fn: ConditionFn, forward_extra_args: bool = False
) -> GradientTransformation:
    r"""Run ``inner`` only when ``should_transform_fn(step)`` holds; else pass the updates through.

    .. math::
       (u, s) \leftarrow \begin{cases} f(u, s) & c(t) \\ (u, s) & \text{otherwise} \end{cases}

    where :math:`t` counts the calls to ``update`` before this one.

    Args:
      inner: the wrapped transform (jopt or optax).
      should_transform_fn: ``step -> bool scalar`` (``step`` is an int32 scalar).
      forward_extra_args: also pass the extra arguments to ``should_transform_fn``
        (its named parameters after ``step`` are declared as extra arguments).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.conditionally_transform(jopt.scale(2.0), lambda step: step % 2 == 1)
      >>> p = {"w": jnp.ones(1)}
      >>> u0, s = tx.update(p, tx.init(p))
      >>> u1, s = tx.update(p, s)
      >>> u0["w"].tolist(), u1["w"].tolist()
      ([1.0], [2.0])
    """
    return _conditional(
        inner,
        should_transform_fn,
        forward_extra_args,
        "pass",
        lambda step, inner_state: ConditionallyTransformState(inner_state, step),
        lambda state: (state.step, state.inner_state),
    )


def conditionally_mask(
    inner: Any, should_transform_fn: ConditionFn, forward_extra_args: bool = False
) -> GradientTransformation:
    r"""Run ``inner`` only when ``should_transform_fn(step)`` holds; else zero updates.

    .. math::
       (u, s) \leftarrow \begin{cases} f(u, s) & c(t) \\ (0, s) & \text{otherwise} \end{cases}

    Arguments as :func:`conditionally_transform`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.conditionally_mask(jopt.scale(2.0), lambda step: step >= 1)
      >>> p = {"w": jnp.ones(1)}
      >>> u0, s = tx.update(p, tx.init(p))
      >>> u1, s = tx.update(p, s)
      >>> u0["w"].tolist(), u1["w"].tolist()
      ([0.0], [2.0])
    """
    return _conditional(
        inner,
        should_transform_fn,
        forward_extra_args,
        "zeros",
        lambda step, inner_state: ConditionallyMaskState(step, inner_state),
        lambda state: (state.step, state.inner_state),
    )
