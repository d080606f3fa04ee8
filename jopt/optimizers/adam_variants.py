r"""More Adam-style optimizers from optax 0.2.8: Adan, AdaMaxW and optimistic Adam.

Each has the name, signature and defaults of the optax function of the same
name, and with Python-number hyperparameters its float32 results equal optax's
bit for bit. Every numeric hyperparameter may also be an array, a traced value
or a schedule ``step -> value`` (vmapping over any of them works). The learning
rate :math:`\eta_t` is applied last, so the parameter update is
:math:`\theta_t = \theta_{t-1} - \eta_t u_t`.
"""

from __future__ import annotations

import warnings
from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import NONNEGATIVE, Hyperparam, check_hyperparams
from jopt.transforms.gradient_history import scale_by_adan, scale_by_optimistic_gradient
from jopt.transforms.moments import scale_by_adam, scale_by_adamax
from jopt.transforms.scaling import StatefulSchedule, scale, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

LearningRate = Hyperparam | StatefulSchedule
DType = Any

__all__ = ["adamaxw", "adan", "optimistic_adam", "optimistic_adam_v2"]


def adan(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.98,
    b2: Hyperparam = 0.92,
    b3: Hyperparam = 0.99,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 1e-8,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Adan: adaptive Nesterov momentum (Xie et al., 2022), with decoupled weight decay.

    With :math:`\Delta_t = g_t - g_{t-1}` (:math:`\Delta_1 = 0`) and hats for
    Adam's bias correction:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) \Delta_t \\
        n_t &= \beta_3 n_{t-1} + (1 - \beta_3) \big(g_t + (1 - \beta_2) \Delta_t\big)^2 \\
        \theta_t &= \theta_{t-1} - \eta_t \left(
            \frac{\hat m_t + (1 - \beta_2) \hat v_t}{\sqrt{\hat n_t + \bar\varepsilon} + \varepsilon}
            + \lambda \theta_{t-1} \right)

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful schedule.
      b1, b2, b3, eps, eps_root: see :func:`jopt.scale_by_adan` (note the
        default ``eps_root=1e-8`` here, as in optax).
      weight_decay: :math:`\lambda \ge 0`, scaled by the learning rate.
      mask: leaves to decay (a (prefix) pytree of bools or ``params -> pytree``).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.adan(learning_rate=0.1)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     grads = jax.grad(lambda x: x @ x)(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> [round(x, 3) for x in params.tolist()]  # about 0.1 per step, Adam-like
      [0.701, 1.7, 2.7]
    """
    return chain(
        scale_by_adan(b1, b2, b3, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def adamaxw(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    weight_decay: Hyperparam = 1e-4,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""AdaMaxW: AdaMax with decoupled weight decay (Loshchilov & Hutter, 2019).

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \max(|g_t| + \varepsilon,\ \beta_2 v_{t-1}) \\
        \theta_t &= \theta_{t-1} - \eta_t \left(\frac{m_t}{(1 - \beta_1^t) v_t} + \lambda \theta_{t-1}\right)

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful schedule.
      b1, b2, eps: see :func:`jopt.scale_by_adamax`.
      weight_decay: :math:`\lambda \ge 0`, scaled by the learning rate (as in optax and PyTorch).
      mask: leaves to decay (a (prefix) pytree of bools or ``params -> pytree``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> params = {"w": jnp.ones(2)}
      >>> opt = jopt.adamaxw(1e-3, weight_decay=0.1)
      >>> updates, state = opt.update({"w": jnp.array([2.0, -4.0])}, opt.init(params), params)
      >>> print(updates["w"])  # -1e-3 * (sign(g) + 0.1 * w)
      [-0.0011  0.0009]
    """
    return chain(
        scale_by_adamax(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam(
    learning_rate: Hyperparam,
    optimism: Hyperparam | None = None,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-08,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""Optimistic Adam (Daskalakis et al., 2018), for saddle-point problems such as GANs.

    With Adam's direction :math:`r_t = \hat m_t / (\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon)`
    (Nesterov's variant by default) and optimism :math:`o` (default :math:`\eta`):

    .. math:: \theta_t = \theta_{t-1} - \eta\, r_t - o\, (r_t - r_{t-1}), \qquad r_0 := r_1

    The learning rate is inside the optimistic step, so this is
    ``chain(scale_by_adam, scale_by_optimistic_gradient(alpha=learning_rate,
    beta=optimism), scale(-1))`` and :func:`jopt.current_hyperparams` reports a
    non-constant learning rate as ``alpha``. optax deprecates this interface in favour of
    :func:`optimistic_adam_v2`; optax rejects a schedule here, jopt accepts one
    (and then ``optimism=None`` follows the same schedule).

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array or schedule.
      optimism: :math:`o \ge 0`; ``None`` uses ``learning_rate``.
      b1, b2, eps, eps_root, mu_dtype, nesterov: see :func:`jopt.scale_by_adam`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.optimistic_adam(0.1, nesterov=False)
      >>> params = {"w": jnp.ones(2)}
      >>> updates, state = opt.update({"w": jnp.array([2.0, -4.0])}, opt.init(params), params)
      >>> [round(x, 4) for x in updates["w"].tolist()]  # first step: -lr * sign(g)
      [-0.1, 0.1]

    Deprecated, as in optax: new code should call :func:`jopt.optimistic_adam_v2`.
    """
    warnings.warn(
        "optimistic_adam is deprecated (as in optax); use `optimistic_adam_v2` instead",
        DeprecationWarning,
        stacklevel=2,
    )
    if optimism is None:
        optimism = learning_rate
    check_hyperparams(
        "optimistic_adam",
        {"learning_rate": NONNEGATIVE, "optimism": NONNEGATIVE},
        {"learning_rate": learning_rate, "optimism": optimism},
    )
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
        scale(-1.0),
    )


def optimistic_adam_v2(
    learning_rate: LearningRate,
    *,
    alpha: Hyperparam = 1.0,
    beta: Hyperparam = 1.0,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-08,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""Optimistic Adam with the learning rate outside the optimistic step (optax's new interface).

    With Adam's direction :math:`r_t` (Nesterov's variant by default):

    .. math:: \theta_t = \theta_{t-1} - \eta_t \big((\alpha + \beta)\, r_t - \beta\, r_{t-1}\big),
        \qquad r_0 := r_1

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful schedule.
      alpha, beta: see :func:`jopt.scale_by_optimistic_gradient`.
      b1, b2, eps, eps_root, mu_dtype, nesterov: see :func:`jopt.scale_by_adam`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.optimistic_adam_v2(0.1, nesterov=False)
      >>> params = {"w": jnp.ones(2)}
      >>> updates, state = opt.update({"w": jnp.array([2.0, -4.0])}, opt.init(params), params)
      >>> [round(x, 4) for x in updates["w"].tolist()]  # first step: -lr * alpha * sign(g)
      [-0.1, 0.1]
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        scale_by_learning_rate(learning_rate),
    )
