r"""L-BFGS preconditioning: a limited-memory quasi-Newton direction.

:func:`scale_by_lbfgs` multiplies the incoming updates (gradients) by an
approximation of the inverse Hessian built from the last ``memory_size`` pairs
of parameter and gradient differences (Nocedal & Wright, 2006, Alg. 7.4). It
only outputs the direction; :func:`jopt.lbfgs` chains it with a sign flip and a
line search (:func:`jopt.scale_by_zoom_linesearch` by default).

The memory is a ring buffer stored as stacked leaves (a leading axis of size
``memory_size`` on every leaf), so the whole update is traceable and one
compiled step serves every iteration. The arithmetic follows optax's order of
operations, so float32 and float64 directions equal ``optax.scale_by_lbfgs``'s
bit for bit.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import Range, hyperparam_dtype
from jopt.tree import add_scale, norm, tree_cast_like, tree_scale, tree_zeros_like, vdot

Array = jax.Array
PyTree = Any

__all__ = ["ScaleByLBFGSState", "scale_by_lbfgs"]

_MEMORY_SIZE = Range(1.0, integer=True)


class ScaleByLBFGSState(NamedTuple):
    r"""State of :func:`scale_by_lbfgs`.

    Attributes:
      count: number of updates so far (int32); slot ``(count - 1) % memory_size``
        of the memory holds the newest pair.
      params: parameters seen at the latest update.
      updates: updates (gradients) seen at the latest update.
      diff_params_memory: ring buffer of :math:`s_k = w_{k+1} - w_k`, stacked on
        a leading axis of size ``memory_size``.
      diff_updates_memory: ring buffer of :math:`y_k = g_{k+1} - g_k`.
      weights_memory: :math:`\rho_k = 1 / \langle y_k, s_k\rangle` (0 for an empty
        slot or a zero curvature pair), shape ``(memory_size,)``.
      hyperparams: empty (L-BFGS has no numeric hyperparameters).
    """

    count: Array
    params: PyTree
    updates: PyTree
    diff_params_memory: PyTree
    diff_updates_memory: PyTree
    weights_memory: Array
    hyperparams: dict[str, Array]


def _slot(tree: PyTree, idx: Array) -> PyTree:
    return jax.tree.map(lambda buf: buf[idx], tree)


def _two_loop_recursion(
    updates: PyTree, s_memory: PyTree, y_memory: PyTree, rhos: Array, gamma: Array | float, oldest: Array
) -> PyTree:
    r""":math:`H_k g` by the two-loop recursion, from the newest pair to the oldest and back.

    Empty slots have :math:`\rho = 0` and zero differences, so they leave the
    vector unchanged.
    """
    memory_size = rhos.shape[0]
    order = (oldest + jnp.arange(memory_size)) % memory_size  # oldest ... newest

    def backward(q, idx):
        s, y = _slot(s_memory, idx), _slot(y_memory, idx)
        alpha = rhos[idx] * jnp.real(vdot(s, q))
        return tree_cast_like(add_scale(q, -alpha, y), q), alpha

    q, alphas = jax.lax.scan(backward, updates, order, reverse=True)
    r = tree_scale(q, gamma)

    def forward(r, idx_alpha):
        idx, alpha = idx_alpha
        s, y = _slot(s_memory, idx), _slot(y_memory, idx)
        beta = rhos[idx] * jnp.real(vdot(y, r))
        return tree_cast_like(add_scale(r, alpha - beta, s), r), beta

    r, _ = jax.lax.scan(forward, r, (order, alphas))
    return r


def _initial_scale(curvature: Array, y: PyTree, updates: PyTree, started: Array) -> Array:
    r""":math:`\gamma_k = \langle s, y\rangle / \|y\|^2`; at the first step :math:`\min(1, 1/\|g_0\|)`."""
    y_norm2 = norm(y, squared=True)
    gamma = jnp.where(y_norm2 > 0.0, curvature / y_norm2, 1.0)
    g_norm = norm(jax.lax.stop_gradient(updates))
    return jnp.where(started, gamma, jnp.minimum(1.0, 1.0 / g_norm))


def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True) -> GradientTransformation:
    r"""Precondition updates by the L-BFGS approximation of the inverse Hessian.

    With :math:`s_j = w_{j+1} - w_j` and :math:`y_j = g_{j+1} - g_j` the last
    :math:`m` (``memory_size``) differences of parameters and updates, and
    :math:`\rho_j = 1 / \langle y_j, s_j\rangle`, the inverse-Hessian estimate is

    .. math::

        H_k^{(k-m)} &= \gamma_k I, \qquad
        H_k^{(j+1)} = (I - \rho_j s_j y_j^\top)\, H_k^{(j)}\, (I - \rho_j y_j s_j^\top)
            + \rho_j s_j s_j^\top, \\
        \gamma_k &= \frac{\langle s_{k-1}, y_{k-1}\rangle}{\|y_{k-1}\|^2}
            \ (\text{``scale_init_precond``; else } 1), \qquad
        \gamma_0 = \min\!\left(1, \frac{1}{\|g_0\|}\right),

    and the output is :math:`u_k = H_k^{(k)} g_k`, computed by the two-loop
    recursion without forming any matrix. The memory is refreshed with the
    pair ending at the current ``params`` before the direction is computed, so
    after a line search has taken the step, the next call sees the new pair.
    Like a gradient, the output points uphill: chain it with a negative scaling
    and, ideally, a line search (see :func:`jopt.lbfgs`).

    Args:
      memory_size: number of difference pairs :math:`m \ge 1` kept (static).
      scale_init_precond: use :math:`\gamma_k I` (rather than :math:`I`) as the
        initial inverse Hessian of each recursion (static).

    Raises:
      ValueError: when ``memory_size`` is not an integer >= 1.

    Example:
      A short Rosenbrock minimisation with a fixed step of 0.5 (no line search):

      >>> import jax, jax.numpy as jnp, jopt
      >>> def rosenbrock(p):
      ...     return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
      >>> opt = jopt.chain(jopt.scale_by_lbfgs(), jopt.scale(-0.5))
      >>> @jax.jit
      ... def step(params, state):
      ...     updates, state = opt.update(jax.grad(rosenbrock)(params), state, params)
      ...     return jopt.apply_updates(params, updates), state
      >>> params = jnp.array([-1.0, 1.0])
      >>> state = opt.init(params)
      >>> for _ in range(100):
      ...     params, state = step(params, state)
      >>> print(params)
      [1. 1.]
    """
    if isinstance(memory_size, bool) or not isinstance(memory_size, int):
        raise ValueError(f"scale_by_lbfgs: memory_size must be a Python int >= 1, got {memory_size!r}")
    _MEMORY_SIZE.check(memory_size, "memory_size", "scale_by_lbfgs")

    def init_fields(params, h):
        del h
        stacked = jax.tree.map(
            lambda x: jnp.zeros((memory_size, *jnp.shape(x)), jnp.asarray(x).dtype), params
        )
        rhos = jnp.zeros((memory_size,), hyperparam_dtype())
        return tree_zeros_like(params), tree_zeros_like(params), stacked, stacked, rhos

    def step(updates, state, params, h, count_inc):
        del h, count_inc
        started = state.count > 0
        newest = (state.count - 1) % memory_size
        s = jax.tree.map(operator.sub, params, state.params)
        y = jax.tree.map(operator.sub, updates, state.updates)
        curvature = jnp.real(vdot(y, s))
        rho = jnp.where(curvature == 0.0, 0.0, 1.0 / curvature)
        # No pair exists before the second call: record zeros (a no-op slot).
        s, y, rho = jax.tree.map(lambda x: jnp.where(started, x, jnp.zeros_like(x)), (s, y, rho))
        s_mem, y_mem, rhos = jax.tree.map(
            lambda buf, new: buf.at[newest].set(new),
            (state.diff_params_memory, state.diff_updates_memory, state.weights_memory),
            (s, y, rho),
        )
        # Once started, the masked pair equals the raw one, so its curvature is ``curvature``.
        gamma = _initial_scale(curvature, y, updates, started) if scale_init_precond else 1.0
        direction = _two_loop_recursion(updates, s_mem, y_mem, rhos, gamma, state.count % memory_size)
        return direction, (params, updates, s_mem, y_mem, rhos)

    return hyperparam_transformation(
        "scale_by_lbfgs", {}, {}, ScaleByLBFGSState, step, init_fields, counted=True, needs_params=True
    )
