r"""Transforms driven by the previous gradient: Adan, Rprop and optimistic gradients.

Each transform here keeps the last gradient (or the last step) in its state and
compares it with the current one:

* :func:`scale_by_adan` averages the gradient difference :math:`g_t - g_{t-1}`
  (Nesterov momentum estimation, Xie et al., 2022);
* :func:`scale_by_rprop` grows or shrinks a per-coordinate step size by whether
  :math:`g_t` and the previous step agree in sign (Riedmiller & Braun, 1993);
* :func:`scale_by_optimistic_gradient` extrapolates with
  :math:`(\alpha + \beta) g_t - \beta g_{t-1}` (Mokhtari et al., 2019).

None of them applies the learning rate (Rprop's step sizes *are* its learning
rates). Every numeric hyperparameter may be a number, an array, a traced value
or a schedule ``step -> value``; Python numbers follow optax's arithmetic, so
the results equal optax 0.2.8's bit for bit (see :mod:`jopt.hyperparams`).
Arithmetic is done in at least float32; state leaves keep the parameters' dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, UNIT, Hyperparam, Range, cast_hyperparam, compute_dtype, is_concrete
from jopt.tree import tree_bias_correction, tree_moment, tree_unzip, tree_zeros_like

Array = jax.Array
PyTree = Any

__all__ = [
    "ScaleByAdanState",
    "ScaleByOptimisticGradientState",
    "ScaleByRpropState",
    "scale_by_adan",
    "scale_by_optimistic_gradient",
    "scale_by_rprop",
]


def _up(x: Array) -> Array:
    """``x`` in its compute dtype (at least float32)."""
    return x.astype(compute_dtype(x.dtype))


# --------------------------------------------------------------------------- Adan


class ScaleByAdanState(NamedTuple):
    r"""State of :func:`scale_by_adan`.

    Attributes:
      count: number of updates so far (int32).
      m: EMA of the gradients.
      v: EMA of the gradient differences :math:`g_t - g_{t-1}`.
      n: EMA of the squared Nesterov estimate :math:`(g_t + (1 - \beta_2)(g_t - g_{t-1}))^2`.
      g: the previous gradient.
      hyperparams: hyperparameter values used at the latest step (non-constant ones).
    """

    count: Array
    m: PyTree
    v: PyTree
    n: PyTree
    g: PyTree
    hyperparams: dict[str, Array]


def scale_by_adan(
    b1: Hyperparam = 0.98,
    b2: Hyperparam = 0.92,
    b3: Hyperparam = 0.99,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
) -> GradientTransformation:
    r"""Rescale updates by Adan's three bias-corrected moments (Xie et al., 2022).

    With :math:`\Delta_t = g_t - g_{t-1}` (:math:`\Delta_1 = 0`):

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) \Delta_t \\
        n_t &= \beta_3 n_{t-1} + (1 - \beta_3) \big(g_t + (1 - \beta_2) \Delta_t\big)^2 \\
        u_t &= \frac{\hat m_t + (1 - \beta_2) \hat v_t}{\sqrt{\hat n_t + \bar\varepsilon} + \varepsilon}

    where hats denote Adam's bias correction :math:`x / (1 - \beta^t)` with the
    matching decay. The decays are those of the moving averages (optax's
    convention; the paper writes :math:`1 - \beta`).

    Args:
      b1: decay of the gradient average, in [0, 1).
      b2: decay of the gradient-difference average, in [0, 1).
      b3: decay of the squared-estimate average, in [0, 1).
      eps: :math:`\varepsilon \ge 0`, added outside the square root.
      eps_root: :math:`\bar\varepsilon \ge 0`, added inside the square root.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_adan()
      >>> params = {"w": jnp.zeros(2)}
      >>> u, state = tx.update({"w": jnp.array([2.0, -0.5])}, tx.init(params))
      >>> print(u["w"].round(4))  # first step: g / |g|
      [ 1. -1.]
    """
    hp = {"b1": b1, "b2": b2, "b3": b3, "eps": eps, "eps_root": eps_root}
    ranges = {"b1": UNIT, "b2": UNIT, "b3": UNIT, "eps": NONNEGATIVE, "eps_root": NONNEGATIVE}

    def init_fields(params, h):
        return tuple(tree_zeros_like(params) for _ in range(4))

    def step(grads, state, params, h, count_inc):
        grads = jax.tree.map(_up, grads)
        first = state.count == 0
        diff = jax.tree.map(
            lambda g, p: jnp.where(first, jnp.zeros_like(g), g - p.astype(g.dtype)), grads, state.g
        )
        m = tree_moment(grads, state.m, h["b1"], 1)
        v = tree_moment(diff, state.v, h["b2"], 1)
        c2 = 1 - h["b2"]
        estimate = jax.tree.map(lambda g, d: g + cast_hyperparam(c2, d.dtype) * d, grads, diff)
        n = tree_moment(estimate, state.n, h["b3"], 2)
        m_hat = tree_bias_correction(m, h["b1"], count_inc)
        v_hat = tree_bias_correction(v, h["b2"], count_inc)
        n_hat = tree_bias_correction(n, h["b3"], count_inc)

        def direction(mh, vh, nh):
            numerator = mh + cast_hyperparam(c2, vh.dtype) * vh
            root = jnp.sqrt(nh + cast_hyperparam(h["eps_root"], nh.dtype))
            return numerator / (root + cast_hyperparam(h["eps"], nh.dtype))

        return jax.tree.map(direction, m_hat, v_hat, n_hat), (m, v, n, grads)

    return hyperparam_transformation(
        "scale_by_adan", hp, ranges, ScaleByAdanState, step, init_fields, counted=True
    )


# --------------------------------------------------------------------------- Rprop


class ScaleByRpropState(NamedTuple):
    r"""State of :func:`scale_by_rprop`.

    Attributes:
      count: step counter (int32) when a hyperparameter is a schedule, else ``None``.
      step_sizes: the per-coordinate step sizes :math:`\delta_t`.
      prev_updates: the step computed at the latest update, :math:`\delta_t \operatorname{sign}(g_t)`
        (zero where the sign flipped).
      hyperparams: hyperparameter values used at the latest step (non-constant ones).
    """

    count: Array | None
    step_sizes: PyTree
    prev_updates: PyTree
    hyperparams: dict[str, Array]


def _check_step_bounds(min_step_size: Hyperparam, max_step_size: Hyperparam) -> None:
    """``min_step_size <= max_step_size`` for concrete values."""
    if callable(min_step_size) or callable(max_step_size):
        return
    if not (is_concrete(min_step_size) and is_concrete(max_step_size)):
        return
    if jnp.any(jnp.asarray(min_step_size) > jnp.asarray(max_step_size)):
        raise ValueError(
            f"scale_by_rprop: min_step_size must not exceed max_step_size, "
            f"got {min_step_size!r} > {max_step_size!r}"
        )


def scale_by_rprop(
    learning_rate: Hyperparam,
    eta_minus: Hyperparam = 0.5,
    eta_plus: Hyperparam = 1.2,
    min_step_size: Hyperparam = 1e-6,
    max_step_size: Hyperparam = 50.0,
) -> GradientTransformation:
    r"""Rprop's per-coordinate step sizes, adapted by sign agreement (iRprop-, Igel & Hüsken, 2003).

    With :math:`s_t = g_t \cdot p_{t-1}` (current gradient times previous step):

    .. math::

        \delta_t &= \begin{cases}
            \delta_{t-1} & s_t = 0 \\
            \operatorname{clip}(\eta^+ \delta_{t-1}, \delta_{\min}, \delta_{\max}) & s_t > 0 \\
            \operatorname{clip}(\eta^- \delta_{t-1}, \delta_{\min}, \delta_{\max}) & s_t < 0
        \end{cases} \\
        p_t &= \begin{cases} 0 & s_t < 0 \\ \delta_t \operatorname{sign}(g_t) & \text{otherwise} \end{cases}
        \qquad
        u_t = \begin{cases} 0 & s_t < 0 \\ p_{t-1} & \text{otherwise} \end{cases}

    with :math:`\delta_0` = ``learning_rate`` and :math:`p_0 = 0`. As in optax
    0.2.8 the returned update is the *previous* step :math:`p_{t-1}` (so the
    first update is zero); this keeps ``jopt.rprop`` equal to ``optax.rprop``.
    The update is a step to add after flipping its sign (:func:`jopt.rprop`
    chains ``scale(-1)``).

    Args:
      learning_rate: initial step size :math:`\delta_0 \ge 0` (read at ``init``;
        a schedule is evaluated at step 0).
      eta_minus: :math:`\eta^- \in [0, 1]`, shrink factor on a sign change.
      eta_plus: :math:`\eta^+ \ge 1`, growth factor when signs agree.
      min_step_size: :math:`\delta_{\min} \ge 0`.
      max_step_size: :math:`\delta_{\max} \ge \delta_{\min}`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_rprop(0.1)
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> for g in [1.0, 1.0, 1.0]:
      ...     u, state = tx.update({"w": jnp.array([g])}, state)
      >>> print(state.step_sizes["w"].round(4), u["w"])  # 0.1 * 1.2**2; the 2nd update's step
      [0.144] [0.12]
    """
    hp = {
        "learning_rate": learning_rate,
        "eta_minus": eta_minus,
        "eta_plus": eta_plus,
        "min_step_size": min_step_size,
        "max_step_size": max_step_size,
    }
    ranges = {
        "learning_rate": NONNEGATIVE,
        "eta_minus": Range(0.0, 1.0),
        "eta_plus": Range(1.0),
        "min_step_size": NONNEGATIVE,
        "max_step_size": NONNEGATIVE,
    }
    _check_step_bounds(min_step_size, max_step_size)

    def init_fields(params, h):
        lr = h["learning_rate"]
        step_sizes = jax.tree.map(lambda p: jnp.full_like(p, cast_hyperparam(lr, p.dtype)), params)
        return step_sizes, tree_zeros_like(params)

    def step(grads, state, params, h, count_inc):
        def leaf(g, prev, size):
            g, prev, size = _up(g), _up(prev), _up(size)
            dt = g.dtype
            agreement = g * prev
            grow, shrink = cast_hyperparam(h["eta_plus"], dt), cast_hyperparam(h["eta_minus"], dt)
            lo, hi = cast_hyperparam(h["min_step_size"], dt), cast_hyperparam(h["max_step_size"], dt)
            factor = jnp.where(agreement > 0, grow, shrink)
            size = jnp.where(agreement == 0, size, jnp.clip(size * factor, min=lo, max=hi))
            flipped = agreement < 0
            new_step = jnp.where(flipped, jnp.zeros_like(g), size * jnp.sign(g))
            return jnp.where(flipped, jnp.zeros_like(prev), prev), size, new_step

        rows = jax.tree.map(leaf, grads, state.prev_updates, state.step_sizes)
        out, step_sizes, prev_updates = tree_unzip(rows, grads, 3)
        return out, (step_sizes, prev_updates)

    return hyperparam_transformation("scale_by_rprop", hp, ranges, ScaleByRpropState, step, init_fields)


# --------------------------------------------------------------------------- optimistic gradient


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :func:`scale_by_optimistic_gradient`.

    Attributes:
      count: number of updates so far (int32); zero marks the first step.
      previous_gradient: :math:`g_{t-1}`.
      hyperparams: hyperparameter values used at the latest step (non-constant ones).
    """

    count: Array
    previous_gradient: PyTree
    hyperparams: dict[str, Array]


def scale_by_optimistic_gradient(alpha: Hyperparam = 1.0, beta: Hyperparam = 1.0) -> GradientTransformation:
    r"""Generalized optimistic gradient (Mokhtari et al., 2019).

    .. math:: u_t = (\alpha_t + \beta_t)\, g_t - \beta_t\, g_{t-1}, \qquad g_0 := g_1

    so the first update is :math:`\alpha_1 g_1`. With :math:`\alpha = \beta = 1`
    this is optimistic gradient descent :math:`2 g_t - g_{t-1}`.

    Args:
      alpha: :math:`\alpha \ge 0`, weight of the current gradient.
      beta: :math:`\beta \ge 0`, weight of the gradient change (negative momentum).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_optimistic_gradient()
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> u, state = tx.update({"w": jnp.array([1.0])}, state)
      >>> u, state = tx.update({"w": jnp.array([3.0])}, state)
      >>> print(u["w"])  # 2 * 3 - 1
      [5.]
    """
    hp = {"alpha": alpha, "beta": beta}
    ranges = {"alpha": NONNEGATIVE, "beta": NONNEGATIVE}

    def init_fields(params, h):
        return (tree_zeros_like(params),)

    def step(grads, state, params, h, count_inc):
        first = state.count == 0
        a, b = h["alpha"], h["beta"]

        def leaf(g, prev):
            g = _up(g)
            prev = jnp.where(first, g, prev.astype(g.dtype))
            return cast_hyperparam(a + b, g.dtype) * g - cast_hyperparam(b, g.dtype) * prev

        return jax.tree.map(leaf, grads, state.previous_gradient), (grads,)

    return hyperparam_transformation(
        "scale_by_optimistic_gradient",
        hp,
        ranges,
        ScaleByOptimisticGradientState,
        step,
        init_fields,
        counted=True,
    )
