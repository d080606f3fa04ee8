r"""Kronecker-factored optimizers: SOAP (Vyas et al., 2024) and Shampoo (Gupta et al., 2018).

Neither is in optax. Both are short chains around the preconditioners of
:mod:`jopt.transforms.kronecker_soap` and :mod:`jopt.transforms.kronecker_shampoo`;
the learning rate :math:`\eta_t` is applied last, so
:math:`\theta_t = \theta_{t-1} - \eta_t u_t`. Every numeric hyperparameter may be a
number, an array, a traced value or a schedule, including the refresh frequencies.
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.kronecker_shampoo import scale_by_shampoo
from jopt.transforms.kronecker_soap import scale_by_soap
from jopt.transforms.momentum import trace
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

LearningRate = Hyperparam | StatefulSchedule

__all__ = ["shampoo", "soap"]


def soap(
    learning_rate: LearningRate = 3e-3,
    b1: Hyperparam = 0.95,
    b2: Hyperparam = 0.95,
    shampoo_beta: Hyperparam | None = None,
    eps: Hyperparam = 1e-8,
    weight_decay: Hyperparam = 0.01,
    precondition_frequency: Hyperparam = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    mask: MaskOrFn = None,
    *,
    block_size: int | None = None,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    r"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al., 2024).

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \left( u_t + \lambda\, \theta_{t-1} \right)

    with :math:`u_t` from :func:`jopt.scale_by_soap` (zero at the first call,
    which only builds the eigenbases) and decoupled weight decay :math:`\lambda`
    as in AdamW. Defaults are the authors' (their ``betas=(0.95, 0.95)``,
    ``shampoo_beta=-1`` meaning "use ``b2``" is ``None`` here).

    The reference code decays the already-updated weights,
    :math:`\theta \leftarrow (\theta - \eta u)(1 - \eta\lambda)`, and skips the
    decay at the first call; jopt decays :math:`\theta_{t-1}` at every call (a
    difference of :math:`\eta^2 \lambda u` per step).

    Args:
      learning_rate: :math:`\eta`.
      b1, b2, shampoo_beta, eps, precondition_frequency, max_precond_dim, merge_dims,
        precondition_1d, normalize_grads, correct_bias, block_size, mu_dtype: see
        :func:`jopt.scale_by_soap`.
      weight_decay: :math:`\lambda \ge 0`.
      mask: pytree of bools, or ``params -> pytree``, selecting the leaves to decay.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 1.0]])}
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> opt = jopt.soap(learning_rate=0.1, weight_decay=0.0)
      >>> @jax.jit
      ... def step(params, state):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     return jopt.apply_updates(params, updates), state
      >>> state = opt.init(params)
      >>> for _ in range(20):
      ...     params, state = step(params, state)
      >>> bool(loss(params) < 0.5)  # from 6.25
      True
    """
    return chain(
        scale_by_soap(
            b1,
            b2,
            shampoo_beta,
            eps,
            precondition_frequency,
            max_precond_dim,
            merge_dims,
            precondition_1d,
            normalize_grads,
            correct_bias,
            block_size=block_size,
            mu_dtype=mu_dtype,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def shampoo(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-6,
    weight_decay: Hyperparam = 0.0,
    precondition_frequency: Hyperparam = 1,
    start_preconditioning_step: Hyperparam = 0,
    graft_eps: Hyperparam = 1e-8,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = True,
    graft_type: str = "adam",
    block_size: int | None = 128,
    max_precond_dim: int | None = None,
    merge_dims: bool = False,
    precondition_1d: bool = True,
    exponent_override: int | None = None,
    root_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Shampoo (Gupta et al., 2018) with blocking, grafting and momentum (Anil et al., 2020).

    .. math::

        m_t = \beta_1 m_{t-1} + u_t + \lambda \theta_{t-1}, \qquad
        \theta_t = \theta_{t-1} - \eta_t \begin{cases} m_t \\
            \beta_1 m_t + u_t + \lambda \theta_{t-1} & \texttt{nesterov=True} \end{cases}

    with :math:`u_t` the grafted Shampoo direction of :func:`jopt.scale_by_shampoo`.
    The weight decay enters the momentum, as in distributed Shampoo's default
    (``decoupled_weight_decay=False``); the momentum is one buffer on the combined
    direction (distributed Shampoo keeps separate buffers for the grafting and
    the Shampoo directions, which differ only before ``start_preconditioning_step``).

    Args:
      learning_rate: :math:`\eta`.
      b1: momentum :math:`\beta_1 \in [0, 1]`.
      weight_decay: :math:`\lambda \ge 0`.
      mask: pytree of bools, or ``params -> pytree``, selecting the leaves to decay.
      nesterov: Nesterov momentum.
      b2, eps, precondition_frequency, start_preconditioning_step, graft_eps, graft_type,
        block_size, max_precond_dim, merge_dims, precondition_1d, exponent_override,
        root_dtype: see :func:`jopt.scale_by_shampoo`.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 1.0]])}
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> opt = jopt.shampoo(learning_rate=0.05)
      >>> @jax.jit
      ... def step(params, state):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     return jopt.apply_updates(params, updates), state
      >>> state = opt.init(params)
      >>> for _ in range(20):
      ...     params, state = step(params, state)
      >>> bool(loss(params) < 0.5)  # from 6.25
      True
    """
    return chain(
        scale_by_shampoo(
            b2,
            eps,
            precondition_frequency,
            start_preconditioning_step,
            graft_eps,
            graft_type=graft_type,
            block_size=block_size,
            max_precond_dim=max_precond_dim,
            merge_dims=merge_dims,
            precondition_1d=precondition_1d,
            exponent_override=exponent_override,
            root_dtype=root_dtype,
        ),
        add_decayed_weights(weight_decay, mask),
        trace(b1, nesterov),
        scale_by_learning_rate(learning_rate),
    )
