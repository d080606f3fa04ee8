r"""Kronecker-factored preconditioner statistics: the core shared by SOAP and Shampoo.

A leaf :math:`G` of shape :math:`(d_1, \dots, d_k)` gets one *factor* per axis,

.. math:: F_i \leftarrow \beta F_i + w\, G_{(i)} G_{(i)}^\top \in \mathbb{R}^{d_i \times d_i},

where :math:`G_{(i)}` is the mode-:math:`i` unfolding (axis :math:`i` as rows,
all other axes flattened into columns). For a matrix :math:`F_1 = L = \sum G G^\top`
and :math:`F_2 = R = \sum G^\top G` (Gupta et al., 2018); a 3-D leaf such as a
stack of layers ``(2, 8, 8)`` gets three factors (2x2, 8x8, 8x8): per-mode
factors, as Shampoo's tensor case and SOAP's reference code without
``merge_dims`` do. Preconditioners act on a leaf by mode products,
:math:`G \times_1 M_1 \times_2 \cdots \times_k M_k`.

How a leaf is cut into factors is fixed by its shape, once, in a
:class:`KroneckerLayout` (:func:`kronecker_layout`):

1. *Merging* (optional, ``merge_limit``): consecutive axes are merged while the
   product of their lengths stays at most ``merge_limit`` (SOAP's ``merge_dims``),
   e.g. ``(2, 8, 8)`` becomes ``(16, 8)`` for a limit of 16.
2. *Blocking* (optional, ``block_size``): an axis longer than ``block_size`` is cut
   into blocks of ``block_size`` (the last one shorter), and every block has its
   own factors (Anil et al., 2020). Blocks of equal shape form a
   :class:`BlockGroup` and are stacked, so one batched ``eigh`` serves them all.
3. *Skipping*: an axis gets no factor (it is left as is: identity) when its block
   length is 1, when it exceeds ``max_precond_dim``, or when the leaf is 1-D and
   ``precondition_1d`` is false. A leaf without any factor is not preconditioned.

Factors of a leaf are a tuple over block groups of a tuple over axes, each an
array of shape ``(blocks, d, d)`` or ``None`` for a skipped axis. The functions
here are pure and shape-static, for use inside transforms built with
:func:`jopt.hyperparam_transformation`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec

from jopt.hyperparams import cast_hyperparam
from jopt.tree._arithmetic import _explicitly_sharded

Array = jax.Array
Factors = tuple[tuple[Array | None, ...], ...]
Blocks = tuple[Array, ...]

__all__ = [
    "BlockGroup",
    "KroneckerLayout",
    "eigenbasis",
    "from_blocks",
    "identity_factors",
    "init_factors",
    "inverse_root",
    "kronecker_layout",
    "merged_shape",
    "mode_products",
    "null_tolerance",
    "permute_axis",
    "refine_eigenbasis",
    "to_blocks",
    "update_factors",
]

_HIGHEST = lax.Precision.HIGHEST
_AXES = "abcdefghijklmopqrstuvwxy"  # einsum letters for block axes; "n" is the block index, "z" a new axis


class BlockGroup(NamedTuple):
    """Equal-shaped blocks filling one rectangular region of a (merged) leaf.

    Attributes:
      start: offset of the region along each axis.
      count: number of blocks along each axis.
      shape: shape of each block.
      factored: whether each axis of a block carries a factor.
    """

    start: tuple[int, ...]
    count: tuple[int, ...]
    shape: tuple[int, ...]
    factored: tuple[bool, ...]

    @property
    def size(self) -> int:
        """Number of blocks in the group."""
        return math.prod(self.count)

    @property
    def num_factors(self) -> int:
        """Number of axes with a factor."""
        return sum(self.factored)


class KroneckerLayout(NamedTuple):
    """How a leaf is merged and cut into blocks (see the module docstring).

    Attributes:
      shape: the leaf's shape.
      merged: its shape after merging axes (the shape the factors see).
      groups: the block groups covering the merged leaf.
    """

    shape: tuple[int, ...]
    merged: tuple[int, ...]
    groups: tuple[BlockGroup, ...]

    @property
    def has_factors(self) -> bool:
        """Whether any axis of any block carries a factor."""
        return any(any(g.factored) for g in self.groups)


def merged_shape(shape: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """Merge consecutive axes while their product stays at most ``limit`` (SOAP's ``merge_dims``).

    Scanning from the first axis, an axis joins the running product when the
    result is at most ``limit``; otherwise the running product (if above 1) is
    emitted and the axis starts a new one, or an axis longer than ``limit`` is
    emitted alone.

    Example:
      >>> from jopt.transforms.kronecker import merged_shape
      >>> merged_shape((2, 8, 8), 16), merged_shape((3, 1, 4, 100), 12), merged_shape((1, 1), 8)
      ((16, 8), (12, 100), (1,))
    """
    out: list[int] = []
    run = 1
    for d in shape:
        if run * d <= limit:
            run *= d
        elif run > 1:
            out.append(run)
            run = d
        else:
            out.append(d)
    if run > 1 or not out:
        out.append(run)
    return tuple(out)


def _segments(d: int, block_size: int | None) -> list[tuple[int, int, int]]:
    """``(start, count, length)`` runs of equal blocks along one axis of length ``d``."""
    if block_size is None or d <= block_size:
        return [(0, 1, d)]
    full, rest = divmod(d, block_size)
    runs = [(0, full, block_size)]
    if rest:
        runs.append((full * block_size, 1, rest))
    return runs


def kronecker_layout(
    shape: tuple[int, ...],
    *,
    block_size: int | None = None,
    max_precond_dim: int | None = None,
    merge_limit: int | None = None,
    precondition_1d: bool = True,
) -> KroneckerLayout:
    """The :class:`KroneckerLayout` of a leaf of ``shape`` (see the module docstring).

    Args:
      shape: the leaf's shape.
      block_size: cut axes longer than this into blocks; ``None``: no blocking.
      max_precond_dim: axes (blocks) longer than this get no factor; ``None``: no limit.
      merge_limit: merge consecutive axes of leaves with 2 or more axes while the
        product stays at most this (:func:`merged_shape`); ``None``: no merging.
      precondition_1d: whether leaves with one axis get a factor (decided on the
        leaf's own rank, before merging).

    Example:
      >>> from jopt.transforms.kronecker import kronecker_layout
      >>> layout = kronecker_layout((10, 3), block_size=4)
      >>> [(g.count, g.shape, g.factored) for g in layout.groups]
      [((2, 1), (4, 3), (True, True)), ((1, 1), (2, 3), (True, True))]
      >>> kronecker_layout((8,), precondition_1d=False).has_factors
      False
    """
    shape = tuple(int(d) for d in shape)
    merged = merged_shape(shape, merge_limit) if merge_limit is not None and len(shape) > 1 else shape
    allowed = precondition_1d or len(shape) != 1

    def factored(length: int) -> bool:
        return allowed and length > 1 and (max_precond_dim is None or length <= max_precond_dim)

    groups = []
    for runs in itertools.product(*(_segments(d, block_size) for d in merged)):
        starts, counts, lengths = (tuple(r[j] for r in runs) for j in range(3))
        groups.append(BlockGroup(starts, counts, lengths, tuple(factored(n) for n in lengths)))
    return KroneckerLayout(shape, merged, tuple(groups))


def _region(group: BlockGroup) -> tuple[slice, ...]:
    return tuple(slice(s, s + c * n) for s, c, n in zip(group.start, group.count, group.shape))


def to_blocks(x: Array, layout: KroneckerLayout) -> Blocks:
    """A leaf as one stacked array ``(blocks, *block_shape)`` per block group.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.kronecker import kronecker_layout, to_blocks
      >>> blocks = to_blocks(jnp.arange(6.0).reshape(3, 2), kronecker_layout((3, 2), block_size=2))
      >>> [b.shape for b in blocks]
      [(1, 2, 2), (1, 1, 2)]
    """
    x = jnp.reshape(x, layout.merged)
    out = []
    for g in layout.groups:
        k = len(g.shape)
        interleaved = [v for c, n in zip(g.count, g.shape) for v in (c, n)]
        y = jnp.reshape(x[_region(g)], interleaved)
        y = jnp.transpose(y, [*range(0, 2 * k, 2), *range(1, 2 * k, 2)])
        out.append(jnp.reshape(y, (g.size, *g.shape)))
    return tuple(out)


def from_blocks(blocks: Blocks, layout: KroneckerLayout) -> Array:
    """Inverse of :func:`to_blocks`: the leaf of ``layout.shape`` assembled from its block groups.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.kronecker import from_blocks, kronecker_layout, to_blocks
      >>> layout = kronecker_layout((5, 3), block_size=2)
      >>> x = jnp.arange(15.0).reshape(5, 3)
      >>> bool(jnp.array_equal(from_blocks(to_blocks(x, layout), layout), x))
      True
    """
    pieces = []
    for g, y in zip(layout.groups, blocks):
        k = len(g.shape)
        y = jnp.reshape(y, (*g.count, *g.shape))
        y = jnp.transpose(y, [j for i in range(k) for j in (i, k + i)])
        pieces.append(jnp.reshape(y, [c * n for c, n in zip(g.count, g.shape)]))
    if len(pieces) == 1:
        return jnp.reshape(pieces[0], layout.shape)
    out = jnp.zeros(layout.merged, pieces[0].dtype)
    for g, piece in zip(layout.groups, pieces):
        out = out.at[_region(g)].set(piece)
    return jnp.reshape(out, layout.shape)


def init_factors(layout: KroneckerLayout, dtype: Any) -> Factors:
    """Zero factors ``(blocks, d, d)`` for every factored axis, ``None`` for the others."""
    return tuple(
        tuple(jnp.zeros((g.size, n, n), dtype) if f else None for n, f in zip(g.shape, g.factored))
        for g in layout.groups
    )


def identity_factors(layout: KroneckerLayout, dtype: Any) -> Factors:
    """Identity matrices in the places :func:`init_factors` puts zeros (e.g. initial bases)."""
    return tuple(
        tuple(
            jnp.broadcast_to(jnp.eye(n, dtype=dtype), (g.size, n, n)) if f else None
            for n, f in zip(g.shape, g.factored)
        )
        for g in layout.groups
    )


def _gram(y: Array, axis: int) -> Array:
    """``(blocks, d, d)``: :math:`G_{(i)} G_{(i)}^\\top` of each block along ``axis``."""
    idx = _AXES[: y.ndim - 1]
    other = idx[:axis] + "z" + idx[axis + 1 :]
    # Sharded gradients (FSDP) give replicated factors, like the factors' initial state.
    replicated = {"out_sharding": PartitionSpec()} if _explicitly_sharded(y) else {}
    return jnp.einsum(f"n{idx},n{other}->n{idx[axis]}z", y, y, precision=_HIGHEST, **replicated)


def update_factors(factors: Factors, blocks: Blocks, decay: Any, weight: Any) -> Factors:
    r"""Every factor as :math:`\beta F_i + w\, G_{(i)} G_{(i)}^\top`.

    ``decay`` is :math:`\beta` and ``weight`` :math:`w` (numbers or arrays).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.kronecker import init_factors, kronecker_layout, to_blocks, update_factors
      >>> layout = kronecker_layout((2, 3))
      >>> g = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
      >>> (left, right), = update_factors(init_factors(layout, g.dtype), to_blocks(g, layout), 0.0, 1.0)
      >>> left[0].tolist(), right[0].diagonal().tolist()
      ([[1.0, 0.0], [0.0, 4.0]], [1.0, 4.0, 0.0])
    """
    return tuple(
        tuple(None if f is None else decay * f + weight * _gram(y, i) for i, f in enumerate(fs))
        for fs, y in zip(factors, blocks)
    )


def _mode_product(y: Array, m: Array, axis: int, transpose: bool) -> Array:
    """Multiply axis ``axis`` of each block by ``m^T`` (``transpose``) or ``m``."""
    idx = _AXES[: y.ndim - 1]
    out = idx[:axis] + "z" + idx[axis + 1 :]
    msub = f"n{idx[axis]}z" if transpose else f"nz{idx[axis]}"
    return jnp.einsum(f"n{idx},{msub}->n{out}", y, m, precision=_HIGHEST)


def mode_products(blocks: Blocks, mats: Factors, *, transpose: bool) -> Blocks:
    r"""Mode products, one matrix per factored axis: :math:`G \times_i M_i^\top` or :math:`G \times_i M_i`.

    With eigenbases :math:`Q_i`, ``transpose=True`` rotates into the basis
    (:math:`Q_L^\top G Q_R` for a matrix) and ``transpose=False`` rotates back
    (:math:`Q_L G Q_R^\top`). Axes whose matrix is ``None`` are left as they are.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.kronecker import kronecker_layout, mode_products, to_blocks
      >>> layout = kronecker_layout((2, 2))
      >>> swap = jnp.array([[[0.0, 1.0], [1.0, 0.0]]])
      >>> g = jnp.array([[1.0, 2.0], [3.0, 4.0]])
      >>> mode_products(to_blocks(g, layout), ((swap, None),), transpose=True)[0][0].tolist()
      [[3.0, 4.0], [1.0, 2.0]]
    """
    out = []
    for y, ms in zip(blocks, mats):
        for axis, m in enumerate(ms):
            if m is not None:
                y = _mode_product(y, m.astype(y.dtype), axis, transpose)
        out.append(y)
    return tuple(out)


def null_tolerance(scale: Array, n: int, dtype: Any) -> Array:
    r"""Eigenvalues up to :math:`100 \sqrt{n}\, \varepsilon_{\text{mach}} \lambda_{\max}` count as zero."""
    return 100.0 * math.sqrt(n) * float(jnp.finfo(dtype).eps) * jnp.maximum(scale, 0)


def eigenbasis(f: Array) -> Array:
    r"""Eigenvectors of each symmetric ``f`` (``(blocks, d, d)``), columns by descending eigenvalue.

    Eigenvectors of eigenvalues above :func:`null_tolerance` are ``eigh``'s. The
    null space (e.g. of a first factor :math:`G G^\top` of a wide gradient) has
    no preferred basis, and the one ``eigh`` returns depends on rounding; it is
    replaced by a canonical one: the leading eigenvectors of :math:`P D P`, with
    :math:`P` the projector onto the null space and
    :math:`D = \operatorname{diag}(d, d - 1, \dots, 1)`. So runs that differ only
    in rounding (jit or not, batched or not, another device) get the same basis.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.kronecker import eigenbasis
      >>> eigenbasis(jnp.array([[[1.0, 0.0], [0.0, 3.0]]]))[0].tolist()
      [[0.0, 1.0], [1.0, 0.0]]
      >>> eigenbasis(jnp.zeros((1, 3, 3)))[0].tolist()  # all null: the canonical basis
      [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    values, vectors = jnp.linalg.eigh(f)
    values, vectors = values[..., ::-1], vectors[..., ::-1]
    n = f.shape[-1]
    keep = values > null_tolerance(values[..., :1], n, f.dtype)
    proj = jnp.eye(n, dtype=f.dtype) - jnp.einsum(
        "naj,nj,nbj->nab", vectors, keep.astype(f.dtype), vectors, precision=_HIGHEST
    )
    weights = jnp.arange(n, 0, -1).astype(f.dtype)
    _, canonical = jnp.linalg.eigh(jnp.einsum("nab,b,nbc->nac", proj, weights, proj, precision=_HIGHEST))
    rank = jnp.sum(keep, axis=-1, keepdims=True)
    position = jnp.clip(jnp.arange(n) - rank, 0, n - 1)  # j-th null column takes the j-th canonical vector
    canonical = jnp.take_along_axis(canonical[..., ::-1], position[:, None, :], axis=2)
    return jnp.where(keep[:, None, :], vectors, canonical)


def refine_eigenbasis(f: Array, q: Array) -> tuple[Array, Array]:
    r"""One QR power-iteration step towards the eigenbasis of ``f`` from ``q`` (SOAP's refresh).

    The columns of :math:`Q` are sorted by their Rayleigh quotients
    :math:`\operatorname{diag}(Q^\top F Q)`, largest first (permutation :math:`\pi`), and
    :math:`Q' = \operatorname{qr}\big((F + \mu I) Q_{\cdot\pi}\big)`'s orthogonal factor.
    The shift :math:`\mu` (:func:`null_tolerance` of the largest quotient) leaves
    the iteration's eigenvectors unchanged; it makes columns in the null space of
    :math:`F` continue from the previous basis instead of from rounding noise.

    Returns:
      ``(q_new, order)``: the new basis and the permutation :math:`\pi` per block
      (``(blocks, d)`` indices), to reorder moments kept in the old basis.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.kronecker import refine_eigenbasis
      >>> q, order = refine_eigenbasis(jnp.array([[[1.0, 0.0], [0.0, 3.0]]]), jnp.eye(2)[None])
      >>> order.tolist(), jnp.abs(q).tolist()
      ([[1, 0]], [[[0.0, 1.0], [1.0, 0.0]]])
    """
    fq = jnp.einsum("nab,nbj->naj", f, q, precision=_HIGHEST)
    quotients = jnp.sum(q * fq, axis=1)
    order = jnp.argsort(-quotients, axis=-1)
    shift = null_tolerance(jnp.max(quotients, axis=-1), f.shape[-1], f.dtype)[:, None, None]
    q_new, _ = jnp.linalg.qr(jnp.take_along_axis(fq + shift * q, order[:, None, :], axis=2))
    return q_new, order


def permute_axis(y: Array, order: Array, axis: int) -> Array:
    """Reorder axis ``axis`` of each block of ``y`` (``(blocks, ...)``) by ``order`` (``(blocks, d)``)."""
    shape = [order.shape[0]] + [1] * (y.ndim - 1)
    shape[1 + axis] = order.shape[1]
    if _explicitly_sharded(y):  # a gather along a sharded axis: gather the blocks first
        gathered = jax.sharding.reshard(y, PartitionSpec())
        out = jnp.take_along_axis(gathered, jnp.reshape(order, shape), axis=1 + axis)
        return jax.sharding.reshard(out, jax.typeof(y).sharding.spec)
    return jnp.take_along_axis(y, jnp.reshape(order, shape), axis=1 + axis)


def inverse_root(f: Array, p: int | float, eps: Any, dtype: Any | None = None) -> Array:
    r""":math:`(F + \epsilon I)^{-1/p}` of each symmetric PSD ``f`` via ``eigh``.

    Computed as :math:`V \operatorname{diag}\big((\max(\lambda, 0) + \epsilon)^{-1/p}\big) V^\top`
    (eigenvalues below 0 from rounding are clipped to 0) in ``dtype`` (e.g.
    ``jnp.float64`` under x64; ``None``: the dtype of ``f``); the result has the
    dtype of ``f``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.kronecker import inverse_root
      >>> print(inverse_root(jnp.array([[[16.0, 0.0], [0.0, 81.0]]]), 4, 0.0)[0].round(4))
      [[0.5    0.    ]
       [0.     0.3333]]
    """
    work = f if dtype is None else f.astype(dtype)
    values, vectors = jnp.linalg.eigh(work)
    scale = (jnp.maximum(values, 0) + cast_hyperparam(eps, work.dtype)) ** (-1.0 / p)
    root = jnp.einsum("nab,nb,ncb->nac", vectors, scale, vectors, precision=_HIGHEST)
    return root.astype(f.dtype)
