r"""Classic adaptive optimizers: RMSprop, Adagrad and Adadelta.

Each has the signature and defaults of the optax function of the same name
(optax 0.2.8), so e.g. ``jopt.rmsprop`` is a drop-in replacement for
``optax.rmsprop``. All numeric hyperparameters may be numbers, arrays, traced
values or schedules; ``learning_rate`` may also be a stateful schedule. Every
optimizer is ``chain(<preconditioner>, scale_by_learning_rate, [momentum])``.
"""

from __future__ import annotations

from jopt.core import GradientTransformation, chain, identity
from jopt.hyperparams import Hyperparam, check_hyperparam
from jopt.transforms.adaptive import scale_by_adadelta, scale_by_rms, scale_by_rss, scale_by_stddev
from jopt.transforms.momentum import _momentum
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

LearningRate = Hyperparam | StatefulSchedule

__all__ = ["adadelta", "adagrad", "rmsprop"]


def rmsprop(
    learning_rate: LearningRate,
    decay: Hyperparam = 0.9,
    eps: Hyperparam = 1e-8,
    initial_scale: Hyperparam = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Hyperparam | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""RMSprop (Hinton, 2012), optionally centered (Graves, 2013) and with momentum.

    .. math::

        v_t = \rho\, v_{t-1} + (1 - \rho)\, g_t^2, \qquad
        m_t = \rho\, m_{t-1} + (1 - \rho)\, g_t \text{ (centered)} \\
        s_t = \frac{g_t}{\sqrt{v_t - [m_t^2] + \varepsilon}}, \qquad
        b_t = \mu\, b_{t-1} + \eta_t s_t, \qquad \theta_t = \theta_{t-1} - b_t

    Without momentum :math:`b_t = \eta_t s_t`; with ``nesterov`` the step is
    :math:`\eta_t s_t + \mu b_t`. See :func:`jopt.scale_by_rms` and
    :func:`jopt.scale_by_stddev` for ``eps_in_sqrt`` and ``bias_correction``.
    The momentum buffer sits after the learning rate, as in optax.

    Args:
      learning_rate: :math:`\eta_t \ge 0`; number, array, schedule or stateful schedule.
      decay: :math:`\rho \in [0, 1)`, decay of the squared-gradient average.
      eps: :math:`\varepsilon \ge 0` in the denominator.
      initial_scale: initial value of :math:`v` (PyTorch uses 0, TF1 uses 1), >= 0.
      eps_in_sqrt: add ``eps`` inside (default) or outside (PyTorch) the square root.
      centered: divide by the estimated standard deviation instead of the RMS.
      momentum: :math:`\mu \in [0, 1)`; ``None`` (structural) means no momentum buffer.
      nesterov: Nesterov momentum.
      bias_correction: divide the moving averages by :math:`1 - \rho^t`.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.rmsprop(0.01, decay=0.75, eps=0.0)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> print(updates["w"])  # -0.01 * g / sqrt(0.25 * g**2)
      [-0.02  0.02]
    """
    precondition = scale_by_stddev if centered else scale_by_rms
    if momentum is None:
        accumulate = identity()
    else:
        accumulate = _momentum(momentum, nesterov=nesterov, name="momentum", owner="rmsprop")
    return chain(
        precondition(
            decay=decay,
            eps=eps,
            initial_scale=initial_scale,
            eps_in_sqrt=eps_in_sqrt,
            bias_correction=bias_correction,
        ),
        scale_by_learning_rate(learning_rate),
        accumulate,
    )


def adagrad(
    learning_rate: LearningRate,
    initial_accumulator_value: Hyperparam = 0.1,
    eps: Hyperparam = 1e-7,
) -> GradientTransformation:
    r"""Adagrad (Duchi et al., 2011): per-coordinate steps shrinking with the gradient history.

    .. math::

        G_t = G_{t-1} + g_t^2, \qquad
        \theta_t = \theta_{t-1} - \eta_t \frac{g_t}{\sqrt{G_t + \varepsilon}}

    Args:
      learning_rate: :math:`\eta_t \ge 0`; number, array, schedule or stateful schedule.
      initial_accumulator_value: :math:`G_0 \ge 0`.
      eps: :math:`\varepsilon \ge 0`, inside the square root.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, state = opt.update({"w": jnp.array([3.0, -4.0])}, opt.init(params), params)
      >>> print(updates["w"])
      [-1.  1.]
    """
    return chain(
        scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
        scale_by_learning_rate(learning_rate),
    )


def adadelta(
    learning_rate: LearningRate | None = None,
    rho: Hyperparam = 0.9,
    eps: Hyperparam = 1e-6,
    weight_decay: Hyperparam = 0.0,
    weight_decay_mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Adadelta (Zeiler, 2012), with optional decoupled weight decay.

    .. math::

        d_t = g_t + \lambda\, \theta_{t-1}, \qquad
        E[d^2]_t = \rho\, E[d^2]_{t-1} + (1 - \rho)\, d_t^2 \\
        u_t = \frac{\sqrt{E[u^2]_{t-1} + \varepsilon}}{\sqrt{E[d^2]_t + \varepsilon}}\, d_t, \qquad
        E[u^2]_t = \rho\, E[u^2]_{t-1} + (1 - \rho)\, u_t^2 \\
        \theta_t = \theta_{t-1} - \eta_t u_t

    Args:
      learning_rate: :math:`\eta_t \ge 0`; number, array, schedule or stateful
        schedule. ``None`` means :math:`\eta = 1`, Zeiler's original
        learning-rate-free method. (``optax.adadelta(None)`` instead returns
        :math:`+u_t`, an ascent direction; pass an explicit rate to compare.)
      rho: :math:`\rho \in [0, 1)`, decay of both averages.
      eps: :math:`\varepsilon > 0`; sets the size of the first steps.
      weight_decay: :math:`\lambda \ge 0`, added to the gradient before preconditioning.
      weight_decay_mask: pytree of bools, or ``params -> pytree``, selecting the
        leaves to decay.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.adadelta(10.0)
      >>> params = {"w": jnp.array([1.0, 2.0, 3.0])}
      >>> state = opt.init(params)
      >>> for _ in range(5):
      ...     grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> print(f"{float(jnp.sum(params['w'] ** 2)):.3g}")
      12.1
    """
    check_hyperparam(eps, "eps", low=0.0, low_open=True, owner="adadelta")
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho=rho, eps=eps),
        scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )
