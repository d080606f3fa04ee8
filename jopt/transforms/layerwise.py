r"""Layer-wise transforms: trust-ratio scaling (LARS, LAMB) and NovoGrad's moments.

"Layer" means one leaf of the parameter pytree: norms and second moments are
taken over a whole leaf rather than elementwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, PROBABILITY, Hyperparam, cast_hyperparam, compute_dtype
from jopt.numerics import safe_norm
from jopt.transforms.weight_decay import MaskOrFn, resolve_mask
from jopt.tree import tree_unzip, tree_zeros_like

Array = jax.Array

__all__ = [
    "ScaleByNovogradState",
    "ScaleByTrustRatioState",
    "scale_by_novograd",
    "scale_by_trust_ratio",
]


def _select(on: Any, new: Array, old: Array) -> Array:
    """``new`` where the (structural or array) mask entry ``on`` is set, else ``old``."""
    if on is True:
        return new
    if on is False:
        return old
    return jnp.where(on, new, old)


class ScaleByTrustRatioState(NamedTuple):
    """Step counter and the hyperparameters used at the latest step."""

    count: Array
    hyperparams: dict[str, Array]


def scale_by_trust_ratio(
    min_norm: Hyperparam = 0.0,
    trust_coefficient: Hyperparam = 1.0,
    eps: Hyperparam = 0.0,
    *,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Scale each leaf's update by the trust ratio of parameter and update norms (LARS/LAMB).

    For each leaf, with norms clipped below at ``min_norm``:

    .. math::

        r = \frac{c\,\max(\|\theta\|, n_{min})}{\max(\|u\|, n_{min}) + \epsilon},
        \qquad u \leftarrow r\,u,

    where :math:`r = 1` when either norm is zero (so zero-initialised leaves still move).

    Args:
      min_norm: lower bound :math:`n_{min} \ge 0` on both norms.
      trust_coefficient: :math:`c \ge 0`.
      eps: :math:`\epsilon \ge 0` added to the update norm.
      mask: leaves to scale (pytree of bools, a prefix of one, or ``params -> pytree``);
        unselected leaves pass through unchanged. ``None`` scales every leaf.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_trust_ratio()
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> u, _ = tx.update({"w": jnp.array([0.0, 0.5])}, tx.init(params), params)
      >>> u["w"].tolist()
      [0.0, 5.0]
    """
    hp = {"min_norm": min_norm, "trust_coefficient": trust_coefficient, "eps": eps}

    def step(updates, state, params, h, count_inc):
        def scale_leaf(on, u, p):
            dt = compute_dtype(jnp.promote_types(u.dtype, p.dtype))
            floor = cast_hyperparam(h["min_norm"], dt)
            u32 = u.astype(dt)
            param_norm = safe_norm(p.astype(dt), floor)
            update_norm = safe_norm(u32, floor)
            coefficient, eps_ = cast_hyperparam(h["trust_coefficient"], dt), cast_hyperparam(h["eps"], dt)
            ratio = coefficient * param_norm / (update_norm + eps_)
            ratio = jnp.where((param_norm == 0) | (update_norm == 0), jnp.ones_like(ratio), ratio)
            return _select(on, (u32 * ratio).astype(u.dtype), u)

        return jax.tree.map(scale_leaf, resolve_mask(mask, params), updates, params), ()

    ranges = dict.fromkeys(hp, NONNEGATIVE)
    return hyperparam_transformation(
        "scale_by_trust_ratio", hp, ranges, ScaleByTrustRatioState, step, needs_params=True
    )


class ScaleByNovogradState(NamedTuple):
    """Step counter, first moment ``mu`` (per element), second moment ``nu`` (one scalar per leaf)."""

    count: Array
    mu: Any
    nu: Any
    hyperparams: dict[str, Array]


def scale_by_novograd(
    b1: Hyperparam = 0.9,
    b2: Hyperparam = 0.25,
    eps: Hyperparam = 1e-8,
    eps_root: Hyperparam = 0.0,
    weight_decay: Hyperparam = 0.0,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    r"""NovoGrad (Ginsburg et al., 2019): Adam-like scaling with a per-layer second moment.

    For each leaf (layer) with gradient :math:`g_t`:

    .. math::

        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\,\|g_t\|_2^2 \quad (v_1 = \|g_1\|_2^2) \\
        m_t &= \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon}
               + \lambda\,\theta_t \quad (m_0 = 0) \\
        u_t &= m_t

    Note the weight decay :math:`\lambda` enters the momentum (it is not decoupled).

    Args:
      b1: :math:`\beta_1 \in [0, 1]`, momentum coefficient.
      b2: :math:`\beta_2 \in [0, 1]`, decay of the per-layer second moment.
      eps: :math:`\epsilon \ge 0`, added to the root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the root.
      weight_decay: :math:`\lambda \ge 0`.
      mu_dtype: dtype of ``mu``; ``None`` uses the parameters' dtype. ``nu`` is
        kept in at least float32 (one scalar per leaf).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_novograd()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> [round(x, 4) for x in u["w"].tolist()]
      [0.6, 0.8]
    """
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root, "weight_decay": weight_decay}
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def init_fields(params, h):
        nu = jax.tree.map(lambda p: jnp.zeros([], compute_dtype(p.dtype)), params)
        return tree_zeros_like(params, mu_dtype), nu

    def step(updates, state, params, h, count_inc):
        first = count_inc == 1

        def leaf(g, p, m, v):
            dt = compute_dtype(jnp.promote_types(g.dtype, m.dtype))
            c = {k: cast_hyperparam(x, dt) for k, x in h.items()}
            g32 = g.astype(dt)
            sq_norm = jnp.linalg.norm(g32) ** 2
            new_v = jnp.where(first, sq_norm, (1 - c["b2"]) * sq_norm + c["b2"] * v.astype(dt))
            step = g32 / (jnp.sqrt(new_v + c["eps_root"]) + c["eps"]) + c["weight_decay"] * p.astype(dt)
            new_m = jnp.where(first, step, c["b1"] * m.astype(dt) + step)
            return new_m, new_m, new_v

        new_updates, mu, nu = tree_unzip(jax.tree.map(leaf, updates, params, state.mu, state.nu), updates, 3)
        return new_updates, (mu, nu)

    ranges = {"b1": PROBABILITY, "b2": PROBABILITY, "eps": NONNEGATIVE, "eps_root": NONNEGATIVE}
    ranges["weight_decay"] = NONNEGATIVE
    return hyperparam_transformation(
        "scale_by_novograd",
        hp,
        ranges,
        ScaleByNovogradState,
        step,
        init_fields,
        counted=True,
        needs_params=True,
    )
