r"""ACProp (Zhuang et al., 2021) as an optimizer: the preconditioner, weight decay, learning rate.

See :mod:`jopt.transforms.centered_belief` for the preconditioner.
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.centered_belief import scale_by_acprop
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

__all__ = ["acprop"]

LearningRate = Hyperparam | StatefulSchedule


def acprop(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-16,
    eps_root: Hyperparam = 1e-16,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn | Any = None,
) -> GradientTransformation:
    r"""ACProp (Zhuang et al., 2021): centred second moment with an asynchronous update.

    .. math::

        s_t = \beta_2 s_{t-1} + (1 - \beta_2)(g_t - m_{t-1})^2 + \bar\varepsilon, \qquad
        \theta_t = \theta_{t-1} - \eta_t \Big(\frac{g_t}{\sqrt{s_{t-1} / (1 - \beta_2^{t-1})}
            + \varepsilon} + \lambda \theta_{t-1}\Big)

    (the first step divides by :math:`1 + \varepsilon`). The weight decay is
    multiplied by the learning rate, as in PyTorch. See
    :func:`jopt.contrib.scale_by_acprop` for ``b1``, ``b2``, ``eps`` and ``eps_root``.

    Args:
      learning_rate: :math:`\eta_t \ge 0` (number, array, schedule or stateful schedule).
      b1: decay of the gradient average, in [0, 1).
      b2: decay of the centred second moment, in [0, 1).
      eps: added outside the square root, >= 0.
      eps_root: added to the second moment at every step, >= 0.
      weight_decay: :math:`\lambda \ge 0`.
      mask: which leaves are decayed (a tree of booleans or a function of the params).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.contrib import acprop
      >>> opt = acprop(0.1, eps=0.0)
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = opt.update({"w": jnp.array([0.5, -0.5])}, opt.init(params), params)
      >>> u["w"].tolist()
      [-0.05000000074505806, 0.05000000074505806]
    """
    return chain(
        scale_by_acprop(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
