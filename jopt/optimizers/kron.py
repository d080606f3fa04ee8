r"""PSGD Kron (Li, 2015; psgd-jax's ``kron``) as a chain of transforms.

``kron`` has psgd-jax's (0.2.9) signature and defaults:
``chain(scale_by_kron, add_decayed_weights, scale_by_learning_rate)``, so
:math:`\theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1})` with
:math:`u_t` the RMS-capped, Kronecker-preconditioned momentum of
:func:`jopt.transforms.psgd.scale_by_kron`.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.psgd import _DEFAULT_UPDATE_PROBABILITY, scale_by_kron
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

LearningRate = Hyperparam | StatefulSchedule
DType = Any

__all__ = ["kron"]


def kron(
    learning_rate: LearningRate = 0.001,
    b1: Hyperparam = 0.9,
    weight_decay: Hyperparam = 0.0,
    weight_decay_mask: MaskOrFn = None,
    preconditioner_update_probability: Hyperparam = _DEFAULT_UPDATE_PROBABILITY,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    preconditioner_lr: Hyperparam = 0.1,
    preconditioner_init_scale: Hyperparam = 1.0,
    mu_dtype: DType | None = None,
    precond_dtype: DType | None = None,
    precond_update_precision: str | None = "tensorfloat32",
    precond_grads_precision: str | None = None,
    scanned_layers: Any | None = None,
    lax_map_scanned_layers: bool = False,
    lax_map_batch_size: int = 8,
    *,
    max_skew_triangular: float = math.inf,
    seed: int | jax.Array = 5318008,
) -> GradientTransformation:
    r"""PSGD Kron: momentum preconditioned by a learned Kronecker-factored :math:`P = Q^\top Q`.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad \hat m_t = m_t / (1 - \beta_1^t) \\
        \theta_t &= \theta_{t-1} - \eta_t \Big(
            \frac{P_t \hat m_t}{\max(1, \operatorname{rms}(P_t \hat m_t) / 1.1)}
            + \lambda \theta_{t-1}\Big)

    where each leaf's :math:`P_t = \bigotimes_i Q_i^\top Q_i` is fitted online
    (on a fraction ``preconditioner_update_probability`` of the steps) so that
    it whitens the momentum; see :func:`jopt.transforms.psgd.scale_by_kron` for
    the factor update, the randomness (``seed``, psgd-jax's stream by default)
    and every other argument.

    Args:
      learning_rate: :math:`\eta`; number, array or schedule.
      b1: momentum :math:`\beta_1 \in [0, 1)`.
      weight_decay: :math:`\lambda \ge 0`, decoupled and scaled by the learning
        rate (always in the chain, so ``update`` needs ``params``).
      weight_decay_mask: pytree of bools (or ``params -> pytree``) selecting the leaves to decay.
      preconditioner_update_probability, max_size_triangular, min_ndim_triangular,
        memory_save_mode, momentum_into_precond_update, preconditioner_lr,
        preconditioner_init_scale, mu_dtype, precond_dtype, precond_update_precision,
        precond_grads_precision, scanned_layers, lax_map_scanned_layers,
        lax_map_batch_size, max_skew_triangular, seed: see
        :func:`jopt.transforms.psgd.scale_by_kron`.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.full((2, 2), 2.0)}
      >>> opt = jopt.kron(learning_rate=0.1, preconditioner_update_probability=1.0)
      >>> state = opt.init(params)
      >>> update = jax.jit(opt.update)
      >>> for _ in range(20):
      ...     grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      ...     updates, state = update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> print(params["w"].round(1))  # about 0.1 per step (the update's RMS is capped at 1.1)
      [[0.7 0.7]
       [0.7 0.8]]
    """
    return chain(
        scale_by_kron(
            b1,
            preconditioner_update_probability,
            max_size_triangular,
            min_ndim_triangular,
            memory_save_mode,
            momentum_into_precond_update,
            preconditioner_lr,
            preconditioner_init_scale,
            mu_dtype,
            precond_dtype,
            precond_update_precision,
            precond_grads_precision,
            scanned_layers,
            lax_map_scanned_layers,
            lax_map_batch_size,
            max_skew_triangular=max_skew_triangular,
            seed=seed,
        ),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
