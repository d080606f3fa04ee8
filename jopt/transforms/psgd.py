r"""PSGD Kron: preconditioned SGD with a Kronecker-factored preconditioner (Li, 2015; 2018).

Preconditioned stochastic gradient descent (Xi-Lin Li, "Preconditioned
stochastic gradient descent", 2015) fits a preconditioner :math:`P = Q^\top Q`
online, from pairs of a (perturbed) gradient :math:`h` and a random probe
:math:`v \sim \mathcal N(0, I)`, by descending the criterion
:math:`\mathbb E[h^\top P h + v^\top P^{-1} v]`, whose minimiser whitens the
gradients (:math:`P\,\mathbb E[h h^\top]\,P = I`). The "Kron" variant
(Li, "Preconditioner on matrix Lie group for SGD", 2018, as in psgd-jax's
``kron``) keeps one factor :math:`Q_i` per dimension of each parameter
(:math:`Q = Q_1 \otimes \dots \otimes Q_k`), upper triangular or diagonal,
and updates each on its Lie group with a step normalised by a cheap spectral
norm bound, so the step size ``preconditioner_lr`` needs no tuning.

The preconditioner update is randomised (the probe :math:`v`, and a rare
rebalancing of the factors' scales). jopt draws that randomness from
``seed`` and the step counter only, so runs are reproducible, and with the
default seed it draws exactly psgd-jax's random numbers (see
:func:`scale_by_kron`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.batched_cond import cond_across_batch
from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import (
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
    UNIT,
    Hyperparam,
    Schedule,
    cast_hyperparam,
    check_hyperparam,
    compute_dtype,
    is_python_number,
)
from jopt.tree import tree_bias_correction, tree_moment, tree_zeros_like

Array = jax.Array
PyTree = Any
DType = Any

__all__ = ["ScaleByKronState", "precond_update_prob_schedule", "scale_by_kron"]

_MEMORY_SAVE_MODES = (None, "one_diag", "all_diag")
_RMS_CAP = 1.1  # the preconditioned gradient's RMS is about 1; larger leaves are scaled down to 1.1
_BALANCE_PROBABILITY = 0.01  # chance, per preconditioner update, of rebalancing the factors' scales
# Relative size of the probe added to the gradient before fitting, sqrt(float32 eps) in float32.
_DAMPING = float(np.sqrt(np.finfo(np.float32).eps, dtype=np.float32))


class ScaleByKronState(NamedTuple):
    """State of :func:`scale_by_kron` (psgd-jax's dict keys, in jopt's layout).

    Attributes:
      count: number of updates so far (int32); also the index of the step's random numbers.
      mu: momentum :math:`m_t` (always kept; ``b1=0`` makes it the gradient).
      Qs_preconditioners: per parameter leaf, the list of its factors :math:`Q_i`
        (a matrix for a triangular factor, a vector for a diagonal one; a leading
        layer axis for scanned leaves).
      update_counter: steps since the preconditioner was last updated (int32).
      hyperparams: hyperparameter values used at the latest step.
    """

    count: Array
    mu: PyTree
    Qs_preconditioners: PyTree
    update_counter: Array
    hyperparams: dict[str, Array]


def precond_update_prob_schedule(
    max_prob: Hyperparam = 1.0,
    min_prob: Hyperparam = 0.03,
    decay: Hyperparam = 0.001,
    flat_start: Hyperparam = 500,
) -> Schedule:
    r"""psgd-jax's default preconditioner update probability: flat, then an exponential decay.

    .. math:: p(n) = \min\big(\max(p_{\max}\, e^{-d\,(n - n_0)},\ p_{\min}),\ p_{\max}\big)

    Fitting the preconditioner matters most early in training; once it is
    learned, updating it on a few percent of the steps suffices. The defaults
    keep :math:`p = 1` for about 500 steps and reach :math:`p_{\min} = 0.03`
    after about 4000. Every argument may be traced.

    Args:
      max_prob: :math:`p_{\max} \in [0, 1]`.
      min_prob: :math:`p_{\min} \in [0, 1]`.
      decay: :math:`d \ge 0`, decay rate per step.
      flat_start: :math:`n_0`, steps before the decay starts.

    Example:
      >>> import jopt
      >>> schedule = jopt.precond_update_prob_schedule()
      >>> [round(float(schedule(n)), 4) for n in (0, 500, 1500, 10000)]
      [1.0, 1.0, 0.3679, 0.03]
    """
    owner = "precond_update_prob_schedule"
    PROBABILITY.check(max_prob, "max_prob", owner)
    PROBABILITY.check(min_prob, "min_prob", owner)
    NONNEGATIVE.check(decay, "decay", owner)
    check_hyperparam(flat_start, "flat_start", owner=owner)

    def schedule(count: Array) -> Array:
        return jnp.minimum(jnp.maximum(max_prob * jnp.exp(-decay * (count - flat_start)), min_prob), max_prob)

    return schedule


_DEFAULT_UPDATE_PROBABILITY = precond_update_prob_schedule()


# --------------------------------------------------------------------------- factor layout


def _triangular_dims(
    shape: Sequence[int], max_size: int, max_skew: float, min_ndim: int, memory_save_mode: str | None
) -> tuple[bool, ...]:
    """For each dimension of one layer, whether its factor is triangular (else diagonal).

    A scalar leaf has one diagonal factor (a scalar).
    """
    ndim = len(shape)
    if not ndim:
        return (False,)
    forced_diag = [memory_save_mode == "all_diag"] * ndim
    if memory_save_mode == "one_diag" and ndim:
        forced_diag[max(range(ndim), key=lambda i: (shape[i], i))] = True  # the largest, last on ties
    second_largest = sorted(shape)[-2] if ndim > 1 else 1
    return tuple(
        not (
            size == 1
            or size > max_size
            or size > max_skew * second_largest
            or ndim < min_ndim
            or forced_diag[i]
        )
        for i, size in enumerate(shape)
    )


def _init_factors(shape: Sequence[int], triangular: Sequence[bool], scale: Any, dtype: DType) -> list[Array]:
    r""":math:`Q = s\,I`: each of the :math:`k` factors is :math:`s^{1/k} I` (a scalar leaf: :math:`s`)."""
    if not shape:
        return [cast_hyperparam(scale, dtype) * jnp.ones((), dtype)]
    per_dim = cast_hyperparam(scale ** (1 / len(shape)), dtype)
    return [
        per_dim * (jnp.eye(n, dtype=dtype) if tri else jnp.ones(n, dtype))
        for n, tri in zip(shape, triangular)
    ]


# --------------------------------------------------------------------------- per-dimension algebra


def _along(vector: Array, ndim: int, axis: int) -> Array:
    """``vector`` shaped to broadcast along ``axis`` of an ``ndim``-dimensional array."""
    return vector.reshape([-1 if j == axis else 1 for j in range(ndim)])


def _mode_product(x: Array, factor: Array, axis: int) -> Array:
    r"""Apply ``factor`` :math:`F` to dimension ``axis`` of ``x``.

    .. math:: x_{\dots i \dots} \leftarrow \sum_j F_{ij}\, x_{\dots j \dots}
        \quad (\text{diagonal } F: F_i\, x_{\dots i \dots})
    """
    if factor.ndim < 2:
        return x * _along(factor, x.ndim, axis)
    return jnp.moveaxis(jnp.tensordot(factor, x, axes=(1, axis)), 0, axis)


def _mode_solve(x: Array, factor: Array, axis: int) -> Array:
    r"""Apply :math:`F^{-\top}` to dimension ``axis`` of ``x`` (``F`` upper triangular or diagonal)."""
    if factor.ndim < 2:
        return x / _along(factor, x.ndim, axis)
    moved = jnp.moveaxis(x, axis, -1)
    rows = moved.reshape(-1, factor.shape[0])
    solved = jax.lax.linalg.triangular_solve(factor, rows, left_side=False, lower=False)  # rows @ F^-1
    return jnp.moveaxis(solved.reshape(moved.shape), -1, axis)


def _mode_gram(x: Array, axis: int, triangular: bool) -> Array:
    r"""Second moments of dimension ``axis`` over the others: :math:`X_{(i)} X_{(i)}^\top` or its diagonal."""
    if not triangular:
        return jnp.sum(x * x, axis=tuple(j for j in range(x.ndim) if j != axis))
    rows = jnp.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    return rows @ rows.T


def _norm_lower_bound(m: Array) -> Array:
    r"""Li's cheap lower bound of :math:`\|M\|_2` for symmetric PSD :math:`M` (tight within :math:`\sqrt 2`).

    With :math:`c` the column of :math:`M` of largest norm, :math:`\|M^2 c\| / \|M c\|`,
    computed on :math:`M / \max|M|` to avoid overflow; 0 for :math:`M = 0`.
    """
    peak = jnp.max(jnp.abs(m))
    nonzero = peak > 0
    a = m / jnp.where(nonzero, peak, 1)
    column = jnp.take(a, jnp.argmax(jnp.sum(a * a, axis=0)), axis=1)
    y = column @ a
    y_norm = jnp.linalg.norm(y)
    bound = jnp.linalg.norm((y / jnp.where(y_norm > 0, y_norm, 1)) @ a.T)
    return jnp.where(nonzero, peak * bound, 0)


def _fit_factors(
    factors: list[Array], h: Array, v: Array, triangular: Sequence[bool], lr: Any
) -> list[Array]:
    r"""One step of each factor of one layer towards :math:`P h h^\top P = I`, all from the old factors.

    .. math::

        A = Q h, \quad B = Q^{-\top} v, \quad
        G_i = A_{(i)} A_{(i)}^\top - B_{(i)} B_{(i)}^\top, \quad
        Q_i \leftarrow Q_i - \frac{\eta_Q}{\|A_{(i)} A_{(i)}^\top + B_{(i)} B_{(i)}^\top\|}\,
            \operatorname{triu}(G_i)\, Q_i

    (the norm is :func:`_norm_lower_bound`; a diagonal factor uses the
    diagonal of :math:`G_i`, elementwise, and the max-abs norm).
    """
    dt = h.dtype
    a, b = h, v
    for i, q in enumerate(factors):
        a, b = _mode_product(a, q, i), _mode_solve(b, q, i)
    tiny = jnp.finfo(dt).tiny
    lr = cast_hyperparam(lr, dt)
    new = []
    for i, (q, tri) in enumerate(zip(factors, triangular)):
        aa, bb = _mode_gram(a, i, tri), _mode_gram(b, i, tri)
        step = (aa - bb) * lr
        if tri:
            new.append(q - (jnp.triu(step) / (_norm_lower_bound(aa + bb) + tiny)) @ q)
        else:
            new.append(q - step * q / (jnp.max(jnp.abs(aa + bb)) + tiny))
    return new


def _precondition(factors: list[Array], g: Array) -> Array:
    r""":math:`P g = (Q_1^\top Q_1 \otimes \dots \otimes Q_k^\top Q_k)\, g` for one layer."""
    for i, q in enumerate(factors):
        g = _mode_product(_mode_product(g, q, i), q.T, i)
    return g


def _balance(factors: list[Array]) -> list[Array]:
    r"""Rescale factors to equal max-abs, keeping their product: :math:`Q_i \leftarrow Q_i\, \bar n / n_i`."""
    if len(factors) < 2:
        return factors
    norms = jnp.stack([jnp.max(jnp.abs(q)) for q in factors])
    gmean = jnp.prod(norms) ** (1 / len(factors))
    return [q * (gmean / n) for q, n in zip(factors, norms)]


def _rms_cap(u: Array) -> Array:
    """Scale a leaf down so that its RMS is at most :data:`_RMS_CAP`."""
    return u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(u * u)) / _RMS_CAP)


def _threshold(probability: Any) -> Any:
    """``1 / p``, the steps between preconditioner updates (``inf`` for ``p = 0``), in double for numbers."""
    if is_python_number(probability):  # the type decides, as in resolve(); no branch on the value
        with np.errstate(divide="ignore"):
            return float(np.divide(1.0, probability))
    return 1.0 / probability


def _check_precision(value: str | None, name: str) -> None:
    try:
        with jax.default_matmul_precision(value):
            pass
    except ValueError as err:
        raise ValueError(f"scale_by_kron: {name} is not a matmul precision: {err}") from None


def _check_structure(
    max_size_triangular: int,
    min_ndim_triangular: int,
    max_skew_triangular: float,
    memory_save_mode: str | None,
    lax_map_batch_size: int,
) -> None:
    owner = "scale_by_kron"
    check_hyperparam(max_size_triangular, "max_size_triangular", low=0, integer=True, owner=owner)
    check_hyperparam(min_ndim_triangular, "min_ndim_triangular", low=0, integer=True, owner=owner)
    check_hyperparam(lax_map_batch_size, "lax_map_batch_size", low=0, integer=True, owner=owner)
    if not (isinstance(max_skew_triangular, (int, float)) and max_skew_triangular >= 0):
        raise ValueError(f"{owner}: max_skew_triangular must be in [0, inf], got {max_skew_triangular!r}")
    if memory_save_mode not in _MEMORY_SAVE_MODES:
        raise ValueError(
            f"{owner}: memory_save_mode must be one of {list(_MEMORY_SAVE_MODES)}, got {memory_save_mode!r}"
        )


# --------------------------------------------------------------------------- the transform


def scale_by_kron(
    b1: Hyperparam = 0.9,
    preconditioner_update_probability: Hyperparam = _DEFAULT_UPDATE_PROBABILITY,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    preconditioner_lr: Hyperparam = 0.1,
    preconditioner_init_scale: Hyperparam = 1.0,
    mu_dtype: DType | None = None,
    precond_dtype: DType | None = None,
    precond_update_precision: str | None = "tensorfloat32",
    precond_grads_precision: str | None = None,
    scanned_layers: PyTree | None = None,
    lax_map_scanned_layers: bool = False,
    lax_map_batch_size: int = 8,
    *,
    max_skew_triangular: float = math.inf,
    seed: int | Array = 5318008,
) -> GradientTransformation:
    r"""PSGD with a Kronecker-factored preconditioner (Li, 2015; psgd-jax's ``scale_by_kron``).

    Per leaf, with factors :math:`Q_i` of :math:`Q = \bigotimes_i Q_i` and
    :math:`P = Q^\top Q`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad \hat m_t = m_t / (1 - \beta_1^t) \\
        h &= \hat m_t + \sqrt{\epsilon_{32}}\, \overline{|\hat m_t|}\, v, \quad v \sim \mathcal N(0, I)
            \quad \text{(only on update steps)} \\
        Q_i &\leftarrow Q_i - \frac{\eta_Q\, \operatorname{triu}(A_{(i)}A_{(i)}^\top - B_{(i)}B_{(i)}^\top)}
            {\|A_{(i)}A_{(i)}^\top + B_{(i)}B_{(i)}^\top\|}\, Q_i,
            \qquad A = Q h,\ B = Q^{-\top} v \\
        u_t &= \frac{P \hat m_t}{\max(1,\ \operatorname{rms}(P \hat m_t) / 1.1)}

    A diagonal factor uses the diagonals, elementwise, and the max-abs norm;
    a triangular one Li's lower bound of the spectral norm. With
    ``momentum_into_precond_update=False`` :math:`h` is built from :math:`g_t`.
    The preconditioner is updated when ``update_counter + 1 >= 1 / p``
    (every :math:`\lceil 1/p \rceil` steps, psgd-jax's deterministic rule); on an
    update, with probability 0.01, the factors of a leaf are first rescaled to
    equal max-abs (their product unchanged).

    Randomness: at step ``count`` the key is ``fold_in(PRNGKey(seed), count)``;
    ``(_, k) = split(key)`` is the update's key, ``(k, k_balance) = split(k)``
    decides the rebalancing (``uniform(k_balance) < 0.01``), ``(_, k_v) =
    split(k)`` and ``split(k_v, n_leaves)`` give each leaf's probe
    ``normal(key_leaf, leaf.shape)`` (in the leaf's compute dtype). This is
    psgd-jax's schedule, so with the default ``seed`` (psgd-jax's fixed one)
    both draw the same numbers.

    Args:
      b1: momentum :math:`\beta_1 \in [0, 1)`.
      preconditioner_update_probability: :math:`p \in [0, 1]`, or a schedule
        (called with ``count``, the number of previous updates, as every jopt
        schedule; psgd-jax calls it with ``count + 1``). The default is
        :func:`precond_update_prob_schedule`.
      max_size_triangular: dimensions larger than this get a diagonal factor.
      min_ndim_triangular: leaves with fewer dimensions get only diagonal factors
        (default 2: vectors are diagonally preconditioned).
      memory_save_mode: ``None`` (triangular where allowed), ``"one_diag"`` (the
        largest dimension, the last on ties, diagonal) or ``"all_diag"``.
      momentum_into_precond_update: fit the preconditioner to the momentum (else to the gradient).
      preconditioner_lr: :math:`\eta_Q \ge 0`, the factors' step size.
      preconditioner_init_scale: :math:`s > 0`, initial :math:`Q = s I`.
      mu_dtype: dtype of the momentum (default: the parameters').
      precond_dtype: dtype of the factors (default: the leaf's compute dtype, at least float32).
      precond_update_precision: matmul precision while fitting (``jax.default_matmul_precision``).
      precond_grads_precision: matmul precision while preconditioning.
      scanned_layers: pytree of bools like the parameters; a ``True`` leaf is a
        stack of layers along its first axis, each preconditioned on its own.
      lax_map_scanned_layers: map scanned layers with ``lax.map`` (less memory) instead of ``vmap``.
      lax_map_batch_size: ``lax.map``'s batch size (``<= 1``: unbatched).
      max_skew_triangular: a dimension larger than this times the leaf's
        second-largest dimension gets a diagonal factor (psgd-jax 0.2.9 lacks
        it; the default ``inf`` never applies).
      seed: an int seed or a PRNG key (see Randomness).

    Returns:
      A transformation with state :class:`ScaleByKronState`. Numeric
      hyperparameters may be numbers, arrays, traced values or schedules.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_kron(preconditioner_update_probability=1.0)
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> [q.shape for q in state.Qs_preconditioners["w"]], [q.shape for q in state.Qs_preconditioners["b"]]
      ([(3, 3), (2, 2)], [(2,)])
      >>> u, state = jax.jit(tx.update)({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, state)
      >>> int(state.update_counter), bool(jnp.sqrt(jnp.mean(u["w"] ** 2)) <= 1.1)
      (0, True)
    """
    _check_structure(
        max_size_triangular, min_ndim_triangular, max_skew_triangular, memory_save_mode, lax_map_batch_size
    )
    _check_precision(precond_update_precision, "precond_update_precision")
    _check_precision(precond_grads_precision, "precond_grads_precision")
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
    precond_dtype = None if precond_dtype is None else jax.dtypes.canonicalize_dtype(precond_dtype)

    def layer_shape(leaf, scanned):
        return leaf.shape[1:] if scanned else leaf.shape

    def triangular(leaf, scanned):
        return _triangular_dims(
            layer_shape(leaf, scanned),
            max_size_triangular,
            max_skew_triangular,
            min_ndim_triangular,
            memory_save_mode,
        )

    def over_layers(scanned, fn, *args):
        if not scanned:
            return fn(*args)
        if lax_map_scanned_layers:
            batch = lax_map_batch_size if lax_map_batch_size > 1 else None
            return jax.lax.map(lambda xs: fn(*xs), args, batch_size=batch)
        return jax.vmap(fn)(*args)

    def scanned_flags(tree):
        if scanned_layers is None:
            return [False] * len(jax.tree.leaves(tree))
        return [bool(s) for s in jax.tree.structure(tree).flatten_up_to(scanned_layers)]

    def init_fields(params, h):
        factors = []
        for leaf, scanned in zip(jax.tree.leaves(params), scanned_flags(params)):
            dtype = precond_dtype or compute_dtype(leaf.dtype)
            one = _init_factors(
                layer_shape(leaf, scanned), triangular(leaf, scanned), h["preconditioner_init_scale"], dtype
            )
            factors.append([jnp.broadcast_to(q, (leaf.shape[0], *q.shape)) for q in one] if scanned else one)
        qs = jax.tree.structure(params).unflatten(factors)
        return tree_zeros_like(params, mu_dtype), qs, jnp.zeros([], jnp.int32)

    def fit_leaf(q, g, key, scanned, lr):
        """Fit one leaf's factors to ``g`` plus a probe drawn from ``key``."""
        dt = compute_dtype(jnp.promote_types(g.dtype, q[0].dtype))
        g = g.astype(dt)
        v = jax.random.normal(key, g.shape, dt)
        damped = g + _DAMPING * jnp.mean(jnp.abs(g)) * v
        fit_one = functools.partial(_fit_factors, triangular=triangular(g, scanned), lr=lr)
        fitted = over_layers(scanned, fit_one, [x.astype(dt) for x in q], damped, v)
        return [x.astype(old.dtype) for x, old in zip(fitted, q)]

    def fit(key, qs, fit_in, flags, lr):
        """The preconditioner update of every leaf (one branch of the update ``cond``)."""
        with jax.default_matmul_precision(precond_update_precision):
            key, balance_key = jax.random.split(key)
            rebalance = jax.random.uniform(balance_key) < _BALANCE_PROBABILITY
            qs = jax.lax.cond(
                rebalance, lambda: [over_layers(s, _balance, q) for q, s in zip(qs, flags)], lambda: qs
            )
            _, probe_key = jax.random.split(key)
            keys = jax.random.split(probe_key, len(fit_in))
            return [fit_leaf(q, g, k, s, lr) for q, g, k, s in zip(qs, fit_in, keys, flags)]

    def precondition_leaf(q, m, scanned):
        dt = compute_dtype(jnp.promote_types(m.dtype, q[0].dtype))
        return _rms_cap(over_layers(scanned, _precondition, [x.astype(dt) for x in q], m.astype(dt)))

    def kron_step(updates, mu, qs_tree, update_counter, count, count_inc, traced_h):
        h = {**constant_h, **traced_h}
        mu = tree_moment(updates, mu, h["b1"], order=1)
        m_hat = tree_bias_correction(mu, h["b1"], count_inc)
        leaves, treedef = jax.tree.flatten(updates)
        m_leaves = treedef.flatten_up_to(m_hat)
        qs = [list(q) for q in treedef.flatten_up_to(qs_tree)]
        flags = scanned_flags(updates)

        counter = update_counter + 1
        do_update = counter >= _threshold(h["preconditioner_update_probability"])
        base = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
        _, update_key = jax.random.split(jax.random.fold_in(base, count))
        fit_in = m_leaves if momentum_into_precond_update else leaves
        lr = h["preconditioner_lr"]
        qs = cond_across_batch(
            do_update,
            lambda o: fit(o[0], o[1], o[2], flags, o[3]),
            lambda o: o[1],
            (update_key, qs, fit_in, lr),
        )
        with jax.default_matmul_precision(precond_grads_precision):
            out = [precondition_leaf(q, m, s) for q, m, s in zip(qs, m_leaves, flags)]
        new_counter = jnp.where(do_update, 0, counter)
        return treedef.unflatten(out), mu, treedef.unflatten(qs), new_counter

    # Jitted once per transform: eager use compiles the step once (under an outer jit it is inlined).
    # Python-number hyperparameters stay constants of the trace; the others are its arguments.
    kron_step = jax.jit(kron_step)

    def step(updates, state, params, h, count_inc):
        del params
        traced = {k: v for k, v in h.items() if not is_python_number(v)}
        args = (state.mu, state.Qs_preconditioners, state.update_counter, state.count, count_inc, traced)
        out, mu, qs, counter = kron_step(updates, *args)
        return out, (mu, qs, counter)

    hp = {
        "b1": b1,
        "preconditioner_update_probability": preconditioner_update_probability,
        "preconditioner_lr": preconditioner_lr,
        "preconditioner_init_scale": preconditioner_init_scale,
    }
    constant_h = {k: v for k, v in hp.items() if is_python_number(v)}
    ranges = {
        "b1": UNIT,
        "preconditioner_update_probability": PROBABILITY,
        "preconditioner_lr": NONNEGATIVE,
        "preconditioner_init_scale": POSITIVE,
    }
    return hyperparam_transformation(
        "scale_by_kron", hp, ranges, ScaleByKronState, step, init_fields, counted=True
    )
