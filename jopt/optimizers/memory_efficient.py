r"""Memory-efficient adaptive optimizers: SM3 (Anil et al., 2019).

:func:`sm3` has the name, signature and defaults of ``optax.sm3``, and with
Python-number hyperparameters its float32 results equal optax's bit for bit.
See :func:`jopt.adafactor` for the factored alternative.
"""

from __future__ import annotations

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import UNIT, Hyperparam, check_hyperparams
from jopt.transforms.memory_efficient import scale_by_sm3
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate

__all__ = ["sm3"]


def sm3(learning_rate: Hyperparam | StatefulSchedule, momentum: Hyperparam = 0.9) -> GradientTransformation:
    r"""SM3: Adagrad with one accumulator per row, column, ... of each tensor, plus momentum.

    With :math:`\nu_t(i)` the SM3-II accumulator of entry :math:`i` (a running
    sum of squared gradients, bounded through the slices containing :math:`i`,
    see :func:`jopt.scale_by_sm3`):

    .. math::

        m_t = \mu\, m_{t-1} + (1 - \mu) \frac{g_t}{\sqrt{\nu_t + \varepsilon}}, \qquad
        \theta_t = \theta_{t-1} - \eta_t m_t

    An ``(m, n)`` matrix keeps :math:`m + n` accumulators instead of :math:`mn`.

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful
        schedule (optax accepts a number only).
      momentum: :math:`\mu \in [0, 1)`; number, array or schedule.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.sm3(learning_rate=0.1, momentum=0.0)
      >>> params = {"w": jnp.ones((2, 3))}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> print(updates["w"][0])  # first step: -lr * g / |g|
      [-0.1 -0.1 -0.1]
    """
    check_hyperparams("sm3", {"momentum": UNIT}, {"momentum": momentum})
    return chain(scale_by_sm3(momentum), scale_by_learning_rate(learning_rate))
