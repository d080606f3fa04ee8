r"""Sign-based optimizers: signSGD (Bernstein et al., 2018) and Lion (Chen et al., 2023)."""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.sign import scale_by_lion, scale_by_sign
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

__all__ = ["lion", "sign_sgd"]


def sign_sgd(learning_rate: Hyperparam | StatefulSchedule) -> GradientTransformation:
    r"""signSGD: step against the sign of each gradient component.

    .. math:: u_t = -\eta_t \operatorname{sign}(g_t)

    Args:
      learning_rate: :math:`\eta_t`; number, array or schedule.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.sign_sgd(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> print(updates["w"])
      [-0.1  0.1]
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


def lion(
    learning_rate: Hyperparam | StatefulSchedule,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: Hyperparam = 1e-3,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Lion (EvoLved Sign Momentum), with decoupled weight decay scaled by the learning rate.

    .. math::

        u_t &= -\eta_t \big(\operatorname{sign}(\beta_1 m_{t-1} + (1 - \beta_1) g_t)
               + \lambda \theta_t\big) \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2) g_t

    Lion's updates have unit magnitude per coordinate: use a learning rate
    3-10x smaller and a weight decay 3-10x larger than for AdamW.

    Args:
      learning_rate: :math:`\eta_t`; number, array or schedule.
      b1: :math:`\beta_1`, weight of the momentum in the update direction.
      b2: :math:`\beta_2`, decay of the momentum.
      mu_dtype: dtype of the momentum; ``None`` uses the parameters' dtype.
      weight_decay: :math:`\lambda \ge 0`.
      mask: leaves to decay (a (prefix) pytree of bools or ``params -> pytree``); ``None`` decays all.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.lion(1e-3)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> params = jopt.apply_updates(params, updates)
    """
    return chain(
        scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
