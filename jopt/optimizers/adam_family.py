r"""The Adam family of optimizers, as short chains of transforms.

Each optimizer has the signature and defaults of the optax function of the same
name (optax 0.2.8), so ``jopt.adam`` is a drop-in replacement for
``optax.adam``. All numeric hyperparameters may be numbers, arrays, traced
values or schedules; ``learning_rate`` may also be a stateful schedule such as
:func:`jopt.schedules.reduce_on_plateau`. The current values are readable with
:func:`jopt.current_hyperparams`.

The learning rate :math:`\eta_t` is applied last: every optimizer here is
``chain(<preconditioner>, [add_decayed_weights], scale_by_learning_rate)``, so
the parameter update is :math:`\theta_{t} = \theta_{t-1} - \eta_t u_t`.
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.moments import (
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_radam,
    scale_by_yogi,
)
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

LearningRate = Hyperparam | StatefulSchedule
DType = Any

__all__ = ["adabelief", "adam", "adamax", "adamw", "amsgrad", "nadam", "nadamw", "radam", "yogi"]


def adam(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""Adam (Kingma & Ba, 2015).

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \eta_t \frac{m_t / (1 - \beta_1^t)}
            {\sqrt{v_t / (1 - \beta_2^t) + \bar\varepsilon} + \varepsilon}

    See :func:`jopt.scale_by_adam` for the arguments; ``nesterov=True`` gives NAdam.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = jopt.adam(learning_rate=0.1)
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> print(jopt.apply_updates(params, updates)["w"].round(4))  # optax's bits: 0.9000007
      [ 0.9 -1.9]
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    weight_decay: Hyperparam = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \left(
            \frac{\hat m_t}{\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon} + \lambda_t \theta_{t-1}\right)

    with Adam's bias-corrected moments :math:`\hat m_t, \hat v_t`. The decay
    :math:`\lambda` (``weight_decay``) is scaled by the learning rate, as in optax.

    Args:
      learning_rate: :math:`\eta`, number, array or schedule.
      b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov: see :func:`jopt.scale_by_adam`.
      weight_decay: :math:`\lambda \ge 0`.
      mask: pytree of bools, or ``params -> pytree``, selecting the leaves to decay.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> params = {"w": jnp.ones(2)}
      >>> opt = jopt.adamw(1e-3, weight_decay=0.01)
      >>> updates, state = opt.update({"w": jnp.zeros(2)}, opt.init(params), params)
      >>> bool(jnp.allclose(updates["w"], -1e-3 * 0.01 * params["w"]))  # zero gradient: only the decay
      True
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov=nesterov),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    *,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""NAdam (Dozat, 2016): :func:`adam` with Nesterov momentum.

    .. math::

        \hat m_t &= \frac{\beta_1 m_t}{1 - \beta_1^{t+1}} + \frac{(1 - \beta_1) g_t}{1 - \beta_1^t} \\
        \theta_t &= \theta_{t-1} - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon}

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.nadam(1e-2)
      >>> state = opt.init({"w": jnp.ones(3)})
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=True, nu_dtype=nu_dtype)


def nadamw(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    weight_decay: Hyperparam = 1e-4,
    mask: MaskOrFn = None,
    *,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""NAdamW: :func:`adamw` with Nesterov momentum.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \left(
            \frac{\hat m_t}{\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon} + \lambda_t \theta_{t-1}\right),
        \qquad \hat m_t = \frac{\beta_1 m_t}{1 - \beta_1^{t+1}} + \frac{(1 - \beta_1) g_t}{1 - \beta_1^t}

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.nadamw(1e-3, weight_decay=0.1)
      >>> state = opt.init({"w": jnp.ones(3)})
    """
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=True, nu_dtype=nu_dtype
    )


def amsgrad(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""AMSGrad (Reddi et al., 2018): Adam with a non-decreasing second moment.

    .. math::

        \hat v^{\max}_t &= \max(\hat v^{\max}_{t-1}, \hat v_t) \\
        \theta_t &= \theta_{t-1}
            - \eta_t \frac{\hat m_t}{\sqrt{\hat v^{\max}_t + \bar\varepsilon} + \varepsilon}

    See :func:`jopt.scale_by_amsgrad` for the arguments.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.amsgrad(1e-2)
      >>> state = opt.init({"w": jnp.ones(3)})
    """
    return chain(
        scale_by_amsgrad(
            b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu, nu_dtype=nu_dtype
        ),
        scale_by_learning_rate(learning_rate),
    )


def adamax(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    *,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""AdaMax (Kingma & Ba, 2015): Adam with the infinity norm.

    .. math::

        v_t = \max(|g_t| + \varepsilon, \beta_2 v_{t-1}), \qquad
        \theta_t = \theta_{t-1} - \eta_t \frac{m_t}{(1 - \beta_1^t) v_t}

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.adamax(2e-3)
      >>> state = opt.init({"w": jnp.ones(3)})
    """
    return chain(
        scale_by_adamax(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def radam(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    threshold: Hyperparam = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""RAdam (Liu et al., 2020): Adam with a rectified adaptive learning rate.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \begin{cases}
            r_t \hat m_t / (\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon) & \rho_t \ge \tau \\
            \hat m_t & \text{otherwise}
        \end{cases}

    See :func:`jopt.scale_by_radam` for :math:`r_t`, :math:`\rho_t` and the arguments.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.radam(1e-3)
      >>> state = opt.init({"w": jnp.ones(3)})
    """
    return chain(
        scale_by_radam(
            b1, b2, eps, eps_root, threshold, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype
        ),
        scale_by_learning_rate(learning_rate),
    )


def adabelief(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-16,
    eps_root: Hyperparam = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""AdaBelief (Zhuang et al., 2020): step sizes adapted to the belief in the gradient.

    .. math::

        s_t = \beta_2 s_{t-1} + (1 - \beta_2)(g_t - m_t)^2 + \bar\varepsilon, \qquad
        \theta_t = \theta_{t-1} - \eta_t \frac{\hat m_t}{\sqrt{s_t / (1 - \beta_2^t)} + \varepsilon}

    See :func:`jopt.scale_by_belief` for the arguments.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.adabelief(1e-3)
      >>> state = opt.init({"w": jnp.ones(3)})
    """
    return chain(
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def yogi(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-3,
    *,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""Yogi (Zaheer et al., 2018): Adam with an additive, sign-controlled second moment.

    .. math::

        v_t = v_{t-1} - (1 - \beta_2)\operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2, \qquad
        \theta_t = \theta_{t-1} - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \varepsilon}

    Both moments start at 1e-6, as in optax. See :func:`jopt.scale_by_yogi`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.yogi(1e-2)
      >>> state = opt.init({"w": jnp.ones(3)})
    """
    return chain(
        scale_by_yogi(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )
