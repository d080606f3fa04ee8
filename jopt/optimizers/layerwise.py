r"""Layer-wise adaptive optimizers: LARS, LAMB and NovoGrad.

Each rescales the update of every leaf ("layer") by a per-leaf quantity: the
ratio of parameter and update norms (LARS, LAMB), or a per-leaf second moment
(NovoGrad).
"""

from __future__ import annotations

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam, check_hyperparam
from jopt.transforms.layerwise import scale_by_novograd, scale_by_trust_ratio
from jopt.transforms.momentum import trace
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

__all__ = ["lamb", "lars", "novograd"]

LearningRate = Hyperparam | StatefulSchedule


def lars(
    learning_rate: LearningRate,
    weight_decay: Hyperparam = 0.0,
    weight_decay_mask: MaskOrFn | bool = True,
    trust_coefficient: Hyperparam = 0.001,
    eps: Hyperparam = 0.0,
    trust_ratio_mask: MaskOrFn | bool = True,
    momentum: Hyperparam = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""LARS (You et al., 2017): SGD with momentum on trust-ratio-scaled updates.

    Per leaf, with :math:`c` the trust coefficient:

    .. math::

        d_t &= g_t + \lambda \theta_t, \qquad
        r_t = \frac{c\,\|\theta_t\|}{\|d_t\| + \epsilon} \ (1 \text{ if a norm is } 0) \\
        m_t &= -\eta_t r_t d_t + \mu\, m_{t-1}, \qquad u_t = m_t
        \quad (\text{Nesterov: } u_t = -\eta_t r_t d_t + \mu\, m_t)

    Args:
      learning_rate: :math:`\eta_t`; number, array or schedule.
      weight_decay: :math:`\lambda \ge 0`.
      weight_decay_mask: leaves to decay (``True`` for all, a (prefix) pytree of bools, or a function).
      trust_coefficient: :math:`c \ge 0`.
      eps: :math:`\epsilon \ge 0` added to the update norm.
      trust_ratio_mask: leaves to rescale by the trust ratio (same forms as ``weight_decay_mask``).
      momentum: :math:`\mu \in [0, 1]`.
      nesterov: use Nesterov momentum.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.lars(0.1, weight_decay=1e-4)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
    """
    check_hyperparam(momentum, "momentum", low=0.0, high=1.0, owner="lars")
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps, mask=trust_ratio_mask),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov=nesterov),
    )


def lamb(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-6,
    eps_root: Hyperparam = 0.0,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""LAMB (You et al., 2020): Adam with decoupled weight decay, rescaled per leaf by a trust ratio.

    .. math::

        a_t &= \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t
              \quad (\hat m_t, \hat v_t \text{: Adam's debiased moments}) \\
        u_t &= -\eta_t \frac{\|\theta_t\|}{\|a_t\|}\, a_t \quad (\text{ratio } 1 \text{ if a norm is } 0)

    Args:
      learning_rate: :math:`\eta_t`; number, array or schedule.
      b1: :math:`\beta_1`, decay of the first moment.
      b2: :math:`\beta_2`, decay of the second moment.
      eps: :math:`\epsilon`, added to the root.
      eps_root: :math:`\epsilon_{root}`, added inside the root.
      weight_decay: :math:`\lambda \ge 0`.
      mask: leaves to decay (pytree of bools, a prefix of one, or a function); ``None`` decays all.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.lamb(1e-3, weight_decay=1e-2)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
    """
    from jopt.transforms.moments import scale_by_adam  # written concurrently; imported lazily

    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def novograd(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.25,
    eps: Hyperparam = 1e-6,
    eps_root: Hyperparam = 0.0,
    weight_decay: Hyperparam = 0.0,
) -> GradientTransformation:
    r"""NovoGrad (Ginsburg et al., 2019): normalised-gradient momentum with a per-leaf second moment.

    .. math::

        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) \|g_t\|^2 \quad (v_1 = \|g_1\|^2) \\
        m_t &= \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t \\
        u_t &= -\eta_t m_t

    Args:
      learning_rate: :math:`\eta_t`; number, array or schedule.
      b1: :math:`\beta_1`, momentum coefficient.
      b2: :math:`\beta_2`, decay of the per-leaf second moment.
      eps: :math:`\epsilon`, added to the root.
      eps_root: :math:`\epsilon_{root}`, added inside the root.
      weight_decay: :math:`\lambda \ge 0` (inside the momentum, not decoupled).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.novograd(1e-2)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params)
    """
    return chain(
        scale_by_novograd(b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay),
        scale_by_learning_rate(learning_rate),
    )
