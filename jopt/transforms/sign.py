r"""Sign-based transforms: signSGD and Lion (Chen et al., 2023).

Both replace the update by the elementwise sign of (a combination of) the
gradients, so every coordinate moves by the same magnitude.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import (
    GradientTransformation,
    hyperparam_transformation,
    stateless,
)
from jopt.hyperparams import ANY, PROBABILITY, Hyperparam, cast_hyperparam, compute_dtype
from jopt.tree import tree_moment, tree_zeros_like

Array = jax.Array

__all__ = ["ScaleByLionState", "scale_by_lion", "scale_by_sign"]


def scale_by_sign() -> GradientTransformation:
    r"""Replace each update by its elementwise sign.

    .. math:: u_t \leftarrow \operatorname{sign}(g_t)

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_sign()
      >>> u, _ = tx.update({"w": jnp.array([-2.0, 0.0, 3.0])}, tx.init({"w": jnp.zeros(3)}))
      >>> u["w"].tolist()
      [-1.0, 0.0, 1.0]
    """
    return stateless(lambda updates, params: jax.tree.map(jnp.sign, updates))


class ScaleByLionState(NamedTuple):
    """Step counter, momentum :math:`m` and the ``b1``/``b2`` used at the latest step."""

    count: Array
    mu: Any
    hyperparams: dict[str, Array]


_LION_MODES = ("hard", "smooth", "refined")


def scale_by_lion(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.99,
    mu_dtype: Any | None = None,
    *,
    mode: str = "hard",
    smooth_beta: Hyperparam = 1.0,
) -> GradientTransformation:
    r"""Lion's sign of an interpolation between momentum and gradient.

    .. math::

        u_t &= \operatorname{sign}\big(\beta_1 m_{t-1} + (1 - \beta_1)\, g_t\big) \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2)\, g_t

    Args:
      b1: :math:`\beta_1 \in [0, 1]`, weight of the momentum in the update.
      b2: :math:`\beta_2 \in [0, 1]`, decay of the momentum.
      mu_dtype: dtype of the momentum; ``None`` uses the parameters' dtype.
      mode: the sign function :math:`s`: ``"hard"`` (sign), ``"smooth"``
        (:math:`\tanh(\beta_s x)`) or ``"refined"`` (:math:`x` for :math:`|x| < 1`,
        else its sign); structural, checked at construction (optax checks at update).
      smooth_beta: :math:`\beta_s` of the smooth mode; traceable.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_lion(b1=0.9, b2=0.99)
      >>> params = {"w": jnp.zeros(2)}
      >>> u, state = tx.update({"w": jnp.array([0.5, -0.1])}, tx.init(params))
      >>> u["w"].tolist()
      [1.0, -1.0]
    """
    if mode not in _LION_MODES:
        raise ValueError(f"scale_by_lion: mode must be one of {list(_LION_MODES)}, got {mode!r}")
    hp = {"b1": b1, "b2": b2}
    if mode == "smooth":
        hp["smooth_beta"] = smooth_beta
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def sign(x, h, dt):
        if mode == "smooth":
            return jnp.tanh(cast_hyperparam(h["smooth_beta"], dt) * x)
        if mode == "refined":
            return jnp.where(jnp.abs(x) < 1.0, x, jnp.sign(x))
        return jnp.sign(x)

    def init_fields(params, h):
        return (tree_zeros_like(params, mu_dtype),)

    def step(updates, state, params, h, count_inc):
        def direction(g, m):
            dt = compute_dtype(jnp.promote_types(g.dtype, m.dtype))
            beta = cast_hyperparam(h["b1"], dt)
            return sign((1 - beta) * g.astype(dt) + beta * m.astype(dt), h, dt)

        new_updates = jax.tree.map(direction, updates, state.mu)
        return new_updates, (tree_moment(updates, state.mu, h["b2"], order=1),)

    ranges = {"b1": PROBABILITY, "b2": PROBABILITY, "smooth_beta": ANY}
    return hyperparam_transformation(
        "scale_by_lion", hp, ranges, ScaleByLionState, step, init_fields, counted=True
    )
