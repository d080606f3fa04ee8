"""optax's ``optax.tree_utils`` names: the ``tree_*`` spellings of the :mod:`jopt.tree` functions.

Each name is the very same function as its :mod:`jopt.tree` counterpart
(``tree_utils.tree_add is tree.add``), with optax's signature; in particular
``tree_utils.tree_scale(scalar, tree)`` takes the scalar first, like
``jopt.tree.scale`` (``jopt.tree.tree_scale(tree, factor)`` is jopt's own order).
optax's deprecated names (``tree_scalar_mul``, ``tree_add_scalar_mul``,
``tree_l1_norm``, ``tree_l2_norm``, ``tree_linf_norm``) resolve with a
``DeprecationWarning``.

Example:
  >>> import jax.numpy as jnp, jopt
  >>> jopt.tree_utils.tree_add({"a": jnp.ones(2)}, {"a": jnp.ones(2)})["a"].tolist()
  [2.0, 2.0]
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from jopt import tree as _tree
from jopt.tree import NamedTupleKey

__all__ = [
    "NamedTupleKey",
    "tree_add",
    "tree_add_scale",
    "tree_allclose",
    "tree_batch_shape",
    "tree_bias_correction",
    "tree_cast",
    "tree_cast_like",
    "tree_clip",
    "tree_conj",
    "tree_div",
    "tree_dtype",
    "tree_full_like",
    "tree_get",
    "tree_get_all_with_path",
    "tree_map_params",
    "tree_max",
    "tree_min",
    "tree_mul",
    "tree_norm",
    "tree_ones_like",
    "tree_random_like",
    "tree_real",
    "tree_scale",
    "tree_set",
    "tree_size",
    "tree_split_key_like",
    "tree_sub",
    "tree_sum",
    "tree_unwrap_random_key_data",
    "tree_update_infinity_moment",
    "tree_update_moment",
    "tree_update_moment_per_elem_norm",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
]

tree_add = _tree.add
tree_add_scale = _tree.add_scale
tree_allclose = _tree.allclose
tree_batch_shape = _tree.batch_shape
tree_bias_correction = _tree.bias_correction
tree_cast = _tree.cast
tree_cast_like = _tree.cast_like
tree_clip = _tree.clip
tree_conj = _tree.conj
tree_div = _tree.div
tree_dtype = _tree.dtype
tree_full_like = _tree.full_like
tree_get = _tree.get
tree_get_all_with_path = _tree.get_all_with_path
tree_map_params = _tree.map_params
tree_max = _tree.max
tree_min = _tree.min
tree_mul = _tree.mul
tree_norm = _tree.norm
tree_ones_like = _tree.ones_like
tree_random_like = _tree.random_like
tree_real = _tree.real
tree_scale = _tree.scale
tree_set = _tree.set
tree_size = _tree.size
tree_split_key_like = _tree.split_key_like
tree_sub = _tree.sub
tree_sum = _tree.sum
tree_unwrap_random_key_data = _tree.unwrap_random_key_data
tree_update_infinity_moment = _tree.update_infinity_moment
tree_update_moment = _tree.update_moment
tree_update_moment_per_elem_norm = _tree.update_moment_per_elem_norm
tree_vdot = _tree.vdot
tree_where = _tree.where
tree_zeros_like = _tree.zeros_like

_DEPRECATED = {
    "tree_scalar_mul": ("tree_scale", _tree.scale),
    "tree_add_scalar_mul": ("tree_add_scale", _tree.add_scale),
    "tree_l1_norm": ("tree_norm(..., ord=1)", functools.partial(_tree.norm, ord=1)),
    "tree_l2_norm": ("tree_norm", functools.partial(_tree.norm, ord=2)),
    "tree_linf_norm": ("tree_norm(..., ord='inf')", functools.partial(_tree.norm, ord="inf")),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        replacement, value = _DEPRECATED[name]
        warnings.warn(
            f"jopt.tree_utils.{name} is deprecated: use {replacement}", DeprecationWarning, stacklevel=2
        )
        return value
    raise AttributeError(f"module 'jopt.tree_utils' has no attribute {name!r}")
