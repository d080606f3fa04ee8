r"""MADGRAD: momentumized, adaptive, dual-averaged gradients (Defazio & Jelassi, 2021).

MADGRAD keeps a weighted *sum* of gradients and of squared gradients since the
start of training (dual averaging) instead of moving averages, takes the cube
root of the latter as its preconditioner, and moves the parameters towards the
dual-averaging point by a momentum-style interpolation. Its learning rate is
part of the rule (it weights the sums), so :func:`scale_by_madgrad` returns the
parameter step itself.

The names, arguments and defaults are optax 0.2.8's (``optax.contrib``), and
with Python-number hyperparameters the float32 and float64 results equal
optax's bit for bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, UNIT, Hyperparam, cast_hyperparam, compute_dtype
from jopt.tree import tree_unzip, tree_zeros_like

Array = jax.Array
PyTree = Any

__all__ = ["MadgradState", "scale_by_madgrad"]


class MadgradState(NamedTuple):
    """State of :func:`scale_by_madgrad`.

    Attributes:
      count: number of updates so far (int32), :math:`k`.
      grad_sum_sq: weighted sum of squared gradients :math:`G_k`.
      s: weighted sum of gradients :math:`s_k`.
      x0: the initial parameters :math:`x_0`.
      hyperparams: non-constant hyperparameters used at the latest step.
    """

    count: Array
    grad_sum_sq: PyTree
    s: PyTree
    x0: PyTree
    hyperparams: dict[str, Array]


def _madgrad_leaf(g: Array, gsq: Array, s: Array, x0: Array, x: Array, lamb: Array, h: dict) -> tuple:
    """One leaf's ``(update, G_{k+1}, s_{k+1})`` in at least float32, in optax's order."""
    dt = compute_dtype(jnp.promote_types(g.dtype, x.dtype))
    g, gsq, s, x0, x = (a.astype(dt) for a in (g, gsq, s, x0, x))
    eps, momentum = cast_hyperparam(h["eps"], dt), cast_hyperparam(h["momentum"], dt)
    gsq = gsq + (lamb * g**2).astype(dt)
    s = s + (lamb * g).astype(dt)
    z = x0 - s / (jnp.cbrt(gsq) + eps)
    x_new = (1 - momentum) * z + momentum * x
    return x_new - x, gsq, s


def scale_by_madgrad(
    learning_rate: Hyperparam,
    momentum: Hyperparam = 0.9,
    eps: Hyperparam = 1e-6,
) -> GradientTransformation:
    r"""MADGRAD's parameter step (the learning rate is part of the rule).

    With :math:`\lambda_k = (\eta_k + \epsilon)\sqrt{k + 1}` at step :math:`k = 0, 1, \dots`:

    .. math::

        G_{k+1} &= G_k + \lambda_k g_k^2, \qquad s_{k+1} = s_k + \lambda_k g_k \\
        z_{k+1} &= x_0 - \frac{s_{k+1}}{G_{k+1}^{1/3} + \epsilon} \\
        u_k &= (1 - \mu) z_{k+1} + \mu x_k - x_k

    so that :math:`x_{k+1} = x_k + u_k`. Needs ``params``. As in optax (and the
    authors' PyTorch code), :math:`\epsilon` is added to the learning rate too;
    :math:`\sqrt{k+1}` is computed in float32, as optax does.

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array or schedule (evaluated at :math:`k`).
      momentum: :math:`\mu \in [0, 1)`, the weight of the current parameters.
      eps: :math:`\epsilon \ge 0`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_madgrad(learning_rate=0.1, momentum=0.0, eps=0.0)
      >>> params = jnp.array([1.0, 2.0])
      >>> u, state = tx.update(jnp.array([8.0, -1.0]), tx.init(params), params)
      >>> u.tolist()  # -(0.1 g) / (0.1 g^2)^(1/3)
      [-0.4308869242668152, 0.21544337272644043]
    """

    def init_fields(params, h):
        return tree_zeros_like(params), tree_zeros_like(params), jax.tree.map(lambda x: x, params)

    def step(updates, state, params, h, count_inc):
        lamb = (h["learning_rate"] + h["eps"]) * jnp.sqrt(state.count + 1)
        out = jax.tree.map(
            lambda g, gsq, s, x0, x: _madgrad_leaf(g, gsq, s, x0, x, lamb, h),
            updates,
            state.grad_sum_sq,
            state.s,
            state.x0,
            params,
        )
        new_updates, gsq, s = tree_unzip(out, updates, 3)
        return new_updates, (gsq, s, state.x0)

    return hyperparam_transformation(
        "scale_by_madgrad",
        {"learning_rate": learning_rate, "momentum": momentum, "eps": eps},
        {"learning_rate": NONNEGATIVE, "momentum": UNIT, "eps": NONNEGATIVE},
        MadgradState,
        step,
        init_fields,
        counted=True,
        needs_params=True,
    )
