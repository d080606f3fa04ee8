r"""Gradient clipping: by value, by global norm, per leaf, and adaptive (AGC).

Every threshold is a hyperparameter: a number, an array, a traced value or a
schedule ``step -> value``. Thresholds are compared with ``jnp.where``, never in
Python, so clipping transforms can be vmapped over their threshold. The value
used at the latest step is kept in ``state.hyperparams``.

Norms are computed in at least float32; returned updates keep their dtype.
A threshold of ``inf`` disables clipping; a threshold of ``0`` zeroes the
updates (without producing NaN, even for zero gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype
from jopt.numerics import abs_sq
from jopt.tree import tree_global_norm

Array = jax.Array
PyTree = Any
Axis = int | Sequence[int] | None

__all__ = [
    "ClipState",
    "adaptive_grad_clip",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_leaf_norm",
    "unitwise_norm",
]


class ClipState(NamedTuple):
    """Step counter (``None`` without schedules) and the non-constant hyperparameters of the latest step."""

    count: Array | None
    hyperparams: dict[str, Array]


def _stateless_step(fn):
    """A builder step from ``fn(updates, params, h)``: no state fields besides the hyperparameters."""
    return lambda updates, state, params, h, count: (fn(updates, params, h), ())


def _clip_transform(owner: str, name: str, value: Hyperparam, fn) -> GradientTransformation:
    """A clipping transform with one non-negative hyperparameter ``name``."""
    return hyperparam_transformation(
        owner, {name: value}, {name: NONNEGATIVE}, ClipState, _stateless_step(fn)
    )


def _abs_sq(x: Array) -> Array:
    """:math:`|x|^2` in the compute dtype (real for complex ``x``)."""
    return abs_sq(x.astype(compute_dtype(x.dtype)))


def _rescale(u: Array, norm: Array, limit: Array | float, *, by_ratio: bool = False) -> Array:
    """``u * min(1, limit / norm)``, safe for ``norm == 0`` and ``limit in {0, inf}``.

    Computed as optax does, ``u / norm * limit`` (or ``u / max(1, norm / limit)``
    when ``by_ratio``), so trajectories agree to the last bit; the guards act on
    the scalar norm only.
    """
    dt = compute_dtype(u.dtype)
    x, norm, limit = u.astype(dt), norm.astype(dt), cast_hyperparam(limit, dt)
    if by_ratio:
        denominator = jnp.where(norm == 0, 1.0, jnp.maximum(1.0, norm / limit))
        return (x / denominator).astype(u.dtype)
    return jnp.where((norm < limit) | (norm == 0), x, x / norm * limit).astype(u.dtype)


def clip(max_delta: Hyperparam) -> GradientTransformation:
    r"""Clip every update element to :math:`[-\delta, \delta]`.

    .. math:: u_i \leftarrow \min(\max(u_i, -\delta_t), \delta_t)

    Args:
      max_delta: :math:`\delta \ge 0`; number, array or schedule.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.clip(1.0)
      >>> u, _ = tx.update({"w": jnp.array([-3.0, 0.5, 2.0])}, tx.init(None))
      >>> u["w"].tolist()
      [-1.0, 0.5, 1.0]
    """

    def fn(updates, params, h):
        del params
        d = h["max_delta"]

        def one(u):
            dt = compute_dtype(u.dtype)
            return jnp.clip(u.astype(dt), -cast_hyperparam(d, dt), cast_hyperparam(d, dt)).astype(u.dtype)

        return jax.tree.map(one, updates)

    return _clip_transform("clip", "max_delta", max_delta, fn)


def clip_by_global_norm(max_norm: Hyperparam) -> GradientTransformation:
    r"""Rescale all updates together so that their global norm is at most ``max_norm``.

    .. math::
       u \leftarrow u \cdot \min\!\Big(1, \frac{c_t}{\|u\|_2}\Big),
       \qquad \|u\|_2 = \sqrt{\textstyle\sum_{\text{leaves}} \sum_i |u_i|^2}

    Args:
      max_norm: :math:`c \ge 0`; number, array or schedule (``inf`` disables clipping).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.clip_by_global_norm(1.0)
      >>> u, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))
      >>> [round(float(u["a"][0]), 4), round(float(u["b"][0]), 4)]
      [0.6, 0.8]
    """

    def fn(updates, params, h):
        del params
        norm = tree_global_norm(updates)
        return jax.tree.map(lambda u: _rescale(u, norm, h["max_norm"]), updates)

    return _clip_transform("clip_by_global_norm", "max_norm", max_norm, fn)


def clip_by_leaf_norm(max_norm: Hyperparam) -> GradientTransformation:
    r"""Rescale each leaf (parameter tensor) separately to L2 norm at most ``max_norm``.

    .. math:: u^{(l)} \leftarrow u^{(l)} \cdot \min\!\Big(1, \frac{c_t}{\|u^{(l)}\|_2}\Big)

    Args:
      max_norm: :math:`c \ge 0`; number, array or schedule.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.clip_by_leaf_norm(1.0)
      >>> u, _ = tx.update({"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.5])}, tx.init(None))
      >>> [round(float(x), 4) for x in u["a"]], float(u["b"][0])
      ([0.6, 0.8], 0.5)
    """

    def fn(updates, params, h):
        del params

        def one(u):
            return _rescale(u, jnp.sqrt(jnp.sum(_abs_sq(u))), h["max_norm"])

        return jax.tree.map(one, updates)

    return _clip_transform("clip_by_leaf_norm", "max_norm", max_norm, fn)


def clip_by_block_rms(threshold: Hyperparam) -> GradientTransformation:
    r"""Rescale each leaf separately so that its root-mean-square is at most ``threshold``.

    .. math::
       u^{(l)} \leftarrow u^{(l)} \cdot \min\!\Big(1, \frac{c_t}{\mathrm{rms}(u^{(l)})}\Big),
       \qquad \mathrm{rms}(x) = \sqrt{\tfrac{1}{n}\textstyle\sum_i |x_i|^2}

    Args:
      threshold: :math:`c \ge 0`; number, array or schedule.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.clip_by_block_rms(1.0)
      >>> u, _ = tx.update({"w": jnp.array([2.0, -2.0])}, tx.init(None))
      >>> u["w"].tolist()
      [1.0, -1.0]
    """

    def fn(updates, params, h):
        del params

        def one(u):
            return _rescale(u, jnp.sqrt(jnp.mean(_abs_sq(u))), h["threshold"], by_ratio=True)

        return jax.tree.map(one, updates)

    return _clip_transform("clip_by_block_rms", "threshold", threshold, fn)


def _default_unit_axes(x: Array) -> tuple[int, ...] | None:
    """Reduction axes of a "unit" for the usual layer layouts; ``None`` means all axes."""
    if sum(d != 1 for d in x.shape) <= 1:
        return None
    if x.ndim in (2, 3):  # dense (in, out) or multi-head dense: one unit per output column
        return (0,)
    if x.ndim == 4:  # conv HWIO
        return (0, 1, 2)
    if x.ndim == 5:  # conv3d DHWIO
        return (0, 1, 2, 3)
    raise ValueError(
        f"adaptive_grad_clip: no default unit axes for a parameter of shape {x.shape}; pass axis="
    )


def unitwise_norm(x: Array, axis: Axis = None) -> Array:
    r"""L2 norm of each unit of ``x``, broadcast back to ``x.shape``.

    .. math:: \|x\|_{\text{unit}(i)} = \sqrt{\textstyle\sum_{j \in \text{unit}(i)} |x_j|^2}

    A unit is a slice over ``axis``. By default: scalars and vectors form one
    unit; rank-2/3 arrays reduce over axis 0 (one unit per output of a dense
    layer); rank-4 over ``(0, 1, 2)`` and rank-5 over ``(0, 1, 2, 3)`` (conv
    kernels, output channel last).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.unitwise_norm(jnp.array([[3.0, 0.0], [4.0, 1.0]])).tolist()
      [[5.0, 1.0], [5.0, 1.0]]
    """
    axes = _default_unit_axes(x) if axis is None else axis
    sq = jnp.sum(_abs_sq(x), axis=axes, keepdims=True)
    return jnp.broadcast_to(jnp.sqrt(sq), x.shape)


def adaptive_grad_clip(
    clipping: Hyperparam, eps: Hyperparam = 1e-3, axis: Axis = None
) -> GradientTransformation:
    r"""Adaptive gradient clipping (Brock et al., 2021), unit-wise.

    Each unit's update is rescaled so that its norm is at most ``clipping`` times
    the norm of the matching unit of the parameters (floored at ``eps``, so that
    zero-initialised parameters can still move):

    .. math::
       u_{\text{unit}} \leftarrow
       \begin{cases}
         u_{\text{unit}} & \|u_{\text{unit}}\| < \lambda_t \max(\|\theta_{\text{unit}}\|, \epsilon_t) \\
         u_{\text{unit}} \, \dfrac{\lambda_t \max(\|\theta_{\text{unit}}\|, \epsilon_t)}
           {\max(\|u_{\text{unit}}\|, 10^{-6})} & \text{otherwise}
       \end{cases}

    Units are those of :func:`unitwise_norm` (``axis`` overrides the default).

    Args:
      clipping: :math:`\lambda \ge 0`, the largest allowed ratio of update norm to parameter norm.
      eps: :math:`\epsilon \ge 0`, floor of the parameter norm.
      axis: reduction axes of a unit; ``None`` picks them from each leaf's rank.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.adaptive_grad_clip(0.1)
      >>> p = {"w": jnp.array([3.0, 4.0])}
      >>> u, _ = tx.update({"w": jnp.array([0.0, 10.0])}, tx.init(p), p)
      >>> [round(float(x), 4) for x in u["w"]]
      [0.0, 0.5]
    """

    def fn(updates, params, h):
        def one(u, p):
            dt = compute_dtype(u.dtype)
            u_norm = unitwise_norm(u, axis).astype(dt)
            p_norm = unitwise_norm(p, axis).astype(dt)
            limit = cast_hyperparam(h["clipping"], dt) * jnp.maximum(p_norm, cast_hyperparam(h["eps"], dt))
            factor = jnp.where(u_norm < limit, 1.0, limit / jnp.maximum(u_norm, 1e-6))
            return (u.astype(dt) * factor.astype(dt)).astype(u.dtype)

        return jax.tree.map(one, updates, params)

    hp = {"clipping": clipping, "eps": eps}
    ranges = {"clipping": NONNEGATIVE, "eps": NONNEGATIVE}
    return hyperparam_transformation(
        "adaptive_grad_clip", hp, ranges, ClipState, _stateless_step(fn), needs_params=True
    )
