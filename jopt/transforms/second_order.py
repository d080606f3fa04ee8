r"""Sophia: clipped, Hessian-preconditioned momentum (Liu et al., 2023), with Hutchinson's estimator.

Sophia divides an exponential moving average of the gradients by an
exponential moving average of an estimate :math:`\hat h` of the Hessian's
diagonal, refreshed every ``update_interval`` steps, and clips the result
elementwise, so a step never exceeds the learning rate in any coordinate
(where the curvature estimate is small or negative, the step is a signed,
clipped momentum step).

The estimate comes from a transform ``hessian_diagonal_fn`` whose ``update``
returns :math:`\hat h`; the default, :func:`hutchinson_estimator_diag_hessian`
(Sophia-H), takes the objective as the extra argument ``obj_fn`` and returns
:math:`u \odot (\nabla^2 f\, u)` for a random Rademacher vector :math:`u`.

The names, arguments and defaults are optax 0.2.8's (``optax.contrib``); with
Python-number hyperparameters and the same seed the float32 and float64 results
equal optax's bit for bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.batched_cond import cond_across_batch
from jopt.core import AcceptsAnyExtraArg, GradientTransformation, as_transformation, hyperparam_transformation
from jopt.core import transformation as _transformation
from jopt.hyperparams import (
    NONNEGATIVE,
    POSITIVE,
    UNIT,
    Hyperparam,
    Range,
    cast_hyperparam,
    compute_dtype,
    is_python_number,
)
from jopt.tree import cast, cast_like, dtype, random_like, tree_bias_correction, tree_moment, tree_zeros_like

Array = jax.Array
PyTree = Any

__all__ = [
    "HutchinsonState",
    "SophiaState",
    "hutchinson_estimator_diag_hessian",
    "scale_by_sophia",
]


class HutchinsonState(NamedTuple):
    """State of :func:`hutchinson_estimator_diag_hessian`: the PRNG key of the next draw."""

    key: Array


def hutchinson_estimator_diag_hessian(random_seed: Array | None = None) -> GradientTransformation:
    r"""Hutchinson's unbiased estimate of the Hessian's diagonal, as a transform.

    .. math::

        \hat h = u \odot (\nabla^2 f(\theta)\, u), \qquad u_i \in \{-1, 1\} \text{ uniformly},
        \qquad \mathbb{E}[\hat h] = \operatorname{diag} \nabla^2 f(\theta)

    The Hessian-vector product is a forward-over-reverse derivative of ``obj_fn``,
    which ``update`` takes as an extra argument (``obj_fn(params) -> scalar``); the
    incoming updates are ignored. Each call splits the key once and draws one
    Rademacher vector (in the parameters' lowest dtype) per leaf, as optax does,
    so the same seed gives optax's samples.

    Args:
      random_seed: a PRNG key (raw ``jax.random.PRNGKey`` or typed ``jax.random.key``);
        default ``jax.random.PRNGKey(0)``.

    Raises:
      ValueError: at ``update`` without ``params`` or without ``obj_fn``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.hutchinson_estimator_diag_hessian()
      >>> params = jnp.array([1.0, 2.0])
      >>> f = lambda x: jnp.sum(jnp.array([3.0, 5.0]) * x**2)  # diagonal Hessian (6, 10)
      >>> h, state = tx.update(None, tx.init(params), params, obj_fn=f)
      >>> h.tolist()
      [6.0, 10.0]
    """

    def init(params):
        del params
        return HutchinsonState(jax.random.PRNGKey(0) if random_seed is None else random_seed)

    def update(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        if params is None:
            raise ValueError(
                "hutchinson_estimator_diag_hessian needs params: call update(updates, state, params)"
            )
        if obj_fn is None:
            raise ValueError("hutchinson_estimator_diag_hessian needs the objective: pass obj_fn=f to update")
        key, draw = jax.random.split(state.key)
        signs = random_like(draw, params, jax.random.rademacher, dtype=jnp.float32)
        signs = cast(signs, dtype(params, "lowest"))
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return jax.tree.map(lambda hv, u: hv * u, hvp, signs), HutchinsonState(key)

    return _transformation(init, update, extra_args=("obj_fn",))


class SophiaState(NamedTuple):
    """State of :func:`scale_by_sophia`.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment :math:`m_t` (in ``mu_dtype``).
      nu: moving average :math:`h_t` of the Hessian-diagonal estimates.
      hessian_fn_state: the state of ``hessian_diagonal_fn``.
      hyperparams: non-constant hyperparameters used at the latest step.
    """

    count: Array
    mu: PyTree
    nu: PyTree
    hessian_fn_state: Any
    hyperparams: dict[str, Array]


def _int(value: Array | float) -> Array | int:
    """An integer hyperparameter as an int32 array (Python numbers pass unchanged)."""
    return value if is_python_number(value) else jnp.asarray(value).astype(jnp.int32)


def _sophia_direction(mu_hat: PyTree, nu: PyTree, h: dict) -> PyTree:
    r"""Per leaf :math:`\operatorname{clip}(\hat m / \max(\gamma h, \epsilon), \pm c)` (``c``: optional)."""

    def one(m, v):
        dt = compute_dtype(jnp.promote_types(m.dtype, v.dtype))
        m, v = m.astype(dt), v.astype(dt)
        u = m / jnp.maximum(cast_hyperparam(h["gamma"], dt) * v, cast_hyperparam(h["eps"], dt))
        if "clip_threshold" not in h:
            return u
        c = cast_hyperparam(h["clip_threshold"], dt)
        return jnp.clip(u, -c, c)

    return jax.tree.map(one, mu_hat, nu)


def _print_win_rate(direction: PyTree, h: dict, count_inc: Array, every: Any) -> None:
    """Print the fraction of coordinates that were not clipped, every ``every`` steps."""
    c = h["clip_threshold"]
    kept = sum(jnp.sum(jnp.abs(u) < cast_hyperparam(c, u.dtype)) for u in jax.tree.leaves(direction))
    size = sum(u.size for u in jax.tree.leaves(direction))
    every = jnp.asarray(every, jnp.int32)
    show = (every > 0) & (count_inc % jnp.maximum(every, 1) == 0)
    jax.lax.cond(show, lambda: jax.debug.print("Sophia optimizer win rate: {}", kept / size), lambda: None)


def _refresh_hessian(hess, due, updates, state, params, extra, b2):
    """``(hessian_fn_state, nu)``: a new Hessian-diagonal estimate folded into ``nu`` where
    ``due``, the old ones elsewhere -- a branch also under ``vmap``
    (:func:`jopt.cond_across_batch`), so trials that are not due compute no Hessian-vector
    product. Everything the estimate closes over (``obj_fn``'s data, a traced ``b2``) is made an
    explicit operand with :func:`jax.closure_convert`."""

    def estimate(hess_state, nu, updates, params):
        diag, hess_state = hess.update(updates, hess_state, params, **extra)
        return hess_state, cast_like(tree_moment(diag, nu, b2, order=1), nu)

    args = (state.hessian_fn_state, state.nu, updates, params)
    if not isinstance(due, jax.core.Tracer):  # eager: no trace of the estimate when it is not due
        return estimate(*args) if bool(due) else args[:2]
    explicit, consts = jax.closure_convert(estimate, *args)

    def estimate_from(operands):
        return explicit(*operands[0], *operands[1])

    def keep(operands):
        return operands[0][0], operands[0][1]

    return cond_across_batch(due, estimate_from, keep, (args, consts))


def scale_by_sophia(
    b1: Hyperparam = 0.965,
    b2: Hyperparam = 0.99,
    eps: Hyperparam = 1e-8,
    gamma: Hyperparam = 0.01,
    clip_threshold: Hyperparam | None = 1.0,
    update_interval: Hyperparam = 10,
    hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),  # noqa: B008 - optax's default
    mu_dtype: Any | None = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: Any = 0,
) -> GradientTransformation:
    r"""Sophia's clipped, curvature-scaled momentum direction.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad \hat m_t = m_t / (1 - \beta_1^t) \\
        u_t &= \operatorname{clip}\!\Big(\frac{\hat m_t}{\max(\gamma\, h_{t-1}, \epsilon)}, -c, c\Big) \\
        h_t &= \beta_2 h_{t-1} + (1 - \beta_2)\, \hat h_t \ \text{ if } (t - 1) \bmod k = 0,
            \text{ else } h_{t-1}

    where :math:`\hat h_t` is ``hessian_diagonal_fn``'s output at the current
    parameters (so :math:`h` is refreshed at steps :math:`0, k, 2k, \dots` and used
    from the next step on). Needs ``params``; extra arguments the estimator
    declares (``obj_fn`` for Hutchinson's) are forwarded to it.

    Args:
      b1: :math:`\beta_1 \in [0, 1)`, decay of the gradient average.
      b2: :math:`\beta_2 \in [0, 1)`, decay of the Hessian-diagonal average (its
        effective decay per step is :math:`1 - (1 - \beta_2)/k`).
      eps: :math:`\epsilon \ge 0`, the smallest denominator.
      gamma: :math:`\gamma \ge 0`, the scale of the curvature.
      clip_threshold: :math:`c > 0`, the elementwise bound on :math:`u_t`; ``None``
        does not clip.
      update_interval: :math:`k \ge 1` (integer), steps between Hessian estimates.
      hessian_diagonal_fn: a transform whose ``update(grads, state, params, **extra)``
        returns the diagonal estimate (default :func:`hutchinson_estimator_diag_hessian`).
      mu_dtype: dtype of :math:`m` (default: the parameters').
      verbose: print the fraction of unclipped coordinates (the "win rate") every
        ``print_win_rate_every_n_steps`` steps (0: never).
      print_win_rate_every_n_steps: see ``verbose``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_sophia()
      >>> params = jnp.array([1.0, -2.0])
      >>> f = lambda x: jnp.sum(x**2)
      >>> u, state = tx.update(jnp.array([2.0, -4.0]), tx.init(params), params, obj_fn=f)
      >>> u.tolist(), state.nu.tolist()  # nothing estimated yet: clipped momentum; then h = 0.01 * 2
      ([1.0, -1.0], [0.019999999552965164, 0.019999999552965164])
    """
    hess = as_transformation(hessian_diagonal_fn)
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
    hp = {"b1": b1, "b2": b2, "eps": eps, "gamma": gamma, "update_interval": update_interval}
    if clip_threshold is not None:
        hp["clip_threshold"] = clip_threshold
    ranges = {"b1": UNIT, "b2": UNIT, "eps": NONNEGATIVE, "gamma": NONNEGATIVE}
    ranges |= {"clip_threshold": POSITIVE, "update_interval": Range(1.0, integer=True)}

    def init_fields(params, h):
        return tree_zeros_like(params, mu_dtype), tree_zeros_like(params), hess.init(params)

    def step(updates, state, params, h, count_inc):
        mu = tree_moment(updates, state.mu, h["b1"], order=1)
        direction = _sophia_direction(tree_bias_correction(mu, h["b1"], count_inc), state.nu, h)
        if verbose and clip_threshold is not None:
            _print_win_rate(direction, h, count_inc, print_win_rate_every_n_steps)
        extra = {k: v for k, v in h.items() if k not in hp and k in hess.extra_args}
        due = state.count % _int(h["update_interval"]) == 0
        hess_state, nu = _refresh_hessian(hess, due, updates, state, params, extra, h["b2"])
        mu = cast_like(mu, state.mu)
        return direction, (mu, nu, hess_state)

    names = hess.extra_args
    return hyperparam_transformation(
        "scale_by_sophia",
        hp,
        ranges,
        SophiaState,
        step,
        init_fields,
        counted=True,
        needs_params=True,
        cast_fields=False,
        extra_args=names if isinstance(names, AcceptsAnyExtraArg) else frozenset(names),
    )
