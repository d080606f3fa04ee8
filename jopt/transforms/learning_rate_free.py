r"""Learning-rate-free transforms: COCOB coin betting and the Mechanic step-size tuner.

* :func:`scale_by_cocob` (Orabona & Tommasi, 2017) bets, per coordinate, a
  fraction of the wealth won so far; it returns the move to the new iterate.
* :func:`mechanize` (Cutkosky et al., 2023) wraps any optimizer and learns one
  scale for its updates.

Both take the real parameters in ``update``. See
:mod:`jopt.transforms.distance_estimates` for DoG/DoWG and for how the estimates
are shown by :func:`jopt.current_hyperparams`; the D-Adaptation family
(Prodigy, D-Adapt AdamW/SGD) is in :mod:`jopt.optimizers.learning_rate_free`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import jopt.tree as jtree
from jopt.core import GradientTransformation, as_transformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, POSITIVE, Hyperparam, cast_hyperparam, compute_dtype
from jopt.transforms.distance_estimates import scalar_dtype, state_with_estimates

Array = jax.Array
PyTree = Any

__all__ = ["COCOBState", "MechanicState", "mechanize", "scale_by_cocob"]


def _up(x: Array) -> Array:
    """``x`` in its compute dtype (at least float32)."""
    return x.astype(compute_dtype(x.dtype))


class COCOBState(NamedTuple):
    r"""State of :func:`scale_by_cocob` (optax's fields between jopt's ``count`` and ``hyperparams``).

    Attributes:
      count: step counter, only when a hyperparameter is a schedule.
      init_particles: the initial point :math:`x_0`.
      cumulative_gradients: :math:`\theta_t = -\sum_k g_k`.
      scale: :math:`L_t`, the largest :math:`|g|` seen per coordinate (from :math:`\varepsilon`).
      subgradients: :math:`G_t = \sum_k |g_k|`.
      reward: :math:`R_t`, the wealth won per coordinate.
      hyperparams: ``alpha``/``eps`` when they are arrays or schedules.
    """

    count: Array | None
    init_particles: PyTree
    cumulative_gradients: PyTree
    scale: PyTree
    subgradients: PyTree
    reward: PyTree
    hyperparams: dict[str, Array]


def scale_by_cocob(alpha: Hyperparam = 100.0, eps: Hyperparam = 1e-8) -> GradientTransformation:
    r"""COntinuous COin Betting, backprop variant (COCOB-Backprop, Orabona & Tommasi 2017, Alg. 2).

    Per coordinate, with gradient :math:`g_t` at :math:`x_t`:

    .. math::

        L_t &= \max(L_{t-1}, |g_t|), \quad G_t = G_{t-1} + |g_t|, \quad
        R_t = \max\big(R_{t-1} - g_t (x_t - x_0), 0\big), \quad
        \theta_t = \theta_{t-1} - g_t \\
        x_{t+1} &= x_0 + \frac{\theta_t}{L_t \max(G_t + L_t, \alpha L_t)} (L_t + R_t),
        \qquad u_t = x_{t+1} - x_t

    with :math:`L_0 = \varepsilon` and the other sums starting at 0. The
    per-coordinate bets are tree-shaped, so :func:`jopt.current_hyperparams`
    shows no scalar estimate here; read ``state.reward`` and ``state.scale``.

    Args:
      alpha: :math:`\alpha \ge 0`, bounds the fraction of wealth bet early on.
      eps: :math:`\varepsilon > 0`, the initial :math:`L_0` (avoids dividing by zero).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_cocob(alpha=1.0, eps=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> u, _ = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
      >>> u["w"].tolist()  # -g / (L (G + L)) * L with L = G = 1
      [-0.5, 0.5]
    """

    def init_fields(params, h):
        zeros = jtree.zeros_like(params)
        return params, zeros, jtree.scale(h["eps"], jtree.ones_like(params)), zeros, zeros

    def step(updates, state, params, h, count_inc):
        def one(c, p, p0, cum, big_l, big_g, r):
            c, p, p0, cum, big_l, big_g, r = map(_up, (c, p, p0, cum, big_l, big_g, r))
            alpha = cast_hyperparam(h["alpha"], c.dtype)
            big_l = jnp.maximum(big_l, jnp.abs(c))
            big_g = big_g + jnp.abs(c)
            r = jnp.maximum(r - c * (p - p0), 0)
            cum = cum - c
            u = -p + (p0 + cum / (big_l * jnp.maximum(big_g + big_l, alpha * big_l)) * (big_l + r))
            return u, cum, big_l, big_g, r

        s = state
        out = jax.tree.map(
            one, updates, params, s.init_particles, s.cumulative_gradients, s.scale, s.subgradients, s.reward
        )
        u, cum, big_l, big_g, r = jtree.tree_unzip(out, updates, 5)
        return u, (s.init_particles, cum, big_l, big_g, r)

    return hyperparam_transformation(
        "scale_by_cocob",
        {"alpha": alpha, "eps": eps},
        {"alpha": NONNEGATIVE, "eps": POSITIVE},
        COCOBState,
        step,
        init_fields,
        needs_params=True,
    )


class MechanicState(NamedTuple):
    r"""State of :func:`mechanize` (optax's fields, plus jopt's ``count``, ``estim_lr`` and ``hyperparams``).

    Attributes:
      count: number of updates so far (int32).
      base_optimizer_state: state of the wrapped optimizer.
      r, m, v: per-:math:`\beta` reward, gradient bound and second moment of the tuner.
      s: per-:math:`\beta` scales :math:`s_j`; the update scale is :math:`\sum_j s_j`.
      x0: the reference point :math:`x_0` (the parameters at the first update).
      estim_lr: :math:`\sum_j s_j`, the scale of the latest update (its initial value before).
      hyperparams: ``estim_lr``, plus array or scheduled hyperparameters.
    """

    count: Array
    base_optimizer_state: Any
    r: Array
    m: Array
    v: Array
    s: Array
    x0: PyTree
    estim_lr: Array
    hyperparams: dict[str, Array]


def _mechanic_direction(updates, params, x0, s_sum, h):
    """The decayed gradient and :math:`\\Delta_{t-1} = (x_0 - x_t) / (\\sum s + \\varepsilon)`."""
    grad_norm, param_norm = jtree.norm(updates), jtree.norm(params)
    decay = h["weight_decay"] * s_sum * grad_norm / (param_norm + h["eps"])
    grads = jax.tree.map(lambda g, p: _up(g) + decay * _up(p), updates, params)
    delta_prev = jax.tree.map(lambda p, p0: (_up(p0) - _up(p)) / (s_sum + h["eps"]), params, x0)
    return grads, delta_prev


def _mechanic_tuner(state, h_dot, h, num_betas):
    """One step of the tuner on the scalar :math:`h_t`: new ``r, m, v, s``."""
    betas = jnp.array([1.0 - 0.1**i for i in range(1, num_betas + 1)], dtype=state.s.dtype)
    clipped = jax.lax.clamp(-state.m, jnp.ones_like(state.m) * h_dot, state.m)
    m = jnp.maximum(betas * state.m, jnp.abs(h_dot) + h["eps"])
    v = betas**2 * state.v + h_dot**2
    r = betas * state.r + clipped * state.s
    wealth = (h["s_init"] / num_betas) * m + jnp.maximum(0.0, r)
    return r, m, v, wealth / (jnp.sqrt(v) + h["eps"])


def mechanize(
    base_optimizer: Any,
    weight_decay: Hyperparam = 1e-2,
    eps: Hyperparam = 1e-8,
    s_init: Hyperparam = 1e-6,
    num_betas: int = 6,
) -> GradientTransformation:
    r"""Mechanic (Cutkosky et al., 2023): learn the scale of a base optimizer's updates.

    With the base update :math:`\delta_t` (already negated, as optax/jopt
    updates are), :math:`\Delta_t = \sum_{k \le t} \delta_k` and
    :math:`s = \sum_j s_j`, the iterate is :math:`x_{t+1} = x_0 + s_{t+1} \Delta_t`.
    For :math:`\beta_j = 1 - 10^{-j}`, :math:`j = 1..n`:

    .. math::

        \tilde g_t &= g_t + \lambda\, s_t \frac{\|g_t\|}{\|x_t\| + \varepsilon} x_t, \qquad
        h_t = \langle \tilde g_t, \Delta_{t-1} \rangle \\
        m_j &\leftarrow \max(\beta_j m_j, |h_t| + \varepsilon), \quad
        v_j \leftarrow \beta_j^2 v_j + h_t^2, \quad
        r_j \leftarrow \beta_j r_j + \operatorname{clip}(h_t, -m_j^{old}, m_j^{old})\, s_j \\
        s_j &\leftarrow \frac{s_{init} m_j / n + \max(r_j, 0)}{\sqrt{v_j} + \varepsilon}

    (:math:`\Delta_{t-1}` is recomputed as :math:`(x_0 - x_t)/(s_t + \varepsilon)`,
    the memory-saving form.) The scale :math:`\sum_j s_j` is shown by
    :func:`jopt.current_hyperparams` as ``"estim_lr"``.

    Args:
      base_optimizer: the optimizer whose updates are scaled (jopt or optax);
        give it a base learning rate such as 1.0 (or a schedule peaking there).
      weight_decay: :math:`\lambda \ge 0`, Mechanic's own decay (not the base's).
      eps: :math:`\varepsilon > 0`.
      s_init: :math:`s_{init} > 0`, the initial total scale is
        :math:`n\, s_{init}`.
      num_betas: :math:`n \ge 1`, how many :math:`\beta_j` (structural: it fixes shapes).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.mechanize(jopt.sgd(1.0), s_init=0.1, num_betas=2)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> round(float(jopt.current_hyperparams(state)["estim_lr"]), 6)  # n * s_init
      0.2
    """
    if isinstance(num_betas, bool) or not isinstance(num_betas, int) or num_betas < 1:
        raise ValueError(f"mechanize: num_betas must be an integer >= 1, got {num_betas!r}")
    base = as_transformation(base_optimizer)
    hp = {"weight_decay": weight_decay, "eps": eps, "s_init": s_init}

    def init_fields(params, h):
        zeros = jnp.zeros([num_betas], scalar_dtype(params))
        s = jnp.ones([num_betas], zeros.dtype) * h["s_init"]
        return base.init(params), zeros, zeros, zeros, s, params, jnp.sum(s)

    def step(updates, state, params, h, count_inc):
        extra = {k: v for k, v in h.items() if k not in hp}
        base_updates, base_state = base.update(updates, state.base_optimizer_state, params, **extra)
        x0 = jtree.where(state.count == 0, params, state.x0)
        s_sum = jnp.sum(state.s)
        grads, delta_prev = _mechanic_direction(updates, params, x0, s_sum, h)
        delta = jax.tree.map(lambda d, u: d - _up(u), delta_prev, base_updates)
        r, m, v, s = _mechanic_tuner(state, jtree.vdot(grads, delta_prev), h, num_betas)
        scale = jnp.sum(s)
        new_updates = jax.tree.map(lambda p0, d, p: (_up(p0) - scale * d) - _up(p), x0, delta, params)
        return new_updates, (base_state, r, m, v, s, x0, scale)

    return hyperparam_transformation(
        "mechanize",
        hp,
        {"weight_decay": NONNEGATIVE, "eps": POSITIVE, "s_init": POSITIVE},
        state_with_estimates(MechanicState, estim_lr=lambda st: st.estim_lr),
        step,
        init_fields,
        counted=True,
        needs_params=True,
        extra_args=base.extra_args,
    )
