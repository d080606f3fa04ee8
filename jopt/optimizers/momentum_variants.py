r"""Recent momentum variants: AdEMAMix, simplified AdEMAMix, ADOPT, MARS and cautious optimizers.

Each optimizer is ``chain(<direction>, <weight decay>, scale_by_learning_rate)``,
so :math:`\theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1})` with the
direction :math:`u_t` of the transform named in each docstring.
``ademamix``, ``simplified_ademamix`` and ``adopt`` have optax.contrib's
signatures and defaults and give its float32 bits for Python-number
hyperparameters; ``mars``, ``mars_lion``, ``cautious_adamw`` and
``cautious_lion`` are not in optax (they follow the papers and authors' code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.cautious import add_cautious_decayed_weights, cautious
from jopt.transforms.decorrelated_moments import _quarter_power, scale_by_adopt
from jopt.transforms.ema_mixture import scale_by_ademamix, scale_by_simplified_ademamix
from jopt.transforms.moments import scale_by_adam
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.sign import scale_by_lion
from jopt.transforms.variance_reduction import scale_by_mars, scale_by_mars_lion
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

LearningRate = Hyperparam | StatefulSchedule
DType = Any

__all__ = [
    "ademamix",
    "adopt",
    "cautious_adamw",
    "cautious_lion",
    "mars",
    "mars_lion",
    "simplified_ademamix",
]


def ademamix(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    b3: Hyperparam = 0.9999,
    alpha: Hyperparam = 5.0,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""AdEMAMix (Pagliardini et al., 2024): AdamW with a mixture of a fast and a slow momentum.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \left(
            \frac{\hat m^{(1)}_t + \alpha\, m^{(2)}_t}{\sqrt{\hat\nu_t + \bar\varepsilon} + \varepsilon}
            + \lambda \theta_{t-1}\right)

    See :func:`jopt.scale_by_ademamix` (the slow EMA :math:`m^{(2)}` decays with
    ``b3``). The paper warms ``alpha`` and ``b3`` up over the whole run:
    ``alpha=jopt.ademamix_alpha_scheduler(alpha, warmup=T)``,
    ``b3=jopt.ademamix_beta3_scheduler(b3, beta_start=b1, warmup=T)``. Slow
    momenta pay off in long runs; for short ones a smaller ``b3`` (0.999) is better.

    Args:
      learning_rate: :math:`\eta`, number, array or schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: see :func:`jopt.scale_by_ademamix`.
      weight_decay: :math:`\lambda \ge 0` (scaled by the learning rate, as in optax).
      mask: pytree of bools, or ``params -> pytree``, selecting the leaves to decay.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.ademamix(0.01)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.grad(lambda p: jnp.sum(p**2))(params), state, params)
      >>> [round(float(u), 6) for u in updates]  # -lr (1 + alpha (1 - b3)): Adam's step and the slow EMA
      [-0.010005, -0.010005, -0.010005]
    """
    return chain(
        scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def simplified_ademamix(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.99,
    b2: Hyperparam = 0.95,
    alpha: Hyperparam = 0.0,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Simplified AdEMAMix (Morwani et al., 2025): one undamped momentum plus :math:`\alpha g_t`.

    .. math::

        m_t = \beta_1 m_{t-1} + g_t, \qquad
        \theta_t = \theta_{t-1} - \eta_t \left(
            \frac{m_t + \alpha g_t}{\sqrt{\hat n_t + \bar\varepsilon} + \varepsilon}
            + \lambda \theta_{t-1}\right)

    See :func:`jopt.scale_by_simplified_ademamix`. As :math:`m_t` grows to
    :math:`g / (1 - \beta_1)`, use a learning rate about :math:`1 - \beta_1` times Adam's.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.simplified_ademamix(0.01)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.grad(lambda p: jnp.sum(p**2))(params), state, params)
      >>> print(jopt.apply_updates(params, updates))
      [0.99 1.99 2.99]
    """
    return chain(
        scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def adopt(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.9999,
    eps: Hyperparam = 1e-6,
    mu_dtype: DType | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _quarter_power,
) -> GradientTransformation:
    r"""ADOPT (Taniguchi et al., 2024): Adam normalized by the previous second moment.

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\,
            \operatorname{clip}\!\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \varepsilon)}, \pm c_t\right),
        \qquad \theta_t = \theta_{t-1} - \eta_t m_t

    See :func:`jopt.scale_by_adopt` for the arguments; the first step only
    initializes :math:`v` (zero update).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.adopt(0.1)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jax.grad(lambda p: jnp.sum(p**2))(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> [round(float(p), 3) for p in params]  # steps of 0, 0.1 lr and 0.19 lr
      [0.971, 1.971, 2.971]
    """
    return chain(
        scale_by_adopt(
            b1,
            b2,
            eps,
            mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
        ),
        scale_by_learning_rate(learning_rate),
    )


def mars(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.95,
    b2: Hyperparam = 0.99,
    eps: Hyperparam = 1e-8,
    gamma: Hyperparam = 0.025,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
    mu_dtype: DType | None = None,
    *,
    max_norm: Hyperparam | None = 1.0,
) -> GradientTransformation:
    r"""MARS-AdamW (Yuan et al., 2024): AdamW on a variance-reduced gradient.

    .. math::

        c_t &= g_t + \gamma \tfrac{\beta_1}{1 - \beta_1} (g_t - g_{t-1})
            \quad (\text{clipped to norm } \tau \text{ per leaf}) \\
        \theta_t &= \theta_{t-1} - \eta_t \left(
            \frac{\hat m_t}{\sqrt{\hat v_t} + \varepsilon} + \lambda \theta_{t-1}\right)

    with Adam's bias-corrected moments of :math:`c_t`; see :func:`jopt.scale_by_mars`
    (exact MARS: pass ``previous_grads=`` to ``update``). Defaults are the authors'.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.mars(0.01)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.grad(lambda p: jnp.sum(p**2))(params), state, params)
      >>> print(jopt.apply_updates(params, updates))
      [0.99 1.99 2.99]
    """
    return chain(
        scale_by_mars(b1, b2, eps, gamma, mu_dtype, max_norm=max_norm),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def mars_lion(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.95,
    gamma: Hyperparam = 0.025,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
    mu_dtype: DType | None = None,
    *,
    max_norm: Hyperparam | None = 1.0,
) -> GradientTransformation:
    r"""MARS-Lion (Yuan et al., 2024): the sign of the EMA of MARS's corrected gradient.

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1) c_t, \qquad
        \theta_t = \theta_{t-1} - \eta_t \big(\operatorname{sign}(m_t) + \lambda \theta_{t-1}\big)

    See :func:`jopt.scale_by_mars_lion`. Sign updates have unit size: use a
    learning rate 3-10x smaller than AdamW's.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.mars_lion(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, state = opt.update(2 * params, opt.init(params), params)
      >>> print(updates)
      [-0.1  0.1]
    """
    return chain(
        scale_by_mars_lion(b1, gamma, mu_dtype, max_norm=max_norm),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def _decay(weight_decay: Hyperparam, mask: MaskOrFn, cautious_weight_decay: bool) -> GradientTransformation:
    make = add_cautious_decayed_weights if cautious_weight_decay else add_decayed_weights
    return make(weight_decay, mask)


def cautious_adamw(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    weight_decay: Hyperparam = 1e-4,
    mask: MaskOrFn = None,
    *,
    cautious_weight_decay: bool = False,
    rescale: str = "paper",
    nesterov: bool = False,
) -> GradientTransformation:
    r"""C-AdamW (Liang et al., 2024): AdamW that moves only where Adam's direction agrees with :math:`g`.

    .. math::

        u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon}, \qquad
        \phi_t = \mathbb{1}(u_t \odot g_t > 0), \qquad
        \theta_t = \theta_{t-1} - \eta_t \left(\frac{d\, \phi_t \odot u_t}{\lVert\phi_t\rVert_0 + 1}
            + \lambda \theta_{t-1}\right)

    The decay is not masked (as in the paper's code); ``cautious_weight_decay=True``
    applies it only where :math:`\bar u_t \odot \theta_{t-1} \ge 0` (CWD,
    :func:`jopt.add_cautious_decayed_weights`), with :math:`\bar u_t` the masked
    direction, so masked coordinates (:math:`\bar u_t = 0`) are decayed.
    ``rescale``: see :func:`jopt.cautious`; the other arguments are :func:`jopt.adamw`'s.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.cautious_adamw(0.1, weight_decay=0.0)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, state = opt.update(2 * params, opt.init(params), params)
      >>> print(updates.round(4))  # both coordinates agree, scaled by 2 / (2 + 1)
      [-0.0667  0.0667]
    """
    direction = scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
    return chain(
        cautious(direction, descent_updates=False, rescale=rescale),
        _decay(weight_decay, mask, cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def cautious_lion(
    learning_rate: LearningRate,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.99,
    mu_dtype: DType | None = None,
    weight_decay: Hyperparam = 1e-3,
    mask: MaskOrFn = None,
    *,
    cautious_weight_decay: bool = False,
    rescale: str = "paper",
) -> GradientTransformation:
    r"""C-Lion (Liang et al., 2024): Lion's sign update, masked where it disagrees with :math:`g`.

    .. math::

        u_t = \operatorname{sign}(\beta_1 m_{t-1} + (1 - \beta_1) g_t), \qquad
        \theta_t = \theta_{t-1} - \eta_t \left(\frac{d\, \phi_t \odot u_t}{\lVert\phi_t\rVert_0 + 1}
            + \lambda \theta_{t-1}\right)

    with :math:`\phi_t = \mathbb{1}(u_t \odot g_t > 0)`; the decay as in
    :func:`cautious_adamw`; the other arguments are :func:`jopt.lion`'s.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.cautious_lion(0.1, weight_decay=0.0)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, state = opt.update(2 * params, opt.init(params), params)
      >>> print(updates.round(4))
      [-0.0667  0.0667]
    """
    return chain(
        cautious(scale_by_lion(b1, b2, mu_dtype), descent_updates=False, rescale=rescale),
        _decay(weight_decay, mask, cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )
