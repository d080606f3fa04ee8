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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import (
    GradientTransformation,
    initial_count,
    next_count,
    resolve_hyperparams,
    stored_hyperparams,
    transformation,
)
from jopt.hyperparams import Hyperparam, check_hyperparam, compute_dtype
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


def _hyperparam_transform(
    hp: Mapping[str, Hyperparam],
    fn: Callable[[PyTree, PyTree | None, dict[str, Array]], PyTree],
    *,
    needs_params: str | None = None,
    state_cls: Callable[[Array, dict[str, Array]], Any] = ClipState,
) -> GradientTransformation:
    """A transform whose only state is ``count`` and the resolved hyperparameters.

    ``fn(updates, params, h)`` computes the new updates from the hyperparameter
    values ``h`` resolved at the current step. ``needs_params`` names the
    transform in the error raised when ``params`` is missing. ``state_cls`` is
    a ``(count, hyperparams)`` NamedTuple.
    """

    def init(params):
        del params
        count = initial_count(hp)
        return state_cls(count, stored_hyperparams(hp, resolve_hyperparams(hp, count)))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if needs_params is not None and params is None:
            raise ValueError(f"{needs_params} needs params: call update(updates, state, params)")
        h = resolve_hyperparams(hp, state.count)
        return fn(updates, params, h), state_cls(next_count(state.count), stored_hyperparams(hp, h))

    return transformation(init, update)


def _abs_sq(x: Array) -> Array:
    """:math:`|x|^2` in the compute dtype (real for complex ``x``)."""
    x = x.astype(compute_dtype(x.dtype))
    return jnp.real(jnp.conj(x) * x)


def _rescale(u: Array, norm: Array, limit: Array, *, by_ratio: bool = False) -> Array:
    """``u * min(1, limit / norm)``, safe for ``norm == 0`` and ``limit in {0, inf}``.

    Computed as ``u / norm * limit`` (or ``u / (norm / limit)`` when ``by_ratio``),
    the operation order optax uses, so trajectories agree to the last bit.
    """
    dt = compute_dtype(u.dtype)
    x, norm, limit = u.astype(dt), norm.astype(dt), limit.astype(dt)
    over = norm > limit
    safe_norm = jnp.where(over, norm, 1.0)
    clipped = x / (safe_norm / limit) if by_ratio else x / safe_norm * limit
    return jnp.where(over, clipped, x).astype(u.dtype)


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
    check_hyperparam(max_delta, "max_delta", low=0.0, owner="clip")

    def fn(updates, params, h):
        del params
        d = h["max_delta"]

        def one(u):
            dt = compute_dtype(u.dtype)
            return jnp.clip(u.astype(dt), -d.astype(dt), d.astype(dt)).astype(u.dtype)

        return jax.tree.map(one, updates)

    return _hyperparam_transform({"max_delta": max_delta}, fn)


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
    check_hyperparam(max_norm, "max_norm", low=0.0, owner="clip_by_global_norm")

    def fn(updates, params, h):
        del params
        norm = tree_global_norm(updates)
        return jax.tree.map(lambda u: _rescale(u, norm, h["max_norm"]), updates)

    return _hyperparam_transform({"max_norm": max_norm}, fn)


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
    check_hyperparam(max_norm, "max_norm", low=0.0, owner="clip_by_leaf_norm")

    def fn(updates, params, h):
        del params

        def one(u):
            return _rescale(u, jnp.sqrt(jnp.sum(_abs_sq(u))), h["max_norm"])

        return jax.tree.map(one, updates)

    return _hyperparam_transform({"max_norm": max_norm}, fn)


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
    check_hyperparam(threshold, "threshold", low=0.0, owner="clip_by_block_rms")

    def fn(updates, params, h):
        del params

        def one(u):
            return _rescale(u, jnp.sqrt(jnp.mean(_abs_sq(u))), h["threshold"], by_ratio=True)

        return jax.tree.map(one, updates)

    return _hyperparam_transform({"threshold": threshold}, fn)


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
    check_hyperparam(clipping, "clipping", low=0.0, owner="adaptive_grad_clip")
    check_hyperparam(eps, "eps", low=0.0, owner="adaptive_grad_clip")

    def fn(updates, params, h):
        def one(u, p):
            dt = compute_dtype(u.dtype)
            u_norm = unitwise_norm(u, axis).astype(dt)
            p_norm = unitwise_norm(p, axis).astype(dt)
            limit = h["clipping"].astype(dt) * jnp.maximum(p_norm, h["eps"].astype(dt))
            factor = jnp.where(u_norm < limit, 1.0, limit / jnp.maximum(u_norm, 1e-6))
            return (u.astype(dt) * factor.astype(dt)).astype(u.dtype)

        return jax.tree.map(one, updates, params)

    return _hyperparam_transform({"clipping": clipping, "eps": eps}, fn, needs_params="adaptive_grad_clip")
