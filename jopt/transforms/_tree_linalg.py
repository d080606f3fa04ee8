r"""Inner products and axpy on pytrees, shared by L-BFGS and the line searches.

These reductions are written with the primitives and summation order optax
uses on JAX >= 0.10 (``jnp.vdot`` per leaf at ``HIGHEST`` precision, leaf
results added in leaf order starting from ``0``), so quantities such as the slope
:math:`\langle u, \nabla f\rangle` carry optax's bits. Leaves are reduced in
their own dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any

__all__ = ["tree_add_scaled", "tree_inner", "tree_squared_norm"]


def _leaf_inner(a: Array, b: Array) -> Array:
    r""":math:`\sum_i \bar a_i b_i` over all axes of one leaf."""
    return jnp.vdot(jnp.asarray(a), jnp.asarray(b), precision=jax.lax.Precision.HIGHEST)


def tree_inner(x: PyTree, y: PyTree) -> Array:
    r""":math:`\langle x, y\rangle = \sum_{\text{leaves}} \sum_i \bar x_i y_i` (conjugating ``x``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms._tree_linalg import tree_inner
      >>> x = {"a": jnp.ones(2), "b": jnp.ones((2, 2))}
      >>> float(tree_inner(x, {"a": jnp.ones(2), "b": 2 * jnp.ones((2, 2))}))
      10.0
    """
    return sum(jax.tree.leaves(jax.tree.map(_leaf_inner, x, y)))


def tree_squared_norm(x: PyTree) -> Array:
    r""":math:`\|x\|^2 = \sum_{\text{leaves}} \sum_i |x_i|^2`."""

    def one(leaf):
        leaf = jnp.asarray(leaf)
        return jnp.sum(jnp.square(jnp.real(leaf)) + jnp.square(jnp.imag(leaf)))

    return sum(jax.tree.leaves(jax.tree.map(one, x)))


def tree_add_scaled(x: PyTree, scalar: Array | float, y: PyTree) -> PyTree:
    r""":math:`x + s\,y` leafwise; ``None`` leaves of ``x`` stay ``None``."""
    scalar = jnp.asarray(scalar)
    return jax.tree.map(lambda a, b: None if a is None else a + scalar * b, x, y, is_leaf=lambda a: a is None)
