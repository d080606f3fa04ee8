r"""Layer normalization over a padded feature axis whose true width may be traced.

A model built at a padded width realises a trial's true width ``n`` by masking (see
:mod:`jopt.nn.masking`); a layer normalization in it must normalize over the ``n`` real
features only, or the padded zeros would shift every trial's mean and variance.
:func:`layer_norm` computes the statistics over the first ``width`` features of the last axis
(``width`` an int or a traced int) and outputs exactly zero in the padded features, so their
``scale`` and ``bias`` entries receive zero gradients; the real features equal an unpadded layer
normalization of ``x[..., :width]`` to float32 rounding. With ``width=None`` it is flax's
``LayerNorm`` arithmetic over the whole axis (same epsilon convention, same fast variance).

.. math::

   \mu = \frac{1}{n}\sum_{i<n} x_i,\qquad
   \sigma^2 = \max\Big(0, \frac{1}{n}\sum_{i<n} x_i^2 - \mu^2\Big),\qquad
   y_i = [\,i < n\,]\Big(\frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}\, \gamma_i + \beta_i\Big)

The flax layers are :class:`jopt.nn.LayerNorm` (linen) and :class:`jopt.nn.nnx.LayerNorm`.

Example (width 3 of 5; the padded features are ignored and output zero):
  >>> import jax.numpy as jnp
  >>> from jopt import nn
  >>> x = jnp.array([1.0, 2.0, 3.0, 50.0, -7.0])
  >>> y = nn.layer_norm(x, jnp.int32(3), epsilon=0.0)
  >>> [round(v, 4) for v in y.tolist()]
  [-1.2247, 0.0, 1.2247, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jopt.nn.masking import prefix_mask

__all__ = ["check_count", "layer_norm"]


def check_count(value: Any, name: str, high: int, low: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None``, an array (possibly traced: not checked)
    or an integer in ``[low, high]``.

    Example:
      >>> check_count(3, "width", 8)
      >>> check_count(9, "width", 8)
      Traceback (most recent call last):
        ...
      ValueError: width must be an integer in [1, 8] (or a traced integer), got 9
    """
    if value is None or isinstance(value, jax.Array):
        return
    message = f"{name} must be an integer in [{low}, {high}] (or a traced integer), got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
            value = int(value)
        else:
            raise ValueError(message)
    if not low <= int(value) <= high:
        raise ValueError(message)


def _mean(values: jax.Array, mask: jax.Array | None, count: Any) -> jax.Array:
    """Mean over the last axis: all of it (``mask is None``, as ``jnp.mean``) or the masked prefix."""
    if mask is None:
        return jnp.mean(values, axis=-1, keepdims=True)
    total = jnp.sum(jnp.where(mask, values, jnp.zeros((), values.dtype)), axis=-1, keepdims=True)
    return total / jnp.asarray(count, values.dtype)


def layer_norm(
    x: jax.Array,
    width: Any = None,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    epsilon: float = 1e-6,
    use_fast_variance: bool = True,
    dtype: Any = None,
) -> jax.Array:
    """Layer normalization of the last axis over its first ``width`` entries (see the module).

    Args:
      x: the inputs, features on the last axis (padded to ``x.shape[-1]``).
      width: the true number of features, an int or a traced int (``None``: all).
      scale, bias: the learned per-feature scale and offset (shape ``x.shape[-1:]``), or ``None``.
      epsilon: added to the variance (flax's convention: ``rsqrt(var + epsilon)``).
      use_fast_variance: ``E[x^2] - E[x]^2`` clipped at 0 (flax's default) instead of
        ``E[(x - E[x])^2]``.
      dtype: the result's dtype (default: ``x``'s, ``scale``'s and ``bias``'s promoted); the
        statistics are computed in at least float32.

    Returns:
      An array of ``x``'s shape; zero exactly at the features ``>= width``.

    Raises:
      ValueError: ``width`` an integer outside ``[1, x.shape[-1]]``, or a negative ``epsilon``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> g = jax.grad(lambda s: layer_norm(jnp.arange(4.0), 2, s).sum())(jnp.ones(4))
      >>> (g[2:] == 0).tolist()
      [True, True]
    """
    size = int(jnp.shape(x)[-1])
    check_count(width, "width", size)
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be a number in [0, inf), got {epsilon!r}")
    out_dtype = dtype or jnp.result_type(*(a for a in (x, scale, bias) if a is not None))
    stats_dtype = jnp.promote_types(dtype or jnp.result_type(x), jnp.float32)
    xs = jnp.asarray(x, stats_dtype)
    mask = None if width is None else prefix_mask(width, size)
    if mask is not None:
        xs = jnp.where(mask, xs, jnp.zeros((), stats_dtype))
    mean = _mean(xs, mask, width)
    if use_fast_variance:
        var = jnp.maximum(0.0, _mean(lax.square(xs), mask, width) - lax.square(mean))
    else:
        var = _mean(lax.square(xs - mean), mask, width)
    y = xs - mean
    mul = lax.rsqrt(var + epsilon)
    if scale is not None:
        mul = mul * scale
    y = y * mul
    if bias is not None:
        y = y + bias
    if mask is not None:
        y = jnp.where(mask, y, jnp.zeros((), y.dtype))
    return jnp.asarray(y, out_dtype)
