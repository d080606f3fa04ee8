"""Pytree utilities shared by transforms (moments, norms, casting, selection)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt.hyperparams import cast_hyperparam, compute_dtype, hyperparam_dtype, is_python_number

Array = jax.Array
PyTree = Any

__all__ = [
    "safe_increment",
    "tree_bias_correction",
    "tree_cast",
    "tree_cast_like",
    "tree_global_norm",
    "tree_moment",
    "tree_scale",
    "tree_select",
    "tree_zeros_like",
    "tree_all_finite",
]


def _is_none(x: Any) -> bool:
    return x is None


def tree_unzip(tree_of_tuples: PyTree, like: PyTree, n: int) -> tuple[PyTree, ...]:
    """Split a tree (structured like ``like``) whose leaves are ``n``-tuples into ``n`` trees.

    Example:
      >>> import jopt
      >>> jopt.tree.tree_unzip({"a": (1, 2)}, {"a": 0}, 2)
      ({'a': 1}, {'a': 2})
    """
    treedef = jax.tree.structure(like)
    rows = treedef.flatten_up_to(tree_of_tuples)
    return tuple(jax.tree.unflatten(treedef, [row[i] for row in rows]) for i in range(n))


def tree_zeros_like(tree: PyTree, dtype: Any | None = None) -> PyTree:
    """Zeros with the structure (and sharding, under jit) of ``tree``; ``dtype`` overrides."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_cast(tree: PyTree, dtype: Any | None) -> PyTree:
    """Cast every leaf to ``dtype``; ``None`` leaves the tree unchanged."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def tree_cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """Cast each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def tree_scale(tree: PyTree, factor: Array | float) -> PyTree:
    """``factor * x`` for every leaf, computed in at least float32, keeping leaf dtypes.

    A Python-number ``factor`` multiplies as a weakly typed constant (optax's arithmetic).
    """

    def one(x):
        dt = compute_dtype(x.dtype)
        return (cast_hyperparam(factor, dt) * x.astype(dt)).astype(x.dtype)

    return jax.tree.map(one, tree)


def _power(g: Array, order: int) -> Array:
    """``g**order``; for complex ``g`` the power of its modulus (:math:`|g|^k`)."""
    if jnp.iscomplexobj(g):
        return jnp.real(jnp.conj(g) * g) ** (order // 2) if order % 2 == 0 else jnp.abs(g) ** order
    return g**order


def tree_moment(updates: PyTree, moments: PyTree, decay: Array | float, order: int = 1) -> PyTree:
    r"""Exponential moving average of ``updates**order``.

    .. math:: m_t = (1 - \beta) g_t^{k} + \beta m_{t-1}

    Arithmetic is done in at least float32 (so ``decay`` keeps its precision);
    the result has the dtype the moments would have in that arithmetic. The
    order of operations is optax's, so a Python-number ``decay`` gives optax's bits.
    """

    def one(g, m):
        dt = compute_dtype(jnp.promote_types(g.dtype, m.dtype))
        d = cast_hyperparam(decay, dt)
        gk = g.astype(dt) if order == 1 else _power(g.astype(dt), order)
        return (1 - d) * gk + d * m.astype(dt)

    return jax.tree.map(one, updates, moments)


def tree_bias_correction(moment: PyTree, decay: Array | float, count: Array) -> PyTree:
    r"""Adam's bias correction :math:`\hat m = m / (1 - \beta^t)`.

    :math:`\beta^t` is computed in the hyperparameter dtype (at least float32), then
    the division is done in each moment's dtype, in optax's order.
    """
    correction = 1 - jnp.asarray(decay, hyperparam_dtype() if is_python_number(decay) else None) ** count
    return jax.tree.map(lambda t: t / correction.astype(t.dtype), moment)


def safe_increment(count: Array) -> Array:
    """``count + 1`` that saturates at the dtype's maximum instead of overflowing."""
    info = jnp.iinfo(count.dtype)
    return jnp.where(count < info.max, count + 1, count)


def tree_global_norm(tree: PyTree) -> Array:
    r"""Euclidean norm over all leaves, :math:`\sqrt{\sum_i \|x_i\|^2}`, in at least float32."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), compute_dtype(jnp.float32))
    # optax's order: |x|^2 as square(real) + square(imag), summed per leaf, then leaf by leaf
    # from 0 (identical graphs keep XLA's reductions, and so the bits, identical).
    upcast = [x.astype(compute_dtype(x.dtype)) for x in leaves]
    total = 0
    for x in upcast:
        total = total + jnp.sum(jnp.square(x.real) + jnp.square(x.imag))
    return jnp.sqrt(total)


def tree_all_finite(tree: PyTree) -> Array:
    """Scalar bool: every element of every leaf is finite."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def tree_select(condition: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``jnp.where(condition, a, b)`` with a scalar ``condition``."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)
