r"""Gradient accumulation over micro-batches (``optax.MultiSteps`` semantics).

:func:`accumulate_gradients` averages the gradients of ``every_k`` consecutive
calls and hands the average to the inner optimizer on every ``every_k``-th
call; the other calls return zero updates. The inner update runs under
``lax.cond``, so it is only computed on emitting calls (under ``jax.vmap``
with a batched ``every_k`` both branches run, as ``lax.cond`` becomes a select).

Training on ``k`` micro-batches of size ``b`` with accumulation is then the same
as training on one batch of size ``k b`` without it (for a loss that is a mean
over examples), with ``k`` times less activation memory.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, transformation
from jopt.hyperparams import Hyperparam, check_hyperparam, compute_dtype
from jopt.transforms.parameter_groups import _forwarded
from jopt.tree import safe_increment

Array = jax.Array
PyTree = Any

__all__ = ["AccumulateGradientsState", "accumulate_gradients", "accumulation_emitted"]


class AccumulateGradientsState(NamedTuple):
    """State of :func:`accumulate_gradients`.

    Attributes:
      count: number of ``update`` calls (micro-steps) so far.
      mini_step: micro-steps accumulated since the last emitted update.
      gradient_step: number of inner (emitted) updates so far.
      acc_grads: running mean of the gradients of the current window.
      inner_state: state of the inner optimizer (advances on emitting calls only).
      emitted: whether the latest call emitted an inner update.
      hyperparams: ``every_k`` used at the latest call.
    """

    count: Array
    mini_step: Array
    gradient_step: Array
    acc_grads: PyTree
    inner_state: Any
    emitted: Array
    hyperparams: dict[str, Array]


def _resolve_k(every_k: Hyperparam, gradient_step: Array) -> Array:
    value = every_k(gradient_step) if callable(every_k) else every_k
    return jnp.asarray(value).astype(jnp.int32)


def _zeros_of(shapes: PyTree) -> PyTree:
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def accumulate_gradients(
    inner: Any, every_k: Hyperparam, *, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    r"""Average gradients over ``every_k`` calls; apply ``inner`` to the average every ``every_k``-th call.

    With :math:`j` the micro-step within the current window and :math:`k` the
    window length (running mean, numerically stable):

    .. math::
       a_{j+1} &= a_j + \frac{g - a_j}{j + 1}, \qquad a_0 = 0 \\
       u &= \begin{cases} f(a_k) & j + 1 = k \quad\text{(then } a \leftarrow 0,\ j \leftarrow 0) \\
            0 & \text{otherwise} \end{cases}

    where :math:`f` is the inner optimizer, which sees (and advances its state
    on) emitting calls only. Extra arguments (e.g. ``value=loss``) are forwarded
    from the emitting call.

    Args:
      inner: the optimizer applied to accumulated gradients (jopt or optax).
      every_k: window length :math:`k \ge 1`: an int, int array (may be traced)
        or a schedule ``gradient_step -> k`` evaluated at the number of emitted
        updates (to grow the effective batch during training).
      accumulator_dtype: dtype of the running mean; default: at least float32.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.accumulate_gradients(jopt.scale_by_learning_rate(1.0), every_k=2)
      >>> p = {"w": jnp.zeros(1)}
      >>> s = tx.init(p)
      >>> u1, s = tx.update({"w": jnp.array([1.0])}, s, p)
      >>> u2, s = tx.update({"w": jnp.array([3.0])}, s, p)
      >>> float(u1["w"][0]), float(u2["w"][0])
      (0.0, -2.0)
    """
    inner = as_transformation(inner)
    check_hyperparam(every_k, "every_k", low=1, integer=True, owner="accumulate_gradients")

    def acc_dtype(x):
        return accumulator_dtype if accumulator_dtype is not None else compute_dtype(x.dtype)

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        return AccumulateGradientsState(
            count=zero,
            mini_step=zero,
            gradient_step=zero,
            acc_grads=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=acc_dtype(p)), params),
            inner_state=inner.init(params),
            emitted=jnp.array(False),
            hyperparams={"every_k": _resolve_k(every_k, zero)},
        )

    def update(updates, state, params=None, **extra_args):
        kwargs = _forwarded(inner, extra_args)
        k = _resolve_k(every_k, state.gradient_step)
        n = state.mini_step.astype(jnp.float32) + 1.0

        def accumulate(g, a):
            a32 = a.astype(compute_dtype(a.dtype))
            return (a32 + (g.astype(a32.dtype) - a32) / n.astype(a32.dtype)).astype(a.dtype)

        acc = jax.tree.map(accumulate, updates, state.acc_grads)
        emit = state.mini_step + 1 >= k

        def run_inner(acc, inner_state):
            grads = jax.tree.map(lambda a, g: a.astype(g.dtype), acc, updates)
            return inner.update(grads, inner_state, params, **kwargs)

        out_shape = jax.eval_shape(run_inner, acc, state.inner_state)

        def hold(acc, inner_state):
            del acc
            same = jax.tree.map(lambda x, s: jnp.asarray(x, s.dtype), inner_state, out_shape[1])
            return _zeros_of(out_shape[0]), same

        new_updates, inner_state = jax.lax.cond(emit, run_inner, hold, acc, state.inner_state)
        new_state = AccumulateGradientsState(
            count=safe_increment(state.count),
            mini_step=jnp.where(emit, 0, state.mini_step + 1).astype(jnp.int32),
            gradient_step=jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step),
            acc_grads=jax.tree.map(lambda a: jnp.where(emit, jnp.zeros_like(a), a), acc),
            inner_state=inner_state,
            emitted=emit,
            hyperparams={"every_k": k},
        )
        return new_updates, new_state

    return transformation(init, update, extra_args=inner.extra_args)


def accumulation_emitted(state: AccumulateGradientsState) -> Array:
    """Whether the latest ``update`` of :func:`accumulate_gradients` applied the inner optimizer.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.accumulate_gradients(jopt.scale_by_learning_rate(1.0), every_k=2)
      >>> p = {"w": jnp.zeros(1)}
      >>> _, s = tx.update(p, tx.init(p), p)
      >>> bool(jopt.accumulation_emitted(s))
      False
    """
    return state.emitted
