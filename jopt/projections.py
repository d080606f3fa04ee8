r"""Euclidean projections of pytrees onto convex sets (optax's ``optax.projections``).

Each function returns :math:`\operatorname{argmin}_{p \in C} \|x - p\|_2^2` for a
set :math:`C` (a box, a ball, a simplex, a hyperplane, ...), treating all leaves
of the tree ``x`` together as one vector. They are written with optax's order
of operations, so float32 results equal optax's bit for bit, and they are
jit- and vmap-compatible (no Python branch reads a value). The simplex
projection has a custom JVP, so it can be differentiated.

A typical use is projected gradient descent::

    params = jopt.apply_updates(params, updates)
    params = jopt.projections.projection_non_negative(params)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import flatten_util

from jopt import tree as jtree
from jopt.hyperparams import NONNEGATIVE, POSITIVE, is_concrete

Array = jax.Array
PyTree = Any

__all__ = [
    "projection_box",
    "projection_halfspace",
    "projection_hypercube",
    "projection_hyperplane",
    "projection_l1_ball",
    "projection_l1_sphere",
    "projection_l2_ball",
    "projection_l2_sphere",
    "projection_linf_ball",
    "projection_non_negative",
    "projection_simplex",
    "projection_vector",
]


def projection_non_negative(tree: PyTree) -> PyTree:
    r"""Projection onto the non-negative orthant, :math:`p = \max(x, 0)`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_non_negative({"w": jnp.array([-1.0, 2.0])})["w"].tolist()
      [0.0, 2.0]
    """
    return jax.tree.map(jax.nn.relu, tree)


def _is_single_leaf(x: Any) -> bool:
    return jax.tree_util.treedef_is_leaf(jax.tree.structure(x)) and x is not None


def _like(bound: Any, tree: PyTree) -> PyTree:
    """A scalar (or single-array) bound repeated for every leaf of ``tree``; a tree bound as is."""
    if _is_single_leaf(bound) and not _is_single_leaf(tree):
        return jax.tree.map(lambda _: bound, tree)
    return bound


def _check_box(lower: PyTree, upper: PyTree) -> None:
    if not (is_concrete(lower) and is_concrete(upper)):
        return
    for lo, hi in zip(jax.tree.leaves(lower), jax.tree.leaves(upper)):
        if np.any(np.asarray(lo) > np.asarray(hi)):
            raise ValueError(f"projection_box: lower must not exceed upper, got lower={lo!r}, upper={hi!r}")


def projection_box(tree: PyTree, lower: Any, upper: Any) -> PyTree:
    r"""Projection onto the box :math:`\{p : l \le p \le u\}`, i.e. :math:`p = \min(\max(x, l), u)`.

    Args:
      tree: the tree to project.
      lower, upper: the bounds, each a scalar (applied to every leaf) or a tree
        structured like ``tree``.

    Raises:
      ValueError: when concrete bounds have ``lower > upper`` somewhere.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_box({"w": jnp.array([-2.0, 0.5, 3.0])}, -1.0, 1.0)["w"].tolist()
      [-1.0, 0.5, 1.0]
    """
    lower, upper = _like(lower, tree), _like(upper, tree)
    _check_box(lower, upper)
    return jax.tree.map(jnp.clip, tree, lower, upper)


def projection_hypercube(tree: PyTree, scale: Any = 1) -> PyTree:
    r"""Projection onto the hypercube :math:`[0, s]^n` (the unit hypercube by default).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_hypercube(jnp.array([2.0, -1.0, 0.5])).tolist()
      [1.0, 0.0, 0.5]
    """
    return projection_box(tree, lower=0, upper=scale)


@jax.custom_jvp
def _unit_simplex(values: Array) -> Array:
    r"""Projection of a vector onto :math:`\{p \ge 0, \sum_i p_i = 1\}` (sort-based, Duchi et al. 2008)."""
    n = values.shape[0]
    desc = jnp.sort(values)[::-1]
    partial = jnp.cumsum(desc)
    rank = jnp.arange(n) + 1
    support = jnp.count_nonzero(1 / rank + (desc - partial / rank) > 0)
    return jax.nn.relu(1 / support + (values - partial[support - 1] / support))


@_unit_simplex.defjvp
def _unit_simplex_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (values,), (dvalues,) = primals, tangents
    out = _unit_simplex(values)
    on = out > 0
    count = jnp.count_nonzero(on)
    return out, on * dvalues - (jnp.dot(on, dvalues) / count) * on


def projection_simplex(tree: PyTree, scale: Array | float = 1) -> PyTree:
    r"""Projection onto the simplex :math:`\{p : p \ge 0,\ \sum_i p_i = s\}` (all leaves together).

    Raises:
      ValueError: when a concrete ``scale`` is not positive.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> p = jopt.projections.projection_simplex({"w": jnp.array([2.5, 3.2]), "b": 0.5})
      >>> round(float(jopt.tree.sum(p)), 5)
      1.0
    """
    POSITIVE.check(scale, "scale", "projection_simplex")
    values, unravel = flatten_util.ravel_pytree(tree)
    return unravel(scale * _unit_simplex(values / scale))


def projection_l1_sphere(tree: PyTree, scale: Array | float = 1) -> PyTree:
    r"""Projection onto the l1 sphere :math:`\{p : \|p\|_1 = s\}`.

    .. math:: p = \operatorname{sign}(x) \odot \Pi_{\Delta_s}(|x|)

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_l1_sphere(jnp.array([-3.0, 1.0])).tolist()
      [-1.0, 0.0]
    """
    magnitudes = projection_simplex(jax.tree.map(jnp.abs, tree), scale)
    return jtree.mul(jax.tree.map(jnp.sign, tree), magnitudes)


def projection_l1_ball(tree: PyTree, scale: Array | float = 1) -> PyTree:
    r"""Projection onto the l1 ball :math:`\{p : \|p\|_1 \le s\}` (``x`` itself when inside).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_l1_ball(jnp.array([0.25, -0.5])).tolist()
      [0.25, -0.5]
    """
    POSITIVE.check(scale, "scale", "projection_l1_ball")
    inside = jtree.norm(tree, ord=1) <= scale
    return jax.lax.cond(inside, lambda t: t, lambda t: projection_l1_sphere(t, scale), tree)


def projection_l2_sphere(tree: PyTree, scale: Array | float = 1) -> PyTree:
    r"""Projection onto the l2 sphere :math:`\{p : \|p\|_2 = s\}`: :math:`p = s\,x / \|x\|_2`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_l2_sphere(jnp.array([3.0, 4.0])).tolist()
      [0.6000000238418579, 0.800000011920929]
    """
    POSITIVE.check(scale, "scale", "projection_l2_sphere")
    return jtree.scale(scale / jtree.norm(tree), tree)


def projection_l2_ball(tree: PyTree, scale: Array | float = 1) -> PyTree:
    r"""Projection onto the l2 ball: :math:`p = x \cdot s / \sqrt{\max(\|x\|_2^2, s^2)}`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_l2_ball(jnp.array([3.0, 4.0]), 10.0).tolist()
      [3.0, 4.0]
    """
    POSITIVE.check(scale, "scale", "projection_l2_ball")
    squared = jtree.norm(tree, squared=True)
    return jtree.scale(scale / jnp.sqrt(jnp.maximum(squared, scale**2)), tree)


def projection_linf_ball(tree: PyTree, scale: Array | float = 1) -> PyTree:
    r"""Projection onto the l-infinity ball :math:`[-s, s]^n`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_linf_ball(jnp.array([3.0, -0.5])).tolist()
      [1.0, -0.5]
    """
    NONNEGATIVE.check(scale, "scale", "projection_linf_ball")
    return projection_box(tree, lower=jtree.full_like(tree, -scale), upper=jtree.full_like(tree, scale))


def projection_vector(x: PyTree, a: PyTree) -> PyTree:
    r"""Projection onto the line spanned by ``a``: :math:`\frac{\langle x, a\rangle}{\langle a, a\rangle} a`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_vector(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])).tolist()
      [1.0, 0.0]
    """
    return jtree.scale(jtree.vdot(x, a) / jtree.vdot(a, a), a)


def projection_hyperplane(x: PyTree, a: PyTree, b: Array | float) -> PyTree:
    r"""Projection onto the hyperplane :math:`\{y : \langle a, y\rangle = b\}`.

    .. math:: p = x + \frac{b - \langle x, a\rangle}{\langle a, a\rangle} a

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_hyperplane(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]), 3.0).tolist()
      [3.0, 2.0]
    """
    return jtree.add_scale(x, (b - jtree.vdot(x, a)) / jtree.vdot(a, a), a)


def projection_halfspace(x: PyTree, a: PyTree, b: Array | float) -> PyTree:
    r"""Projection onto the halfspace :math:`\{y : \langle a, y\rangle \le b\}` (``x`` itself when inside).

    .. math:: p = x + \min\Big(\frac{b - \langle x, a\rangle}{\langle a, a\rangle}, 0\Big) a

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.projections.projection_halfspace(jnp.array([5.0, 2.0]), jnp.array([1.0, 0.0]), 3.0).tolist()
      [3.0, 2.0]
    """
    step = jnp.clip((b - jtree.vdot(x, a)) / jtree.vdot(a, a), max=0)
    return jtree.add_scale(x, step, a)
