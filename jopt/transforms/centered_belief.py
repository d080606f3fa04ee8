r"""ACProp (Zhuang et al., 2021): AdaBelief's centred second moment, used asynchronously.

AdaBelief (:func:`jopt.scale_by_belief`) divides the momentum by the square
root of an average of :math:`(g_t - m_t)^2`. ACProp divides the *current
gradient* by the average as it stood *before* this step, so the numerator and
the denominator are independent: the asynchronous update of Zhuang et al.
The optimizer :func:`jopt.contrib.acprop` is in
:mod:`jopt.optimizers.centered_belief`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, UNIT, Hyperparam, cast_hyperparam
from jopt.transforms.moments import ScaleByBeliefState
from jopt.tree import tree_bias_correction, tree_moment, tree_zeros_like, update_moment_per_elem_norm

PyTree = Any

__all__ = ["ScaleByBeliefState", "scale_by_acprop"]


def scale_by_acprop(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-16,
    eps_root: Hyperparam = 1e-16,
) -> GradientTransformation:
    r"""Rescale updates by ACProp: the gradient over the previous centred second moment.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        s_t = \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_{t-1})^2 + \bar\varepsilon \\
        u_t &= \frac{g_t}{\sqrt{s_{t-1} / (1 - \beta_2^{t-1})} + \varepsilon}
        \quad (t > 1), \qquad u_1 = \frac{g_1}{1 + \varepsilon}

    The state is :class:`jopt.transforms.moments.ScaleByBeliefState`
    (``mu`` is :math:`m_t`, ``nu`` is :math:`s_t`), as in optax.

    Args:
      b1: decay of the gradient average :math:`m_t`, in [0, 1).
      b2: decay of the centred second moment :math:`s_t`, in [0, 1).
      eps: :math:`\varepsilon \ge 0`, added outside the square root.
      eps_root: :math:`\bar\varepsilon \ge 0`, added to :math:`s_t` at every
        step (must be positive when differentiating through the update).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.contrib import scale_by_acprop
      >>> tx = scale_by_acprop(eps=0.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> u, state = tx.update({"w": jnp.array([3.0, -2.0])}, tx.init(params))
      >>> u["w"].tolist()  # the first step divides by 1
      [3.0, -2.0]
    """
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}
    ranges = {"b1": UNIT, "b2": UNIT, "eps": NONNEGATIVE, "eps_root": NONNEGATIVE}

    def init_fields(params, h):
        return tree_zeros_like(params), tree_zeros_like(params)

    def step(grads, state, params, h, count_inc):
        mu = tree_moment(grads, state.mu, h["b1"], 1)
        error = jax.tree.map(lambda g, m: g - m, grads, state.mu)
        nu = update_moment_per_elem_norm(error, state.nu, h["b2"], 2)
        nu = jax.tree.map(lambda v: v + cast_hyperparam(h["eps_root"], v.dtype), nu)
        first = state.count == 0
        nu_hat = tree_bias_correction(state.nu, h["b2"], jnp.where(first, count_inc, state.count))
        nu_hat = jax.tree.map(lambda v: jnp.where(first, 1, v), nu_hat)
        out = jax.tree.map(lambda g, v: g / (jnp.sqrt(v) + cast_hyperparam(h["eps"], v.dtype)), grads, nu_hat)
        return out, (mu, nu)

    return hyperparam_transformation(
        "scale_by_acprop", hp, ranges, ScaleByBeliefState, step, init_fields, counted=True
    )
