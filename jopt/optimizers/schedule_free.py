r"""Schedule-Free SGD and AdamW (Defazio et al., 2024), as :func:`jopt.schedule_free` around a base.

Both have the signatures and defaults of ``optax.contrib.schedule_free_sgd`` /
``schedule_free_adamw``. The base optimizer has no momentum (the schedule-free
interpolation replaces it); ``warmup_steps`` adds a linear warmup from 0 and no
decay. Train with the returned updates as usual and evaluate at
:func:`jopt.schedule_free_eval_params` (in a :mod:`jopt.sweep`, pass
``eval_params=jopt.schedule_free_eval_params`` to
:func:`jopt.sweep.supervised_task`).
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import ANY, NONNEGATIVE, UNIT, Hyperparam, Range, check_hyperparams
from jopt.optimizers.gradient_descent import sgd
from jopt.schedules.warmup import warmup_constant_schedule
from jopt.transforms.adaptive import scale_by_rms
from jopt.transforms.scaling import scale_by_learning_rate
from jopt.transforms.schedule_free import B1_RANGE, schedule_free
from jopt.transforms.weight_decay import add_decayed_weights

__all__ = ["schedule_free_adamw", "schedule_free_sgd"]

_RANGES = {
    "learning_rate": NONNEGATIVE,
    "warmup_steps": Range(0.0, integer=True),
    "b1": B1_RANGE,
    "b2": UNIT,
    "eps": NONNEGATIVE,
    "weight_decay": NONNEGATIVE,
    "weight_lr_power": ANY,
}


def _with_warmup(learning_rate: Hyperparam, warmup_steps: Hyperparam | None) -> Hyperparam:
    """``learning_rate``, or a linear warmup from 0 to it over ``warmup_steps`` (then constant)."""
    if warmup_steps is None:
        return learning_rate
    return warmup_constant_schedule(init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps)


def schedule_free_sgd(
    learning_rate: Hyperparam = 1.0,
    warmup_steps: Hyperparam | None = None,
    b1: Hyperparam = 0.9,
    weight_decay: Hyperparam | None = None,
    weight_lr_power: Hyperparam = 2.0,
    state_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Schedule-Free SGD: :func:`jopt.schedule_free` around plain SGD.

    With :math:`\eta_t` the (warmed-up) learning rate and :math:`\lambda` the weight decay:

    .. math::

        z_{t+1} &= z_t - \eta_t \left(\nabla f(y_t) + \lambda y_t\right) \\
        x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}, \qquad
        y_{t+1} = \beta_1 x_{t+1} + (1 - \beta_1)\, z_{t+1}

    (:math:`c_{t+1}` as in :func:`jopt.schedule_free`).

    Args:
      learning_rate: :math:`\eta \ge 0`, the peak rate.
      warmup_steps: linear warmup length (an integer :math:`\ge 0`, may be
        traced); ``None``: no warmup. As optax, ``0`` keeps the rate at 0.
      b1: :math:`\beta_1 \in (0, 1]`, the interpolation weight.
      weight_decay: :math:`\lambda \ge 0`, added to the gradient at :math:`y_t`
        (so multiplied by the learning rate, as in PyTorch); ``None``: none.
      weight_lr_power: :math:`r`, the power of the learning rate in the averaging weights.
      state_dtype: dtype of :math:`z`; ``None``: the parameters' dtypes.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> f = lambda p: jnp.sum(p**2)
      >>> opt = jopt.schedule_free_sgd(learning_rate=0.1)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(20):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> x = jopt.schedule_free_eval_params(state, params)
      >>> print(f"train point {f(params):.4f}, eval point {f(x):.4f}")
      train point 0.0092, eval point 0.0002
    """
    check_hyperparams(
        "schedule_free_sgd",
        _RANGES,
        dict(
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            b1=b1,
            weight_decay=weight_decay,
            weight_lr_power=weight_lr_power,
        ),
    )
    learning_rate = _with_warmup(learning_rate, warmup_steps)
    base = sgd(learning_rate)
    if weight_decay is not None:
        base = chain(add_decayed_weights(weight_decay), base)
    return schedule_free(
        base, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power, state_dtype=state_dtype
    )


def schedule_free_adamw(
    learning_rate: Hyperparam = 0.0025,
    warmup_steps: Hyperparam | None = None,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    weight_decay: Hyperparam = 0.0,
    weight_lr_power: Hyperparam = 2.0,
    state_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Schedule-Free AdamW: :func:`jopt.schedule_free` around AdamW without momentum.

    The base step is Adam with :math:`\beta_1 = 0` plus decoupled weight decay,
    at the training parameters :math:`y_t`:

    .. math::

        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2, \qquad
        z_{t+1} = z_t - \eta_t \left(\frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \varepsilon}
            + \lambda y_t\right) \\
        x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}, \qquad
        y_{t+1} = \beta_1 x_{t+1} + (1 - \beta_1)\, z_{t+1}

    (:math:`c_{t+1}` as in :func:`jopt.schedule_free`; the preconditioner is
    ``scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True)``, which keeps
    no first moment).

    Args:
      learning_rate: :math:`\eta \ge 0`, the peak rate.
      warmup_steps: linear warmup length (an integer :math:`\ge 0`, may be
        traced); ``None``: no warmup. As optax, ``0`` keeps the rate at 0.
      b1: :math:`\beta_1 \in (0, 1]`, the interpolation weight.
      b2: :math:`\beta_2 \in [0, 1)`, decay of the squared-gradient average.
      eps: :math:`\varepsilon \ge 0`, added outside the square root.
      weight_decay: :math:`\lambda \ge 0` (decoupled, multiplied by the learning rate).
      weight_lr_power: :math:`r`, the power of the learning rate in the averaging weights.
      state_dtype: dtype of :math:`z`; ``None``: the parameters' dtypes.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> f = lambda p: jnp.sum(p**2)
      >>> opt = jopt.schedule_free_adamw(learning_rate=0.1, warmup_steps=10)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(100):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> x = jopt.schedule_free_eval_params(state, params)
      >>> print(f"train point {f(params):.3f}, eval point {f(x):.3f}")
      train point 0.045, eval point 0.030
    """
    check_hyperparams(
        "schedule_free_adamw",
        _RANGES,
        dict(
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            b1=b1,
            b2=b2,
            eps=eps,
            weight_decay=weight_decay,
            weight_lr_power=weight_lr_power,
        ),
    )
    learning_rate = _with_warmup(learning_rate, warmup_steps)
    base = chain(
        scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )
    return schedule_free(
        base, learning_rate=learning_rate, b1=b1, weight_lr_power=weight_lr_power, state_dtype=state_dtype
    )
