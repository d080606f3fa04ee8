r"""Moment-based preconditioners: the Adam family.

Every transform here keeps exponential moving averages of the gradient
(:math:`m_t`, first moment) and of some measure of its size (:math:`v_t`) and
returns a preconditioned direction. None of them applies the learning rate;
combine them with :func:`jopt.scale_by_learning_rate` (see
:mod:`jopt.optimizers.adam_family`).

Conventions shared by all transforms in this module:

* ``b1``, ``b2`` must lie in :math:`[0, 1)`, ``eps`` and ``eps_root`` must be
  :math:`\ge 0` (checked for concrete values at construction). Each may be a
  number, an array, a traced value or a schedule ``step -> value``; the values
  used at the latest step are kept in ``state.hyperparams``.
* Arithmetic is done in at least float32, so ``b2=0.999`` keeps its precision
  with bfloat16 parameters. Moments are stored in ``mu_dtype`` / ``nu_dtype``
  (default: the parameters' dtype) and the returned updates have the
  gradients' dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import (
    ANY,
    NONNEGATIVE,
    UNIT,
    Hyperparam,
    cast_hyperparam,
    check_hyperparams,
    compute_dtype,
    resolve,
)
from jopt.tree import (
    safe_increment,
    tree_bias_correction,
    tree_moment,
    tree_zeros_like,
    update_infinity_moment,
)

Array = jax.Array
PyTree = Any
DType = Any

__all__ = [
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByBeliefState",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_belief",
    "scale_by_radam",
    "scale_by_yogi",
]


class ScaleByAdamState(NamedTuple):
    """State of Adam, AdaMax, RAdam and Yogi.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment :math:`m_t`.
      nu: second moment :math:`v_t` (AdaMax: the infinity-norm moment :math:`u_t`).
      hyperparams: hyperparameter values used at the latest step.
    """

    count: Array
    mu: PyTree
    nu: PyTree
    hyperparams: dict[str, Array]


class ScaleByAmsgradState(NamedTuple):
    """State of AMSGrad: Adam's moments plus the running maximum ``nu_max``."""

    count: Array
    mu: PyTree
    nu: PyTree
    nu_max: PyTree
    hyperparams: dict[str, Array]


class ScaleByBeliefState(NamedTuple):
    """State of AdaBelief; ``nu`` is the EMA of the squared prediction error :math:`s_t`."""

    count: Array
    mu: PyTree
    nu: PyTree
    hyperparams: dict[str, Array]


# --------------------------------------------------------------------------- helpers

# Decays are in [0, 1); every other hyperparameter here (eps, eps_root, ...) is >= 0
# unless listed.
_RANGES = {"b1": UNIT, "b2": UNIT, "threshold": ANY}

# A step function receives (grads, state, resolved hyperparams, incremented count)
# and returns (direction, new moments in the order of the state's moment fields).
_Step = Callable[[PyTree, Any, dict[str, Array], Array], tuple[PyTree, tuple[PyTree, ...]]]


def _canonical_dtype(dtype: DType | None) -> DType | None:
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def _upcast(tree: PyTree) -> PyTree:
    """Every leaf in its compute dtype (at least float32)."""
    return jax.tree.map(lambda x: x.astype(compute_dtype(x.dtype)), tree)


def _first_moment_hat(mu: PyTree, grads: PyTree, b1: Array, count_inc: Array, nesterov: bool) -> PyTree:
    r"""Bias-corrected first moment, or its Nesterov look-ahead (Dozat, 2016).

    .. math:: \hat m_t = \beta_1 \frac{m_t}{1 - \beta_1^{t+1}} + (1 - \beta_1) \frac{g_t}{1 - \beta_1^t}
    """
    if not nesterov:
        return tree_bias_correction(mu, b1, count_inc)
    ahead = tree_bias_correction(mu, b1, safe_increment(count_inc))
    now = tree_bias_correction(_upcast(grads), b1, count_inc)
    return jax.tree.map(
        lambda m, g: cast_hyperparam(b1, m.dtype) * m + (1 - cast_hyperparam(b1, m.dtype)) * g, ahead, now
    )


def _adam_direction(mu_hat: PyTree, nu_hat: PyTree, eps: Array, eps_root: Array | None) -> PyTree:
    r""":math:`\hat m / (\sqrt{\hat v + \bar\varepsilon} + \varepsilon)`; ``eps_root=None`` omits it."""

    def one(m, v):
        v = v if eps_root is None else v + cast_hyperparam(eps_root, v.dtype)
        return m / (jnp.sqrt(v) + cast_hyperparam(eps, v.dtype))

    return jax.tree.map(one, mu_hat, nu_hat)


def _moment_transform(
    owner: str,
    state_cls: type,
    hp: dict[str, Hyperparam],
    init_moments: Callable[[PyTree], tuple[PyTree, ...]],
    step: _Step,
) -> GradientTransformation:
    """A transform with state ``(count, *moments, hyperparams)`` and the ranges of :data:`_RANGES`."""
    return hyperparam_transformation(
        owner,
        hp,
        {k: _RANGES.get(k, NONNEGATIVE) for k in hp},
        state_cls,
        lambda grads, state, params, h, count_inc: step(grads, state, h, count_inc),
        lambda params, h: init_moments(params),
        counted=True,
    )


def _zero_moments(mu_dtype: DType | None, nu_dtype: DType | None, extra: int = 0):
    mu_dtype, nu_dtype = _canonical_dtype(mu_dtype), _canonical_dtype(nu_dtype)

    def init_moments(params):
        nus = tuple(tree_zeros_like(params, nu_dtype) for _ in range(1 + extra))
        return (tree_zeros_like(params, mu_dtype), *nus)

    return init_moments


# --------------------------------------------------------------------------- transforms


def scale_by_adam(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""Rescale updates by Adam's bias-corrected moment estimates (Kingma & Ba, 2015).

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat m_t &= \frac{m_t}{1 - \beta_1^t}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t} \\
        u_t &= \frac{\hat m_t}{\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon}

    With ``nesterov=True`` (NAdam, Dozat 2016) :math:`\hat m_t` is replaced by
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.

    Args:
      b1: decay rate :math:`\beta_1` of the first moment, in [0, 1).
      b2: decay rate :math:`\beta_2` of the second moment, in [0, 1).
      eps: :math:`\varepsilon \ge 0`, added outside the square root.
      eps_root: :math:`\bar\varepsilon \ge 0`, added inside the square root
        (make it positive when differentiating through the update).
      mu_dtype: dtype of the stored first moment; ``None``: the parameters' dtype.
      nu_dtype: dtype of the stored second moment; ``None``: the parameters' dtype.
      nesterov: use Nesterov momentum (NAdam).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_adam()
      >>> params = {"w": jnp.ones(3)}
      >>> u, state = tx.update({"w": jnp.full(3, 0.5)}, tx.init(params))
      >>> print(u["w"].round(4))  # first step: g / |g| (to the rounding of 1 - b2 vs 1 - b2**1)
      [1. 1. 1.]
    """
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}

    def step(grads, state, h, count_inc):
        mu = tree_moment(grads, state.mu, h["b1"], 1)
        nu = tree_moment(grads, state.nu, h["b2"], 2)
        mu_hat = _first_moment_hat(mu, grads, h["b1"], count_inc, nesterov)
        nu_hat = tree_bias_correction(nu, h["b2"], count_inc)
        return _adam_direction(mu_hat, nu_hat, h["eps"], h["eps_root"]), (mu, nu)

    return _moment_transform("scale_by_adam", ScaleByAdamState, hp, _zero_moments(mu_dtype, nu_dtype), step)


def scale_by_amsgrad(
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
    r"""Rescale updates by AMSGrad (Reddi et al., 2018): Adam with a non-decreasing :math:`v`.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v^{\max}_t &= \max\left(\hat v^{\max}_{t-1}, \frac{v_t}{1 - \beta_2^t}\right), \qquad
        u_t = \frac{m_t / (1 - \beta_1^t)}{\sqrt{\hat v^{\max}_t + \bar\varepsilon} + \varepsilon}

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      mu_dtype: dtype of the stored first moment; ``None``: the parameters' dtype.
      bias_correction_mu: divide :math:`m_t` by :math:`1 - \beta_1^t`
        (``False`` follows the original paper).
      bias_correction_nu: divide :math:`v_t` by :math:`1 - \beta_2^t` before the
        maximum (``False`` follows the original paper).
      nu_dtype: dtype of the stored ``nu`` and ``nu_max``; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_amsgrad()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.full(2, 2.0)}, tx.init(params))
      >>> print(state.nu_max["w"].round(3))
      [4. 4.]
    """
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}

    def step(grads, state, h, count_inc):
        mu = tree_moment(grads, state.mu, h["b1"], 1)
        nu = tree_moment(grads, state.nu, h["b2"], 2)
        mu_hat = tree_bias_correction(mu, h["b1"], count_inc) if bias_correction_mu else mu
        nu_eff = tree_bias_correction(nu, h["b2"], count_inc) if bias_correction_nu else nu
        nu_max = jax.tree.map(lambda old, new: jnp.maximum(old.astype(new.dtype), new), state.nu_max, nu_eff)
        return _adam_direction(mu_hat, nu_max, h["eps"], h["eps_root"]), (mu, nu, nu_max)

    init_moments = _zero_moments(mu_dtype, nu_dtype, extra=1)
    return _moment_transform("scale_by_amsgrad", ScaleByAmsgradState, hp, init_moments, step)


def scale_by_adamax(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    *,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""Rescale updates by AdaMax (Kingma & Ba, 2015, Sec. 7): Adam with the infinity norm.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \max(|g_t| + \varepsilon,\ \beta_2 v_{t-1}) \\
        u_t &= \frac{m_t}{(1 - \beta_1^t)\, v_t}

    The infinity-norm moment needs no bias correction.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the infinity-norm moment, in [0, 1).
      eps: added to :math:`|g_t|`, >= 0.
      mu_dtype: dtype of the stored first moment; ``None``: the parameters' dtype.
      nu_dtype: dtype of the stored infinity-norm moment; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_adamax()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params))
      >>> print(u["w"].round(4))
      [ 1. -1.]
    """
    hp = {"b1": b1, "b2": b2, "eps": eps}

    def step(grads, state, h, count_inc):
        mu = tree_moment(grads, state.mu, h["b1"], 1)

        nu = update_infinity_moment(grads, state.nu, h["b2"], h["eps"])
        mu_hat = tree_bias_correction(mu, h["b1"], count_inc)
        return jax.tree.map(lambda m, v: m / v, mu_hat, nu), (mu, nu)

    return _moment_transform("scale_by_adamax", ScaleByAdamState, hp, _zero_moments(mu_dtype, nu_dtype), step)


def scale_by_radam(
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
    r"""Rescale updates by Rectified Adam (Liu et al., 2020).

    With :math:`\rho_\infty = 2 / (1 - \beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)`:

    .. math::

        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        u_t &= \begin{cases}
            r_t\, \hat m_t / (\sqrt{\hat v_t + \bar\varepsilon} + \varepsilon) & \rho_t \ge \tau \\
            \hat m_t & \text{otherwise}
        \end{cases}

    where :math:`\hat m_t, \hat v_t` are Adam's bias-corrected moments and
    :math:`\tau` is ``threshold``. The switch is a ``jnp.where``, so ``b2`` and
    ``threshold`` may be traced.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      threshold: :math:`\tau`, the smallest :math:`\rho_t` at which the variance
        is considered tractable (any finite number).
      nesterov: use Nesterov momentum.
      mu_dtype: dtype of the stored first moment; ``None``: the parameters' dtype.
      nu_dtype: dtype of the stored second moment; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_radam()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.full(2, 3.0)}, tx.init(params))
      >>> print(u["w"].round(4))  # rho_1 < 5: the un-rectified first moment
      [3. 3.]
    """
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root, "threshold": threshold}

    def step(grads, state, h, count_inc):
        b2_ = h["b2"]
        mu = tree_moment(grads, state.mu, h["b1"], 1)
        nu = tree_moment(grads, state.nu, b2_, 2)
        rho_inf = 2.0 / (1.0 - b2_) - 1.0
        b2t = b2_**count_inc
        rho = rho_inf - 2 * count_inc * b2t / (1 - b2t)
        tractable = rho >= h["threshold"]
        # r_t is NaN for rho_t < 4; evaluate it at rho_inf (r = 1) where it is not selected,
        # so that gradients through this update (meta-learning) stay finite.
        rho = jnp.where(tractable, rho, rho_inf)
        r = jnp.sqrt((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho))
        mu_hat = _first_moment_hat(mu, grads, h["b1"], count_inc, nesterov)
        nu_hat = tree_bias_correction(nu, b2_, count_inc)
        adam = _adam_direction(
            jax.tree.map(lambda m: r.astype(m.dtype) * m, mu_hat), nu_hat, h["eps"], h["eps_root"]
        )
        direction = jax.tree.map(lambda a, m: jnp.where(tractable, a, m), adam, mu_hat)
        return direction, (mu, nu)

    return _moment_transform("scale_by_radam", ScaleByAdamState, hp, _zero_moments(mu_dtype, nu_dtype), step)


def scale_by_belief(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-16,
    eps_root: Hyperparam = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""Rescale updates by AdaBelief (Zhuang et al., 2020): Adam with the variance of the "belief".

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        s_t &= \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_t)^2 + \bar\varepsilon \\
        u_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{s_t / (1 - \beta_2^t)} + \varepsilon}

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the squared prediction error, in [0, 1).
      eps: added outside the square root, >= 0.
      eps_root: :math:`\bar\varepsilon \ge 0`, added to :math:`s_t` at every
        step (must be positive when differentiating through the update).
      nesterov: use Nesterov momentum.
      mu_dtype: dtype of the stored first moment; ``None``: the parameters' dtype.
      nu_dtype: dtype of the stored :math:`s_t`; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_belief()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.full(2, 1.0)}, tx.init(params))
      >>> bool(jnp.all(u["w"] > 1.0))  # s_1 is small: the first step is large
      True
    """
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}

    def step(grads, state, h, count_inc):
        mu = tree_moment(grads, state.mu, h["b1"], 1)
        error = jax.tree.map(lambda g, m: g.astype(m.dtype) - m, grads, mu)
        nu = tree_moment(error, state.nu, h["b2"], 2)
        nu = jax.tree.map(lambda v: v + cast_hyperparam(h["eps_root"], v.dtype), nu)
        mu_hat = _first_moment_hat(mu, grads, h["b1"], count_inc, nesterov)
        nu_hat = tree_bias_correction(nu, h["b2"], count_inc)
        return _adam_direction(mu_hat, nu_hat, h["eps"], None), (mu, nu)

    return _moment_transform(
        "scale_by_belief", ScaleByBeliefState, hp, _zero_moments(mu_dtype, nu_dtype), step
    )


def scale_by_yogi(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-3,
    eps_root: Hyperparam = 0.0,
    initial_accumulator_value: Hyperparam = 1e-6,
    *,
    mu_dtype: DType | None = None,
    nu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""Rescale updates by Yogi (Zaheer et al., 2018): an additive second-moment update.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= v_{t-1} - (1 - \beta_2)\, \operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2 \\
        u_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t) + \bar\varepsilon} + \varepsilon}

    Both moments start at ``initial_accumulator_value``.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: rate of the additive second-moment update, in [0, 1).
      eps: added outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      initial_accumulator_value: starting value of both moments, >= 0 (read at
        ``init``; a schedule is evaluated at step 0).
      mu_dtype: dtype of the stored first moment; ``None``: the parameters' dtype.
      nu_dtype: dtype of the stored second moment; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_yogi()
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> print(state.nu["w"])
      [1.e-06 1.e-06]
    """
    check_hyperparams(
        "scale_by_yogi",
        {"initial_accumulator_value": NONNEGATIVE},
        {"initial_accumulator_value": initial_accumulator_value},
    )
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}
    mu_dtype, nu_dtype = _canonical_dtype(mu_dtype), _canonical_dtype(nu_dtype)

    def init_moments(params):
        value = resolve(initial_accumulator_value, jnp.zeros([], jnp.int32))
        fill = lambda dtype: jax.tree.map(lambda p: jnp.full_like(p, value, dtype=dtype), params)
        return fill(mu_dtype), fill(nu_dtype)

    def step(grads, state, h, count_inc):
        mu = tree_moment(grads, state.mu, h["b1"], 1)

        def second(g, v):
            dt = compute_dtype(jnp.promote_types(g.dtype, v.dtype))
            g = g.astype(dt)
            g2 = jnp.real(jnp.conj(g) * g).astype(dt)
            v = v.astype(dt)
            return v - (1 - cast_hyperparam(h["b2"], dt)) * jnp.sign(v - g2) * g2

        nu = jax.tree.map(second, grads, state.nu)
        mu_hat = tree_bias_correction(mu, h["b1"], count_inc)
        nu_hat = tree_bias_correction(nu, h["b2"], count_inc)
        return _adam_direction(mu_hat, nu_hat, h["eps"], h["eps_root"]), (mu, nu)

    return _moment_transform("scale_by_yogi", ScaleByAdamState, hp, init_moments, step)
