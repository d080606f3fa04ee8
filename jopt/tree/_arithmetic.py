r"""Leafwise arithmetic and reductions on pytrees (optax's ``optax.tree`` maths).

Binary functions (:func:`add`, :func:`sub`, :func:`mul`, :func:`div`) and
reductions (:func:`vdot`, :func:`sum`, :func:`max`, :func:`min`) use JAX's
ordinary dtype promotion and reduce leaves in leaf order starting from ``0``,
as optax does, so their float32 results equal optax's bit for bit.

Functions that take a scalar factor (:func:`scale`, :func:`add_scale`) follow
jopt's hyperparameter rule (:mod:`jopt.hyperparams`): the product is computed
in at least float32 with a Python-number factor kept weakly typed, and floating
leaves keep their dtype (a bfloat16 leaf times a float32 array stays bfloat16;
optax would promote it). :func:`norm` accumulates in at least float32.
"""

from __future__ import annotations

import builtins
import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, PartitionSpec

from jopt.hyperparams import cast_hyperparam, compute_dtype

Array = jax.Array
PyTree = Any

__all__ = [
    "add",
    "add_scale",
    "allclose",
    "batch_shape",
    "clip",
    "conj",
    "div",
    "full_like",
    "global_norm",
    "max",
    "min",
    "mul",
    "norm",
    "ones_like",
    "real",
    "scale",
    "size",
    "sub",
    "sum",
    "tree_all_finite",
    "tree_global_norm",
    "tree_scale",
    "tree_select",
    "tree_zeros_like",
    "vdot",
    "where",
    "zeros_like",
]


def _is_none(x: Any) -> bool:
    return x is None


def _out_dtype(dtype: Any, computed: Any) -> Any:
    """Floating (and complex) leaves keep ``dtype``; integer leaves take the computed dtype."""
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else computed


def add(tree_x: PyTree, tree_y: PyTree, *other_trees: PyTree) -> PyTree:
    r"""Leafwise sum of two or more trees, :math:`x + y + \dots` (accumulated from ``0``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.add({"a": jnp.ones(2)}, {"a": jnp.ones(2)}, {"a": jnp.ones(2)})["a"].tolist()
      [3.0, 3.0]
    """
    return jax.tree.map(lambda *leaves: builtins.sum(leaves), tree_x, tree_y, *other_trees)


def sub(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    r"""Leafwise difference :math:`x - y`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.sub({"a": jnp.ones(2)}, {"a": jnp.ones(2)})["a"].tolist()
      [0.0, 0.0]
    """
    return jax.tree.map(operator.sub, tree_x, tree_y)


def mul(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    r"""Leafwise product :math:`x \odot y`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.mul({"a": jnp.full(2, 2.0)}, {"a": jnp.full(2, 3.0)})["a"].tolist()
      [6.0, 6.0]
    """
    return jax.tree.map(operator.mul, tree_x, tree_y)


def div(tree_x: PyTree, tree_y: PyTree) -> PyTree:
    r"""Leafwise quotient :math:`x / y`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.div({"a": jnp.full(2, 3.0)}, {"a": jnp.full(2, 2.0)})["a"].tolist()
      [1.5, 1.5]
    """
    return jax.tree.map(operator.truediv, tree_x, tree_y)


def scale(scalar: Array | float, tree: PyTree) -> PyTree:
    r""":math:`s\,x` for every leaf (optax's argument order: the scalar first).

    Computed in at least float32; a Python-number ``scalar`` multiplies as a
    weakly typed constant. Floating leaves keep their dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.scale(0.5, {"a": jnp.ones(2)})["a"].tolist()
      [0.5, 0.5]
    """

    def one(x):
        x = jnp.asarray(x)
        dt = compute_dtype(x.dtype)
        return (cast_hyperparam(scalar, dt) * x.astype(dt)).astype(_out_dtype(x.dtype, dt))

    return jax.tree.map(one, tree)


def tree_scale(tree: PyTree, factor: Array | float) -> PyTree:
    r""":math:`s\,x` for every leaf with jopt's argument order (tree first); see :func:`scale`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.tree_scale({"a": jnp.ones(2)}, 2.0)["a"].tolist()
      [2.0, 2.0]
    """
    return scale(factor, tree)


def add_scale(tree_x: PyTree, scalar: Array | float, tree_y: PyTree) -> PyTree:
    r""":math:`x + s\,y` leafwise; ``None`` leaves of ``tree_x`` stay ``None``.

    Computed in at least float32 with a Python-number ``scalar`` weakly typed;
    floating results keep the promoted dtype of ``x`` and ``y``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.add_scale({"a": jnp.ones(2)}, 0.5, {"a": jnp.ones(2)})["a"].tolist()
      [1.5, 1.5]
    """

    def one(x, y):
        if x is None:
            return None
        x, y = jnp.asarray(x), jnp.asarray(y)
        dtype = jnp.promote_types(x.dtype, y.dtype)
        dt = compute_dtype(dtype)
        out = x.astype(dt) + cast_hyperparam(scalar, dt) * y.astype(dt)
        return out.astype(_out_dtype(dtype, dt))

    return jax.tree.map(one, tree_x, tree_y, is_leaf=_is_none)


def _leaf_vdot(a: Any, b: Any) -> Array:
    r""":math:`\sum_i \bar a_i b_i` over all elements of one leaf (``jnp.vdot`` at ``HIGHEST`` precision).

    optax 0.2.8 takes this path for every JAX release from 0.10 on, so the bits agree.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"vdot: leaves must have equal shapes, got {a.shape} and {b.shape}")
    if _explicitly_sharded(a) or _explicitly_sharded(b):
        # On an explicit-axis mesh a contraction over sharded axes needs its output sharding
        # stated (jnp.vdot raises): contract every axis into a replicated scalar.
        axes = tuple(range(a.ndim))
        a = jnp.conj(a) if jnp.iscomplexobj(a) else a
        return jax.lax.dot_general(
            a, b, ((axes, axes), ((), ())), precision=jax.lax.Precision.HIGHEST, out_sharding=PartitionSpec()
        )
    return jnp.vdot(a, b, precision=jax.lax.Precision.HIGHEST)


def _explicitly_sharded(x: Array) -> bool:
    """Whether ``x`` is sharded over an explicit mesh axis (visible in its type)."""
    spec = getattr(jax.typeof(x).sharding, "spec", None)
    return spec is not None and any(axis is not None for axis in spec)


def reshard_like(x: Array, reference: Any) -> Array:
    """``x`` with the sharding type of ``reference`` (an array or a ``ShapeDtypeStruct``).

    Only under an explicit-axis mesh, where shardings are part of an array's type
    (``select`` and ``cond`` need equal ones); elsewhere ``x`` is returned as is.
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty or AxisType.Explicit not in mesh.axis_types:
        return x
    wanted = (
        reference.sharding if isinstance(reference, jax.ShapeDtypeStruct) else jax.typeof(reference).sharding
    )
    spec = getattr(wanted, "spec", None)
    return x if spec is None or spec == sharding.spec else jax.sharding.reshard(x, spec)


def vdot(tree_x: PyTree, tree_y: PyTree) -> Array:
    r"""Inner product :math:`\langle x, y\rangle = \sum_{\text{leaves}} \sum_i \bar x_i y_i`.

    Raises:
      ValueError: when two matching leaves have different shapes.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.vdot({"a": jnp.array([1, 2])}, {"a": jnp.array([-1, 1])}).item()
      1
    """
    return jax.tree.reduce(operator.add, jax.tree.map(_leaf_vdot, tree_x, tree_y), initializer=0)


def sum(tree: PyTree, associative_reduction: bool = False) -> Array:  # noqa: A001 - optax's name
    r"""Sum of all elements of all leaves, :math:`\sum_{\text{leaves}} \sum_i x_i`.

    Leaf sums are added in leaf order from ``0``; ``associative_reduction`` adds
    them as a balanced tree instead (faster to compile for huge trees, other rounding).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.sum({"a": jnp.ones(2), "b": jnp.ones(3)}).item()
      5.0
    """
    sums = jax.tree.map(jnp.sum, tree)
    if associative_reduction:
        return jax.tree.reduce_associative(operator.add, sums, identity=0)
    return jax.tree.reduce(operator.add, sums, initializer=0)


def _reduce_nonempty(tree: PyTree, leaf_fn: Any, combine: Any, start: float) -> Array:
    values = jax.tree.map(lambda x: None if jnp.size(x) == 0 else leaf_fn(x), tree)
    return jax.tree.reduce(combine, values, initializer=start)


def max(tree: PyTree) -> Array:  # noqa: A001 - optax's name
    r"""Largest element over all leaves (``-inf`` for a tree without elements).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.max({"a": jnp.array([1.0, 5.0]), "b": jnp.array([3.0])}).item()
      5.0
    """
    return _reduce_nonempty(tree, jnp.max, jnp.maximum, -float("inf"))


def min(tree: PyTree) -> Array:  # noqa: A001 - optax's name
    r"""Smallest element over all leaves (``inf`` for a tree without elements).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.min({"a": jnp.array([1.0, 5.0]), "b": jnp.array([3.0])}).item()
      1.0
    """
    return _reduce_nonempty(tree, jnp.min, jnp.minimum, float("inf"))


def size(tree: PyTree) -> int:
    r"""Total number of elements over all leaves.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.size({"a": jnp.ones((2, 3)), "b": jnp.ones(4)})
      10
    """
    return builtins.sum(jnp.size(leaf) for leaf in jax.tree.leaves(tree))


def conj(tree: PyTree) -> PyTree:
    r"""Leafwise complex conjugate :math:`\bar x`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.conj({"a": jnp.array([1 + 2j])})["a"].tolist()
      [(1-2j)]
    """
    return jax.tree.map(jnp.conj, tree)


def real(tree: PyTree) -> PyTree:
    r"""Leafwise real part :math:`\operatorname{Re} x`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.real({"a": jnp.array([1 + 2j])})["a"].tolist()
      [1.0]
    """
    return jax.tree.map(jnp.real, tree)


def _upcast(x: Any) -> Array:
    """``x`` as an array of at least the hyperparameter dtype (float32)."""
    x = jnp.asarray(x)
    return x.astype(compute_dtype(x.dtype))


def _leaf_squares(x: Any) -> Array:
    r""":math:`\sum_i |x_i|^2` of one leaf, as :math:`\sum_i \operatorname{Re}^2 + \operatorname{Im}^2`.

    The same graph for real leaves too (``imag`` is zero): identical graphs keep
    XLA's reductions, and so the bits, identical to optax's.
    """
    x = _upcast(x)
    return jnp.sum(jnp.square(x.real) + jnp.square(x.imag))


def norm(
    tree: PyTree,
    ord: int | str | float | None = None,  # noqa: A002 - optax's name
    squared: bool = False,
) -> Array:
    r"""Vector norm of all leaves taken together: l2 (``ord`` None or 2), l1 (``ord=1``) or l-infinity.

    .. math:: \|x\|_2 = \Big(\sum_{\text{leaves}} \sum_i |x_i|^2\Big)^{1/2}

    Accumulated in at least float32, leaf sums added in leaf order from ``0``.
    ``squared`` returns the square of the norm.

    Raises:
      ValueError: for an ``ord`` other than None, 1, 2, ``inf``, ``"inf"`` or ``"infinity"``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.norm({"a": jnp.array([3.0]), "b": jnp.array([-4.0])}).item()
      5.0
      >>> jopt.tree.norm({"a": jnp.array([3.0]), "b": jnp.array([-4.0])}, ord=1).item()
      7.0
    """
    if ord is None or ord == 2:
        squares = jax.tree.leaves(jax.tree.map(_leaf_squares, tree))
        total = jax.tree.reduce(operator.add, squares, initializer=0)
        return jnp.array(total if squared else jnp.sqrt(total))
    if ord == 1:
        total = sum(jax.tree.map(lambda x: jnp.abs(_upcast(x)), tree))
    elif ord == jnp.inf or ord in ("inf", "infinity"):
        total = max(jax.tree.map(jnp.abs, tree))
    else:
        raise ValueError(f"norm: ord must be None, 1, 2, inf, 'inf' or 'infinity', got {ord!r}")
    return jnp.array(jnp.square(total) if squared else total)


def global_norm(updates: PyTree) -> Array:
    r"""Euclidean norm over all leaves, :math:`\sqrt{\sum_i \|x_i\|^2}` (:func:`norm` with ``ord=2``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.global_norm([jnp.array([3.0]), jnp.array([4.0])]).item()
      5.0
    """
    return norm(updates)


tree_global_norm = global_norm


def tree_all_finite(tree: PyTree) -> Array:
    """Scalar bool: every element of every leaf is finite.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> bool(jopt.tree.tree_all_finite({"a": jnp.array([1.0, jnp.inf])}))
      False
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def batch_shape(tree: PyTree, shape: tuple[int, ...] = ()) -> PyTree:
    r"""Broadcast every leaf to the leading batch dimensions ``shape`` (shape ``(*shape, *x.shape)``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.batch_shape({"a": jnp.ones(3)}, (2,))["a"].shape
      (2, 3)
    """
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


def zeros_like(tree: PyTree, dtype: Any | None = None) -> PyTree:
    """Zeros with the structure (and sharding, under jit) of ``tree``; ``dtype`` overrides.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.zeros_like({"a": jnp.ones(2)})["a"].tolist()
      [0.0, 0.0]
    """
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


tree_zeros_like = zeros_like


def ones_like(tree: PyTree, dtype: Any | None = None) -> PyTree:
    """Ones with the structure of ``tree``; ``dtype`` overrides the leaves' dtypes.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.ones_like({"a": jnp.zeros(2)})["a"].tolist()
      [1.0, 1.0]
    """
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def full_like(tree: PyTree, fill_value: Array | float, dtype: Any | None = None) -> PyTree:
    """Leaves of ``tree``'s shapes filled with ``fill_value``; ``dtype`` overrides the leaves' dtypes.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.full_like({"a": jnp.zeros(2)}, 7.0)["a"].tolist()
      [7.0, 7.0]
    """
    return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def clip(
    tree: PyTree, min_value: Array | float | None = None, max_value: Array | float | None = None
) -> PyTree:
    r"""Leafwise :math:`\min(\max(x, a), b)`; a ``None`` bound is not applied.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.clip({"a": jnp.array([-2.0, 0.5, 2.0])}, -1.0, 1.0)["a"].tolist()
      [-1.0, 0.5, 1.0]
    """
    return jax.tree.map(lambda x: jnp.clip(x, min_value, max_value), tree)


def where(condition: Array | bool, tree_x: PyTree, tree_y: PyTree) -> PyTree:
    """Leafwise ``jnp.where(condition, x, y)`` (``condition`` is usually a scalar).

    ``tree_select`` is the same function.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.where(jnp.array(False), {"a": jnp.ones(1)}, {"a": jnp.zeros(1)})["a"].tolist()
      [0.0]
    """
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


tree_select = where


def allclose(
    a: PyTree,
    b: PyTree,
    rtol: Array | float = 1e-05,
    atol: Array | float = 1e-08,
    equal_nan: bool = False,
) -> Array | bool:
    r"""Whether all matching leaves are close (``jnp.allclose``).

    .. math:: |a - b| \le \text{atol} + \text{rtol}\,|b|

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> bool(jopt.tree.allclose({"a": jnp.ones(2)}, {"a": jnp.ones(2) + 1e-9}))
      True
    """
    close = jax.tree.map(lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b)
    return functools.reduce(operator.and_, jax.tree.leaves(close), True)
