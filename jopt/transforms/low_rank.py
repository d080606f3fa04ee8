r"""GaLore: gradient low-rank projection (Zhao et al., 2024).

Each matrix gradient :math:`G \in \mathbb{R}^{m \times n}` is projected onto a
rank-:math:`r` subspace spanned by its leading singular vectors, a base
transform (Adam by default) runs on the small projected gradient, and its
output is projected back. The optimizer state of an :math:`m \times n` matrix
is then :math:`r \times n` (or :math:`m \times r`) plus the projector, instead
of :math:`m \times n`. The projector is refreshed from the SVD of the current
gradient every ``update_proj_gap`` steps.

Leaves that are not projected (vectors by default) go through the base
transform unchanged. Higher-rank leaves (e.g. attention weights stored as
``(embed, heads, head_dim)``) are projected when
:class:`GaLoreDimensionNumbers` say which axes form the matrix.

The names, arguments and defaults are optax 0.2.8's (``optax.contrib``); with
Python-number hyperparameters the float32 and float64 results equal optax's bit
for bit (the SVD is computed in float32, as optax does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from jopt.batched_cond import cond_across_batch
from jopt.core import AcceptsAnyExtraArg, GradientTransformation, as_transformation, hyperparam_transformation
from jopt.hyperparams import ANY, Hyperparam, Range, cast_hyperparam, compute_dtype, is_python_number
from jopt.transforms.moments import scale_by_adam
from jopt.tree._arithmetic import _explicitly_sharded

Array = jax.Array
PyTree = Any

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "scale_by_galore"]


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a leaf form the rows (``reduction_axis``) and columns (``output_axis``) of its matrix.

    Every axis must be in exactly one of the two; negative axes count from the end.
    The default treats a 2-D leaf as it is.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


DimNumsOrFn = Union[GaLoreDimensionNumbers, PyTree, Callable[[PyTree], PyTree]]


class GaLoreState(NamedTuple):
    """State of :func:`scale_by_galore`.

    Attributes:
      count: number of updates so far (int32).
      base_optimizer_state: the base transform's state, on the projected (low-rank)
        shapes for projected leaves and the full shapes for the others.
      projector: per leaf, the :math:`m \times r` (left) or :math:`n \times r` (right)
        projector; a ``(0, 0)`` array for leaves that are not projected.
      hyperparams: non-constant hyperparameters used at the latest step.
    """

    count: Array
    base_optimizer_state: Any
    projector: PyTree
    hyperparams: dict[str, Array]


class _Layout(NamedTuple):
    """How a leaf becomes a matrix: the transpose, the matrix shape, and the shape to undo it."""

    transpose: tuple[int, ...]
    matrix_shape: tuple[int, int]
    transposed_shape: tuple[int, ...]

    def to_matrix(self, x: Array) -> Array:
        return x.transpose(self.transpose).reshape(self.matrix_shape)

    def from_matrix(self, y: Array) -> Array:
        inverse = tuple(sorted(range(len(self.transpose)), key=lambda i: self.transpose[i]))
        return y.reshape(self.transposed_shape).transpose(inverse)

    @property
    def left(self) -> bool:
        """Project from the left (:math:`P^\top G`) when the matrix has at least as many rows as columns."""
        return self.matrix_shape[0] >= self.matrix_shape[1]


def _axes(spec: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    return tuple(a % ndim for a in ((spec,) if isinstance(spec, int) else spec))


def _layout(x: Array, dim_nums: GaLoreDimensionNumbers) -> _Layout:
    """The matrix view of ``x`` given by ``dim_nums`` (ValueError for a bad specification)."""
    if x.ndim < 2:
        raise ValueError(f"scale_by_galore: projected leaves need rank >= 2, got shape {x.shape}")
    rows, cols = _axes(dim_nums.reduction_axis, x.ndim), _axes(dim_nums.output_axis, x.ndim)
    if set(rows) & set(cols):
        raise ValueError(f"scale_by_galore: reduction axes {rows} and output axes {cols} must be disjoint")
    if len(set(rows) | set(cols)) != x.ndim:
        raise ValueError(
            f"scale_by_galore: every axis of shape {x.shape} must be a reduction or an output axis, "
            f"got reduction {rows} and output {cols}"
        )
    sizes = tuple(x.shape[a] for a in rows + cols)
    matrix = (math.prod(sizes[: len(rows)]), math.prod(sizes[len(rows) :]))
    return _Layout(rows + cols, matrix, sizes)


def _leaf_specs(dim_nums: DimNumsOrFn | None, tree: PyTree) -> list[GaLoreDimensionNumbers | None]:
    """One specification (or ``None``: not projected) per leaf of ``tree``, in flattening order."""
    leaves, treedef = jax.tree.flatten(tree)
    if dim_nums is None:
        return [GaLoreDimensionNumbers() if x.ndim == 2 else None for x in leaves]
    if isinstance(dim_nums, GaLoreDimensionNumbers):
        return [dim_nums if x.ndim >= 2 else None for x in leaves]
    specs = dim_nums(tree) if callable(dim_nums) else dim_nums
    return treedef.flatten_up_to(specs)


def _projector_from_svd(g2d: Array, layout: _Layout, rank: int, dtype: Any) -> Array:
    """Leading ``rank`` left (or right) singular vectors of ``g2d``, computed in float32 (optax's choice)."""
    if _explicitly_sharded(g2d):  # LAPACK's SVD takes whole matrices: the projector is replicated
        g2d = jax.sharding.reshard(g2d, PartitionSpec())
    u, _, vh = jnp.linalg.svd(g2d.astype(jnp.float32), full_matrices=False)
    return (u[:, :rank] if layout.left else vh[:rank, :].T).astype(dtype)


def _shapes(rank: int, layout: _Layout) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(projector shape, projected shape)`` of a leaf."""
    m, n = layout.matrix_shape
    r = min(rank, m, n)
    return ((m, r), (r, n)) if layout.left else ((n, r), (m, r))


def _check_rank(rank: Any) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise TypeError(f"scale_by_galore: rank must be an int, got {type(rank).__name__}")
    if rank <= 0:
        raise ValueError(f"scale_by_galore: rank must be in [1, inf], got {rank}")


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: Hyperparam = 200,
    scale: Hyperparam = 1.0,
    base_optimizer: Any | None = None,
    weight_dimension_numbers: DimNumsOrFn | None = None,
) -> GradientTransformation:
    r"""Run ``base_optimizer`` on rank-:math:`r` projections of matrix gradients.

    For a leaf with matrix view :math:`G_t \in \mathbb{R}^{m \times n}`, :math:`m \ge n`
    (left projection; for :math:`m < n` the roles of the sides swap,
    :math:`R_t = G_t P_t`, :math:`u_t = s\, N_t P_t^\top`):

    .. math::

        P_t &= U_{:, :r}\big(\operatorname{svd}(G_t)\big) \text{ if } t \bmod T = 0,
            \text{ else } P_{t-1} \\
        R_t &= P_t^\top G_t, \qquad N_t = \operatorname{base}(R_t), \qquad u_t = s\, P_t N_t

    with :math:`r = \min(\text{rank}, m, n)` and :math:`T` = ``update_proj_gap``.
    Leaves without a matrix view get :math:`u_t = \operatorname{base}(g_t)`.

    ``base_optimizer`` must not need ``params`` (it is called without them, on the
    projected shapes): ``scale_by_adam`` (the default), ``scale_by_lion``,
    ``scale_by_rms``... Extra arguments it declares are forwarded to it (optax forwards none).

    Args:
      rank: the target rank :math:`r` (an int, structural: it fixes shapes).
      update_proj_gap: :math:`T \ge 1`, steps between projector refreshes; an
        integer number, array or schedule.
      scale: :math:`s`, factor on the projected-back updates; number, array or schedule.
      base_optimizer: the transform run in the low-rank space (default ``scale_by_adam()``).
      weight_dimension_numbers: ``None`` (project the 2-D leaves), one
        :class:`GaLoreDimensionNumbers` for every leaf of rank :math:`\ge 2`, a tree
        of them (``None`` leaves are not projected), or a function ``params -> tree``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_galore(rank=1)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> state.projector["w"].shape, state.base_optimizer_state.mu["w"].shape
      ((4, 1), (1, 3))
    """
    _check_rank(rank)
    base = as_transformation(scale_by_adam() if base_optimizer is None else base_optimizer)
    hp = {"update_proj_gap": update_proj_gap, "scale": scale}
    ranges = {"update_proj_gap": Range(1.0, integer=True), "scale": ANY}

    def init_fields(params, h):
        leaves, treedef = jax.tree.flatten(params)
        if not leaves:
            return base.init(params), params
        projectors, proxies = [], []
        for x, spec in zip(leaves, _leaf_specs(weight_dimension_numbers, params)):
            if spec is None:
                projectors.append(jnp.zeros((0, 0), x.dtype))
                proxies.append(jnp.zeros_like(x))
                continue
            proj_shape, low_shape = _shapes(rank, _layout(x, spec))
            projectors.append(jnp.zeros(proj_shape, x.dtype))
            proxies.append(jnp.zeros(low_shape, x.dtype))
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)
        return base.init(unflat(proxies)), unflat(projectors)

    def step(updates, state, params, h, count_inc):
        del params
        gap = h["update_proj_gap"]
        gap = gap if is_python_number(gap) else jnp.asarray(gap).astype(jnp.int32)
        refresh = state.count % gap == 0
        leaves, treedef = jax.tree.flatten(updates)
        specs = _leaf_specs(weight_dimension_numbers, updates)
        projectors = treedef.flatten_up_to(state.projector)
        low, new_projectors = _project(leaves, projectors, specs, rank, refresh)
        extra = {k: v for k, v in h.items() if k not in hp and k in base.extra_args}
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)
        low_updates, base_state = base.update(unflat(low), state.base_optimizer_state, None, **extra)
        full = _project_back(leaves, treedef.flatten_up_to(low_updates), new_projectors, specs, h["scale"])
        return unflat(full), (base_state, unflat(new_projectors))

    extra_args = base.extra_args
    return hyperparam_transformation(
        "scale_by_galore",
        hp,
        ranges,
        GaLoreState,
        step,
        init_fields,
        counted=True,
        cast_fields=False,
        extra_args=extra_args if isinstance(extra_args, AcceptsAnyExtraArg) else frozenset(extra_args),
    )


def _project(leaves, projectors, specs, rank: int, refresh: Array) -> tuple[list, list]:
    """Low-rank gradients and (possibly refreshed) projectors, leaf by leaf."""
    low, new_projectors = [], []
    for g, proj, spec in zip(leaves, projectors, specs):
        if spec is None:
            low.append(g)
            new_projectors.append(proj)
            continue
        layout = _layout(g, spec)
        g2d = layout.to_matrix(g)
        k = min(rank, *layout.matrix_shape)
        fresh = lambda o, layout=layout, k=k, dt=g.dtype: _projector_from_svd(o[0], layout, k, dt)  # noqa: E731
        proj = cond_across_batch(refresh, fresh, lambda o: o[1], (g2d, proj))
        dt = compute_dtype(g.dtype)
        p, g2d = proj.astype(dt), g2d.astype(dt)
        low.append((p.T @ g2d if layout.left else g2d @ p).astype(g.dtype))
        new_projectors.append(proj)
    return low, new_projectors


def _project_back(leaves, low_updates, projectors, specs, scale: Array | float) -> list:
    """Full-shape updates :math:`s P N` (or :math:`s N P^\top`), in the gradients' dtypes."""
    full = []
    for g, n, proj, spec in zip(leaves, low_updates, projectors, specs):
        if spec is None:
            full.append(n)
            continue
        layout = _layout(g, spec)
        dt = compute_dtype(jnp.promote_types(g.dtype, n.dtype))
        p, n = proj.astype(dt), n.astype(dt)
        upd = layout.from_matrix(p @ n if layout.left else n @ p.T)
        full.append((cast_hyperparam(scale, dt) * upd).astype(g.dtype))
    return full
