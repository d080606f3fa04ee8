r"""Newton–Schulz orthogonalisation of matrices (Muon's step), batched over equal shapes and sharded.

For :math:`G = U \Sigma V^{\mathsf H}` an odd matrix polynomial iterated from a
normalised :math:`G` drives every singular value towards one, approximating the
orthogonal polar factor :math:`U V^{\mathsf H}` with matrix products only:

.. math::

    X_0 = \frac{G}{\|G\|_F + \varepsilon}, \qquad
    A_k = X_k X_k^{\mathsf H}, \qquad
    X_{k+1} = a X_k + (b A_k + c A_k^2)\, X_k .

Muon's default coefficients :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`
(Jordan et al., 2024) maximise the slope at zero: the singular values end in
roughly :math:`[0.7, 1.2]`, not at one, which trains as well and needs five steps.
A ``(n, 3)`` array gives one coefficient triple per step (e.g. the ``"dion"``
preset, Ahn et al. 2025). Other starting scalings (``preconditioning``):
``"spectral"`` divides by the largest singular value, ``"aol"`` (Boissin et al.,
2025) and ``"schatten"`` (Grishina et al., 2025) rescale inside the first step.

**Layout.** A parameter of any rank is read as a stack of matrices through
:class:`MuonDimensionNumbers`: the reduction axes become the rows, the output
axes the columns and every other axis a batch axis (stacked layers, MoE
experts, convolution taps). Each matrix is iterated in its wide orientation
(rows :math:`\le` columns), since the iteration commutes with transposition.

**Batching.** :func:`orthogonalize_leaves` groups the matrices of all leaves by
(rows, columns, dtype) (:func:`group_matrices`), concatenates each group into one
``(B, rows, cols)`` stack and runs one chain of batched matrix products per
group: a model with 48 attention matrices of one shape runs ``3 * ns_steps``
batched products, not ``144 * ns_steps`` small ones. Each leaf's starting norm
is taken on the leaf before stacking (a reduction's rounding depends on its
shape). The batched products do *not* always round like separate ones: XLA's
CPU kernel for a ``(B, 32, 32)`` Gram product differs in the last bit from the
``(32, 32)`` one (``(16, 16)``, ``(64, 64)`` or ``(256, 512)`` agree), and other
backends promise nothing. So stacking changes the arithmetic by float32
rounding; leaf-by-leaf iteration (``batch=False``, what :func:`jopt.muon` does
unless ``batch_matrices=True``) is optax's computation bit for bit.

**Sharding.** With a device mesh in context (``jax.set_mesh(mesh)``, or
parameters carrying explicit-axis shardings) each group's stack is padded with
zero matrices to a multiple of the number of devices and constrained to be
sharded along its leading axis over the mesh axes (``mesh_axes``): XLA moves
each matrix to the device owning its slot with one all-to-all, every device
iterates only its own matrices (local products, no communication), and a second
all-to-all returns the results to the parameters' layout. No device gathers
every matrix. Zero padding stays zero. Reductions are then taken over each
device's block, so the result equals the single-device one to float32
rounding rather than bit for bit. With explicit axes every result gets its
leaf's sharding back; with ``Auto`` axes the layout of the results is left to
XLA's propagation, so jit the step with ``out_shardings`` (the usual FSDP step)
to bring the updates back to the parameters' layout. Without any mesh in
context (plain ``jit`` over ``Auto``-sharded inputs) nothing is constrained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from jopt.hyperparams import cast_hyperparam, compute_dtype

Array = jax.Array

__all__ = [
    "DEFAULT_NS_COEFFS",
    "DION_NS_COEFFS",
    "NS_COEFFS_PRESETS",
    "PRECONDITIONINGS",
    "MatrixGroup",
    "MatrixLayout",
    "MuonDimensionNumbers",
    "group_matrices",
    "is_dimension_numbers",
    "leaf_dimension_numbers",
    "matrix_layout",
    "newton_schulz",
    "normalize_matrices",
    "orthogonalize_leaves",
    "orthogonalize_via_newton_schulz",
]

PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
"""Muon's quintic coefficients (Jordan et al., 2024)."""
DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
"""Per-step coefficients of Dion (Ahn et al., 2025), one row per Newton–Schulz step."""
NS_COEFFS_PRESETS = {"standard": DEFAULT_NS_COEFFS, "dion": DION_NS_COEFFS}
# The "aol" and "schatten" first steps floor their rescaling at this constant (optax's rule;
# the ``eps`` argument is used by the "frobenius" and "spectral" starting norms only).
_RESCALE_FLOOR = 1e-8


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight are the rows (reduction) and columns (output) of its matrices.

    For :math:`y = x W` the default, reduction axis 0 and output axis 1, is the
    2-D weight itself. Axes named in neither are batch axes: each index of them
    is a separate matrix (a ``(layers, d_in, d_out)`` stack uses ``(1, 2)``). An
    axis may be a tuple of axes, flattened in order (a convolution kernel
    ``(h, w, c_in, c_out)`` as one matrix: ``reduction_axis=(0, 1, 2), output_axis=3``).
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


def is_dimension_numbers(x: Any) -> bool:
    """Whether ``x`` is a :class:`MuonDimensionNumbers` (or optax's: any tuple with its two fields)."""
    return isinstance(x, tuple) and hasattr(x, "reduction_axis") and hasattr(x, "output_axis")


def _is_dims_leaf(x: Any) -> bool:
    return x is None or is_dimension_numbers(x)


class MatrixLayout(NamedTuple):
    """A leaf read as a stack of matrices: static, derived from its shape by :func:`matrix_layout`.

    Attributes:
      shape: the leaf's shape.
      perm: axis order (batch axes, reduction axes, output axes).
      flat: ``(batch, fan_in, fan_out)``.
      transposed: whether the matrices are iterated as ``(fan_out, fan_in)`` (when fan_in > fan_out).
    """

    shape: tuple[int, ...]
    perm: tuple[int, ...]
    flat: tuple[int, int, int]
    transposed: bool

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the matrices as iterated (rows <= cols)."""
        _, fan_in, fan_out = self.flat
        return (fan_out, fan_in) if self.transposed else (fan_in, fan_out)


def _axes(axis: Sequence[int] | int, ndim: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for ax in axes:
        if not -ndim <= int(ax) < ndim:
            raise ValueError(f"MuonDimensionNumbers: axis {ax} is out of range for a weight of shape {shape}")
    return tuple(int(ax) % ndim for ax in axes)


def matrix_layout(
    shape: Sequence[int], dimension_numbers: MuonDimensionNumbers | None = None
) -> MatrixLayout:
    """The :class:`MatrixLayout` of a leaf of ``shape`` under ``dimension_numbers`` (default: 2-D).

    Raises:
      ValueError: for a leaf of rank below 2, axes out of range, or axes named twice.

    Example:
      >>> from jopt.transforms.orthogonalize import MuonDimensionNumbers, matrix_layout
      >>> layout = matrix_layout((2, 8, 4), MuonDimensionNumbers(1, 2))
      >>> layout.flat, layout.matrix_shape
      ((2, 8, 4), (4, 8))
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"Muon orthogonalises weights of rank >= 2, got a leaf of shape {shape}")
    dims = dimension_numbers if dimension_numbers is not None else MuonDimensionNumbers()
    reduction, output = _axes(dims.reduction_axis, ndim, shape), _axes(dims.output_axis, ndim, shape)
    named = reduction + output
    if len(set(named)) != len(named):
        raise ValueError(
            f"MuonDimensionNumbers: reduction axes {reduction} and output axes {output} must be distinct "
            f"(weight of shape {shape})"
        )
    batch = tuple(ax for ax in range(ndim) if ax not in named)
    size = lambda axes: math.prod(shape[ax] for ax in axes)
    flat = (size(batch), size(reduction), size(output))
    return MatrixLayout(shape, batch + reduction + output, flat, flat[1] > flat[2])


def to_matrices(x: Array, layout: MatrixLayout) -> Array:
    """The leaf ``x`` as a ``(batch, rows, cols)`` stack (rows <= cols), in at least float32."""
    m = x.astype(compute_dtype(x.dtype)).transpose(layout.perm).reshape(layout.flat)
    return jnp.swapaxes(m, 1, 2) if layout.transposed else m


def from_matrices(m: Array, layout: MatrixLayout) -> Array:
    """Inverse of :func:`to_matrices` (keeps ``m``'s dtype)."""
    m = jnp.swapaxes(m, 1, 2) if layout.transposed else m
    inverse = tuple(int(i) for i in np.argsort(layout.perm))
    return m.reshape(tuple(layout.shape[ax] for ax in layout.perm)).transpose(inverse)


# --------------------------------------------------------------------------- the iteration


def _polynomial(x: Array, a: Array, c: Array) -> Array:
    """:math:`c_0 X + (c_1 A + c_2 A^2) X` for one matrix."""
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _plain_step(x: Array, c: Array) -> Array:
    return _polynomial(x, x @ x.T.conj(), c)


def _aol_rescaled(x: Array, a: Array, rowsum: Array, c: Array) -> Array:
    s = jnp.expand_dims(jax.lax.rsqrt(rowsum), -1)
    x, a = x * s, a * s * s.transpose(-1, -2)
    return _polynomial(x, a, c)


def _schatten_rescaled(x: Array, a: Array, norm: Array, c: Array) -> Array:
    s = jnp.expand_dims(jax.lax.rsqrt(norm), (0, -1))
    return _polynomial(x * s, a * s**2, c)


def _first_step(x: Array, c: Array, preconditioning: str) -> Array:
    """The first iteration; ``"aol"``/``"schatten"`` rescale :math:`X_0` and :math:`A_0` inside it."""
    if preconditioning == "aol":
        a = jax.vmap(lambda m: m @ m.T.conj())(x)
        rowsum = jnp.clip(jnp.abs(a).sum(axis=-1), min=_RESCALE_FLOOR)
        return jax.vmap(_aol_rescaled, (0, 0, 0, None))(x, a, rowsum, c)
    if preconditioning == "schatten":
        a = jax.vmap(lambda m: m @ m.T)(x)
        norm = jnp.clip(jnp.linalg.norm(a, ord="fro", axis=(-2, -1)), min=_RESCALE_FLOOR)
        return jax.vmap(_schatten_rescaled, (0, 0, 0, None))(x, a, norm, c)
    return jax.vmap(_plain_step, (0, None))(x, c)


def _check_coeffs(shape: tuple[int, ...], ns_steps: int) -> None:
    if len(shape) not in (1, 2) or shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got {shape}")
    if len(shape) == 2 and shape[0] > ns_steps:
        raise ValueError(f"ns_coeffs has {shape[0]} rows, more than ns_steps={ns_steps}")


def check_ns_options(preconditioning: str, ns_steps: Any) -> int:
    """Validate the structural options; returns ``ns_steps`` as an int."""
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(f"preconditioning must be one of {list(PRECONDITIONINGS)}, got {preconditioning!r}")
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, (int, np.integer)) or ns_steps < 0:
        raise ValueError(
            f"ns_steps must be an integer >= 0 (it fixes the number of products), got {ns_steps!r}"
        )
    return int(ns_steps)


def normalize_matrices(stack: Array, preconditioning: str = "frobenius", eps: Array | float = 1e-8) -> Array:
    r"""The starting point :math:`X_0` of :func:`newton_schulz` for a ``(B, rows, cols)`` stack.

    .. math:: X_0 = G / (\|G\|_F + \varepsilon) \ (\text{"frobenius"}), \quad
        G / (\|G\|_2 + \varepsilon) \ (\text{"spectral"}), \quad G \ (\text{"aol", "schatten"})

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.orthogonalize import normalize_matrices
      >>> print(normalize_matrices(jnp.full((1, 2, 2), 2.0), eps=0.0)[0])
      [[0.5 0.5]
       [0.5 0.5]]
    """
    if preconditioning not in ("frobenius", "spectral"):
        return stack
    order = "fro" if preconditioning == "frobenius" else 2
    norm = jax.vmap(lambda m: jnp.linalg.norm(m, ord=order))(stack)
    eps = cast_hyperparam(eps, norm.dtype)
    return jax.vmap(lambda m, n: m / (n + eps))(stack, norm)


def newton_schulz(
    stack: Array,
    ns_coeffs: Array | Sequence[float],
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: Array | float = 1e-8,
    *,
    normalize: bool = True,
) -> Array:
    r"""Orthogonalise a ``(B, rows, cols)`` stack (rows <= cols) with one chain of batched products.

    .. math::
        X_0 = G / (\|G\|_F + \varepsilon), \qquad
        X_{k+1} = a_k X_k + (b_k A_k + c_k A_k^2) X_k, \quad A_k = X_k X_k^{\mathsf H}

    Args:
      stack: the matrices, in the dtype the iteration runs in.
      ns_coeffs: ``(3,)`` (every step) or ``(n, 3)`` (one row per step; then
        ``n <= ns_steps`` and ``n`` steps run, as in optax).
      ns_steps: number of steps for ``(3,)`` coefficients.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      eps: :math:`\varepsilon` of the ``"frobenius"``/``"spectral"`` starting norm.
      normalize: start with :func:`normalize_matrices` (``False``: ``stack`` is :math:`X_0`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.orthogonalize import DEFAULT_NS_COEFFS, newton_schulz
      >>> x = newton_schulz(jnp.eye(2)[None] * 3.0, DEFAULT_NS_COEFFS)
      >>> x.shape, bool(jnp.allclose(x[0], x[0, 0, 0] * jnp.eye(2)))
      ((1, 2, 2), True)
    """
    coeffs = cast_hyperparam(jnp.asarray(ns_coeffs), stack.dtype)
    _check_coeffs(tuple(coeffs.shape), ns_steps)
    x = normalize_matrices(stack, preconditioning, eps) if normalize else stack
    plain = lambda x, c: jax.vmap(_plain_step, (0, None))(x, c)
    if coeffs.ndim == 1:  # unrolled, as optax's unrolled loop
        for i in range(ns_steps):
            x = _first_step(x, coeffs, preconditioning) if i == 0 else plain(x, coeffs)
        return x

    # One row per step: a scan over the rows, as optax's (XLA fuses a loop body differently).
    def body(carry, c):
        i, x = carry
        if preconditioning in ("aol", "schatten"):
            x = jax.lax.cond(i == 0, lambda x: _first_step(x, c, preconditioning), lambda x: plain(x, c), x)
        else:
            x = plain(x, c)
        return (i + 1, x), None

    (_, x), _ = jax.lax.scan(body, (jnp.zeros([], jnp.int32), x), coeffs)
    return x


def orthogonalize_via_newton_schulz(
    x: Array,
    ns_coeffs: Array | Sequence[float],
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: Array | float = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> Array:
    r"""Orthogonalise one weight (every matrix of it, see :class:`MuonDimensionNumbers`).

    .. math:: X \approx U V^{\mathsf H} \quad \text{for } X = U \Sigma V^{\mathsf H}

    optax's function of the same name; computed in at least float32 and
    returned in ``x``'s dtype. See :func:`newton_schulz` for the arguments.

    Raises:
      ValueError: for a weight that is not 2-D without dimension numbers, bad
        coefficient shapes, or an unknown preconditioning.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.orthogonalize import orthogonalize_via_newton_schulz
      >>> q = orthogonalize_via_newton_schulz(jnp.array([[3.0, 0.0], [0.0, 1.0]]), (2.0, -1.5, 0.5), 30)
      >>> print(q.round(3))
      [[1. 0.]
       [0. 1.]]
    """
    if x.ndim != 2 and not is_dimension_numbers(dimension_numbers):
        raise ValueError(f"a weight of shape {x.shape} needs MuonDimensionNumbers (only 2-D is the default)")
    ns_steps = check_ns_options(preconditioning, ns_steps)
    layout = matrix_layout(x.shape, dimension_numbers if x.ndim != 2 else None)
    out = newton_schulz(to_matrices(x, layout), ns_coeffs, ns_steps, preconditioning, eps)
    return from_matrices(out, layout).astype(x.dtype)


# --------------------------------------------------------------------------- many leaves


class MatrixGroup(NamedTuple):
    """Leaves whose matrices share ``(rows, cols)`` and dtype: one stack, one chain of products.

    Attributes:
      matrix_shape: ``(rows, cols)`` as iterated.
      dtype: the dtype the iteration runs in.
      members: indices of the leaves, in order.
      sizes: number of matrices each member contributes (its batch size).
    """

    matrix_shape: tuple[int, int]
    dtype: Any
    members: tuple[int, ...]
    sizes: tuple[int, ...]


def group_matrices(
    layouts: Sequence[MatrixLayout], dtypes: Sequence[Any], *, batch: bool = True
) -> list[MatrixGroup]:
    """Group leaves by the shape and dtype of their matrices (in order of first appearance).

    With ``batch=False`` every leaf is a group of its own (leaf-by-leaf iteration).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.orthogonalize import group_matrices, matrix_layout
      >>> layouts = [matrix_layout(s) for s in [(8, 4), (4, 8), (3, 5)]]
      >>> [(g.matrix_shape, g.members) for g in group_matrices(layouts, [jnp.float32] * 3)]
      [((4, 8), (0, 1)), ((3, 5), (2,))]
    """
    groups: dict[tuple, list[int]] = {}
    for i, (layout, dtype) in enumerate(zip(layouts, dtypes, strict=True)):
        key = (layout.matrix_shape, jnp.dtype(compute_dtype(dtype)), None if batch else i)
        groups.setdefault(key, []).append(i)
    return [
        MatrixGroup(shape, dtype, tuple(idx), tuple(layouts[i].flat[0] for i in idx))
        for (shape, dtype, _), idx in groups.items()
    ]


def leaf_dimension_numbers(spec: Any, tree: Any, owner: str) -> list[MuonDimensionNumbers]:
    """One :class:`MuonDimensionNumbers` per array leaf of ``tree`` from a spec.

    ``spec`` is ``None`` (every leaf 2-D), one :class:`MuonDimensionNumbers` for
    every leaf, a pytree prefix of ``tree`` with such leaves (``None`` allowed
    over subtrees without arrays, e.g. masked ones), or a function ``tree -> spec``.

    Raises:
      ValueError: when an array leaf has no dimension numbers.
    """
    if spec is None:
        return [MuonDimensionNumbers()] * len(jax.tree.leaves(tree))
    if callable(spec) and not is_dimension_numbers(spec):
        spec = spec(tree)
    specs, treedef = jax.tree.flatten(spec, is_leaf=_is_dims_leaf)
    result = []
    for dims, sub in zip(specs, treedef.flatten_up_to(tree)):
        leaves = jax.tree.leaves(sub)
        if dims is None and leaves:
            raise ValueError(
                f"{owner}: weight_dimension_numbers is None for a leaf of shape {leaves[0].shape}; "
                "give it MuonDimensionNumbers, or route it to another transform (muon does)"
            )
        result.extend([dims] * len(leaves))
    return result


def _context_mesh(leaves: Sequence[Array]) -> Any:
    """The mesh in context, else the explicit-axis mesh of a leaf, else ``None``."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh
    for x in leaves:
        sharding = getattr(jax.typeof(x), "sharding", None)
        leaf_mesh = getattr(sharding, "mesh", None)
        if leaf_mesh is not None and not leaf_mesh.empty and AxisType.Explicit in leaf_mesh.axis_types:
            return leaf_mesh
    return None


def _stack_axes(mesh: Any, mesh_axes: Any) -> tuple[str, ...]:
    """The mesh axes the stacks' leading axis is sharded over (empty: no constraint)."""
    if mesh is None or mesh_axes is None:
        if mesh is None and mesh_axes not in (None, "auto"):
            raise ValueError(f"ns_mesh_axes={mesh_axes!r} names mesh axes, but no mesh is set (jax.set_mesh)")
        return ()
    usable = [n for n, t in zip(mesh.axis_names, mesh.axis_types) if t != AxisType.Manual]
    axes = (
        tuple(usable)
        if mesh_axes == "auto"
        else ((mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes))
    )
    unknown = [a for a in axes if a not in usable]
    if unknown:
        raise ValueError(f"ns_mesh_axes {unknown} are not (non-manual) axes of the mesh {mesh.axis_names}")
    return axes if math.prod(mesh.shape[a] for a in axes) > 1 else ()


def _orthogonalize_group(
    stack: Array, ns: Callable[[Array], Array], axes: tuple[str, ...], mesh: Any
) -> Array:
    """One group's stack through :func:`newton_schulz`, its leading axis sharded over ``axes``."""
    if not axes:
        return ns(stack)
    n = math.prod(mesh.shape[a] for a in axes)
    total = stack.shape[0]
    pad = -total % n
    if pad:
        stack = jnp.concatenate([stack, jnp.zeros((pad, *stack.shape[1:]), stack.dtype)])
    spec = P(axes if len(axes) > 1 else axes[0])
    out = ns(jax.lax.with_sharding_constraint(stack, spec))
    return jax.lax.with_sharding_constraint(out, spec)[:total]


def orthogonalize_leaves(
    leaves: Sequence[Array],
    dimension_numbers: Sequence[MuonDimensionNumbers | None],
    ns_coeffs: Array | Sequence[float],
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: Array | float = 1e-8,
    *,
    batch: bool = True,
    mesh_axes: str | Sequence[str] | None = "auto",
) -> list[Array]:
    r"""Orthogonalise every leaf, one batched chain of products per group of equal matrix shapes.

    .. math:: W_l \mapsto \operatorname{NS}(W_l) \text{ for each matrix of each leaf } l

    Leaves are grouped by :func:`group_matrices`, stacked, iterated by
    :func:`newton_schulz` and split back (see the module docstring for the
    batching and sharding strategy).

    Args:
      leaves: the weights (any rank >= 2).
      dimension_numbers: one :class:`MuonDimensionNumbers` (or ``None``: 2-D) per leaf.
      ns_coeffs, ns_steps, preconditioning, eps: see :func:`newton_schulz`.
      batch: stack the leaves whose matrices share a shape (``False``: leaf by
        leaf, optax's arithmetic exactly; a mesh in context always stacks).
      mesh_axes: mesh axes to shard each stack's leading axis over: ``"auto"``
        (every non-manual axis of the mesh in context; nothing without a mesh),
        a name or tuple of names, or ``None`` (no constraint: XLA chooses, and
        typically gathers each sharded matrix on every device).

    Returns:
      The orthogonalised leaves, in the dtype the iteration ran in (at least float32).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.orthogonalize import DEFAULT_NS_COEFFS, orthogonalize_leaves
      >>> out = orthogonalize_leaves([jnp.ones((2, 3)), jnp.eye(3)[:2]], [None, None], DEFAULT_NS_COEFFS)
      >>> [o.shape for o in out]
      [(2, 3), (2, 3)]
    """
    layouts = [matrix_layout(x.shape, d) for x, d in zip(leaves, dimension_numbers, strict=True)]
    mesh = _context_mesh(leaves)
    axes = _stack_axes(mesh, mesh_axes)
    groups = group_matrices(layouts, [x.dtype for x in leaves], batch=batch or bool(axes))

    def ns(stack):
        return newton_schulz(stack, ns_coeffs, ns_steps, preconditioning, eps, normalize=False)

    def run(leaves):
        out: list[Any] = [None] * len(leaves)
        for group in groups:
            # Each leaf's starting norm on the leaf itself: a reduction's rounding depends on its shape.
            mats = [
                normalize_matrices(to_matrices(leaves[i], layouts[i]), preconditioning, eps)
                for i in group.members
            ]
            stack = mats[0] if len(mats) == 1 else jnp.concatenate(mats)
            result = _orthogonalize_group(stack, ns, axes, mesh)
            bounds = np.cumsum([0, *group.sizes])
            for i, a, b in zip(group.members, bounds[:-1], bounds[1:]):
                out[i] = from_matrices(result[a:b] if len(mats) > 1 else result, layouts[i])
        return out

    if mesh is None or AxisType.Explicit not in mesh.axis_types:
        return run(list(leaves))
    # Explicit axes: let the compiler place the intermediates (under our constraints) and give
    # every result its leaf's sharding back.
    shardings = [jax.typeof(x).sharding for x in leaves]
    out_specs = [s.spec if getattr(s, "mesh", None) == mesh else P() for s in shardings]
    with jax.sharding.use_abstract_mesh(mesh):
        return jax.sharding.auto_axes(run, out_sharding=out_specs)(list(leaves))
