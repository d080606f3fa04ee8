r"""MoMo: momentum models with a Polyak-type step size (Schaipp et al., 2023).

MoMo builds, at every step, a model of the loss from exponential averages of
the losses :math:`f_t`, the gradients :math:`g_t` and the products
:math:`\langle g_t, x_t \rangle`, and takes the step that minimises that model
truncated at a known lower bound :math:`f_*` of the loss (zero for most
losses), capped by the user's learning rate. Two forms:

* :func:`momo`: SGD with momentum and the model step size;
* :func:`momo_adam`: Adam's preconditioned momentum with the model step size.

Both need the loss: ``update(grads, state, params, value=loss)``. Their
numbers equal ``optax.contrib.momo`` / ``optax.contrib.momo_adam`` bit for bit
with Python-number hyperparameters; every hyperparameter may also be an
array, a traced value or a schedule (``adapt_lower_bound`` is structural).
The scalar estimates are kept in at least float32 (optax keeps them in the
parameters' lowest dtype).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import jopt.tree as jtree
from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import ANY, NONNEGATIVE, UNIT, Hyperparam, compute_dtype
from jopt.transforms.distance_estimates import scalar_dtype

Array = jax.Array
PyTree = Any

__all__ = ["MomoAdamState", "MomoState", "momo", "momo_adam"]


class MomoState(NamedTuple):
    r"""State of :func:`momo` (optax's fields between jopt's ``count`` and ``hyperparams``).

    Attributes:
      count: number of updates so far (int32).
      exp_avg: :math:`d_t`, the average of the gradients.
      barf: :math:`\bar f_t`, the average of the losses.
      gamma: :math:`\gamma_t`, the average of :math:`\langle g_k, x_k \rangle`.
      lb: the lower bound :math:`f_*` in use (adapted when ``adapt_lower_bound``).
      hyperparams: array or scheduled hyperparameters used at the latest step.
    """

    count: Array
    exp_avg: PyTree
    barf: Array
    gamma: Array
    lb: Array
    hyperparams: dict[str, Array]


class MomoAdamState(NamedTuple):
    r"""State of :func:`momo_adam` (optax's fields between jopt's ``count`` and ``hyperparams``).

    Attributes:
      count: number of updates so far (int32).
      exp_avg: :math:`d_t`, the average of the gradients.
      exp_avg_sq: :math:`v_t`, the average of the squared gradients.
      barf: :math:`\bar f_t`, the average of the losses.
      gamma: :math:`\gamma_t`, the average of :math:`\langle g_k, x_k \rangle`.
      lb: the lower bound :math:`f_*` in use (adapted when ``adapt_lower_bound``).
      hyperparams: array or scheduled hyperparameters used at the latest step.
    """

    count: Array
    exp_avg: PyTree
    exp_avg_sq: PyTree
    barf: Array
    gamma: Array
    lb: Array
    hyperparams: dict[str, Array]


def _up(x: Array) -> Array:
    """``x`` in its compute dtype (at least float32)."""
    return x.astype(compute_dtype(x.dtype))


def _loss(h: dict[str, Any], dtype: Any) -> Array:
    """The loss passed as ``value=``, in ``dtype``; a clear error when it is missing."""
    value = h.get("value")
    if value is None:
        raise ValueError(
            "momo needs the latest loss: call update(grads, state, params, value=loss) "
            "(e.g. from jax.value_and_grad)"
        )
    return jnp.asarray(value).astype(dtype)


def _init_scalars(params: PyTree, h: dict[str, Any]) -> tuple[Array, Array, Array]:
    """Zero loss and product averages, and the initial lower bound, in the scalar dtype."""
    dt = scalar_dtype(params)
    zero = jnp.zeros([], dt)
    return zero, zero, jnp.asarray(h["lower_bound"]).astype(dt)


def _model_step(num: Array, norm_sq: Array, cap: Any) -> Array:
    r""":math:`\tau = \min(\mathrm{cap}, \max(\mathrm{num}, 0) / \|d\|^2)` (zero when :math:`\|d\|^2 = 0`)."""
    t1 = jnp.maximum(num, 0.0) / norm_sq
    t1 = jnp.where(norm_sq <= jnp.finfo(float).eps, 0.0, t1)
    return jnp.minimum(cap, t1)


def _check_params(owner: str, params: PyTree) -> None:
    if params is None:
        raise ValueError(f"{owner} needs params: call update(grads, state, params, value=loss)")


def momo(
    learning_rate: Hyperparam = 1.0,
    beta: Hyperparam = 0.9,
    lower_bound: Hyperparam = 0.0,
    weight_decay: Hyperparam = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    r"""MoMo (Schaipp et al., 2023, Alg. 1): SGD with momentum and a model-based step size.

    With :math:`\beta_t = 0` at the first step and :math:`\beta` after,
    :math:`\rho = 1 + \alpha\lambda`:

    .. math::

        \bar f_t &= \beta_t \bar f_{t-1} + (1 - \beta_t) f_t, \quad
        d_t = \beta_t d_{t-1} + (1 - \beta_t) g_t, \quad
        \gamma_t = \beta_t \gamma_{t-1} + (1 - \beta_t) \langle g_t, x_t \rangle \\
        \tau_t &= \min\Big(\alpha_t,\ \frac{\max\big(\rho(\bar f_t - f_* - \gamma_t)
            + \langle d_t, x_t \rangle, 0\big)}{\|d_t\|^2}\Big), \qquad
        u_t = -\frac{\alpha_t \lambda}{\rho}\, x_t - \tau_t d_t

    (:math:`\tau_t = 0` when :math:`\|d_t\|^2` is zero). With
    ``adapt_lower_bound`` the bound :math:`f_*` is lowered on the fly (the
    paper's MoMo* rule), never below ``lower_bound``.

    Args:
      learning_rate: :math:`\alpha \ge 0`, the largest step size (number,
        array or schedule); MoMo tolerates large values.
      beta: momentum :math:`\beta \in [0, 1)`.
      lower_bound: :math:`f_*`, a lower bound of the loss (any real).
      weight_decay: :math:`\lambda \ge 0`.
      adapt_lower_bound: estimate the lower bound during training (structural).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jopt.contrib import momo
      >>> f = lambda x: jnp.sum(x**2)
      >>> opt, x = momo(), jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(x)
      >>> value, g = jax.value_and_grad(f)(x)
      >>> u, state = opt.update(g, state, x, value=value)
      >>> float(f(x + u))  # the Polyak step f / |g|^2 * g
      3.5
    """
    hp = {
        "learning_rate": learning_rate,
        "beta": beta,
        "lower_bound": lower_bound,
        "weight_decay": weight_decay,
    }
    ranges = {"learning_rate": NONNEGATIVE, "beta": UNIT, "lower_bound": ANY, "weight_decay": NONNEGATIVE}

    def init_fields(params, h):
        return (jtree.zeros_like(params), *_init_scalars(params, h))

    def step(updates, state, params, h, count_inc):
        _check_params("momo", params)
        alpha, wd, f_lo = h["learning_rate"], h["weight_decay"], h["lower_bound"]
        bt = jnp.where(state.count == 0, 0.0, h["beta"])
        barf = bt * state.barf + (1 - bt) * _loss(h, state.barf.dtype)
        exp_avg = jax.tree.map(lambda d, g: bt * _up(d) + (1 - bt) * _up(g), state.exp_avg, updates)
        gamma = bt * state.gamma + (1 - bt) * jtree.vdot(updates, params)
        norm_sq = jtree.norm(exp_avg, squared=True)
        iprod = jtree.vdot(exp_avg, params)
        rho = 1 + alpha * wd
        lb = state.lb
        if adapt_lower_bound:
            cap = rho * (barf - gamma) + iprod
            lb = jnp.where(cap < rho * lb, jnp.maximum(cap / (2 * rho), f_lo), lb)
        tau = _model_step(rho * (barf - lb - gamma) + iprod, norm_sq, alpha)
        shrink = -(alpha * wd) / rho
        new_updates = jax.tree.map(lambda d, p: shrink * _up(p) - tau * d, exp_avg, params)
        if adapt_lower_bound:
            lb = jnp.maximum((barf + iprod - gamma) - (1 / 2) * tau * norm_sq, f_lo)
        else:
            lb = state.lb
        return new_updates, (exp_avg, barf, gamma, lb)

    return hyperparam_transformation(
        "momo",
        hp,
        ranges,
        MomoState,
        step,
        init_fields,
        counted=True,
        needs_params=True,
        extra_args=("value",),
    )


def momo_adam(
    learning_rate: Hyperparam = 1e-2,
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-8,
    lower_bound: Hyperparam = 0.0,
    weight_decay: Hyperparam = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    r"""MoMo-Adam (Schaipp et al., 2023, Alg. 3): Adam(W) with a model-based step size.

    With :math:`\rho = 1 + \alpha\lambda`, the bias corrections
    :math:`c_k = 1 - \beta_k^t` and :math:`D_t = \varepsilon + \sqrt{v_t / c_2}`:

    .. math::

        \bar f_t &= \beta_1 \bar f_{t-1} + (1 - \beta_1) f_t, \quad
        d_t = \beta_1 d_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \gamma_t &= \beta_1 \gamma_{t-1} + (1 - \beta_1) \langle g_t, x_t \rangle, \quad
        \tau_t = \min\Big(\frac{\alpha_t}{c_1},\ \frac{\max\big(\rho(\bar f_t - c_1 f_*
            - \gamma_t) + \langle d_t, x_t \rangle, 0\big)}{\langle d_t, d_t / D_t \rangle}\Big) \\
        u_t &= -\frac{\alpha_t \lambda}{\rho}\, x_t - \tau_t \frac{d_t}{D_t}

    (:math:`\tau_t = 0` when the denominator is zero). ``adapt_lower_bound``
    estimates :math:`f_*` on the fly, never below ``lower_bound``.

    Args:
      learning_rate: :math:`\alpha \ge 0` (number, array or schedule).
      b1: :math:`\beta_1 \in [0, 1)`, decay of the loss, gradient and product averages.
      b2: :math:`\beta_2 \in [0, 1)`, decay of the squared gradients.
      eps: :math:`\varepsilon \ge 0`, added to the preconditioner.
      lower_bound: :math:`f_*`, a lower bound of the loss (any real).
      weight_decay: :math:`\lambda \ge 0`, decoupled as in AdamW.
      adapt_lower_bound: estimate the lower bound during training (structural).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jopt.contrib import momo_adam
      >>> f = lambda x: jnp.sum(x**2)
      >>> opt, x = momo_adam(), jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(x)
      >>> for _ in range(2):
      ...     value, g = jax.value_and_grad(f)(x)
      ...     u, state = opt.update(g, state, x, value=value)
      ...     x = x + u
      >>> round(float(f(x)), 4)  # from 14.0; the step is capped by learning_rate / (1 - b1^t)
      13.7612
    """
    hp = {
        "learning_rate": learning_rate,
        "b1": b1,
        "b2": b2,
        "eps": eps,
        "lower_bound": lower_bound,
        "weight_decay": weight_decay,
    }
    ranges = {
        "learning_rate": NONNEGATIVE,
        "b1": UNIT,
        "b2": UNIT,
        "eps": NONNEGATIVE,
        "lower_bound": ANY,
        "weight_decay": NONNEGATIVE,
    }

    def init_fields(params, h):
        return (jtree.zeros_like(params), jtree.zeros_like(params), *_init_scalars(params, h))

    def step(updates, state, params, h, count_inc):
        _check_params("momo_adam", params)
        alpha, wd, f_lo, b1_, b2_, eps_ = (
            h[k] for k in ("learning_rate", "weight_decay", "lower_bound", "b1", "b2", "eps")
        )
        dt = state.barf.dtype
        barf = b1_ * state.barf + (1 - b1_) * _loss(h, dt)
        exp_avg = jax.tree.map(lambda d, g: b1_ * _up(d) + (1 - b1_) * _up(g), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(
            lambda v, g: b2_ * _up(v) + (1 - b2_) * _up(g) * _up(g), state.exp_avg_sq, updates
        )
        bc2 = jnp.asarray(1 - b2_**count_inc).astype(dt)
        precond = jax.tree.map(lambda v: eps_ + jnp.sqrt(v / bc2.astype(v.dtype)), exp_avg_sq)
        norm_sq = jtree.vdot(exp_avg, jax.tree.map(lambda d, q: d / q, exp_avg, precond))
        gamma = b1_ * state.gamma + (1 - b1_) * jtree.vdot(updates, params)
        iprod = jtree.vdot(exp_avg, params)
        bc1 = jnp.asarray(1 - b1_**count_inc).astype(dt)
        rho = 1 + alpha * wd
        lb = state.lb
        if adapt_lower_bound:
            cap = rho * (barf - gamma) + iprod
            lb = jnp.where(cap < rho * bc1 * lb, jnp.maximum(cap / (2 * bc1 * rho), f_lo), lb)
        tau = _model_step(rho * (barf - bc1 * lb - gamma) + iprod, norm_sq, alpha / bc1)
        shrink = -(alpha * wd) / rho
        new_updates = jax.tree.map(lambda d, q, p: shrink * _up(p) - tau * d / q, exp_avg, precond, params)
        if adapt_lower_bound:
            lb = jnp.maximum(((barf + iprod - gamma) - (1 / 2) * tau * norm_sq) / bc1, f_lo)
        else:
            lb = state.lb
        return new_updates, (exp_avg, exp_avg_sq, barf, gamma, lb)

    return hyperparam_transformation(
        "momo_adam",
        hp,
        ranges,
        MomoAdamState,
        step,
        init_fields,
        counted=True,
        needs_params=True,
        extra_args=("value",),
    )
