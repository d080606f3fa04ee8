r"""Sophia (Liu et al., 2023) as an optimizer: clipped curvature-scaled momentum, weight decay, learning rate.

:func:`sophia` has the name, signature and defaults of ``optax.contrib.sophia``
(optax 0.2.8); with Python-number hyperparameters and the same seed its float32
and float64 results equal optax's bit for bit.
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.second_order import hutchinson_estimator_diag_hessian, scale_by_sophia
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

__all__ = ["sophia"]


def sophia(
    learning_rate: Hyperparam | StatefulSchedule,
    b1: Hyperparam = 0.965,
    b2: Hyperparam = 0.99,
    eps: Hyperparam = 1e-8,
    weight_decay: Hyperparam = 1e-4,
    weight_decay_mask: MaskOrFn = None,
    gamma: Hyperparam = 0.01,
    clip_threshold: Hyperparam | None = 1.0,
    update_interval: Hyperparam = 10,
    hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),  # noqa: B008 - optax's default
    mu_dtype: Any | None = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: Any = 0,
) -> GradientTransformation:
    r"""Sophia-H: momentum over a running Hutchinson estimate of the Hessian diagonal, clipped.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \Big(\operatorname{clip}\Big(
            \frac{\hat m_t}{\max(\gamma h_{t-1}, \epsilon)}, -c, c\Big) + \lambda \theta_{t-1}\Big)

    with :math:`\hat m_t` Adam's bias-corrected first moment and :math:`h_t` a
    moving average of ``hessian_diagonal_fn``'s estimates, refreshed every
    ``update_interval`` steps (see :func:`jopt.scale_by_sophia`).

    With the default estimator, ``update`` needs the objective:
    ``opt.update(grads, state, params, obj_fn=lambda p: loss(p, batch))``
    (``obj_fn`` takes the parameters only and returns the scalar loss).

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful schedule.
      b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn,
        mu_dtype, verbose, print_win_rate_every_n_steps: see :func:`jopt.scale_by_sophia`.
      weight_decay: :math:`\lambda \ge 0`, decoupled.
      weight_decay_mask: pytree of bools, or ``params -> pytree``, selecting the leaves to decay.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.sophia(learning_rate=0.1, weight_decay=0.0)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.grad(loss)(params), state, params, obj_fn=loss)
      >>> print(jopt.apply_updates(params, updates)["w"])  # no curvature yet: clipped steps of lr
      [ 0.9 -1.9]
      >>> print(state[0].nu["w"])  # then 0.01 * the Hutchinson estimate (exact here: 2)
      [0.02 0.02]
    """
    return chain(
        scale_by_sophia(
            b1=b1,
            b2=b2,
            eps=eps,
            gamma=gamma,
            clip_threshold=clip_threshold,
            update_interval=update_interval,
            hessian_diagonal_fn=hessian_diagonal_fn,
            mu_dtype=mu_dtype,
            verbose=verbose,
            print_win_rate_every_n_steps=print_win_rate_every_n_steps,
        ),
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
