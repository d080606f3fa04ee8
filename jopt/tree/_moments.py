r"""Moving averages of gradient powers and Adam's bias correction, leafwise on pytrees.

All moment updates share one exponential-moving-average kernel,

.. math:: m_t = (1 - \beta)\, \phi(g_t) + \beta\, m_{t-1},

written in optax's order of operations, so a Python-number :math:`\beta` gives
optax's float32 bits. They differ only in :math:`\phi`:

* :func:`update_moment`: :math:`\phi(g) = g^k` (optax's ``tree.update_moment``);
* :func:`update_moment_per_elem_norm`: :math:`\phi(g) = |g|^k` (for real leaves the same as above);
* :func:`tree_moment`: :math:`g` for :math:`k = 1`, else :math:`|g|^k` (jopt's helper
  used by the Adam family, so complex first moments stay complex).

Arithmetic is done in at least float32 (:func:`jopt.hyperparams.compute_dtype`),
so :math:`\beta` keeps its precision with bfloat16 leaves; results have that
dtype. ``None`` leaves of ``updates`` stay ``None``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jopt.hyperparams import cast_hyperparam, compute_dtype, hyperparam_dtype, is_python_number
from jopt.numerics import abs_sq

Array = jax.Array
PyTree = Any

__all__ = [
    "bias_correction",
    "tree_bias_correction",
    "tree_moment",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
]


def _is_none(x: Any) -> bool:
    return x is None


def _ema(
    updates: PyTree,
    moments: PyTree,
    decay: Array | float,
    power: Callable[[Array], Array],
    *,
    real_power: bool = False,
) -> PyTree:
    r""":math:`(1 - \beta)\,\phi(g) + \beta\, m` per leaf, in at least float32, optax's order.

    With ``real_power`` (a power that is real for complex ``g``) the sum is done
    in the dtype of :math:`\phi(g)` and ``m``, so real moments stay real.
    """

    def one(g, m):
        if g is None:
            return None
        dt = compute_dtype(jnp.promote_types(jnp.result_type(g), m.dtype))
        gk = power(jnp.asarray(g, dt))
        if real_power:
            dt = compute_dtype(jnp.promote_types(gk.dtype, m.dtype))
        d = cast_hyperparam(decay, dt)
        return (1 - d) * gk + d * m.astype(dt)

    return jax.tree.map(one, updates, moments, is_leaf=_is_none)


def _modulus_power(g: Array, order: int) -> Array:
    """``g**order``; for complex ``g`` the power of its modulus (:math:`|g|^k`)."""
    if jnp.iscomplexobj(g):
        return jnp.real(jnp.conj(g) * g) ** (order // 2) if order % 2 == 0 else jnp.abs(g) ** order
    return g**order


def tree_moment(updates: PyTree, moments: PyTree, decay: Array | float, order: int = 1) -> PyTree:
    r"""Exponential moving average of ``updates**order``.

    .. math:: m_t = (1 - \beta) g_t^{k} + \beta m_{t-1}

    For complex leaves and :math:`k > 1` the power is that of the modulus,
    :math:`|g_t|^k`. Arithmetic is done in at least float32 (so ``decay`` keeps
    its precision); the result has the dtype the moments would have in that
    arithmetic. The order of operations is optax's, so a Python-number ``decay``
    gives optax's bits.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.tree_moment({"w": jnp.array([2.0])}, {"w": jnp.zeros(1)}, 0.5, 2)["w"].tolist()
      [2.0]
    """
    if order == 1:
        return _ema(updates, moments, decay, lambda g: g)
    return _ema(updates, moments, decay, lambda g: _modulus_power(g, order))


def update_moment(updates: PyTree, moments: PyTree, decay: Array | float, order: int) -> PyTree:
    r"""Exponential moving average of the ``order``-th power, :math:`m_t = (1 - \beta) g_t^k + \beta m_{t-1}`.

    Complex leaves are raised to the power as complex numbers (see
    :func:`update_moment_per_elem_norm` for the modulus).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.update_moment({"w": jnp.array([2.0])}, {"w": jnp.ones(1)}, 0.5, 1)["w"].tolist()
      [1.5]
    """
    return _ema(updates, moments, decay, lambda g: g**order)


def _elementwise_norm_power(g: Array, order: int | float) -> Array:
    r""":math:`g^k` for real ``g``; :math:`(|g|^2)^{k/2}` for complex ``g`` (integer exponent when whole)."""
    if not jnp.iscomplexobj(g):
        return g**order
    half = order / 2
    if float(half).is_integer():
        half = int(half)
    return abs_sq(g) ** half


def update_moment_per_elem_norm(updates: PyTree, moments: PyTree, decay: Array | float, order: int) -> PyTree:
    r"""Exponential moving average of the ``order``-th power of the modulus.

    .. math:: m_t = (1 - \beta)|g_t|^k + \beta m_{t-1}

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> m = jopt.tree.update_moment_per_elem_norm({"w": jnp.array([3 + 4j])}, {"w": jnp.zeros(1)}, 0.0, 2)
      >>> m["w"].tolist()
      [25.0]
    """
    return _ema(updates, moments, decay, lambda g: _elementwise_norm_power(g, order), real_power=True)


def update_infinity_moment(
    updates: PyTree, moments: PyTree, decay: Array | float, eps: Array | float
) -> PyTree:
    r"""Exponentially weighted infinity norm (Adamax): :math:`u_t = \max(|g_t| + \epsilon, \beta u_{t-1})`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> u = jopt.tree.update_infinity_moment({"w": jnp.array([-1.0])}, {"w": jnp.full(1, 4.0)}, 0.5, 0.0)
      >>> u["w"].tolist()
      [2.0]
    """

    def one(g, t):
        if g is None:
            return None
        dt = compute_dtype(jnp.promote_types(g.dtype, t.dtype))
        g, t = g.astype(dt), t.astype(dt)
        return jnp.maximum(jnp.abs(g) + cast_hyperparam(eps, dt), cast_hyperparam(decay, dt) * t)

    return jax.tree.map(one, updates, moments, is_leaf=_is_none)


@functools.partial(jax.jit, inline=True)
def tree_bias_correction(moment: PyTree, decay: Array | float, count: Array) -> PyTree:
    r"""Adam's bias correction :math:`\hat m = m / (1 - \beta^t)`.

    :math:`\beta^t` is computed in the hyperparameter dtype (at least float32), then
    the division is done in each moment's dtype, in optax's order. Like optax's,
    the function is jitted (and inlined into an enclosing jit), so called outside
    ``jax.jit`` it gives the same bits as inside (XLA's fused ``pow`` differs from
    the op-by-op one in the last bit).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.tree.bias_correction({"w": jnp.array([0.5])}, 0.5, jnp.asarray(1))["w"].tolist()
      [1.0]
    """
    correction = 1 - jnp.asarray(decay, hyperparam_dtype() if is_python_number(decay) else None) ** count
    return jax.tree.map(lambda t: t / correction.astype(t.dtype), moment)


bias_correction = tree_bias_correction
