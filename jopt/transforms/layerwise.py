r"""Layer-wise transforms: trust-ratio scaling (LARS, LAMB) and NovoGrad's moments.

"Layer" means one leaf of the parameter pytree: norms and second moments are
taken over a whole leaf rather than elementwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, resolve_hyperparams, stored_hyperparams, transformation
from jopt.hyperparams import Hyperparam, check_hyperparam, compute_dtype
from jopt.transforms.weight_decay import MaskOrFn, resolve_mask
from jopt.tree import safe_increment, tree_unzip, tree_zeros_like

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


def _safe_norm(x: Array, min_norm: Array) -> Array:
    """:math:`\\max(\\|x\\|_2, n_{min})` with a finite gradient when ``x`` is zero."""
    norm = jnp.linalg.norm(x)
    small = norm <= min_norm
    masked = jnp.linalg.norm(jnp.where(small, jnp.ones_like(x), x))
    return jnp.where(small, min_norm, masked)


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
    owner = "scale_by_trust_ratio"
    check_hyperparam(min_norm, "min_norm", low=0.0, owner=owner)
    check_hyperparam(trust_coefficient, "trust_coefficient", low=0.0, owner=owner)
    check_hyperparam(eps, "eps", low=0.0, owner=owner)
    hp = {"min_norm": min_norm, "trust_coefficient": trust_coefficient, "eps": eps}

    def init(params):
        del params
        count = jnp.zeros([], jnp.int32)
        return ScaleByTrustRatioState(count, stored_hyperparams(hp, resolve_hyperparams(hp, count)))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_trust_ratio needs params: call update(updates, state, params)")
        h = resolve_hyperparams(hp, state.count)

        def scale_leaf(on, u, p):
            dt = compute_dtype(jnp.promote_types(u.dtype, p.dtype))
            floor = h["min_norm"].astype(dt)
            u32 = u.astype(dt)
            param_norm = _safe_norm(p.astype(dt), floor)
            update_norm = _safe_norm(u32, floor)
            ratio = h["trust_coefficient"].astype(dt) * param_norm / (update_norm + h["eps"].astype(dt))
            ratio = jnp.where((param_norm == 0) | (update_norm == 0), jnp.ones_like(ratio), ratio)
            return _select(on, (u32 * ratio).astype(u.dtype), u)

        updates = jax.tree.map(scale_leaf, resolve_mask(mask, params), updates, params)
        return updates, ScaleByTrustRatioState(safe_increment(state.count), stored_hyperparams(hp, h))

    return transformation(init, update)


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
    owner = "scale_by_novograd"
    check_hyperparam(b1, "b1", low=0.0, high=1.0, owner=owner)
    check_hyperparam(b2, "b2", low=0.0, high=1.0, owner=owner)
    check_hyperparam(eps, "eps", low=0.0, owner=owner)
    check_hyperparam(eps_root, "eps_root", low=0.0, owner=owner)
    check_hyperparam(weight_decay, "weight_decay", low=0.0, owner=owner)
    hp = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root, "weight_decay": weight_decay}

    def init(params):
        count = jnp.zeros([], jnp.int32)
        mu = tree_zeros_like(params, mu_dtype)
        nu = jax.tree.map(lambda p: jnp.zeros([], compute_dtype(p.dtype)), params)
        return ScaleByNovogradState(count, mu, nu, stored_hyperparams(hp, resolve_hyperparams(hp, count)))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_novograd needs params: call update(updates, state, params)")
        h = resolve_hyperparams(hp, state.count)
        first = state.count == 0

        def leaf(g, p, m, v):
            dt = compute_dtype(jnp.promote_types(g.dtype, m.dtype))
            c = {k: x.astype(dt) for k, x in h.items()}
            g32 = g.astype(dt)
            sq_norm = jnp.linalg.norm(g32) ** 2
            new_v = jnp.where(first, sq_norm, (1 - c["b2"]) * sq_norm + c["b2"] * v.astype(dt))
            step = g32 / (jnp.sqrt(new_v + c["eps_root"]) + c["eps"]) + c["weight_decay"] * p.astype(dt)
            new_m = jnp.where(first, step, c["b1"] * m.astype(dt) + step)
            return new_m.astype(g.dtype), new_m.astype(m.dtype), new_v.astype(v.dtype)

        out = jax.tree.map(leaf, updates, params, state.mu, state.nu)
        new_updates, mu, nu = tree_unzip(out, updates, 3)
        return new_updates, ScaleByNovogradState(
            safe_increment(state.count), mu, nu, stored_hyperparams(hp, h)
        )

    return transformation(init, update)
