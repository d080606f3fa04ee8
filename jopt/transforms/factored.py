r"""Adafactor's factored second-moment scaling (Shazeer & Stern, 2018) and its companions.

For a matrix-shaped leaf the second moment is kept as one row vector and one
column vector instead of a full matrix, so the state is :math:`O(n + m)` rather
than :math:`O(nm)`; other leaves keep an elementwise moment (like RMSProp).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import (
    NONNEGATIVE,
    Hyperparam,
    Range,
    cast_hyperparam,
    compute_dtype,
    hyperparam_dtype,
    is_python_number,
)
from jopt.tree import tree_unzip

Array = jax.Array
DecayRateFn = Callable[[Array, Array], Array]

__all__ = ["FactoredState", "decay_rate_pow", "factored_dims", "scale_by_factored_rms"]


def decay_rate_pow(step: Array, exponent: Array = 0.8) -> Array:
    r"""Adafactor's second-moment decay :math:`\hat\beta_{2,t} = 1 - (t + 1)^{-c}` at 0-based ``step``.

    Example:
      >>> import jopt
      >>> float(jopt.decay_rate_pow(0, 0.8)), round(float(jopt.decay_rate_pow(9, 0.8)), 4)
      (0.0, 0.8415)
    """
    t = jnp.asarray(step).astype(hyperparam_dtype()) + 1
    return 1.0 - t ** (-jnp.asarray(exponent))


def factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The two largest axes ``(second_largest, largest)`` of ``shape`` to factor over, or ``None``.

    ``None`` when factoring is off, the leaf has fewer than two axes, or the
    second-largest axis is shorter than ``min_dim_size_to_factor``.

    Example:
      >>> import jopt
      >>> jopt.factored_dims((256, 512), True, 128), jopt.factored_dims((8, 512), True, 128)
      ((0, 1), None)
    """
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


class FactoredState(NamedTuple):
    """Step counter; row and column statistics of factored leaves; full statistics ``v`` of the others.

    Unused entries (``v`` of a factored leaf, ``v_row``/``v_col`` of the others)
    are shape-``(1,)`` placeholders, as in optax.
    """

    count: Array
    v_row: Any
    v_col: Any
    v: Any
    hyperparams: dict[str, Array]


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: Hyperparam = 0.8,
    step_offset: Hyperparam = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: Hyperparam = 1e-30,
    decay_rate_fn: DecayRateFn = decay_rate_pow,
) -> GradientTransformation:
    r"""Scale by a (factored) estimate of the root mean squared gradient, as in Adafactor.

    With :math:`\hat\beta_t = f(\max(t - t_0, 0), c)` (``decay_rate_fn``, by default
    :math:`1 - (t - t_0 + 1)^{-c}`) and :math:`G = g_t^2 + \epsilon`, a factored
    leaf (reducing its largest axis for rows, its second largest for columns) uses

    .. math::

        R_t &= \hat\beta_t R_{t-1} + (1 - \hat\beta_t)\,\operatorname{mean}_{cols}(G), \qquad
        C_t = \hat\beta_t C_{t-1} + (1 - \hat\beta_t)\,\operatorname{mean}_{rows}(G) \\
        u_t &= g_t \Big/ \sqrt{\frac{R_t\,C_t^\top}{\operatorname{mean}(R_t)}}

    and any other leaf :math:`v_t = \hat\beta_t v_{t-1} + (1 - \hat\beta_t) G`,
    :math:`u_t = g_t / \sqrt{v_t}`.

    Args:
      factored: whether to factor the statistics of leaves with >= 2 axes.
      decay_rate: :math:`c`, the argument passed to ``decay_rate_fn``; traceable.
      step_offset: :math:`t_0 \ge 0` (integer), e.g. the first step of fine-tuning.
        Steps before it use the step-0 decay (optax produces NaN there).
      min_dim_size_to_factor: factor only when the two largest axes are at least this long.
      epsilon: :math:`\epsilon \ge 0` added to the squared gradients.
      decay_rate_fn: ``(step, decay_rate) -> decay`` with an int32 step; structural.

    The statistics are stored in the parameters' dtype (as in optax); the
    arithmetic is done in at least float32.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_factored_rms(min_dim_size_to_factor=2)
      >>> params = {"w": jnp.ones((3, 4))}
      >>> state = tx.init(params)
      >>> state.v_row["w"].shape, state.v_col["w"].shape
      ((3,), (4,))
    """
    owner = "scale_by_factored_rms"
    if not isinstance(min_dim_size_to_factor, (int, np.integer)) or min_dim_size_to_factor < 0:
        raise ValueError(
            f"{owner}: min_dim_size_to_factor must be a non-negative int, got {min_dim_size_to_factor!r}"
        )
    hp = {"decay_rate": decay_rate, "step_offset": step_offset, "epsilon": epsilon}
    ranges = {"decay_rate": NONNEGATIVE, "step_offset": Range(0.0, integer=True), "epsilon": NONNEGATIVE}

    def init_fields(params, h):
        def leaf(p):
            placeholder = jnp.zeros((1,), p.dtype)
            dims = factored_dims(p.shape, factored, min_dim_size_to_factor)
            if dims is None:
                return placeholder, placeholder, jnp.zeros_like(p)
            second, largest = dims
            row = jax.eval_shape(lambda x: jnp.sum(x, axis=largest), p)
            col = jax.eval_shape(lambda x: jnp.sum(x, axis=second), p)
            return jnp.zeros_like(row), jnp.zeros_like(col), placeholder

        return tree_unzip(jax.tree.map(leaf, params), params, 3)

    def step(updates, state, params, h, count_inc):
        offset = h["step_offset"]
        offset = offset if is_python_number(offset) else jnp.round(offset).astype(jnp.int32)
        beta = decay_rate_fn(jnp.maximum(state.count - offset, 0), h["decay_rate"])

        def leaf(g, v_row, v_col, v):
            dt = compute_dtype(g.dtype)
            b, g32 = cast_hyperparam(beta, dt), g.astype(dt)
            g_sq = jnp.real(jnp.conj(g32) * g32) + cast_hyperparam(h["epsilon"], dt)
            dims = factored_dims(g.shape, factored, min_dim_size_to_factor)
            if dims is None:
                new_v = (b * v.astype(dt) + (1.0 - b) * g_sq).astype(v.dtype)
                return g32 * new_v.astype(dt) ** -0.5, v_row, v_col, new_v
            second, largest = dims
            new_row = (b * v_row.astype(dt) + (1.0 - b) * jnp.mean(g_sq, axis=largest)).astype(v_row.dtype)
            new_col = (b * v_col.astype(dt) + (1.0 - b) * jnp.mean(g_sq, axis=second)).astype(v_col.dtype)
            row_axis = second - 1 if second > largest else second  # ``second`` in the row statistics
            row32 = new_row.astype(dt)
            row_factor = (row32 / jnp.mean(row32, axis=row_axis, keepdims=True)) ** -0.5
            col_factor = new_col.astype(dt) ** -0.5
            u = g32 * jnp.expand_dims(row_factor, largest) * jnp.expand_dims(col_factor, second)
            return u, new_row, new_col, v

        out = jax.tree.map(leaf, updates, state.v_row, state.v_col, state.v)
        new_updates, v_row, v_col, v = tree_unzip(out, updates, 4)
        return new_updates, (v_row, v_col, v)

    return hyperparam_transformation(owner, hp, ranges, FactoredState, step, init_fields, counted=True)
