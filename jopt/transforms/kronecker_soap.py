r"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al., 2024, arXiv:2409.11321).

Every leaf keeps Shampoo's factor statistics (:math:`L, R` for a matrix; one
factor per axis, see :mod:`jopt.transforms.kronecker`) and their eigenbases
:math:`Q_L, Q_R`. Adam runs on the gradient rotated into that basis, and the
result is rotated back. The bases are computed by ``eigh`` from the first
gradient, and refreshed every ``precondition_frequency`` steps by one step of
QR power iteration. 3-D and higher leaves get one factor per axis (a stack of
layers ``(2, 8, 8)``: 2x2, 8x8 and 8x8), unless ``merge_dims`` merges axes first.

The module is named ``kronecker_soap`` (not ``soap``) so that the submodule
does not shadow the optimizer :func:`jopt.soap` in the flat ``jopt`` namespace.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.batched_cond import cond_across_batch
from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import (
    NONNEGATIVE,
    UNIT,
    Hyperparam,
    Range,
    cast_hyperparam,
    compute_dtype,
    is_python_number,
)
from jopt.transforms import kronecker as kr
from jopt.tree import tree_unzip
from jopt.tree._arithmetic import reshard_like

Array = jax.Array
PyTree = Any

__all__ = ["ScaleBySoapState", "scale_by_soap"]

FREQUENCY = Range(1.0, integer=True)
"""Refresh frequencies: whole numbers >= 1."""


class ScaleBySoapState(NamedTuple):
    r"""State of :func:`scale_by_soap`.

    Attributes:
      count: number of updates so far (int32); the first one only initializes.
      mu: first moment :math:`M`, in the leaves' own coordinates.
      nu: second moment :math:`V`, in the rotated coordinates (stored with the
        leaves' shapes; see :func:`jopt.transforms.kronecker.to_blocks`).
      factors: per leaf, the factor statistics (:math:`L, R, \dots`) of each block group.
      bases: per leaf, their eigenbases (:math:`Q_L, Q_R, \dots`), same structure.
      hyperparams: hyperparameter values used at the latest step.
    """

    count: Array
    mu: PyTree
    nu: PyTree
    factors: PyTree
    bases: PyTree
    hyperparams: dict[str, Array]


def check_static_int(owner: str, name: str, value: Any, *, low: int = 1, allow_none: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int >= ``low`` (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        accepted = f"an int >= {low}" + (" or None" if allow_none else "")
        raise ValueError(f"{owner}: {name} must be {accepted}, got {value!r}")


def whole_number(value: Any) -> Any:
    """A resolved integer hyperparameter as a Python int or an int32 array (arrays arrive as floats)."""
    return value if is_python_number(value) else cast_hyperparam(jnp.round(value), jnp.int32)


def _refresh(factors: kr.Factors, bases: kr.Factors, nu: kr.Blocks) -> tuple[kr.Factors, kr.Blocks]:
    """QR power-iteration step for every basis; ``nu`` reordered along with the sorted columns."""
    new_bases, new_nu = [], []
    for fs, qs, v in zip(factors, bases, nu):
        group = []
        for axis, (f, q) in enumerate(zip(fs, qs)):
            if f is None:
                group.append(None)
                continue
            q_new, order = kr.refine_eigenbasis(f, q)
            v = kr.permute_axis(v, order, axis)
            group.append(q_new)
        new_bases.append(tuple(group))
        new_nu.append(v)
    return tuple(new_bases), tuple(new_nu)


def _initial_bases(factors: kr.Factors) -> kr.Factors:
    return tuple(tuple(None if f is None else kr.eigenbasis(f) for f in fs) for fs in factors)


def _start_bases(operands: tuple) -> tuple[kr.Factors, kr.Blocks]:
    """The first call's branch: eigenbases of the first factors, ``nu`` unchanged."""
    _, factors, _, nu = operands
    return _initial_bases(factors), nu


def _refresh_if_due(operands: tuple) -> tuple[kr.Factors, kr.Blocks]:
    """Later calls: one refinement step where ``refresh`` holds, the old bases elsewhere."""
    return cond_across_batch(operands[0], lambda o: _refresh(*o[1:]), lambda o: (o[2], o[3]), operands)


def _adam_direction(g_rot: kr.Blocks, m_rot: kr.Blocks, nu: kr.Blocks, b2: Any, eps: Any):
    """Adam in the rotated coordinates: the new ``nu`` blocks and :math:`M' / (\\sqrt{V} + \\epsilon)`."""
    new_nu = tuple(b2 * v + (1 - b2) * r * r for v, r in zip(nu, g_rot))
    return new_nu, tuple(m / (jnp.sqrt(v) + eps) for m, v in zip(m_rot, new_nu))


def scale_by_soap(
    b1: Hyperparam = 0.95,
    b2: Hyperparam = 0.95,
    shampoo_beta: Hyperparam | None = None,
    eps: Hyperparam = 1e-8,
    precondition_frequency: Hyperparam = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    *,
    block_size: int | None = None,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    r"""SOAP's preconditioner: Adam in the eigenbasis of Shampoo's factors (Vyas et al., 2024).

    At call :math:`t = 0, 1, \dots`, with the gradient :math:`G_t` of a matrix leaf
    (one factor and basis per axis for other ranks):

    .. math::

        G' &= Q_L^\top G_t Q_R, \qquad M_t = \beta_1 M_{t-1} + (1 - \beta_1) G_t, \qquad
        M' = Q_L^\top M_t Q_R \\
        V_t &= \beta_2 V_{t-1} + (1 - \beta_2)\, G' \odot G', \qquad
        u_t = \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\; Q_L \frac{M'}{\sqrt{V_t} + \epsilon} Q_R^\top \\
        L &\leftarrow \beta_s L + (1 - \beta_s) G_t G_t^\top, \qquad
        R \leftarrow \beta_s R + (1 - \beta_s) G_t^\top G_t

    The first call (:math:`t = 0`) only accumulates :math:`L, R` and sets
    :math:`Q = \operatorname{eigh}` (columns by descending eigenvalue); it returns a
    zero update, so the projection never uses the gradient it was built from.
    When :math:`t > 0` and :math:`t \bmod f = 0` (``precondition_frequency``), after
    the update each basis is refreshed by one QR power-iteration step: its columns
    are sorted by :math:`\operatorname{diag}(Q^\top L Q)`, the matching axis of
    :math:`V` is reordered the same way, and :math:`Q \leftarrow \operatorname{qr}(L Q)`.
    :math:`M` is kept in the leaves' own coordinates, so a basis change needs no
    rotation of it (the reference code's project-back and re-project).

    Two choices the paper leaves open are fixed so that runs differing only in
    rounding (jit or eager, vmapped or not, CPU or GPU) get the same bases: in the
    null space of a rank-deficient factor (a first :math:`L` of a wide gradient)
    the basis is a canonical one rather than ``eigh``'s rounding-dependent one, and
    the QR step iterates :math:`L + \mu I` with a tiny :math:`\mu` (see
    :func:`jopt.transforms.kronecker.eigenbasis` and
    :func:`~jopt.transforms.kronecker.refine_eigenbasis`). Even so, with
    full-batch gradients the second call's rotated gradient is diagonal up to
    rounding (the basis was built from an almost equal gradient) and Adam turns
    those rounding-sized entries into full-size steps; float32 runs are then
    reproducible to about the learning rate only. Minibatch gradients, or a larger
    ``eps``, avoid this.

    Args:
      b1: :math:`\beta_1 \in [0, 1)`, decay of the first moment.
      b2: :math:`\beta_2 \in [0, 1)`, decay of the second moment.
      shampoo_beta: :math:`\beta_s \in [0, 1)`, decay of the factors; ``None`` uses ``b2``.
      eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{V}`.
      precondition_frequency: :math:`f`, a whole number >= 1; traceable (the refresh
        is a branch on the count, one under ``jax.vmap`` too: see
        :func:`jopt.cond_across_batch`).
      max_precond_dim: axes longer than this get no factor (identity basis).
      merge_dims: merge consecutive axes while their product stays at most
        ``max_precond_dim`` (see :func:`jopt.transforms.kronecker.merged_shape`).
      precondition_1d: give 1-D leaves a factor too (else they get plain Adam).
      normalize_grads: divide each leaf's direction by its root mean square
        (before the bias correction), as the reference code does.
      correct_bias: apply the bias-correction factor :math:`\sqrt{1 - \beta_2^t}/(1 - \beta_1^t)`.
      block_size: also cut axes longer than this into blocks with their own
        factors (not in the paper; ``None``: off).
      mu_dtype: dtype of :math:`M`; ``None``: the parameters' dtype (:math:`V` has it too).

    Factors and bases are kept in at least float32 and computed by ``eigh``/``qr``
    in that dtype (float64 under x64 with float64 parameters).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_soap()
      >>> params = {"w": jnp.ones((3, 2))}
      >>> state = tx.init(params)
      >>> u, state = tx.update({"w": jnp.arange(6.0).reshape(3, 2)}, state)
      >>> u["w"].tolist()  # the first call only builds the eigenbases
      [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
      >>> state.bases["w"][0][0].shape, state.bases["w"][0][1].shape
      ((1, 3, 3), (1, 2, 2))
    """
    owner = "scale_by_soap"
    check_static_int(owner, "max_precond_dim", max_precond_dim)
    check_static_int(owner, "block_size", block_size, allow_none=True)
    hp = {"b1": b1, "b2": b2, "eps": eps, "precondition_frequency": precondition_frequency}
    if shampoo_beta is not None:
        hp["shampoo_beta"] = shampoo_beta
    ranges = {
        "b1": UNIT,
        "b2": UNIT,
        "shampoo_beta": UNIT,
        "eps": NONNEGATIVE,
        "precondition_frequency": FREQUENCY,
    }
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def layout_of(shape):
        return kr.kronecker_layout(
            shape,
            block_size=block_size,
            max_precond_dim=max_precond_dim,
            merge_limit=max_precond_dim if merge_dims else None,
            precondition_1d=precondition_1d,
        )

    def init_fields(params, h):
        def leaf(p):
            layout, dt = layout_of(p.shape), compute_dtype(p.dtype)
            mu = jnp.zeros_like(p, dtype=mu_dtype or p.dtype)
            return mu, jnp.zeros_like(p), kr.init_factors(layout, dt), kr.identity_factors(layout, dt)

        return tree_unzip(jax.tree.map(leaf, params), params, 4)

    def leaf_step(g, mu, nu, factors, bases, h, count):
        layout, dt = layout_of(g.shape), compute_dtype(g.dtype)
        b1, b2, eps = (cast_hyperparam(h[k], dt) for k in ("b1", "b2", "eps"))
        beta_s = b2 if shampoo_beta is None else cast_hyperparam(h["shampoo_beta"], dt)
        g32, first = g.astype(dt), count == 0
        blocks = kr.to_blocks(g32, layout)
        new_mu = b1 * mu.astype(dt) + (1 - b1) * g32
        g_rot = kr.mode_products(blocks, bases, transpose=True)
        m_rot = kr.mode_products(kr.to_blocks(new_mu, layout), bases, transpose=True)
        old_nu = kr.to_blocks(nu.astype(dt), layout)
        new_nu, n_rot = _adam_direction(g_rot, m_rot, old_nu, b2, eps)
        direction = reshard_like(kr.from_blocks(kr.mode_products(n_rot, bases, transpose=False), layout), g32)
        if normalize_grads:
            direction = direction / (1e-30 + jnp.sqrt(jnp.mean(direction * direction)))
        if correct_bias:
            t = jnp.maximum(count, 1).astype(dt)
            direction = direction * (jnp.sqrt(1 - b2**t) / (1 - b1**t))
        direction = jnp.where(first, jnp.zeros_like(direction), direction)
        new_mu = jnp.where(first, mu.astype(dt), new_mu)
        new_nu = tuple(jnp.where(first, v0, v) for v0, v in zip(old_nu, new_nu))
        new_factors = kr.update_factors(factors, blocks, beta_s, 1 - beta_s)
        freq = whole_number(h["precondition_frequency"])
        refresh = jnp.logical_and(count > 0, count % freq == 0)
        new_bases, new_nu = cond_across_batch(
            first, _start_bases, _refresh_if_due, (refresh, new_factors, bases, new_nu)
        )
        return direction, new_mu, reshard_like(kr.from_blocks(new_nu, layout), nu), new_factors, new_bases

    def step(updates, state, params, h, count_inc):
        del params, count_inc
        out = jax.tree.map(
            lambda g, m, v, f, q: leaf_step(g, m, v, f, q, h, state.count),
            updates,
            state.mu,
            state.nu,
            state.factors,
            state.bases,
        )
        direction, mu, nu, factors, bases = tree_unzip(out, updates, 5)
        return direction, (mu, nu, factors, bases)

    return hyperparam_transformation(owner, hp, ranges, ScaleBySoapState, step, init_fields, counted=True)
