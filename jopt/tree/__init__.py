"""Pytree utilities: optax's ``optax.tree`` functions under the same names, plus jopt's helpers.

Submodules by topic: arithmetic and reductions (``_arithmetic``), moving
averages and bias correction (``_moments``), dtypes (``_casting``), random
trees (``_random``) and lookup in optimizer states (``_selection``). Every
function is importable from here (``from jopt.tree import update_moment``).
jopt's older helper names are kept as aliases of the same functions
(``tree_zeros_like is zeros_like``, ``tree_select is where``, ``tree_cast_like is
cast_like``, ``tree_bias_correction is bias_correction``, ``tree_global_norm``
is ``norm`` with ``ord=2``); ``tree_scale(tree, factor)`` is :func:`scale` with
the arguments in jopt's order. The ``tree_*`` names of ``optax.tree_utils``
live in :mod:`jopt.tree_utils`.
"""

from jopt.numerics import safe_increment
from jopt.tree._arithmetic import (
    add,
    add_scale,
    allclose,
    batch_shape,
    clip,
    conj,
    div,
    full_like,
    global_norm,
    max,
    min,
    mul,
    norm,
    ones_like,
    real,
    scale,
    size,
    sub,
    sum,
    tree_all_finite,
    tree_global_norm,
    tree_scale,
    tree_select,
    tree_zeros_like,
    vdot,
    where,
    zeros_like,
)
from jopt.tree._casting import cast, cast_like, dtype, tree_cast, tree_cast_like, tree_unzip
from jopt.tree._moments import (
    bias_correction,
    tree_bias_correction,
    tree_moment,
    update_infinity_moment,
    update_moment,
    update_moment_per_elem_norm,
)
from jopt.tree._random import random_like, split_key_like, unwrap_random_key_data
from jopt.tree._selection import NamedTupleKey, get, get_all_with_path, map_params, set

__all__ = [
    # optax.tree names
    "add",
    "add_scale",
    "allclose",
    "batch_shape",
    "bias_correction",
    "cast",
    "cast_like",
    "clip",
    "conj",
    "div",
    "dtype",
    "full_like",
    "get",
    "get_all_with_path",
    "map_params",
    "max",
    "min",
    "mul",
    "norm",
    "ones_like",
    "random_like",
    "real",
    "scale",
    "set",
    "size",
    "split_key_like",
    "sub",
    "sum",
    "unwrap_random_key_data",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "vdot",
    "where",
    "zeros_like",
    # jopt helpers
    "NamedTupleKey",
    "global_norm",
    "safe_increment",
    "tree_all_finite",
    "tree_bias_correction",
    "tree_cast",
    "tree_cast_like",
    "tree_global_norm",
    "tree_moment",
    "tree_scale",
    "tree_select",
    "tree_unzip",
    "tree_zeros_like",
]
