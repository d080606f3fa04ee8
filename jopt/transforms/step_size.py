r"""Step sizes computed from the current iterate: Polyak's step (Loizou et al., 2021).

:func:`scale_by_polyak` scales the whole update by the gap between the current
loss and a lower bound on it, divided by the squared gradient norm. It reads the
loss through the extra argument ``value`` (``update(grads, state, params,
value=loss)``), which :func:`jopt.chain` forwards to it.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import ANY, NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype

Array = jax.Array
PyTree = Any

__all__ = ["ScaleByPolyakState", "scale_by_polyak"]

_VARIANTS = ("sps", "sps+")


class ScaleByPolyakState(NamedTuple):
    """State of :func:`scale_by_polyak`: a step counter only with a schedule, and the hyperparameters."""

    count: Array | None
    hyperparams: dict[str, Array]


def _squared_norm(tree: PyTree) -> Array:
    r""":math:`\sum_i \|x_i\|^2` over all leaves, in at least float32 (leaf sums added in leaf order)."""

    def leaf(x):
        x = x.astype(compute_dtype(x.dtype))
        return jnp.sum(jnp.square(jnp.real(x)) + jnp.square(jnp.imag(x)))

    return functools.reduce(operator.add, [leaf(x) for x in jax.tree.leaves(tree)], 0)


def scale_by_polyak(
    f_min: Hyperparam = 0.0,
    max_learning_rate: Hyperparam = 1.0,
    eps: Hyperparam = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""Scale updates by the (capped) stochastic Polyak step size.

    With :math:`f` the loss passed as ``value`` and :math:`u` the incoming update:

    .. math::

        \gamma = \begin{cases}
            0 & \|u\|^2 + \varepsilon \le \epsilon_{mach} \\
            \min\left(\dfrac{f - f^\star}{\|u\|^2 + \varepsilon},\ \gamma_{\max}\right) & \text{otherwise}
        \end{cases}, \qquad u \leftarrow \gamma\, u

    ``variant="sps+"`` (Garrigos et al., 2023) uses :math:`\max(f - f^\star, 0)`
    instead of :math:`f - f^\star`. :math:`\epsilon_{mach}` is float64's machine
    epsilon, as in optax.

    Args:
      f_min: :math:`f^\star`, a lower bound on the loss (0 for models that
        interpolate the data).
      max_learning_rate: :math:`\gamma_{\max} \ge 0`, the largest step.
      eps: :math:`\varepsilon \ge 0`, added to the squared norm.
      variant: ``"sps"`` or ``"sps+"`` (structural).

    Raises:
      ValueError: for an unknown ``variant``, or when ``update`` gets no ``value``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_polyak()
      >>> params = {"w": jnp.array([2.0])}
      >>> loss, grads = jax.value_and_grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> u, _ = tx.update(grads, tx.init(params), params, value=loss)
      >>> print(u["w"])  # gamma = (4 - 0) / 4**2, times g = 4: w - u reaches the minimum
      [1.]
    """
    if variant not in _VARIANTS:
        raise ValueError(f"scale_by_polyak: variant must be one of {_VARIANTS}, got {variant!r}")
    hp = {"f_min": f_min, "max_learning_rate": max_learning_rate, "eps": eps}
    ranges = {"f_min": ANY, "max_learning_rate": NONNEGATIVE, "eps": NONNEGATIVE}

    def step(updates, state, params, h, count_inc):
        # The loss is not a hyperparameter: take it out of ``h`` so it is not stored in the state.
        value = h.pop("value", None)
        if value is None:
            raise ValueError(
                "scale_by_polyak needs the loss: call update(updates, state, params, value=loss)"
            )
        sq_norm = _squared_norm(updates)
        gap = jnp.asarray(value - h["f_min"]).astype(sq_norm.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denominator = sq_norm + cast_hyperparam(h["eps"], sq_norm.dtype)
        capped = jnp.minimum(gap / denominator, cast_hyperparam(h["max_learning_rate"], sq_norm.dtype))
        gamma = jnp.where(denominator <= jnp.finfo(float).eps, jnp.array(0.0), capped)

        def scale(u):
            dt = compute_dtype(u.dtype)
            return gamma.astype(dt) * u.astype(dt)

        return jax.tree.map(scale, updates), ()

    return hyperparam_transformation(
        "scale_by_polyak", hp, ranges, ScaleByPolyakState, step, extra_args=("value",)
    )
