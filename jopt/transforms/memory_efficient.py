r"""Memory-efficient adaptive preconditioning: SM3 (Anil et al., 2019).

Adagrad keeps one accumulator per parameter. SM3 keeps one per *row, column,
...* of each tensor (a cover of its entries by slices along every axis), so a
``(m, n)`` matrix needs :math:`m + n` accumulators instead of :math:`mn`; the
accumulator of an entry is the smallest of those of the slices through it.
Compare :func:`jopt.scale_by_factored_rms` (Adafactor), which factors an
exponential moving average instead of a running maximum.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, PROBABILITY, UNIT, Hyperparam, cast_hyperparam, compute_dtype
from jopt.tree import tree_moment, tree_unzip, tree_zeros_like

Array = jax.Array
PyTree = Any

__all__ = ["ScaleBySM3State", "scale_by_sm3"]


class ScaleBySM3State(NamedTuple):
    """State of :func:`scale_by_sm3`.

    Attributes:
      count: step counter (int32) when a hyperparameter is a schedule, else ``None``.
      mu: per leaf, a list of one accumulator vector per axis (``[acc]`` of the
        leaf's own shape for vectors and scalars).
      nu: the momentum of the preconditioned gradients.
      hyperparams: hyperparameter values used at the latest step (non-constant ones).
    """

    count: Array | None
    mu: PyTree
    nu: PyTree
    hyperparams: dict[str, Array]


def _axis_accumulators(p: Array) -> list[Array]:
    """Zeros: one vector per axis for a tensor, one array of ``p``'s shape for ndim < 2."""
    if p.ndim < 2:
        return [jnp.zeros_like(p)]
    return [jnp.zeros((size,), p.dtype) for size in p.shape]


def _broadcast_min(accumulators: list[Array], shape: tuple[int, ...]) -> Array:
    """:math:`\\min_r \\mu(r)` over the slices through each entry, as an array of ``shape``."""
    if len(shape) < 2:
        return accumulators[0]
    expanded = [
        jnp.reshape(a, [1] * axis + [shape[axis]] + [1] * (len(shape) - axis - 1))
        for axis, a in enumerate(accumulators)
    ]
    return functools.reduce(jnp.minimum, expanded)


def _slice_maxima(accum: Array) -> list[Array]:
    """New per-axis accumulators: the maximum of ``accum`` over every other axis."""
    if accum.ndim < 2:
        return [accum]
    return [
        jnp.max(accum, axis=tuple(i for i in range(accum.ndim) if i != axis)) for axis in range(accum.ndim)
    ]


def scale_by_sm3(
    b1: Hyperparam = 0.9, b2: Hyperparam = 1.0, eps: Hyperparam = 1e-8
) -> GradientTransformation:
    r"""Rescale updates by SM3-II's cover-based accumulators, then average them with momentum.

    For each entry :math:`i` of a leaf, with :math:`\mu_{t-1}(r)` the accumulator
    of slice :math:`r` (one slice per index along each axis):

    .. math::

        \nu_t(i) &= c\, g_t(i)^2 + \beta_2 \min_{r \ni i} \mu_{t-1}(r), \qquad
        c = \begin{cases} 1 & \beta_2 = 1 \\ 1 - \beta_2 & \text{otherwise} \end{cases} \\
        \mu_t(r) &= \max_{i \in r} \nu_t(i), \qquad
        \tilde g_t(i) = \begin{cases} g_t(i) / \sqrt{\nu_t(i) + \varepsilon} & \nu_t(i) > 0 \\
                                      0 & \text{otherwise} \end{cases} \\
        u_t &= \beta_1 u_{t-1} + (1 - \beta_1)\, \tilde g_t

    With the default :math:`\beta_2 = 1` the accumulators are sums, as in the
    paper (Adagrad-like). The choice of :math:`c` is a ``jnp.where``, so
    ``b2`` may be traced. Vectors and scalars keep one accumulator per entry.

    Args:
      b1: decay :math:`\beta_1 \in [0, 1)` of the momentum.
      b2: decay :math:`\beta_2 \in [0, 1]` of the accumulators (1: plain sums).
      eps: :math:`\varepsilon \ge 0`, added inside the square root.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_sm3(b1=0.0)
      >>> params = {"w": jnp.zeros((2, 3))}
      >>> state = tx.init(params)
      >>> [a.shape for a in state.mu["w"]]  # 2 + 3 accumulators for 6 entries
      [(2,), (3,)]
      >>> u, state = tx.update({"w": jnp.full((2, 3), 2.0)}, state)
      >>> print(u["w"][0])  # g / sqrt(g^2)
      [1. 1. 1.]
    """
    hp = {"b1": b1, "b2": b2, "eps": eps}
    ranges = {"b1": UNIT, "b2": PROBABILITY, "eps": NONNEGATIVE}

    def init_fields(params, h):
        return jax.tree.map(_axis_accumulators, params), tree_zeros_like(params)

    def step(grads, state, params, h, count_inc):
        coefficient = jnp.where(h["b2"] == 1.0, 1.0, 1.0 - h["b2"])

        def leaf(g, accumulators):
            g = g.astype(compute_dtype(g.dtype))
            previous = _broadcast_min([a.astype(g.dtype) for a in accumulators], g.shape)
            accum = (
                cast_hyperparam(coefficient, g.dtype) * g**2 + cast_hyperparam(h["b2"], g.dtype) * previous
            )
            inv_root = jnp.where(accum > 0, jax.lax.rsqrt(accum + cast_hyperparam(h["eps"], g.dtype)), 0.0)
            return g * inv_root, _slice_maxima(accum)

        scaled, mu = tree_unzip(jax.tree.map(leaf, grads, state.mu), grads, 2)
        nu = tree_moment(scaled, state.nu, h["b1"], 1)
        return nu, (mu, nu)

    return hyperparam_transformation("scale_by_sm3", hp, ranges, ScaleBySM3State, step, init_fields)
