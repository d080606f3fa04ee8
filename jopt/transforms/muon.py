r"""Muon's transforms: orthogonalised momentum (:func:`scale_by_muon`), scaling by shape.

Muon (Jordan et al., 2024) replaces the momentum of each weight matrix by an
approximately orthogonal matrix with the same singular vectors (Newton–Schulz
iterations, :mod:`jopt.transforms.orthogonalize`): steepest descent under the
spectral norm. optax's names, arguments and defaults (``optax.contrib``); every
numeric hyperparameter (``beta``, ``eps``, ``ns_coeffs``, ``consistent_rms``)
may be a number, an array, a traced value or a schedule.

The matrices of all weights are orthogonalised leaf by leaf by default (optax's
arithmetic, bit for bit); ``batch_matrices=True`` stacks the weights whose
matrices share a shape into one batched chain of products. Under a device mesh
(``jax.set_mesh``, or explicit-axis shardings) the stacks are always formed and
sharded along their leading axis so that each device orthogonalises its own
matrices (``ns_mesh_axes``; see :mod:`jopt.transforms.orthogonalize`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import ANY, NONNEGATIVE, UNIT, Hyperparam, cast_hyperparam, compute_dtype, is_concrete
from jopt.transforms.orthogonalize import (
    DEFAULT_NS_COEFFS,
    NS_COEFFS_PRESETS,
    MuonDimensionNumbers,
    check_ns_options,
    leaf_dimension_numbers,
    matrix_layout,
    orthogonalize_leaves,
)
from jopt.tree import safe_increment, tree_bias_correction, tree_moment, tree_zeros_like

Array = jax.Array
PyTree = Any
WeightDimNumOrFn = MuonDimensionNumbers | PyTree | Callable[[PyTree], PyTree] | None
MeshAxes = str | Sequence[str] | None

__all__ = [
    "MuonDimensionNumbers",
    "MuonState",
    "ScaleByShapeState",
    "scale_by_muon",
    "scale_by_shape",
]


class MuonState(NamedTuple):
    """State of :func:`scale_by_muon`.

    optax keeps ``(count, mu, ns_coeffs)``; jopt keeps the coefficients, like
    every non-constant hyperparameter, in ``hyperparams["ns_coeffs"]``.

    Attributes:
      count: number of updates so far (int32).
      mu: the momentum :math:`m_t`.
      hyperparams: hyperparameter values used at the latest step.
    """

    count: Array
    mu: PyTree
    hyperparams: dict[str, Array]


def _coefficients(ns_coeffs: Any, ns_steps: int, owner: str) -> Any:
    """A preset name resolved; concrete coefficients checked for shape ``(3,)`` or ``(n <= ns_steps, 3)``."""
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS_PRESETS:
            raise ValueError(
                f"{owner}: ns_coeffs preset must be one of {sorted(NS_COEFFS_PRESETS)}, got {ns_coeffs!r}"
            )
        ns_coeffs = NS_COEFFS_PRESETS[ns_coeffs]
    if is_concrete(ns_coeffs):
        _check_coeffs_shape(np.shape(ns_coeffs), ns_steps, owner)
    return ns_coeffs


def _check_coeffs_shape(shape: tuple[int, ...], ns_steps: int, owner: str) -> None:
    if len(shape) not in (1, 2) or shape[-1] != 3:
        raise ValueError(f"{owner}: ns_coeffs must have shape (3,) or (n, 3), got {tuple(shape)}")
    if len(shape) == 2 and shape[0] > ns_steps:
        raise ValueError(
            f"{owner}: ns_coeffs has {shape[0]} rows, more than ns_steps={ns_steps} (optax's rule)"
        )


def _nesterov_or_bias_corrected(mu: PyTree, grads: PyTree, beta: Any, count_inc: Array, nesterov: bool):
    r""":math:`m_t / (1-\beta^t)`; Nesterov: :math:`\beta m_t/(1-\beta^{t+1}) + (1-\beta) g_t/(1-\beta^t)`."""
    if not nesterov:
        return tree_bias_correction(mu, beta, count_inc)
    ahead = tree_bias_correction(mu, beta, safe_increment(count_inc))
    now = tree_bias_correction(
        jax.tree.map(lambda g: g.astype(compute_dtype(g.dtype)), grads), beta, count_inc
    )

    def one(m, g):
        b = cast_hyperparam(beta, m.dtype)
        return b * m + (1 - b) * g

    return jax.tree.map(one, ahead, now)


def scale_by_muon(
    ns_coeffs: Hyperparam | str = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: Hyperparam = 0.95,
    eps: Hyperparam = 1e-8,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: WeightDimNumOrFn = None,
    batch_matrices: bool = False,
    ns_mesh_axes: MeshAxes = "auto",
) -> GradientTransformation:
    r"""Orthogonalise the (Nesterov) momentum of each weight matrix (Muon, Jordan et al., 2024).

    .. math::

        m_t &= \beta m_{t-1} + (1 - \beta) g_t, \qquad
        \hat m_t = \frac{\beta\, m_t}{1 - \beta^{t+1}} + \frac{(1 - \beta)\, g_t}{1 - \beta^t}
        \ \ (\text{nesterov; else } m_t / (1 - \beta^t)) \\
        u_t &= \operatorname{NS}(\hat m_t) \approx U V^{\mathsf H}
        \quad \text{for } \hat m_t = U \Sigma V^{\mathsf H}
        \qquad (\text{adaptive: } u_t \leftarrow \langle \hat m_t, u_t \rangle\, u_t)

    Args:
      ns_coeffs: Newton–Schulz coefficients, ``(3,)`` or ``(n, 3)`` (one row per
        step, ``n <= ns_steps``), or a preset name (``"standard"``, ``"dion"``);
        may be an array, traced value or schedule.
      ns_steps: number of Newton–Schulz steps (a Python int: it fixes the program).
      beta: momentum decay :math:`\beta \in [0, 1)`.
      eps: :math:`\varepsilon \ge 0` of the starting normalisation.
      mu_dtype: dtype of the stored momentum; ``None``: the parameters' dtype.
      nesterov: use the Nesterov momentum :math:`\hat m_t` above.
      adaptive: scale by the dual norm :math:`\langle \hat m_t, u_t\rangle`
        (Bernstein & Newhouse, 2024).
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``
        (see :func:`jopt.transforms.orthogonalize.newton_schulz`).
      weight_dimension_numbers: :class:`MuonDimensionNumbers` for every leaf, a
        pytree (prefix) of them, or a function ``updates -> pytree``; ``None``:
        every leaf is a 2-D matrix. Use e.g. ``MuonDimensionNumbers(1, 2)`` for
        a ``(layers, d_in, d_out)`` stack.
      batch_matrices: orthogonalise the leaves whose matrices share a shape in
        one batched chain of products (equal to leaf by leaf to float32
        rounding; ``False``: leaf by leaf, optax's bits).
      ns_mesh_axes: under a device mesh, the axes each stack of matrices is
        sharded over (``"auto"``: every non-manual mesh axis; ``None``: leave the
        placement to XLA, which gathers matrices).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.muon import scale_by_muon
      >>> tx = scale_by_muon()
      >>> g = {"w": jnp.array([[3.0, 0.0], [0.0, 1.0]])}
      >>> u, state = tx.update(g, tx.init(g))
      >>> print(u["w"].round(2))  # singular values 3 : 1 became about 1 : 1
      [[0.75 0.  ]
       [0.   1.13]]
    """
    owner = "scale_by_muon"
    ns_steps = check_ns_options(preconditioning, ns_steps)
    hp = {"ns_coeffs": _coefficients(ns_coeffs, ns_steps, owner), "beta": beta, "eps": eps}
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def init_fields(params, h):
        _check_coeffs_shape(jnp.shape(h["ns_coeffs"]), ns_steps, owner)
        return (tree_zeros_like(params, mu_dtype),)

    def step(updates, state, params, h, count_inc):
        mu = tree_moment(updates, state.mu, h["beta"], 1)
        mu_hat = _nesterov_or_bias_corrected(mu, updates, h["beta"], count_inc, nesterov)
        leaves, treedef = jax.tree.flatten(mu_hat)
        dims = leaf_dimension_numbers(weight_dimension_numbers, mu_hat, owner)
        ortho = orthogonalize_leaves(
            leaves,
            dims,
            h["ns_coeffs"],
            ns_steps,
            preconditioning,
            h["eps"],
            batch=batch_matrices,
            mesh_axes=ns_mesh_axes,
        )
        if adaptive:
            ortho = [jnp.sum(m.conj() * o) * o for m, o in zip(leaves, ortho)]
        return treedef.unflatten(ortho), (mu,)

    ranges = {"ns_coeffs": ANY, "beta": UNIT, "eps": NONNEGATIVE}
    return hyperparam_transformation(owner, hp, ranges, MuonState, step, init_fields, counted=True)


class ScaleByShapeState(NamedTuple):
    """Step counter (``None`` without a schedule) and ``consistent_rms`` if it is not a constant."""

    count: Array | None
    hyperparams: dict[str, Array]


def _fans(x: Array, dims: MuonDimensionNumbers) -> tuple[int, int]:
    _, fan_in, fan_out = matrix_layout(x.shape, dims).flat
    return fan_in, fan_out


def scale_by_shape(
    weight_dimension_numbers: WeightDimNumOrFn = None, consistent_rms: Hyperparam | None = None
) -> GradientTransformation:
    r"""Scale each matrix update by a factor of its shape (fan-in :math:`n`, fan-out :math:`m`).

    .. math::

        u \leftarrow \sqrt{\max(1, m / n)}\; u \quad (\text{width transfer, Jordan et al.}),
        \qquad
        u \leftarrow \rho \sqrt{\max(n, m)}\; u \quad (\text{consistent\_rms} = \rho)

    The second is Moonlight's rule (Liu et al., 2025): an orthogonal
    :math:`m \times n` update has RMS :math:`1/\sqrt{\max(n, m)}`, so :math:`\rho = 0.2`
    gives every matrix the update RMS of AdamW and lets it share AdamW's
    learning rate and weight decay.

    Args:
      weight_dimension_numbers: as in :func:`scale_by_muon` (fan-in: the product
        of the reduction axes, fan-out: of the output axes).
      consistent_rms: :math:`\rho \ge 0` (number, array or schedule); ``None``
        uses the width-transfer factor.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.muon import scale_by_shape
      >>> tx = scale_by_shape(consistent_rms=0.2)
      >>> u, _ = tx.update({"w": jnp.ones((4, 16))}, tx.init(None))
      >>> round(float(u["w"][0, 0]), 4)  # 0.2 * sqrt(16)
      0.8
    """
    hp = {} if consistent_rms is None else {"consistent_rms": consistent_rms}

    def scale(u, dims, h):
        fan_in, fan_out = _fans(u, dims)
        u = u.astype(compute_dtype(u.dtype))
        if consistent_rms is None:
            return jnp.sqrt(jnp.maximum(1, fan_out / fan_in)) * u
        rho = h["consistent_rms"]
        rho = cast_hyperparam(rho, jnp.real(u).dtype)
        return jnp.sqrt(jnp.maximum(fan_in, fan_out)) * rho * u

    def step(updates, state, params, h, count_inc):
        leaves, treedef = jax.tree.flatten(updates)
        dims = leaf_dimension_numbers(weight_dimension_numbers, updates, "scale_by_shape")
        return treedef.unflatten([scale(u, d, h) for u, d in zip(leaves, dims)]), ()

    ranges = {"consistent_rms": NONNEGATIVE}
    return hyperparam_transformation("scale_by_shape", hp, ranges, ScaleByShapeState, step)
