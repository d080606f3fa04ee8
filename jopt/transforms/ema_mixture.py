r"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024) and its simplified form.

AdEMAMix adds to Adam a second, *slow* exponential moving average of the
gradient (decay :math:`\beta_3` close to 1, e.g. 0.9999) and mixes it into the
numerator with weight :math:`\alpha`, so that gradients thousands of steps old
still contribute. Simplified AdEMAMix (Morwani et al., 2025) keeps a single
undamped accumulator :math:`m_t = \beta_1 m_{t-1} + g_t` and mixes in the
current gradient instead.

The transforms have optax.contrib's names, arguments and defaults
(``optax.contrib.scale_by_ademamix``, ``scale_by_simplified_ademamix``) and give
optax's float32 bits for Python-number hyperparameters. The paper's warm-up
schedules for :math:`\alpha` (linear) and :math:`\beta_3` (linear in the
half-life) are :func:`ademamix_alpha_scheduler` and
:func:`ademamix_beta3_scheduler`; pass them as ``alpha`` and ``b3``.

State layout (jopt's builder: ``count`` first, ``hyperparams`` last): optax's
:class:`ScaleByAdemamixState` has a second counter ``count_m2`` that always
equals ``count``; jopt keeps one counter and exposes ``count_m2`` as a read-only
property. optax's :class:`ScaleBySimplifiedAdEMAMixState` calls its counter
``t``; jopt names it ``count`` and exposes ``t`` as a property.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import (
    ANY,
    NONNEGATIVE,
    UNIT,
    Hyperparam,
    Schedule,
    cast_hyperparam,
    check_hyperparam,
    compute_dtype,
    hyperparam_dtype,
    is_python_number,
)
from jopt.tree import bias_correction, tree_moment, update_moment_per_elem_norm, zeros_like

Array = jax.Array
PyTree = Any
DType = Any

__all__ = [
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ademamix_alpha_scheduler",
    "ademamix_beta3_scheduler",
    "scale_by_ademamix",
    "scale_by_simplified_ademamix",
]


class ScaleByAdemamixState(NamedTuple):
    """State of AdEMAMix.

    Attributes:
      count: number of updates so far (int32); schedules of ``b3`` and ``alpha``
        are evaluated at it.
      m1: fast EMA of the gradient :math:`m^{(1)}_t` (decay ``b1``).
      m2: slow EMA of the gradient :math:`m^{(2)}_t` (decay ``b3``).
      nu: EMA of the squared gradient :math:`\\nu_t` (decay ``b2``).
      hyperparams: hyperparameter values used at the latest step.
    """

    count: Array
    m1: PyTree
    m2: PyTree
    nu: PyTree
    hyperparams: dict[str, Array]

    @property
    def count_m2(self) -> Array:
        """optax's separate counter of the slow EMA; always equal to ``count``."""
        return self.count


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of simplified AdEMAMix: counter, accumulator :math:`m_t`, second moment :math:`n_t`."""

    count: Array
    m: PyTree
    n: PyTree
    hyperparams: dict[str, Array]

    @property
    def t(self) -> Array:
        """optax's name of the counter."""
        return self.count


def _canonical_dtype(dtype: DType | None) -> DType | None:
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def scale_by_ademamix(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.999,
    b3: Hyperparam = 0.9999,
    alpha: Hyperparam = 6.0,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    mu_dtype: DType | None = None,
) -> GradientTransformation:
    r"""Rescale updates by AdEMAMix's mixture of a fast and a slow momentum.

    .. math::

        m^{(1)}_t &= \beta_1 m^{(1)}_{t-1} + (1 - \beta_1) g_t, \qquad
        m^{(2)}_t = \beta_3 m^{(2)}_{t-1} + (1 - \beta_3) g_t \\
        \nu_t &= \beta_2 \nu_{t-1} + (1 - \beta_2) g_t^2 \\
        u_t &= \frac{m^{(1)}_t / (1 - \beta_1^t) + \alpha\, m^{(2)}_t}
            {\sqrt{\nu_t / (1 - \beta_2^t) + \bar\varepsilon} + \varepsilon}

    The slow EMA is not bias-corrected (it is meant to fill slowly).

    Args:
      b1: decay :math:`\beta_1 \in [0, 1)` of the fast EMA.
      b2: decay :math:`\beta_2 \in [0, 1)` of the second moment.
      b3: decay :math:`\beta_3 \in [0, 1)` of the slow EMA; e.g.
        :func:`ademamix_beta3_scheduler` for the paper's warm-up.
      alpha: mixing weight :math:`\alpha \ge 0` of the slow EMA; e.g.
        :func:`ademamix_alpha_scheduler`. (optax's default here is 6, while
        :func:`jopt.ademamix` defaults to 5, as optax.)
      eps: :math:`\varepsilon \ge 0`, added outside the square root.
      eps_root: :math:`\bar\varepsilon \ge 0`, added inside the square root.
      mu_dtype: dtype of the three accumulators (as optax, ``nu`` too);
        ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_ademamix(alpha=0.0)
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.array([0.5, -2.0])}, tx.init(params))
      >>> print(u["w"].round(4))  # alpha = 0: Adam's first step, g / |g|
      [ 1. -1.]
    """
    mu_dtype = _canonical_dtype(mu_dtype)
    hp = {"b1": b1, "b2": b2, "b3": b3, "alpha": alpha, "eps": eps, "eps_root": eps_root}
    ranges = {"b1": UNIT, "b2": UNIT, "b3": UNIT, "alpha": NONNEGATIVE, "eps": NONNEGATIVE}
    ranges["eps_root"] = NONNEGATIVE

    def init_fields(params, h):
        return tuple(zeros_like(params, mu_dtype) for _ in range(3))

    def step(grads, state, params, h, count_inc):
        m1 = tree_moment(grads, state.m1, h["b1"], 1)
        m2 = tree_moment(grads, state.m2, h["b3"], 1)
        nu = update_moment_per_elem_norm(grads, state.nu, h["b2"], 2)
        m1_hat = bias_correction(m1, h["b1"], count_inc)
        nu_hat = bias_correction(nu, h["b2"], count_inc)

        def direction(fast, slow, v):
            dt = v.dtype
            num = fast + cast_hyperparam(h["alpha"], dt) * slow
            return num / (jnp.sqrt(v + cast_hyperparam(h["eps_root"], dt)) + cast_hyperparam(h["eps"], dt))

        return jax.tree.map(direction, m1_hat, m2, nu_hat), (m1, m2, nu)

    return hyperparam_transformation(
        "scale_by_ademamix", hp, ranges, ScaleByAdemamixState, step, init_fields, counted=True
    )


def scale_by_simplified_ademamix(
    b1: Hyperparam = 0.99,
    b2: Hyperparam = 0.95,
    alpha: Hyperparam = 0.0,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
) -> GradientTransformation:
    r"""Rescale updates by simplified AdEMAMix (Morwani et al., 2025).

    .. math::

        m_t &= \beta_1 m_{t-1} + g_t, \qquad
        n_t = g_t^2 + \beta_2 (n_{t-1} - g_t^2) \\
        u_t &= \frac{m_t + \alpha\, g_t}{\sqrt{n_t / (1 - \beta_2^t) + \bar\varepsilon} + \varepsilon}

    The accumulator :math:`m_t` is not damped by :math:`1 - \beta_1` (a
    learning rate :math:`(1 - \beta_1)\eta` and :math:`\alpha = 0` recover Adam
    without first-moment bias correction).

    Args:
      b1: decay :math:`\beta_1 \in [0, 1)` of the accumulator.
      b2: decay :math:`\beta_2 \in [0, 1)` of the second moment.
      alpha: weight :math:`\alpha` of the current gradient (any number; a schedule allowed).
      eps: :math:`\varepsilon \ge 0`, added outside the square root.
      eps_root: :math:`\bar\varepsilon \ge 0`, added inside the square root.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_simplified_ademamix()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.array([0.5, -2.0])}, tx.init(params))
      >>> print(state.m["w"], state.t)
      [ 0.5 -2. ] 1
    """
    hp = {"b1": b1, "b2": b2, "alpha": alpha, "eps": eps, "eps_root": eps_root}
    ranges = {"b1": UNIT, "b2": UNIT, "alpha": ANY, "eps": NONNEGATIVE, "eps_root": NONNEGATIVE}

    def init_fields(params, h):
        return zeros_like(params), zeros_like(params)

    def step(grads, state, params, h, count_inc):
        def accumulate(g, m):
            dt = compute_dtype(jnp.promote_types(g.dtype, m.dtype))
            return g.astype(dt) + cast_hyperparam(h["b1"], dt) * m.astype(dt)

        def second_moment(g, n):
            dt = compute_dtype(jnp.promote_types(g.dtype, n.dtype))
            g2 = g.astype(dt) * g.astype(dt)
            return g2 + cast_hyperparam(h["b2"], dt) * (n.astype(dt) - g2)

        m = jax.tree.map(accumulate, grads, state.m)
        n = jax.tree.map(second_moment, grads, state.n)
        n_hat = bias_correction(n, h["b2"], count_inc)

        def direction(m_, g, v):
            dt = v.dtype
            num = m_ + cast_hyperparam(h["alpha"], dt) * g.astype(dt)
            return num / (jnp.sqrt(v + cast_hyperparam(h["eps_root"], dt)) + cast_hyperparam(h["eps"], dt))

        return jax.tree.map(direction, m, grads, n_hat), (m, n)

    return hyperparam_transformation(
        "scale_by_simplified_ademamix",
        hp,
        ranges,
        ScaleBySimplifiedAdEMAMixState,
        step,
        init_fields,
        counted=True,
    )


# --------------------------------------------------------------------------- the paper's schedules


def _warmup_fraction(step: Array, warmup: Any) -> tuple[Array, Array]:
    """``(step < warmup, step / warmup)`` in the hyperparameter dtype, safe for ``warmup = 0``."""
    dt = hyperparam_dtype()
    t = jnp.asarray(step, dt)
    w = jnp.asarray(warmup, dt)
    return t < w, t / jnp.where(w > 0, w, 1)


def ademamix_alpha_scheduler(alpha: Any, alpha_start: Any = 0.0, warmup: Any = 0) -> Schedule:
    r"""The AdEMAMix paper's linear warm-up of :math:`\alpha` (use as ``alpha``).

    .. math::

        \alpha_t = \begin{cases}
            (1 - t/T)\, \alpha_{\text{start}} + (t/T)\, \alpha & t < T \\
            \alpha & t \ge T
        \end{cases}

    :math:`t` is the step count before the update (0 at the first step), as in
    the authors' JAX code; :math:`T` = ``warmup`` (0: no warm-up). Every
    argument may be an array or traced.

    Example:
      >>> import jopt
      >>> sched = jopt.ademamix_alpha_scheduler(8.0, warmup=4)
      >>> [float(sched(t)) for t in (0, 1, 4, 10)]
      [0.0, 2.0, 8.0, 8.0]
    """
    owner = "ademamix_alpha_scheduler"
    check_hyperparam(alpha, "alpha", owner=owner)
    check_hyperparam(alpha_start, "alpha_start", owner=owner)
    check_hyperparam(warmup, "warmup", low=0.0, owner=owner)

    def schedule(step):
        in_warmup, a = _warmup_fraction(step, warmup)
        return jnp.where(in_warmup, (1 - a) * alpha_start + a * alpha, alpha)

    return schedule


def ademamix_beta3_scheduler(beta_end: Any, beta_start: Any = 0.0, warmup: Any = 0) -> Schedule:
    r"""The AdEMAMix paper's warm-up of :math:`\beta_3`, linear in the half-life (use as ``b3``).

    With :math:`f(\beta) = \ln(1/2) / \ln\beta - 1` (the half-life of an EMA with
    decay :math:`\beta`, minus one) and :math:`f^{-1}(h) = (1/2)^{1/(h + 1)}`,

    .. math::

        \beta_{3,t} = \begin{cases}
            f^{-1}\big((1 - t/T)\, f(\beta_{\text{start}}) + (t/T)\, f(\beta_{\text{end}})\big) & t < T \\
            \beta_{\text{end}} & t \ge T
        \end{cases}

    The paper starts from :math:`\beta_{\text{start}} = \beta_1`; ``beta_start=0``
    (the default, as in the authors' code) starts from 0. :math:`t` is the step
    count before the update; :math:`T` = ``warmup`` (0: no warm-up). The
    half-lives of Python-number betas are computed in double precision (in
    float32, ``0.9999`` alone carries a 6e-4 relative error in :math:`1 - \beta`).

    Example:
      >>> import jopt
      >>> sched = jopt.ademamix_beta3_scheduler(0.999, beta_start=0.9, warmup=100)
      >>> [round(float(sched(t)), 4) for t in (0, 50, 100)]
      [0.9, 0.998, 0.999]
    """
    owner = "ademamix_beta3_scheduler"
    UNIT.check(beta_end, "beta_end", owner)
    UNIT.check(beta_start, "beta_start", owner)
    check_hyperparam(warmup, "warmup", low=0.0, owner=owner)

    def half_life(beta):
        if is_python_number(beta):  # in double precision: 1 - beta is not resolved in float32
            return math.log(0.5) / math.log(beta) - 1 if beta > 0 else -1.0
        return jnp.log(0.5) / jnp.log(jnp.asarray(beta, hyperparam_dtype())) - 1

    def schedule(step):
        in_warmup, a = _warmup_fraction(step, warmup)
        h = (1 - a) * half_life(beta_start) + a * half_life(beta_end)
        ramp = jnp.power(0.5, 1 / (h + 1))
        return jnp.where(in_warmup, ramp, jnp.asarray(beta_end, hyperparam_dtype()))

    return schedule
