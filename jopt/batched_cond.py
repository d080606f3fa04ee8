r"""A ``lax.cond`` that stays a branch under ``jax.vmap``.

Under ``jax.vmap`` a ``lax.cond`` whose predicate is batched becomes a
``select``: both branches run for every member of the batch. For an optimizer
that refreshes an expensive preconditioner every ``f`` steps (SOAP, Shampoo,
Kron, GaLore, Sophia), a sweep over trials then pays the refresh at every step,
``f`` times the work.

:func:`cond_across_batch` has a batching rule instead: over a batch of
predicates it runs one unbatched ``lax.cond`` on "any member needs the expensive
branch"; inside that branch both branches run for the batch and each member
takes its own (a ``select``), outside it the cheap branch runs alone. So when
every trial of a sweep is at the same step (the usual case) the refresh costs
what it costs in a single run; when the trials' schedules differ it runs on the
union of their schedules. The result equals ``lax.cond`` member for member, at
every level of nested ``vmap``.

The branches must be functions of ``operands`` only (no closed-over traced
values): pass everything they read through ``operands``. Under an explicit-axis
mesh the expensive branch's outputs take the shardings of the cheap branch's
(usually the state it keeps), so a refresh never changes a state leaf's layout.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt.batched_cond import cond_across_batch
  >>> def f(count, x):
  ...     return cond_across_batch(count % 2 == 0, lambda x: 10 * x, lambda x: x, x)
  >>> jax.vmap(f)(jnp.array([0, 1]), jnp.array([1.0, 2.0])).tolist()
  [10.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

from jopt.tree._arithmetic import reshard_like

__all__ = ["cond_across_batch"]


def cond_across_batch(pred: Any, true_fn: Callable, false_fn: Callable, operands: Any) -> Any:
    """``lax.cond(pred, true_fn, false_fn, operands)``, a branch under ``vmap`` too.

    Args:
      pred: a boolean scalar (batched under ``vmap``).
      true_fn: the branch taken where ``pred`` holds, a function of ``operands``.
      false_fn: the other branch, a function of ``operands`` with the same output
        structure; under a batch it also runs where the true branch runs, so it
        should be the cheap one.
      operands: a pytree; everything the branches read.

    Returns:
      The taken branch's output, per member of the batch.
    """

    if not isinstance(pred, jax.core.Tracer):  # eager: the concrete predicate picks the branch
        return true_fn(operands) if bool(pred) else false_fn(operands)

    @custom_vmap
    def branch(pred, operands):
        kept = jax.eval_shape(false_fn, operands)
        return lax.cond(pred, lambda o: jax.tree.map(reshard_like, true_fn(o), kept), false_fn, operands)

    @branch.def_vmap
    def branch_over_batch(axis_size, in_batched, pred, operands):
        pred_batched, operands_batched = in_batched
        axes = jax.tree.map(lambda b: 0 if b else None, operands_batched)
        batched_true = jax.vmap(true_fn, in_axes=(axes,), axis_size=axis_size)
        batched_false = jax.vmap(false_fn, in_axes=(axes,), axis_size=axis_size)
        if not pred_batched:
            out = cond_across_batch(pred, batched_true, batched_false, operands)
            return out, jax.tree.map(lambda _: True, out)

        def both(args):
            member_pred, ops = args
            taken, other = batched_true(ops), batched_false(ops)
            return jax.tree.map(lambda t, o: _select(member_pred, t, o), taken, other)

        out = cond_across_batch(jnp.any(pred), both, lambda args: batched_false(args[1]), (pred, operands))
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def differentiable(pred, operands):
        return branch(pred, operands)

    @differentiable.defjvp
    def differentiable_jvp(primals, tangents):
        pred, ops = primals
        out = branch(pred, ops)
        _, true_dot = jax.jvp(true_fn, (ops,), (tangents[1],))
        _, false_dot = jax.jvp(false_fn, (ops,), (tangents[1],))
        return out, jax.tree.map(lambda t, f: jnp.where(pred, t, f), true_dot, false_dot)

    return differentiable(jnp.asarray(pred), operands)


def _select(pred: jax.Array, on_true: jax.Array, on_false: jax.Array) -> jax.Array:
    """Per-member ``where`` of a batch of predicates over batched arrays."""
    shape = pred.shape + (1,) * (on_true.ndim - pred.ndim)
    return jnp.where(pred.reshape(shape), on_true, on_false)
