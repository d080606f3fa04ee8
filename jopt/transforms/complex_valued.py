r"""Optimizing complex parameters as pairs of real ones.

:func:`split_real_and_imaginary` hands the inner transformation every complex leaf as a pair
:math:`(\Re z, \Im z)` of real arrays (a :class:`SplitRealAndImaginaryArrays`), parameters and
updates alike, and joins the transformed pair back into :math:`u_\Re + i\, u_\Im`. An optimizer
with element-wise or norm-based state then treats a complex parameter exactly as two real
ones. Real leaves pass through unchanged.

JAX's gradient of a real loss with respect to a complex parameter is the *conjugate* of the
steepest-ascent direction used elsewhere (see optax issue 196): conjugate it
(``jax.tree.map(jnp.conj, grads)``) between ``jax.grad`` and ``update``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, transformation

__all__ = ["SplitRealAndImaginaryArrays", "SplitRealAndImaginaryState", "split_real_and_imaginary"]


class SplitRealAndImaginaryArrays(NamedTuple):
    """The real and imaginary parts of one complex array."""

    real: jax.Array
    imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
    """State of :func:`split_real_and_imaginary`: the inner transformation's state."""

    inner_state: Any


def _split(x: Any) -> Any:
    return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x)) if jnp.iscomplexobj(x) else x


def _join(x: Any) -> Any:
    return x.real + x.imaginary * 1j if isinstance(x, SplitRealAndImaginaryArrays) else x


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def split_real_and_imaginary(inner: Any) -> GradientTransformation:
    r"""Run ``inner`` on the real and imaginary parts of complex leaves separately.

    .. math:: (u_\Re, u_\Im) = \mathrm{inner}(\Re g, \Im g), \qquad u = u_\Re + i\, u_\Im

    Extra keyword arguments of ``update`` are passed to ``inner``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.contrib.split_real_and_imaginary(jopt.sign_sgd(0.1))
      >>> params = {"z": jnp.array([1.0 + 2.0j]), "x": jnp.array([3.0])}
      >>> u, _ = tx.update({"z": jnp.array([0.5 - 4.0j]), "x": jnp.array([-2.0])}, tx.init(params), params)
      >>> bool(jnp.allclose(u["z"], -0.1 + 0.1j)), bool(jnp.allclose(u["x"], 0.1))  # signs, per part
      (True, True)
    """
    inner = as_transformation(inner)

    def init(params: Any) -> SplitRealAndImaginaryState:
        return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))

    def update(updates, state, params=None, **extra_args):
        split_params = None if params is None else jax.tree.map(_split, params)
        new, inner_state = inner.update(
            jax.tree.map(_split, updates), state.inner_state, split_params, **extra_args
        )
        return jax.tree.map(_join, new, is_leaf=_is_pair), SplitRealAndImaginaryState(inner_state)

    return transformation(init, update, extra_args=inner.extra_args)
