r"""Padding-invariant initializers: an element's initial value does not depend on the padded shape.

A model built at a padded size (say 128 units) that realises a trial's true size ``n`` by
masking must start from the same values as the same model built unpadded at ``n``. Two things
make that work here:

* **Per-element draws.** The standard draw of element ``(i_0, ..., i_k)`` comes from the key
  ``fold_in(... fold_in(key, i_0) ..., i_k)``, so it depends on the element's index, never on the
  array's shape (a bulk ``jax.random.normal(key, shape)`` changes every value when the shape
  changes). Slicing a padded draw gives the unpadded draw exactly.
* **True fans.** The scale uses the fans of ``true_shape`` (which may hold traced integers),
  and elements outside ``true_shape`` are exactly zero.

The initializers are called like flax's, ``init(key, shape, dtype)``, so they can be passed to
any flax layer (``flax.linen.Dense(w, kernel_init=jopt.nn.initializers.lecun_normal())`` is the
unpadded reference of :class:`jopt.nn.Dense`), plus the keyword ``true_shape``.

.. math::

   w_{i} = \begin{cases} \sigma\, z_i & i < n \text{ (every axis)} \\ 0 & \text{otherwise}
   \end{cases}, \qquad \sigma^2 = \frac{s}{\max(1, \mathrm{fan}(n))}

with ``z_i`` a standard draw (truncated normal on [-2, 2] rescaled to unit variance, normal, or
uniform on [-sqrt 3, sqrt 3]) from the element's own key. The distributions are flax's
(``variance_scaling``); the values are not flax's (flax draws in bulk).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt.nn import initializers
  >>> init = initializers.lecun_normal()
  >>> key = jax.random.key(0)
  >>> full = init(key, (6, 8), true_shape=(4, 5))
  >>> bool(jnp.all(full[4:] == 0)) and bool(jnp.all(full[:, 5:] == 0))
  True
  >>> small = init(key, (4, 5))
  >>> bool(jnp.array_equal(full[:4, :5], small))
  True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "VarianceScaling",
    "element_keys",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "mask_outside",
    "padded_init",
    "valid_mask",
    "variance_scaling",
]

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")
# Standard deviation of a standard normal truncated to [-2, 2] (flax's constant).
_TRUNCATED_STD = 0.87962566103423978


def element_keys(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """One key per element: element ``(i_0, ..., i_k)`` gets ``fold_in(...fold_in(key, i_0)..., i_k)``.

    The key of an element depends on its index only, so ``element_keys(key, big)[:m, :n]`` equals
    ``element_keys(key, (m, n))``.

    Example:
      >>> import jax
      >>> k = jax.random.key(1)
      >>> a, b = element_keys(k, (3, 4)), element_keys(k, (2, 2))
      >>> bool((jax.random.key_data(a[:2, :2]) == jax.random.key_data(b)).all())
      True
    """
    keys = jnp.reshape(key, (1,))
    for size in shape:
        index = jnp.arange(size, dtype=jnp.uint32)
        keys = jax.vmap(lambda k, idx=index: jax.vmap(lambda i: jax.random.fold_in(k, i))(idx))(keys)
        keys = keys.reshape(-1)
    return keys.reshape(tuple(shape))


def valid_mask(shape: Sequence[int], true_shape: Sequence[Any]) -> jax.Array:
    """Boolean array of ``shape``: True where every index is below the (possibly traced) true size.

    Example:
      >>> valid_mask((2, 3), (1, 2)).astype(int).tolist()
      [[1, 1, 0], [0, 0, 0]]
    """
    if len(shape) != len(true_shape):
        raise ValueError(f"true_shape {tuple(true_shape)} must have the rank of shape {tuple(shape)}")
    mask = jnp.ones(tuple(shape), bool)
    for axis, (size, true) in enumerate(zip(shape, true_shape)):
        below = jnp.arange(size) < true
        mask = mask & below.reshape((1,) * axis + (size,) + (1,) * (len(shape) - axis - 1))
    return mask


def _fans(true_shape: Sequence[Any], in_axis: int, out_axis: int) -> tuple[jax.Array, jax.Array]:
    """Fan-in and fan-out (float32) of a kernel of ``true_shape``; other axes are receptive field."""
    rank = len(true_shape)
    if rank < 1:
        raise ValueError("variance scaling needs at least a 1-D shape")
    if rank == 1:
        size = jnp.asarray(true_shape[0], jnp.float32)
        return size, size
    in_axis, out_axis = in_axis % rank, out_axis % rank
    field = jnp.float32(1.0)
    for axis, size in enumerate(true_shape):
        if axis not in (in_axis, out_axis):
            field = field * jnp.asarray(size, jnp.float32)
    fan_in = jnp.asarray(true_shape[in_axis], jnp.float32) * field
    fan_out = jnp.asarray(true_shape[out_axis], jnp.float32) * field
    return fan_in, fan_out


def _standard(key: jax.Array, distribution: str) -> jax.Array:
    """One unit-variance float32 draw from ``key``."""
    if distribution == "truncated_normal":
        return jax.random.truncated_normal(key, -2.0, 2.0, (), jnp.float32) / jnp.float32(_TRUNCATED_STD)
    if distribution == "normal":
        return jax.random.normal(key, (), jnp.float32)
    return jax.random.uniform(key, (), jnp.float32, -1.0, 1.0) * jnp.float32(math.sqrt(3.0))


class VarianceScaling(NamedTuple):
    """A padding-invariant variance-scaling initializer; see the module docstring and
    :func:`variance_scaling`."""

    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"
    in_axis: int = -2
    out_axis: int = -1

    padding_invariant = True

    def __call__(
        self,
        key: jax.Array,
        shape: Sequence[int],
        dtype: Any = jnp.float32,
        *,
        true_shape: Sequence[Any] | None = None,
    ) -> jax.Array:
        """Initial values of ``shape``; zero outside ``true_shape`` (default: all of ``shape``)."""
        shape = tuple(int(s) for s in shape)
        true = shape if true_shape is None else tuple(true_shape)
        fan_in, fan_out = _fans(true, self.in_axis, self.out_axis)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        std = jnp.sqrt(jnp.float32(self.scale) / jnp.maximum(jnp.float32(1.0), fan))
        keys = element_keys(key, shape).reshape(-1)
        draws = jax.vmap(lambda k: _standard(k, self.distribution))(keys).reshape(shape)
        # The barrier keeps XLA from fusing the draws with their consumers: fused differently
        # (a padded and an unpadded program), the polynomials round differently (FMA contraction).
        values = jax.lax.optimization_barrier(draws) * std
        if true_shape is not None:
            values = jnp.where(valid_mask(shape, true), values, jnp.zeros((), values.dtype))
        return values.astype(dtype)


def variance_scaling(
    scale: float,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    *,
    in_axis: int = -2,
    out_axis: int = -1,
) -> VarianceScaling:
    r"""Padding-invariant variance scaling (flax's ``variance_scaling`` distributions).

    .. math::

       \sigma^2 = \frac{\mathrm{scale}}{\max(1, \mathrm{fan})},\quad
       \mathrm{fan} \in \{\mathrm{fan_{in}}, \mathrm{fan_{out}},
       (\mathrm{fan_{in}} + \mathrm{fan_{out}})/2\}

    computed from the true shape; every element drawn from its own key.

    Args:
      scale: the variance scale (1 for LeCun, 2 for He).
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
      distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.
      in_axis, out_axis: the kernel's input and output axes (the others are the receptive field).

    Raises:
      ValueError: an unknown mode or distribution, or a negative scale.

    Example:
      >>> import jax
      >>> w = variance_scaling(2.0, "fan_in", "normal")(jax.random.key(0), (512, 64))
      >>> round(float(w.var() * 512), 1)
      2.0
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
    if not scale >= 0:
        raise ValueError(f"scale must be in [0, inf), got {scale!r}")
    return VarianceScaling(float(scale), mode, distribution, in_axis, out_axis)


def lecun_normal(*, in_axis: int = -2, out_axis: int = -1) -> VarianceScaling:
    """LeCun normal (flax's default Dense kernel init): truncated normal, variance ``1 / fan_in``.

    Example:
      >>> import jax
      >>> lecun_normal()(jax.random.key(0), (3, 2), true_shape=(2, 2)).shape
      (3, 2)
    """
    return variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


def lecun_uniform(*, in_axis: int = -2, out_axis: int = -1) -> VarianceScaling:
    """LeCun uniform: uniform, variance ``1 / fan_in``.

    Example:
      >>> import jax
      >>> float(abs(lecun_uniform()(jax.random.key(0), (4, 3))).max()) <= 3 ** 0.5 / 2
      True
    """
    return variance_scaling(1.0, "fan_in", "uniform", in_axis=in_axis, out_axis=out_axis)


def he_normal(*, in_axis: int = -2, out_axis: int = -1) -> VarianceScaling:
    """He (Kaiming) normal: truncated normal, variance ``2 / fan_in`` (ReLU networks).

    Example:
      >>> import jax
      >>> he_normal()(jax.random.key(0), (2, 2)).dtype
      dtype('float32')
    """
    return variance_scaling(2.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


def he_uniform(*, in_axis: int = -2, out_axis: int = -1) -> VarianceScaling:
    """He uniform: uniform, variance ``2 / fan_in``.

    Example:
      >>> import jax
      >>> he_uniform()(jax.random.key(0), (2, 2)).shape
      (2, 2)
    """
    return variance_scaling(2.0, "fan_in", "uniform", in_axis=in_axis, out_axis=out_axis)


def glorot_normal(*, in_axis: int = -2, out_axis: int = -1) -> VarianceScaling:
    """Glorot (Xavier) normal: truncated normal, variance ``2 / (fan_in + fan_out)``.

    Example:
      >>> import jax
      >>> glorot_normal()(jax.random.key(0), (2, 2)).shape
      (2, 2)
    """
    return variance_scaling(1.0, "fan_avg", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


def glorot_uniform(*, in_axis: int = -2, out_axis: int = -1) -> VarianceScaling:
    """Glorot (Xavier) uniform: uniform, variance ``2 / (fan_in + fan_out)``.

    Example:
      >>> import jax
      >>> glorot_uniform()(jax.random.key(0), (2, 2)).shape
      (2, 2)
    """
    return variance_scaling(1.0, "fan_avg", "uniform", in_axis=in_axis, out_axis=out_axis)


def padded_init(init: Callable[..., jax.Array], true_shape: Sequence[Any] | None) -> Callable[..., jax.Array]:
    """``init`` as a flax initializer ``(key, shape, dtype)`` for a parameter whose true shape is
    ``true_shape`` (entries may be traced; ``None``: not padded).

    A padding-invariant initializer (``init.padding_invariant``, e.g.
    :func:`jopt.nn.initializers.lecun_normal`) gets ``true_shape`` and scales by the true fans;
    any other initializer is called at the padded shape and its values outside ``true_shape``
    are zeroed (its scale then follows the padded shape: fine for fan-independent inits such as
    zeros or ``normal(0.02)``).

    Example:
      >>> import jax
      >>> from flax.linen.initializers import ones_init
      >>> padded_init(ones_init(), (1, 2))(jax.random.key(0), (2, 3)).tolist()
      [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    if true_shape is None:
        return init
    if getattr(init, "padding_invariant", False):
        return lambda key, shape, dtype=jnp.float32: init(key, shape, dtype, true_shape=true_shape)

    def masked(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        value = init(key, shape, dtype)
        return jnp.where(valid_mask(shape, true_shape), value, jnp.zeros((), value.dtype))

    return masked


def mask_outside(value: jax.Array | None, true_shape: Sequence[Any] | None) -> jax.Array | None:
    """``value`` with the entries outside ``true_shape`` (entries may be traced) set to zero;
    ``None`` passes through, and so does ``value`` when ``true_shape`` is ``None``.

    Example:
      >>> import jax.numpy as jnp
      >>> mask_outside(jnp.ones((2, 2)), (1, 2)).tolist()
      [[1.0, 1.0], [0.0, 0.0]]
    """
    if value is None or true_shape is None:
        return value
    return jnp.where(valid_mask(value.shape, true_shape), value, jnp.zeros((), value.dtype))
