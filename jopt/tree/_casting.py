"""Dtypes of pytrees (casting, querying) and splitting trees of tuples."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = ["cast", "cast_like", "dtype", "tree_cast", "tree_cast_like", "tree_unzip"]

_HANDLERS = (None, "promote", "highest", "lowest")


def cast(tree: PyTree, dtype: Any | None) -> PyTree:
    """Cast every leaf to ``dtype``; ``None`` leaves the tree unchanged.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.cast({"a": jnp.ones(1)}, jnp.bfloat16)["a"].dtype
      dtype(bfloat16)
    """
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def cast_like(tree: PyTree, other_tree: PyTree) -> PyTree:
    """Cast each leaf of ``tree`` to the dtype of the matching leaf of ``other_tree``.

    Leaves of ``other_tree`` without a dtype (e.g. Python numbers) leave the
    matching leaf unchanged.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.cast_like({"a": jnp.ones(1)}, {"a": jnp.ones(1, jnp.int32)})["a"].dtype
      dtype('int32')
    """
    return jax.tree.map(lambda x, y: x.astype(y.dtype) if hasattr(y, "dtype") else x, tree, other_tree)


tree_cast = cast
tree_cast_like = cast_like


def _lower(a: Any, b: Any) -> Any:
    """The lower of two dtypes in the promotion order (the one promoted to the other)."""
    promoted = jnp.promote_types(a, b)
    if promoted == a:
        return b
    if promoted == b:
        return a
    raise ValueError(f"dtype: {a} and {b} are not ordered (neither promotes to the other)")


def _higher(a: Any, b: Any) -> Any:
    return b if _lower(a, b) == a else a


def dtype(tree: PyTree, mixed_dtype_handler: str | None = None) -> Any:
    """The dtype of a tree's leaves (JAX's default float dtype for a tree without leaves).

    Args:
      tree: the tree.
      mixed_dtype_handler: ``None`` requires all leaves to share one dtype;
        ``"promote"`` returns their promoted dtype (:func:`jax.numpy.promote_types`);
        ``"highest"`` / ``"lowest"`` the largest / smallest dtype in the promotion
        order (an error when two dtypes are not ordered, e.g. int32 and uint32).

    Raises:
      ValueError: for mixed dtypes with ``mixed_dtype_handler=None`` (naming the
        offending leaves), for unordered dtypes, or for an unknown handler.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tree = {"a": jnp.ones(1, jnp.float16), "b": jnp.ones(1)}
      >>> jopt.tree.dtype(tree, "lowest"), jopt.tree.dtype(tree, "highest")
      (dtype('float16'), dtype('float32'))
    """
    if mixed_dtype_handler not in _HANDLERS:
        raise ValueError(
            f"dtype: mixed_dtype_handler must be one of {_HANDLERS}, got {mixed_dtype_handler!r}"
        )
    leaves_with_path = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves_with_path:
        return jnp.asarray([]).dtype
    dtypes = [jnp.asarray(x).dtype for _, x in leaves_with_path]
    if mixed_dtype_handler is None:
        first = dtypes[0]
        wrong = [
            f"Expected dtype={first} for {jax.tree_util.keystr(path)} but got {dt}."
            for (path, _), dt in zip(leaves_with_path, dtypes)
            if dt != first
        ]
        if wrong:
            raise ValueError("\n".join(wrong))
        return first
    combine = {"promote": jnp.promote_types, "highest": _higher, "lowest": _lower}[mixed_dtype_handler]
    return functools.reduce(combine, dtypes)


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
