r"""Adafactor (Shazeer & Stern, 2018): factored second moments, block RMS clipping, relative steps."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam, check_hyperparam
from jopt.transforms.clipping import clip_by_block_rms
from jopt.transforms.factored import (
    scale_by_factored_rms,
)
from jopt.transforms.momentum import ema
from jopt.transforms.normalization import scale_by_param_block_rms
from jopt.transforms.scaling import StatefulSchedule, scale, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

__all__ = ["adafactor"]


def adafactor(
    learning_rate: Hyperparam | StatefulSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: Hyperparam = 0.8,
    decay_offset: Hyperparam = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Hyperparam | None = 1.0,
    momentum: Hyperparam | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: Hyperparam | None = None,
    eps: Hyperparam = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Adafactor: memory-efficient adaptive steps from factored second-moment estimates.

    With :math:`\hat g_t` the gradient scaled by :func:`jopt.scale_by_factored_rms`
    (decay :math:`\hat\beta_t = 1 - (t - t_0 + 1)^{-c}`), each leaf's update is

    .. math::

        a_t &= \eta_t\, \frac{\hat g_t}{\max(1, \operatorname{rms}(\hat g_t)/d)}\,
               \max(\operatorname{rms}(\theta_t), 10^{-3}) \\
        m_t &= \beta m_{t-1} + (1 - \beta)\, a_t \quad (\text{only with momentum } \beta) \\
        u_t &= -(m_t + \lambda \theta_t)

    Each optional factor is dropped when its argument is ``None``/``False``:
    :math:`\eta_t` (``learning_rate=None``: the step is relative to the
    parameter scale only), the clipping by :math:`d` (``clipping_threshold``),
    the parameter scale (``multiply_by_parameter_scale``), the momentum
    (``momentum``) and the decay :math:`\lambda` (``weight_decay_rate``).

    Args:
      learning_rate: :math:`\eta_t`, or ``None`` for no global scale.
      min_dim_size_to_factor: factor a leaf's statistics only if its two largest axes are this long.
      decay_rate: :math:`c`, exponent of the second-moment decay schedule.
      decay_offset: :math:`t_0`, integer step at which the schedule restarts (fine-tuning).
      multiply_by_parameter_scale: scale steps by the leaf's parameter RMS.
      clipping_threshold: :math:`d > 0`, bound on the RMS of each leaf's scaled update.
      momentum: :math:`\beta \in [0, 1]`, enables a (non-debiased) momentum.
      dtype_momentum: dtype of the momentum buffer.
      weight_decay_rate: :math:`\lambda \ge 0`, decoupled weight decay (not scaled by :math:`\eta`).
      eps: :math:`\epsilon` added to squared gradients.
      factored: use factored statistics for leaves with at least two axes.
      weight_decay_mask: leaves to decay (pytree of bools or ``params -> pytree``).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.adafactor(learning_rate=1e-2)
      >>> params = {"w": jnp.ones((4, 3))}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
    """
    owner = "adafactor"
    check_hyperparam(decay_offset, "decay_offset", low=0.0, integer=True, owner=owner)
    check_hyperparam(clipping_threshold, "clipping_threshold", low=0.0, low_open=True, owner=owner)
    check_hyperparam(momentum, "momentum", low=0.0, high=1.0, owner=owner)
    check_hyperparam(weight_decay_rate, "weight_decay_rate", low=0.0, owner=owner)
    check_hyperparam(eps, "eps", low=0.0, owner=owner)
    parts: list[GradientTransformation] = [
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        parts.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())
    if momentum is not None:
        parts.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    parts.append(scale(-1))
    return chain(*parts)
