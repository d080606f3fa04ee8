r"""Variants of gradient descent from optax 0.2.8, as short chains of transforms.

* :func:`signum`: the sign of a momentum average (Bernstein et al., 2018);
* :func:`polyak_sgd`: SGD with the stochastic Polyak step size (Loizou et al., 2021);
* :func:`optimistic_gradient_descent`: extrapolation with the previous gradient
  (Mokhtari et al., 2019);
* :func:`rprop`: per-coordinate step sizes adapted by sign agreement
  (Riedmiller & Braun, 1993);
* :func:`fromage`: Frobenius-matched steps with a parameter shrink (Bernstein et al., 2020);
* :func:`noisy_sgd`: SGD with annealed Gaussian gradient noise (Neelakantan et al., 2015).

Each has the name, signature and defaults of the optax function of the same
name, and with Python-number hyperparameters its float32 results equal optax's
bit for bit. Every numeric hyperparameter may also be an array, a traced value
or a schedule ``step -> value``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jopt.core import GradientTransformation, chain, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, UNIT, Hyperparam, cast_hyperparam, check_hyperparams, compute_dtype
from jopt.optimizers.gradient_descent import sgd
from jopt.transforms.gradient_history import scale_by_optimistic_gradient, scale_by_rprop
from jopt.transforms.layerwise import scale_by_trust_ratio
from jopt.transforms.momentum import ema
from jopt.transforms.noise import add_noise
from jopt.transforms.scaling import StatefulSchedule, scale, scale_by_learning_rate
from jopt.transforms.sign import scale_by_sign
from jopt.transforms.step_size import scale_by_polyak
from jopt.transforms.weight_decay import AddDecayedWeightsState

LearningRate = Hyperparam | StatefulSchedule
Array = jax.Array

__all__ = ["fromage", "noisy_sgd", "optimistic_gradient_descent", "polyak_sgd", "rprop", "signum"]


def signum(
    learning_rate: LearningRate,
    beta: Hyperparam = 0.9,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Signum: step against the sign of an exponential moving average of the gradients.

    .. math::

        m_t = \beta m_{t-1} + (1 - \beta) g_t, \qquad
        \theta_t = \theta_{t-1} - \eta_t \operatorname{sign}(m_t)

    The average is not bias-corrected (that would not change its sign). Built
    as ``chain(ema(beta, debias=False), scale_by_sign(), scale_by_learning_rate)``.

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful schedule.
      beta: :math:`\beta \in [0, 1)`; number, array or schedule.
      accumulator_dtype: dtype of the stored average; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.signum(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update({"w": jnp.array([0.3, -5.0])}, opt.init(params), params)
      >>> print(updates["w"])
      [-0.1  0.1]
    """
    check_hyperparams("signum", {"beta": UNIT}, {"beta": beta})
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


def polyak_sgd(
    max_learning_rate: Hyperparam = 1.0,
    scaling: LearningRate = 1.0,
    f_min: Hyperparam = 0.0,
    eps: Hyperparam = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""SGD with the stochastic Polyak step size (SPS, Loizou et al., 2021).

    With the loss :math:`f` passed as ``value=`` and :math:`s` the ``scaling``:

    .. math::

        \theta_t = \theta_{t-1} - \gamma_t\, s\, g_t, \qquad
        \gamma_t = \min\left(\frac{f(\theta_{t-1}) - f^\star}{\|s\, g_t\|^2 + \varepsilon},
            \gamma_{\max}\right)

    (:math:`\gamma_t = 0` when the denominator vanishes; ``variant="sps+"`` clips
    the gap at zero). Built as ``chain(sgd(scaling), scale_by_polyak(...))``, so
    the norm is that of the scaled gradient, as in optax.

    Args:
      max_learning_rate: :math:`\gamma_{\max} \ge 0`.
      scaling: :math:`s \ge 0`; number, array, schedule or stateful schedule.
      f_min: :math:`f^\star`, a lower bound on the loss.
      eps: :math:`\varepsilon \ge 0`, added to the squared norm.
      variant: ``"sps"`` or ``"sps+"``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.polyak_sgd()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> loss, grads = jax.value_and_grad(lambda x: jnp.sum(x**2))(params)
      >>> updates, state = opt.update(grads, state, params, value=loss)
      >>> print(jnp.sum(jopt.apply_updates(params, updates) ** 2))  # 14 / 4
      3.5
    """
    check_hyperparams("polyak_sgd", {"scaling": NONNEGATIVE}, {"scaling": scaling})
    return chain(
        sgd(learning_rate=scaling),
        scale_by_polyak(f_min=f_min, max_learning_rate=max_learning_rate, eps=eps, variant=variant),
    )


def optimistic_gradient_descent(
    learning_rate: LearningRate,
    alpha: Hyperparam = 1.0,
    beta: Hyperparam = 1.0,
) -> GradientTransformation:
    r"""Optimistic gradient descent: a cheap extra-gradient step for min-max games.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \big((\alpha_t + \beta_t) g_t - \beta_t g_{t-1}\big),
        \qquad g_0 := g_1

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful schedule.
      alpha: :math:`\alpha \ge 0`, weight of the current gradient.
      beta: :math:`\beta \ge 0`, weight of the gradient change (negative momentum).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.optimistic_gradient_descent(0.1)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> u, state = opt.update({"w": jnp.array([1.0])}, state, params)
      >>> u, state = opt.update({"w": jnp.array([3.0])}, state, params)
      >>> print(u["w"].round(6))  # -0.1 * (2 * 3 - 1)
      [-0.5]
    """
    return chain(scale_by_optimistic_gradient(alpha=alpha, beta=beta), scale_by_learning_rate(learning_rate))


def rprop(
    learning_rate: Hyperparam,
    eta_minus: Hyperparam = 0.5,
    eta_plus: Hyperparam = 1.2,
    min_step_size: Hyperparam = 1e-6,
    max_step_size: Hyperparam = 50.0,
) -> GradientTransformation:
    r"""Rprop: per-coordinate step sizes that grow while the gradient keeps its sign.

    .. math::

        \delta_t = \operatorname{clip}\big(\eta^{\pm} \delta_{t-1}, \delta_{\min}, \delta_{\max}\big),
        \qquad \theta_t = \theta_{t-1} - p_{t-1}, \qquad p_t = \delta_t \operatorname{sign}(g_t)

    with :math:`\eta^+` when :math:`g_t` agrees in sign with the previous step,
    :math:`\eta^-` (and no step) when it does not; see :func:`jopt.scale_by_rprop`,
    including why the applied step lags one update behind (optax 0.2.8's behaviour).

    Args:
      learning_rate: the initial step size :math:`\delta_0 \ge 0`.
      eta_minus: :math:`\eta^- \in [0, 1]`, shrink factor on a sign change.
      eta_plus: :math:`\eta^+ \ge 1`, growth factor.
      min_step_size: :math:`\delta_{\min} \ge 0`.
      max_step_size: :math:`\delta_{\max} \ge \delta_{\min}`.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.rprop(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     grads = jax.grad(lambda x: jnp.sum(x**2))(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> print(params)  # 0 + 0.1 + 0.12 moved so far
      [ 0.78 -1.78]
    """
    return chain(
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
        scale(-1.0),
    )


def _fromage_multiplier(learning_rate: Array | float) -> Array | float:
    r""":math:`1 / \sqrt{1 + \eta^2}`, in Python arithmetic for a Python number."""
    return 1 / (1 + learning_rate**2) ** 0.5


def _fromage_shrink(learning_rate: Hyperparam) -> GradientTransformation:
    r"""Add :math:`(1 / \sqrt{1 + \eta^2} - 1)\, \theta`: Fromage's shrink of the parameters."""

    def step(updates, state, params, h, count_inc):
        factor = _fromage_multiplier(h["learning_rate"]) - 1

        def shrink(u, p):
            dt = compute_dtype(u.dtype)
            return u.astype(dt) + cast_hyperparam(factor, dt) * p.astype(dt)

        return jax.tree.map(shrink, updates, params), ()

    return hyperparam_transformation(
        "fromage",
        {"learning_rate": learning_rate},
        {"learning_rate": NONNEGATIVE},
        AddDecayedWeightsState,
        step,
        needs_params=True,
    )


def _fromage_rate(learning_rate: Hyperparam) -> Hyperparam | Callable[[Array], Array]:
    r""":math:`\eta / \sqrt{1 + \eta^2}` as the same kind of hyperparameter as ``learning_rate``."""
    if callable(learning_rate):
        return lambda count: _fromage_multiplier(learning_rate(count)) * learning_rate(count)
    return learning_rate * _fromage_multiplier(learning_rate)


def fromage(learning_rate: Hyperparam, min_norm: Hyperparam = 1e-6) -> GradientTransformation:
    r"""Fromage: Frobenius matched gradient descent (Bernstein et al., 2020).

    Per leaf (layer), with norms clipped below at ``min_norm``:

    .. math::

        \theta_t = \frac{1}{\sqrt{1 + \eta_t^2}} \left(\theta_{t-1}
            - \eta_t \frac{\|\theta_{t-1}\|}{\|g_t\|} g_t\right)

    i.e. a step of relative size :math:`\eta` followed by a shrink that keeps
    the parameter norm from growing. Built as ``chain(scale_by_trust_ratio(min_norm),
    scale_by_learning_rate(eta / sqrt(1 + eta^2)), <add (1 / sqrt(1 + eta^2) - 1) theta>)``.

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array or schedule.
      min_norm: lower bound :math:`\ge 0` on both norms of the trust ratio.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.fromage(learning_rate=0.003)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda x: jnp.sum(x**2))(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> [round(x, 3) for x in jopt.apply_updates(params, updates).tolist()]  # relative step 0.003
      [0.997, 1.994, 2.991]
    """
    check_hyperparams("fromage", {"learning_rate": NONNEGATIVE}, {"learning_rate": learning_rate})
    return chain(
        scale_by_trust_ratio(min_norm),
        scale_by_learning_rate(_fromage_rate(learning_rate)),
        _fromage_shrink(learning_rate),
    )


def noisy_sgd(
    learning_rate: LearningRate,
    eta: Hyperparam = 0.01,
    gamma: Hyperparam = 0.55,
    key: Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""SGD with annealed Gaussian gradient noise (Neelakantan et al., 2015).

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \left(g_t + \sigma_t \xi_t\right), \qquad
        \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \qquad \xi_t \sim \mathcal N(0, I)

    (:math:`\eta_t` is the learning rate, :math:`\eta` the noise variance
    ``eta``). The key is split as in optax, so the same ``key`` gives optax's
    trajectory bit for bit; see :func:`jopt.add_noise`.

    Args:
      learning_rate: :math:`\eta_t \ge 0`; number, array, schedule or stateful schedule.
      eta: initial noise variance :math:`\ge 0`.
      gamma: annealing exponent :math:`\gamma \ge 0`.
      key: a typed key, a raw key or an int seed; ``None`` warns and uses 0.
      seed: deprecated spelling of an int ``key``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.noisy_sgd(learning_rate=0.003, key=0)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(5):
      ...     grads = jax.grad(lambda x: jnp.sum(x**2))(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> print(f"{jnp.sum(params**2):.2f}")  # from 14: mostly the gradient steps
      13.19
    """
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))
