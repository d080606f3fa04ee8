r"""Shampoo (Gupta et al., 2018) with blocking and grafting (Anil et al., 2020).

Every leaf keeps one factor statistic per axis (:math:`L, R` for a matrix; see
:mod:`jopt.transforms.kronecker`) and preconditions by their inverse roots,
:math:`L^{-1/4} G R^{-1/4}`. Large axes are cut into blocks with their own
factors; the preconditioned direction is *grafted*: rescaled, per leaf, to the
norm of a simple diagonal method's direction (layer-wise grafting).

The module is named ``kronecker_shampoo`` (not ``shampoo``) so that the
submodule does not shadow the optimizer :func:`jopt.shampoo` in the flat
``jopt`` namespace.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.batched_cond import cond_across_batch
from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import (
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
    Hyperparam,
    Range,
    cast_hyperparam,
    compute_dtype,
)
from jopt.transforms import kronecker as kr
from jopt.transforms.kronecker_soap import FREQUENCY, check_static_int, whole_number
from jopt.tree import tree_unzip
from jopt.tree._arithmetic import reshard_like

Array = jax.Array
PyTree = Any

__all__ = ["ScaleByShampooState", "scale_by_shampoo"]

GRAFT_TYPES = ("none", "sgd", "adagrad", "rmsprop", "adam")
"""Grafting methods of :func:`scale_by_shampoo` (the diagonal direction whose norm is borrowed)."""

_DIAGONAL = ("adagrad", "rmsprop", "adam")


class ScaleByShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`.

    Attributes:
      count: number of updates so far (int32).
      factors: per leaf, the factor statistics (:math:`L, R, \\dots`) of each block group.
      roots: per leaf, the inverse roots last computed from them, same structure.
      graft_nu: the grafting method's diagonal accumulator :math:`v` (``None`` for
        ``"none"`` and ``"sgd"``).
      hyperparams: hyperparameter values used at the latest step.
    """

    count: Array
    factors: PyTree
    roots: PyTree
    graft_nu: PyTree
    hyperparams: dict[str, Array]


def _graft_direction(g, v, count, graft_type, b2, w, graft_eps):
    """The grafting method's direction :math:`D` and its new accumulator."""
    if graft_type not in _DIAGONAL:
        return g, v
    new_v = v + g * g if graft_type == "adagrad" else b2 * v + w * g * g
    v_hat = new_v
    if graft_type == "adam":
        t = (count + 1).astype(g.dtype)
        v_hat = new_v / jnp.where(w == 1, jnp.ones_like(w), 1 - b2**t)
    return g / (jnp.sqrt(v_hat) + graft_eps), new_v


def scale_by_shampoo(
    b2: Hyperparam = 0.999,
    eps: Hyperparam = 1e-6,
    precondition_frequency: Hyperparam = 1,
    start_preconditioning_step: Hyperparam = 0,
    graft_eps: Hyperparam = 1e-8,
    *,
    graft_type: str = "adam",
    block_size: int | None = 128,
    max_precond_dim: int | None = None,
    merge_dims: bool = False,
    precondition_1d: bool = True,
    exponent_override: int | None = None,
    root_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Shampoo's Kronecker-factored preconditioner with blocking and layer-wise grafting.

    At call :math:`t = 0, 1, \dots`, for each block :math:`G` of a leaf (a matrix
    here; one factor per axis in general) with :math:`w = 1 - \beta_2`, or
    :math:`w = 1` when :math:`\beta_2 = 1` (Gupta et al.'s running sums):

    .. math::

        L &\leftarrow \beta_2 L + w\, G G^\top, \qquad R \leftarrow \beta_2 R + w\, G^\top G \\
        P_L &= (L + \epsilon I)^{-1/p}, \quad P_R = (R + \epsilon I)^{-1/p}
            \quad \text{(recomputed when } t \bmod f = 0\text{)} \\
        \tilde G &= P_L\, G\, P_R, \qquad
        u_t = \tilde G\, \frac{\lVert D_t \rVert}{\lVert \tilde G \rVert + 10^{-16}}

    with :math:`p = 2k` for :math:`k` factored axes (4 for a matrix) unless
    ``exponent_override``, and the norms taken over the whole leaf. The grafting
    direction :math:`D_t` is ``graft_type``'s: ``"sgd"`` :math:`g`; ``"adagrad"``
    :math:`g / (\sqrt{\textstyle\sum g^2} + \epsilon_g)`; ``"rmsprop"``
    :math:`g / (\sqrt{v_t} + \epsilon_g)` with :math:`v_t = \beta_2 v_{t-1} + w g^2`;
    ``"adam"`` the same with :math:`v_t / (1 - \beta_2^{t+1})` (no first moment);
    ``"none"`` returns :math:`\tilde G` unscaled. Leaves without any factor, and
    every leaf while :math:`t <` ``start_preconditioning_step``, get :math:`D_t`
    (:math:`g` for ``"none"``). The inverse roots use ``eigh``: eigenvalues are
    clipped at 0 before adding :math:`\epsilon`.

    Args:
      b2: :math:`\beta_2 \in [0, 1]`, decay of the factors and of the grafting accumulator.
      eps: :math:`\epsilon > 0`, added to the factors' eigenvalues.
      precondition_frequency: :math:`f`, recompute the roots every ``f`` calls
        (whole number >= 1); traceable (a branch on the count, one under
        ``jax.vmap`` too: :func:`jopt.cond_across_batch`).
      start_preconditioning_step: calls before this use the grafting direction
        alone (whole number >= 0); traceable.
      graft_eps: :math:`\epsilon_g \ge 0` of the grafting method.
      graft_type: one of :data:`GRAFT_TYPES`.
      block_size: cut axes longer than this into blocks with their own factors;
        ``None``: no blocking.
      max_precond_dim: axes longer than this get no factor; ``None``: no limit.
      merge_dims: merge consecutive axes while their product stays at most
        ``block_size`` (see :func:`jopt.transforms.kronecker.merged_shape`).
      precondition_1d: give 1-D leaves a factor (full-matrix AdaGrad-like, :math:`p = 2`).
      exponent_override: use :math:`p` = this for every factor.
      root_dtype: dtype of the ``eigh`` (e.g. ``jnp.float64`` under x64); ``None``:
        the factors' dtype (at least float32).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_shampoo(b2=1.0, graft_type="none")
      >>> params = {"w": jnp.zeros((2, 2))}
      >>> u, state = tx.update({"w": jnp.array([[1.0, 0.0], [0.0, 4.0]])}, tx.init(params))
      >>> print(u["w"].round(3))  # (G G^T + eps)^(-1/4) G (G^T G + eps)^(-1/4) = sign(G) here
      [[1. 0.]
       [0. 1.]]
    """
    owner = "scale_by_shampoo"
    if graft_type not in GRAFT_TYPES:
        raise ValueError(f"{owner}: graft_type must be one of {list(GRAFT_TYPES)}, got {graft_type!r}")
    check_static_int(owner, "block_size", block_size, allow_none=True)
    check_static_int(owner, "max_precond_dim", max_precond_dim, allow_none=True)
    check_static_int(owner, "exponent_override", exponent_override, allow_none=True)
    if merge_dims and block_size is None:
        raise ValueError(f"{owner}: merge_dims merges up to block_size, which must then be an int")
    hp = {
        "b2": b2,
        "eps": eps,
        "precondition_frequency": precondition_frequency,
        "start_preconditioning_step": start_preconditioning_step,
        "graft_eps": graft_eps,
    }
    ranges = {
        "b2": PROBABILITY,
        "eps": POSITIVE,
        "precondition_frequency": FREQUENCY,
        "start_preconditioning_step": Range(0.0, integer=True),
        "graft_eps": NONNEGATIVE,
    }

    def layout_of(shape):
        return kr.kronecker_layout(
            shape,
            block_size=block_size,
            max_precond_dim=max_precond_dim,
            merge_limit=block_size if merge_dims else None,
            precondition_1d=precondition_1d,
        )

    def init_fields(params, h):
        def leaf(p):
            layout, dt = layout_of(p.shape), compute_dtype(p.dtype)
            graft_nu = jnp.zeros_like(p) if graft_type in _DIAGONAL else None
            return kr.init_factors(layout, dt), kr.identity_factors(layout, dt), graft_nu

        return tree_unzip(jax.tree.map(leaf, params), params, 3)

    def roots_of(factors, layout, eps):
        return tuple(
            tuple(
                None
                if f is None
                else kr.inverse_root(f, exponent_override or 2 * g.num_factors, eps, root_dtype)
                for f in fs
            )
            for g, fs in zip(layout.groups, factors)
        )

    def leaf_step(g, factors, roots, graft_nu, h, count):
        layout, dt = layout_of(g.shape), compute_dtype(g.dtype)
        b2, eps, graft_eps = (cast_hyperparam(h[k], dt) for k in ("b2", "eps", "graft_eps"))
        w = jnp.where(jnp.equal(h["b2"], 1), 1.0, 1 - b2).astype(dt)
        g32 = g.astype(dt)
        blocks = kr.to_blocks(g32, layout)
        new_factors = kr.update_factors(factors, blocks, b2, w)
        refresh = count % whole_number(h["precondition_frequency"]) == 0
        new_roots = cond_across_batch(
            refresh, lambda o: roots_of(o[0], layout, o[2]), lambda o: o[1], (new_factors, roots, eps)
        )
        pg = reshard_like(kr.from_blocks(kr.mode_products(blocks, new_roots, transpose=False), layout), g32)
        v = None if graft_nu is None else graft_nu.astype(dt)
        d, new_v = _graft_direction(g32, v, count, graft_type, b2, w, graft_eps)
        if graft_type == "none":
            u = pg
        else:
            u = pg * (jnp.linalg.norm(d) / (jnp.linalg.norm(pg) + 1e-16))
        if not layout.has_factors:
            u = d
        u = jnp.where(count >= whole_number(h["start_preconditioning_step"]), u, d)
        return u, new_factors, new_roots, new_v

    def step(updates, state, params, h, count_inc):
        del params, count_inc
        out = jax.tree.map(
            lambda g, f, r, v: leaf_step(g, f, r, v, h, state.count),
            updates,
            state.factors,
            state.roots,
            state.graft_nu,
        )
        u, factors, roots, graft_nu = tree_unzip(out, updates, 4)
        return u, (factors, roots, graft_nu)

    return hyperparam_transformation(owner, hp, ranges, ScaleByShampooState, step, init_fields, counted=True)
