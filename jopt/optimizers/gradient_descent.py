r"""Stochastic gradient descent, with optional momentum, as short chains of transforms.

* :func:`sgd` has ``optax.sgd``'s signature and defaults (drop-in replacement):
  the momentum buffer accumulates raw gradients and the learning rate is applied
  to the whole buffer.
* :func:`heavy_ball_momentum` is Polyak's classic form, where the buffer
  accumulates learning-rate-scaled steps. The two agree for a constant learning
  rate and differ under a schedule; see :mod:`jopt.transforms.momentum`.
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain, identity
from jopt.hyperparams import Hyperparam
from jopt.transforms.momentum import _momentum
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate

LearningRate = Hyperparam | StatefulSchedule

__all__ = ["heavy_ball_momentum", "sgd"]


def sgd(
    learning_rate: LearningRate,
    momentum: Hyperparam | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    .. math::

        m_t = g_t + \mu_t\, m_{t-1}, \qquad
        \theta_t = \theta_{t-1} - \eta_t \begin{cases}
            g_t & \texttt{momentum=None} \\
            m_t & \text{momentum} \\
            g_t + \mu_t m_t & \text{Nesterov momentum}
        \end{cases}

    Args:
      learning_rate: :math:`\eta_t \ge 0`; number, array, schedule or stateful schedule.
      momentum: :math:`\mu \in [0, 1]`; number, array or schedule. ``None``
        (structural) builds no momentum buffer at all; any number, including a
        traced 0, uses the momentum path, so sweeps can vmap over it.
      nesterov: use Nesterov momentum (Sutskever et al., 2013).
      accumulator_dtype: dtype of the momentum buffer; ``None``: the parameters' dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.sgd(0.1, momentum=0.9)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> print(updates["w"])
      [-0.2  0.4]
    """
    if momentum is None:
        accumulate = identity()
    else:
        accumulate = _momentum(
            momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype, name="momentum", owner="sgd"
        )
    return chain(accumulate, scale_by_learning_rate(learning_rate))


def heavy_ball_momentum(
    learning_rate: LearningRate,
    momentum: Hyperparam = 0.9,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Gradient descent with classic heavy-ball momentum (Polyak, 1964).

    .. math:: v_t = \mu_t\, v_{t-1} + \eta_t g_t, \qquad \theta_t = \theta_{t-1} - v_t, \qquad v_0 = 0

    The velocity accumulates learning-rate-scaled gradients, so a learning-rate
    schedule changes only the new contributions (in :func:`sgd` it rescales the
    whole buffer). Built as
    ``chain(scale_by_learning_rate(learning_rate), heavy_ball(momentum))``.

    Args:
      learning_rate: :math:`\eta_t \ge 0`; number, array, schedule or stateful schedule.
      momentum: :math:`\mu \in [0, 1]`; number, array or schedule.
      accumulator_dtype: dtype of the velocity; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.heavy_ball_momentum(lambda t: 0.1 / (1 + t), momentum=0.5)
      >>> params = {"w": jnp.zeros(1)}
      >>> grads = {"w": jnp.ones(1)}
      >>> state = opt.init(params)
      >>> u, state = opt.update(grads, state, params)
      >>> u, state = opt.update(grads, state, params)
      >>> print(u["w"])  # -(0.5 * 0.1 + 0.05 * 1)
      [-0.1]
    """
    velocity = _momentum(
        momentum, accumulator_dtype=accumulator_dtype, name="momentum", owner="heavy_ball_momentum"
    )
    return chain(scale_by_learning_rate(learning_rate), velocity)
