r"""Random pytrees: one key per leaf, samples shaped like a target tree.

Keys are split exactly as optax does (``jax.random.split(key, num_leaves)``, the
``i``-th key for the ``i``-th leaf in flattening order), so the same key gives
the same samples as ``optax.tree.random_like``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax

Array = jax.Array
PyTree = Any

__all__ = ["random_like", "split_key_like", "unwrap_random_key_data"]


def split_key_like(rng_key: Array, target_tree: PyTree) -> PyTree:
    r"""A tree of keys shaped like ``target_tree``: :math:`k_1, \dots, k_n = \operatorname{split}(k, n)`.

    Example:
      >>> import jax, jopt
      >>> keys = jopt.tree.split_key_like(jax.random.key(0), {"a": 1.0, "b": 2.0})
      >>> sorted(keys)
      ['a', 'b']
    """
    treedef = jax.tree.structure(target_tree)
    return jax.tree.unflatten(treedef, list(jax.random.split(rng_key, treedef.num_leaves)))


def _accepts_sharding(sampler: Callable[..., Any]) -> bool:
    try:
        return "out_sharding" in inspect.signature(sampler).parameters
    except (TypeError, ValueError):
        return False


def random_like(
    rng_key: Array,
    target_tree: PyTree,
    sampler: Callable[..., Array] = jax.random.normal,
    dtype: Any | None = None,
) -> PyTree:
    r"""A random tree shaped like ``target_tree``: leaf :math:`i` is ``sampler(k_i, shape_i, dtype_i)``.

    Args:
      rng_key: the key, split into one key per leaf (:func:`split_key_like`).
      target_tree: the tree whose structure, shapes and (unless ``dtype`` is
        given) dtypes the samples take; leaves must be arrays.
      sampler: ``(key, shape, dtype) -> array``, by default ``jax.random.normal``;
        a sampler with an ``out_sharding`` parameter also gets each leaf's sharding.
      dtype: the dtype of every sample (default: each leaf's dtype).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> noise = jopt.tree.random_like(jax.random.key(0), {"w": jnp.zeros((2, 3))})
      >>> noise["w"].shape, noise["w"].dtype
      ((2, 3), dtype('float32'))
    """
    keys = split_key_like(rng_key, target_tree)
    if _accepts_sharding(sampler):

        def draw(leaf, key):
            return sampler(key, leaf.shape, dtype or leaf.dtype, out_sharding=jax.typeof(leaf).sharding)

    else:

        def draw(leaf, key):
            return sampler(key, leaf.shape, dtype or leaf.dtype)

    return jax.tree.map(draw, target_tree, keys)


def unwrap_random_key_data(input_tree: PyTree) -> PyTree:
    """Replace typed random keys (``jax.random.key``) in a tree by their raw ``key_data``.

    Example:
      >>> import jax, jopt
      >>> jopt.tree.unwrap_random_key_data({"k": jax.random.key(0)})["k"].dtype
      dtype('uint32')
    """

    def unwrap(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(unwrap, input_tree)
