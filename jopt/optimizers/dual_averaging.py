r"""MADGRAD (Defazio & Jelassi, 2021) as an optimizer: weight decay, then MADGRAD's step.

:func:`madgrad` has the name, signature and defaults of ``optax.contrib.madgrad``
(optax 0.2.8); with Python-number hyperparameters its float32 and float64
results equal optax's bit for bit.
"""

from __future__ import annotations

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.dual_averaging import scale_by_madgrad
from jopt.transforms.weight_decay import add_decayed_weights

__all__ = ["madgrad"]


def madgrad(
    learning_rate: Hyperparam,
    momentum: Hyperparam = 0.9,
    weight_decay: Hyperparam = 0.0,
    eps: Hyperparam = 1e-6,
) -> GradientTransformation:
    r"""MADGRAD: dual averaging with a cube-root preconditioner and momentum.

    With :math:`g_k` the gradient plus :math:`\lambda \theta_k` (coupled weight decay) and
    :math:`c_k = (\eta_k + \epsilon)\sqrt{k + 1}`:

    .. math::

        G_{k+1} = G_k + c_k g_k^2, \quad s_{k+1} = s_k + c_k g_k, \quad
        \theta_{k+1} = (1 - \mu)\Big(\theta_0 - \frac{s_{k+1}}{G_{k+1}^{1/3} + \epsilon}\Big) + \mu\, \theta_k

    See :func:`jopt.scale_by_madgrad`. The learning rate is inside the rule (the
    chain does not end in a learning-rate scaling).

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array or schedule.
      momentum: :math:`\mu \in [0, 1)`.
      weight_decay: :math:`\lambda \ge 0`, added to the gradient (L2, as in optax).
      eps: :math:`\epsilon \ge 0`.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.madgrad(learning_rate=0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> state = opt.init(params)
      >>> for _ in range(100):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> bool(loss(params) < 0.05)
      True
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate=learning_rate, momentum=momentum, eps=eps),
    )
