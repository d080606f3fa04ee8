r"""ADOPT (Taniguchi et al., 2024): Adam with the second moment of the *previous* step.

Adam divides the momentum by a second-moment estimate that already contains
the current gradient, which correlates numerator and denominator and can make
Adam diverge for a badly chosen :math:`\beta_2`. ADOPT normalizes the gradient
by :math:`\sqrt{v_{t-1}}` *before* it enters the momentum, and only then updates
:math:`v`; it converges at the optimal rate for any :math:`\beta_2`.

:func:`scale_by_adopt` has optax.contrib's name, arguments and defaults
(including ``use_clipping`` and ``clip_value_fn``) and gives optax's float32 bits
for Python-number hyperparameters. Its state is :class:`jopt.ScaleByAdamState`,
as in optax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, UNIT, Hyperparam, cast_hyperparam, compute_dtype
from jopt.transforms.moments import ScaleByAdamState
from jopt.tree import tree_moment, update_moment_per_elem_norm, zeros_like

Array = jax.Array
DType = Any

__all__ = ["scale_by_adopt"]


def _quarter_power(count: Array) -> Array:
    r"""The default clipping bound :math:`c_t = t^{1/4}` (ADOPT's Sec. 5)."""
    return count**0.25


def scale_by_adopt(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.9999,
    eps: Hyperparam = 1e-6,
    mu_dtype: DType | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[Array], Array] = _quarter_power,
) -> GradientTransformation:
    r"""Rescale updates by ADOPT.

    With :math:`t` the number of earlier steps (0 at the first step),

    .. math::

        \tilde g_t &= \operatorname{clip}\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \varepsilon)},
            -c_t, c_t\right) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) \tilde g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        u_t &= m_t \quad (\text{Nesterov: } \beta_1 m_t + (1 - \beta_1) \tilde g_t)

    At the first step :math:`v_0 = g_0^2` and :math:`m` is left at zero (the
    update is zero): the decays are replaced by :math:`\beta_2 = 0` and
    :math:`\beta_1 = 1` there, as in optax.

    Args:
      b1: decay :math:`\beta_1 \in [0, 1)` of the momentum.
      b2: decay :math:`\beta_2 \in [0, 1)` of the second moment.
      eps: :math:`\varepsilon \ge 0`, lower bound of :math:`\sqrt{v_{t-1}}`.
      mu_dtype: dtype of the momentum; ``None``: the parameters' dtype.
      nesterov: use the Nesterov look-ahead of the momentum.
      use_clipping: clip the normalized gradient to :math:`[-c_t, c_t]`
        (recommended, especially from scratch; ``False`` is the paper's Algorithm 1).
      clip_value_fn: :math:`c_t` as a function of the step count :math:`t`
        (default :math:`t^{1/4}`).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_adopt()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.array([0.5, -2.0])}, tx.init(params))
      >>> print(u["w"], state.nu["w"])  # first step: v = g**2, no update
      [0. 0.] [0.25 4.  ]
    """
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
    hp = {"b1": b1, "b2": b2, "eps": eps}
    ranges = {"b1": UNIT, "b2": UNIT, "eps": NONNEGATIVE}

    def init_fields(params, h):
        return zeros_like(params, mu_dtype), zeros_like(params)

    def step(grads, state, params, h, count_inc):
        started = state.count > 0
        b1_now = jnp.where(started, h["b1"], 1)
        b2_now = jnp.where(started, h["b2"], 0)
        nu = update_moment_per_elem_norm(grads, state.nu, b2_now, 2)
        bound = clip_value_fn(state.count) if use_clipping else None

        def normalize(g, v_prev):
            dt = compute_dtype(jnp.promote_types(g.dtype, v_prev.dtype))
            scaled = g.astype(dt) / jnp.maximum(jnp.sqrt(v_prev.astype(dt)), cast_hyperparam(h["eps"], dt))
            return scaled if bound is None else jnp.clip(scaled, -bound, bound)

        normalized = jax.tree.map(normalize, grads, state.nu)
        mu = tree_moment(normalized, state.mu, b1_now, 1)
        direction = tree_moment(normalized, mu, b1_now, 1) if nesterov else mu
        return direction, (mu, nu)

    return hyperparam_transformation(
        "scale_by_adopt", hp, ranges, ScaleByAdamState, step, init_fields, counted=True
    )
