r"""Numerically safe primitives: norms with finite gradients at zero, saturating counters.

:func:`safe_norm` and :func:`safe_root_mean_squares` return
:math:`\max(\|x\|, m)` and :math:`\max(\operatorname{rms}(x), m)` whose gradient
is zero (not NaN) where the floor :math:`m` is active: the input is replaced by
ones there before the norm that is differentiated is taken. :func:`safe_increment`
adds one to a counter without wrapping around at the dtype's maximum.

These functions follow optax's order of operations, so their float32 results
equal ``optax.safe_norm`` & co. bit for bit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.hyperparams import NONNEGATIVE

Array = jax.Array

__all__ = [
    "abs_sq",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
]


def abs_sq(x: Array) -> Array:
    r"""Squared modulus :math:`|x|^2 = \operatorname{Re}(\bar x x)` of a (possibly complex) array.

    Raises:
      ValueError: when ``x`` is not an array (a Python number or a list).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.numerics import abs_sq
      >>> abs_sq(jnp.array([3 + 4j])).tolist()
      [25.0]
    """
    if not isinstance(x, (np.ndarray, jax.Array)):
        raise ValueError(f"abs_sq expects an array, got {type(x).__name__}: {x!r}")
    return (x.conj() * x).real


def safe_norm(
    x: Array,
    min_norm: Array | float,
    ord: int | float | str | None = None,  # noqa: A002 - numpy's name
    axis: None | tuple[int, ...] | int = None,
    keepdims: bool = False,
) -> Array:
    r""":math:`\max(\|x\|, m)` (``jnp.linalg.norm`` of order ``ord`` over ``axis``) with finite gradients.

    .. math:: \operatorname{safe\_norm}(x) = \begin{cases} m & \|x\| \le m \\ \|x\| & \text{else} \end{cases}

    The gradient is zero where the floor ``min_norm`` is active, also at
    :math:`x = 0` (a plain ``maximum(norm(x), m)`` gives NaN there).

    Args:
      x: the array.
      min_norm: the floor :math:`m \ge 0` (a number or an array, may be traced).
      ord, axis, keepdims: as for :func:`jax.numpy.linalg.norm`.

    Raises:
      ValueError: when a concrete ``min_norm`` is negative or not finite.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jopt.numerics import safe_norm
      >>> float(safe_norm(jnp.array([3.0, 4.0]), 1.0)), float(safe_norm(jnp.zeros(2), 1.0))
      (5.0, 1.0)
      >>> jax.grad(lambda x: safe_norm(x, 1e-3))(jnp.zeros(2)).tolist()
      [0.0, 0.0]
    """
    NONNEGATIVE.check(min_norm, "min_norm", "safe_norm")
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    floored = norm <= min_norm
    x = jnp.where(floored, jnp.ones_like(x), x)
    norm = norm if keepdims else jnp.squeeze(norm, axis=axis)
    masked_norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    return jnp.where(norm <= min_norm, min_norm, masked_norm)


def safe_root_mean_squares(x: Array, min_rms: Array | float) -> Array:
    r""":math:`\max(\sqrt{\operatorname{mean}|x|^2}, m)` with a zero gradient where the floor is active.

    Raises:
      ValueError: when a concrete ``min_rms`` is negative or not finite.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.numerics import safe_root_mean_squares
      >>> float(safe_root_mean_squares(jnp.array([1.0, -1.0]), 1e-3))
      1.0
    """
    NONNEGATIVE.check(min_rms, "min_rms", "safe_root_mean_squares")
    rms = jnp.sqrt(jnp.mean(abs_sq(x)))
    x = jnp.where(rms <= min_rms, jnp.ones_like(x), x)
    return jnp.where(rms <= min_rms, min_rms, jnp.sqrt(jnp.mean(abs_sq(x))))


def safe_increment(count: Array | Any) -> Array:
    r"""``count + 1``, saturating at the dtype's maximum instead of wrapping around.

    .. math:: c \leftarrow \begin{cases} c + 1 & c < c_{max} \\ c_{max} & \text{else} \end{cases}

    Works for integer and floating counters.

    Raises:
      ValueError: for a counter that is neither integer nor floating (e.g. bool).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.numerics import safe_increment
      >>> safe_increment(jnp.asarray(2147483647, jnp.int32)).item()
      2147483647
    """
    dtype = jnp.asarray(count).dtype
    if jnp.issubdtype(dtype, jnp.integer):
        largest = jnp.iinfo(dtype).max
    elif jnp.issubdtype(dtype, jnp.floating):
        largest = jnp.finfo(dtype).max
    else:
        raise ValueError(f"safe_increment: count must have an integer or floating dtype, got {dtype}")
    largest = jnp.array(largest, dtype)
    return jnp.where(count < largest, count + jnp.array(1, dtype), largest)


safe_int32_increment = safe_increment
"""Alias of :func:`safe_increment` (optax's older name)."""
