r"""Masks that realise a trial's true size inside a program built at a padded size.

A shape hyperparameter (a layer's width, the batch size, the depth) changes array shapes, so
a sweep over it would need one compiled program per value. Built at the largest value, the
program realises each trial's smaller value ``n`` (a traced integer) by masking the entries at
index ``>= n`` along the padded axis:

* units (:func:`prefix_mask`, :func:`mask_units`; :class:`jopt.nn.Dense` masks its kernel and
  bias): masked units output exactly zero and receive zero gradients;
* batch rows (:func:`masked_mean`, :func:`sample_rows`): a trial's loss averages over its own
  first ``b`` rows;
* residual blocks (:func:`gate_residual`): block ``i`` is applied iff ``i < depth``.

.. math::

   \mathrm{mask}_i = [\,i < n\,], \qquad
   \bar\ell = \frac{1}{b}\sum_{i < b} \ell_i, \qquad
   x_{k+1} = \begin{cases} x_k + f_k(x_k) & k < \mathrm{depth} \\ x_k & \text{otherwise} \end{cases}

Example (a padded batch of 4 rows, of which the trial uses 3):
  >>> import jax.numpy as jnp
  >>> from jopt import nn
  >>> float(nn.masked_mean(jnp.array([1.0, 2.0, 3.0, 100.0]), 3))
  2.0
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["gate_residual", "mask_units", "masked_mean", "prefix_mask", "sample_rows"]


def prefix_mask(count: Any, size: int) -> jax.Array:
    """Boolean vector of length ``size``, True at indices below ``count`` (an int or a traced int).

    .. math:: m_i = [\\,i < \\mathrm{count}\\,],\\quad i = 0, \\dots, \\mathrm{size} - 1

    Example:
      >>> prefix_mask(2, 4).tolist()
      [True, True, False, False]
    """
    return jnp.arange(int(size)) < count


def mask_units(x: jax.Array, width: Any, axis: int = -1) -> jax.Array:
    """``x`` with the entries at index ``>= width`` along ``axis`` set to exactly zero.

    Use it after an activation with ``f(0) != 0`` (sigmoid, softplus) when the padded units'
    values matter (the next :class:`jopt.nn.Dense` with ``in_width`` ignores them anyway).

    .. math:: y_{\\dots i \\dots} = [\\,i < \\mathrm{width}\\,]\\; x_{\\dots i \\dots}

    Example:
      >>> import jax.numpy as jnp
      >>> mask_units(jnp.ones((2, 3)), 2).tolist()
      [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    """
    axis = axis % x.ndim
    mask = prefix_mask(width, x.shape[axis]).reshape((1,) * axis + (-1,) + (1,) * (x.ndim - axis - 1))
    return jnp.where(mask, x, jnp.zeros((), x.dtype))


def masked_mean(values: jax.Array, count: Any, axis: int = 0) -> jax.Array:
    """Mean of ``values`` over the first ``count`` entries along ``axis`` (a padded batch's rows).

    Equals ``jnp.mean(values[:count], axis)`` to float32 rounding (the sum runs over the padded
    axis, so its reduction order differs); the padded rows receive zero gradients.

    .. math:: \\bar\\ell = \\frac{1}{\\mathrm{count}} \\sum_{i < \\mathrm{count}} \\ell_i

    Example:
      >>> import jax, jax.numpy as jnp
      >>> g = jax.grad(lambda v: masked_mean(v, 2))(jnp.ones(4))
      >>> g.tolist()
      [0.5, 0.5, 0.0, 0.0]
    """
    axis = axis % values.ndim
    size = values.shape[axis]
    mask = prefix_mask(count, size).reshape((1,) * axis + (-1,) + (1,) * (values.ndim - axis - 1))
    total = jnp.sum(jnp.where(mask, values, jnp.zeros((), values.dtype)), axis=axis)
    return total / jnp.asarray(count, total.dtype)


def sample_rows(key: jax.Array, size: int, num_examples: int) -> jax.Array:
    """``size`` example indices in ``[0, num_examples)``, row ``i`` drawn from ``fold_in(key, i)``.

    Row ``i``'s index depends on ``i`` only, so the first ``b`` rows of a padded batch
    (``size = B``) are the rows an unpadded batch of ``b`` draws (``sample_rows(key, b, n)``):
    a batch-size trial padded to ``B`` sees the same examples as the same trial run unpadded.

    .. math:: \\mathrm{idx}_i = \\mathrm{randint}(\\mathrm{fold\\_in}(k, i), 0, n)

    Example:
      >>> import jax
      >>> k = jax.random.key(0)
      >>> bool((sample_rows(k, 8, 100)[:3] == sample_rows(k, 3, 100)).all())
      True
    """
    rows = jnp.arange(int(size), dtype=jnp.uint32)
    return jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), 0, num_examples))(rows)


def gate_residual(x: jax.Array, delta: jax.Array, index: int, depth: Any) -> jax.Array:
    """``x + delta`` when residual block ``index`` is active (``index < depth``), else ``x`` exactly.

    A model built with the largest depth applies block ``i`` through this gate; with a traced
    ``depth`` the inactive blocks contribute nothing and their parameters get zero gradients
    (they are still computed: the cost is the largest depth's).

    .. math:: x_{k+1} = x_k + [\\,k < \\mathrm{depth}\\,]\\, f_k(x_k)

    Example:
      >>> import jax.numpy as jnp
      >>> x, d = jnp.ones(2), jnp.full(2, 5.0)
      >>> gate_residual(x, d, 0, 1).tolist(), gate_residual(x, d, 1, 1).tolist()
      ([6.0, 6.0], [1.0, 1.0])
    """
    return jnp.where(jnp.asarray(index) < depth, x + delta, x)
