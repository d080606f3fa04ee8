r"""Classic per-coordinate adaptive preconditioners: RMSprop, Adagrad, Adadelta.

Each transform divides the update by a running estimate of the gradient's
magnitude and does not apply the learning rate; combine it with
:func:`jopt.scale_by_learning_rate` (see :mod:`jopt.optimizers.adaptive`).

Conventions shared by the transforms here:

* Decays (``decay``, ``rho``) must lie in :math:`[0, 1)`; ``eps`` and initial
  accumulator values must be :math:`\ge 0` (checked for concrete values at
  construction). Each may be a number, an array, a traced value or a schedule
  ``step -> value``. Initial accumulator values are read once, in ``init``.
  The values used at the latest step are kept in ``state.hyperparams``.
* Arithmetic is done in at least float32; accumulators are stored in the
  parameters' dtype (as in optax) and the returned updates have the gradients'
  dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, POSITIVE, UNIT, Hyperparam, Range, cast_hyperparam, compute_dtype
from jopt.numerics import abs_sq
from jopt.tree import tree_bias_correction, tree_moment

Array = jax.Array
PyTree = Any

__all__ = [
    "ScaleByAdaDeltaState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "scale_by_adadelta",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_stddev",
]


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: step count, second moment ``nu``, hyperparameters."""

    count: Array
    nu: PyTree
    hyperparams: dict[str, Array]


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev`: first moment ``mu`` and second moment ``nu``."""

    count: Array
    mu: PyTree
    nu: PyTree
    hyperparams: dict[str, Array]


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: the running sum of squared gradients."""

    count: Array
    sum_of_squares: PyTree
    hyperparams: dict[str, Array]


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`: averages of squared gradients and squared updates."""

    count: Array
    e_g: PyTree
    e_x: PyTree
    hyperparams: dict[str, Array]


# --------------------------------------------------------------------------- helpers

# step(grads, state, hyperparams, incremented count) -> (direction, new accumulators
# in the order of the state's fields between ``count`` and ``hyperparams``).
_Step = Callable[[PyTree, Any, dict[str, Array], Array], tuple[PyTree, tuple[PyTree, ...]]]
# init_accumulators(params, hyperparams resolved at step 0) -> accumulators.
_Init = Callable[[PyTree, dict[str, Array]], tuple[PyTree, ...]]


def _full_like(params: PyTree, value: Array) -> PyTree:
    """``value`` broadcast to every leaf, in the leaf's dtype."""
    return jax.tree.map(lambda p: jnp.full_like(p, cast_hyperparam(value, p.dtype)), params)


# Decays are in [0, 1); eps and initial values >= 0 (Adadelta's eps > 0).
_RANGES = {"decay": UNIT, "rho": UNIT}


def _accumulator_transform(
    owner: str,
    state_cls: type,
    hp: Mapping[str, Hyperparam],
    init_accumulators: _Init,
    step: _Step,
    *,
    ranges: Mapping[str, Range] | None = None,
    counted: bool = False,
) -> GradientTransformation:
    """A transform with state ``(count, *accumulators, hyperparams)``, built by the shared builder.

    Initial accumulator values are hyperparameters like the others, read by
    ``init_accumulators`` at step 0.
    """
    ranges = {k: _RANGES.get(k, NONNEGATIVE) for k in hp} | dict(ranges or {})
    return hyperparam_transformation(
        owner,
        hp,
        ranges,
        state_cls,
        lambda grads, state, params, h, count_inc: step(grads, state, h, count_inc),
        init_accumulators,
        counted=counted,
    )


def _rms_scaling(eps: Array, eps_in_sqrt: bool) -> Callable[[Array], Array]:
    """:math:`1/\\sqrt{v + \\varepsilon}` or :math:`1/(\\sqrt{v} + \\varepsilon)`."""
    if eps_in_sqrt:
        return lambda v: jax.lax.rsqrt(v + cast_hyperparam(eps, v.dtype))
    return lambda v: 1 / (jnp.sqrt(v) + cast_hyperparam(eps, v.dtype))


def _scale(scaling: PyTree, grads: PyTree) -> PyTree:
    return jax.tree.map(lambda s, g: s * g.astype(s.dtype), scaling, grads)


# --------------------------------------------------------------------------- transforms


def scale_by_rms(
    decay: Hyperparam = 0.9,
    eps: Hyperparam = 1e-8,
    initial_scale: Hyperparam = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescale updates by the root of an exponential moving average of squared gradients (RMSprop).

    .. math::

        v_t = \rho\, v_{t-1} + (1 - \rho)\, g_t^2, \qquad v_0 = v_{\text{init}} \\
        \hat v_t = v_t / (1 - \rho^t) \text{ if bias\_correction else } v_t \\
        u_t = \frac{g_t}{\sqrt{\hat v_t + \varepsilon}} \text{ (eps\_in\_sqrt) or }
              \frac{g_t}{\sqrt{\hat v_t} + \varepsilon}

    ``scale_by_rms(b2, eps_in_sqrt=False, bias_correction=True)`` equals Adam with
    :math:`\beta_1 = 0`.

    Args:
      decay: :math:`\rho \in [0, 1)`, decay of the average of squared gradients.
      eps: :math:`\varepsilon \ge 0` in the denominator.
      initial_scale: :math:`v_{\text{init}} \ge 0` (PyTorch uses 0, TF1 uses 1).
      eps_in_sqrt: add ``eps`` inside the square root (default) or outside it
        (PyTorch's convention).
      bias_correction: divide :math:`v_t` by :math:`1 - \rho^t`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_rms(decay=0.75, eps=0.0)
      >>> g = {"w": jnp.full(2, 2.0)}
      >>> u, state = tx.update(g, tx.init(g))
      >>> print(u["w"])  # 2 / sqrt(0.25 * 4)
      [2. 2.]
    """

    def init_accumulators(params, h):
        return (_full_like(params, h["initial_scale"]),)

    def step(grads, state, h, count_inc):
        nu = tree_moment(grads, state.nu, h["decay"], 2)
        nu_hat = tree_bias_correction(nu, h["decay"], count_inc) if bias_correction else nu
        scaling = jax.tree.map(_rms_scaling(h["eps"], eps_in_sqrt), nu_hat)
        return _scale(scaling, grads), (nu,)

    hp = {"decay": decay, "eps": eps, "initial_scale": initial_scale}
    return _accumulator_transform(
        "scale_by_rms", ScaleByRmsState, hp, init_accumulators, step, counted=bias_correction
    )


def scale_by_stddev(
    decay: Hyperparam = 0.9,
    eps: Hyperparam = 1e-8,
    initial_scale: Hyperparam = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescale updates by a running estimate of the gradient's standard deviation (centered RMSprop).

    .. math::

        m_t = \rho\, m_{t-1} + (1 - \rho)\, g_t, \qquad m_0 = 0 \\
        v_t = \rho\, v_{t-1} + (1 - \rho)\, g_t^2, \qquad v_0 = v_{\text{init}} \\
        u_t = \frac{g_t}{\sqrt{\hat v_t - \hat m_t^2 + \varepsilon}} \text{ (eps\_in\_sqrt) or }
              \frac{g_t}{\sqrt{\hat v_t - \hat m_t^2} + \varepsilon}

    where :math:`\hat m_t, \hat v_t` are :math:`m_t, v_t` divided by
    :math:`1 - \rho^t` when ``bias_correction`` is set, else equal to them
    (Graves, 2013).

    Args:
      decay: :math:`\rho \in [0, 1)`, decay of both moving averages.
      eps: :math:`\varepsilon \ge 0` in the denominator.
      initial_scale: :math:`v_{\text{init}} \ge 0`.
      eps_in_sqrt: add ``eps`` inside the square root (default) or outside it.
      bias_correction: bias-correct both moments.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_stddev(decay=0.5, eps=0.0)
      >>> g = {"w": jnp.full(2, 2.0)}
      >>> u, state = tx.update(g, tx.init(g))
      >>> print(u["w"])  # 2 / sqrt(0.5 * 4 - 1 ** 2)
      [2. 2.]
    """

    def init_accumulators(params, h):
        mu = jax.tree.map(jnp.zeros_like, params)
        return mu, _full_like(params, h["initial_scale"])

    def step(grads, state, h, count_inc):
        mu = tree_moment(grads, state.mu, h["decay"], 1)
        nu = tree_moment(grads, state.nu, h["decay"], 2)
        if bias_correction:
            mu_hat = tree_bias_correction(mu, h["decay"], count_inc)
            nu_hat = tree_bias_correction(nu, h["decay"], count_inc)
        else:
            mu_hat, nu_hat = mu, nu
        rms = _rms_scaling(h["eps"], eps_in_sqrt)
        scaling = jax.tree.map(lambda m, v: rms(v - abs_sq(m)), mu_hat, nu_hat)
        return _scale(scaling, grads), (mu, nu)

    hp = {"decay": decay, "eps": eps, "initial_scale": initial_scale}
    return _accumulator_transform(
        "scale_by_stddev", ScaleByRStdDevState, hp, init_accumulators, step, counted=bias_correction
    )


def scale_by_rss(
    initial_accumulator_value: Hyperparam = 0.1, eps: Hyperparam = 1e-7
) -> GradientTransformation:
    r"""Rescale updates by the root of the sum of all squared gradients so far (Adagrad).

    .. math::

        G_t = G_{t-1} + g_t^2, \qquad G_0 = G_{\text{init}} \\
        u_t = \begin{cases} g_t / \sqrt{G_t + \varepsilon} & G_t > 0 \\ 0 & \text{otherwise} \end{cases}

    (Duchi et al., 2011.)

    Args:
      initial_accumulator_value: :math:`G_{\text{init}} \ge 0`.
      eps: :math:`\varepsilon \ge 0`, added inside the square root.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
      >>> g = {"w": jnp.array([3.0, 0.0])}
      >>> u, state = tx.update(g, tx.init(g))
      >>> print(u["w"])
      [1. 0.]
    """

    def init_accumulators(params, h):
        return (_full_like(params, h["initial_accumulator_value"]),)

    def step(grads, state, h, count_inc):
        del count_inc

        def accumulate(g, s):
            dt = compute_dtype(jnp.promote_types(g.dtype, s.dtype))
            return abs_sq(g.astype(dt)) + s.astype(dt)

        total = jax.tree.map(accumulate, grads, state.sum_of_squares)

        def inv_root(s):
            return jnp.where(s > 0, jax.lax.rsqrt(s + cast_hyperparam(h["eps"], s.dtype)), 0.0).astype(
                s.dtype
            )

        return _scale(jax.tree.map(inv_root, total), grads), (total,)

    hp = {"eps": eps, "initial_accumulator_value": initial_accumulator_value}
    return _accumulator_transform("scale_by_rss", ScaleByRssState, hp, init_accumulators, step)


def scale_by_adadelta(rho: Hyperparam = 0.9, eps: Hyperparam = 1e-6) -> GradientTransformation:
    r"""Rescale updates by the ratio of update and gradient RMS (Adadelta, Zeiler 2012).

    .. math::

        E[g^2]_t = \rho\, E[g^2]_{t-1} + (1 - \rho)\, g_t^2 \\
        u_t = \frac{\sqrt{E[u^2]_{t-1} + \varepsilon}}{\sqrt{E[g^2]_t + \varepsilon}}\, g_t \\
        E[u^2]_t = \rho\, E[u^2]_{t-1} + (1 - \rho)\, u_t^2

    with both averages starting at 0. Since :math:`E[u^2]_0 = 0`, ``eps`` sets the
    size of the first steps and must be positive.

    Args:
      rho: :math:`\rho \in [0, 1)`, decay of both averages.
      eps: :math:`\varepsilon > 0`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_adadelta(rho=0.0, eps=1.0)
      >>> g = {"w": jnp.full(2, jnp.sqrt(3.0))}
      >>> u, state = tx.update(g, tx.init(g))
      >>> print(u["w"])  # sqrt(0 + 1) / sqrt(3 + 1) * sqrt(3)
      [0.8660254 0.8660254]
    """

    def init_accumulators(params, h):
        del h
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return zeros(), zeros()

    def step(grads, state, h, count_inc):
        del count_inc
        e_g = tree_moment(grads, state.e_g, h["rho"], 2)

        def scaled(g, eg, ex):
            eps_ = cast_hyperparam(h["eps"], eg.dtype)
            return jnp.sqrt(ex.astype(eg.dtype) + eps_) / jnp.sqrt(eg + eps_) * g.astype(eg.dtype)

        direction = jax.tree.map(scaled, grads, e_g, state.e_x)
        e_x = tree_moment(direction, state.e_x, h["rho"], 2)
        return direction, (e_g, e_x)

    return _accumulator_transform(
        "scale_by_adadelta",
        ScaleByAdaDeltaState,
        {"rho": rho, "eps": eps},
        init_accumulators,
        step,
        ranges={"eps": POSITIVE},
    )
