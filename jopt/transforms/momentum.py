r"""Momentum: accumulating past updates.

Two placements of the same accumulator, which differ in how a *changing*
learning rate :math:`\eta_t` enters:

* :func:`trace` sits **before** the learning rate (``optax.sgd``'s form). The
  buffer accumulates raw gradients and the current rate scales the whole buffer:

  .. math:: m_t = g_t + \mu\, m_{t-1}, \qquad \theta_t = \theta_{t-1} - \eta_t m_t

* :func:`heavy_ball` sits **after** the learning rate (Polyak's classic form,
  PyTorch's ``dampening=0`` written with the rate inside). The buffer
  accumulates already-scaled steps, so each gradient keeps the rate of the step
  that produced it:

  .. math:: v_t = \mu\, v_{t-1} + \eta_t g_t, \qquad \theta_t = \theta_{t-1} - v_t

With a constant learning rate the two coincide (:math:`v_t = \eta m_t`); with a
schedule they differ.

The decay may be a number, an array, a traced value or a schedule
``step -> value``; concrete values must lie in :math:`[0, 1]` (:func:`ema`:
:math:`[0, 1)`). Arithmetic is done in at least float32; the buffer is stored in
``accumulator_dtype`` (default: the parameters' dtype) and the returned updates have the
gradients' dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import PROBABILITY, UNIT, Hyperparam, cast_hyperparam, compute_dtype
from jopt.tree import tree_bias_correction, tree_moment, tree_zeros_like

Array = jax.Array
PyTree = Any

__all__ = ["EmaState", "TraceState", "ema", "heavy_ball", "trace"]


class TraceState(NamedTuple):
    """State of :func:`trace` and :func:`heavy_ball`.

    Attributes:
      count: number of updates so far (int32) when the decay is a schedule, else ``None``.
      trace: the momentum buffer.
      hyperparams: the decay used at the latest step.
    """

    count: Array | None
    trace: PyTree
    hyperparams: dict[str, Array]


def _momentum(
    decay: Hyperparam,
    *,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
    name: str = "decay",
    owner: str = "trace",
) -> GradientTransformation:
    """The accumulator behind :func:`trace` and :func:`heavy_ball`.

    ``name`` is the key under which the decay is logged in ``state.hyperparams``
    (optimizers log it as ``"momentum"``) and, with ``owner``, the name used in
    validation errors.
    """
    acc_dtype = None if accumulator_dtype is None else jax.dtypes.canonicalize_dtype(accumulator_dtype)

    def init_fields(params, h):
        return (tree_zeros_like(params, acc_dtype),)

    def step(updates, state, params, h, count_inc):
        def accumulate(g, t):
            dt = compute_dtype(jnp.promote_types(g.dtype, t.dtype))
            return g.astype(dt) + cast_hyperparam(h[name], dt) * t.astype(dt)

        new_trace = jax.tree.map(accumulate, updates, state.trace)
        out = jax.tree.map(accumulate, updates, new_trace) if nesterov else new_trace
        return out, (new_trace,)

    return hyperparam_transformation(owner, {name: decay}, {name: PROBABILITY}, TraceState, step, init_fields)


def trace(
    decay: Hyperparam,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Momentum buffer of past updates (``optax.trace``), placed before the learning rate.

    .. math::

        m_t = g_t + \mu_t\, m_{t-1}, \qquad
        u_t = \begin{cases} m_t & \text{default} \\
                            g_t + \mu_t\, m_t & \texttt{nesterov=True} \end{cases}

    with :math:`m_0 = 0`. Unlike an exponential moving average, the gradient is
    not damped by :math:`1 - \mu`.

    Args:
      decay: momentum :math:`\mu \in [0, 1]`; number, array or schedule.
      nesterov: use the Nesterov look-ahead :math:`g_t + \mu_t m_t`.
      accumulator_dtype: dtype of the stored buffer; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.trace(0.5)
      >>> g = {"w": jnp.ones(2)}
      >>> state = tx.init(g)
      >>> u, state = tx.update(g, state)
      >>> u, state = tx.update(g, state)
      >>> print(u["w"])  # 1 + 0.5 * 1
      [1.5 1.5]
    """
    return _momentum(decay, nesterov=nesterov, accumulator_dtype=accumulator_dtype)


def heavy_ball(momentum: Hyperparam, accumulator_dtype: Any | None = None) -> GradientTransformation:
    r"""Classic heavy-ball momentum; place it **after** the learning rate.

    Fed the scaled step :math:`-\eta_t g_t` (the output of
    :func:`jopt.scale_by_learning_rate`), it returns :math:`-v_t` with

    .. math:: v_t = \mu_t\, v_{t-1} + \eta_t g_t, \qquad \theta_t = \theta_{t-1} - v_t,

    so each gradient is weighted by the learning rate of the step that produced
    it (Polyak, 1964; Sutskever et al., 2013). Placed before the learning rate it
    would behave like :func:`trace`, rescaling the whole buffer by the current
    rate. :func:`jopt.heavy_ball_momentum` is the ready-made optimizer.

    Args:
      momentum: :math:`\mu \in [0, 1]`; number, array or schedule.
      accumulator_dtype: dtype of the stored buffer; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.chain(jopt.scale_by_learning_rate(lambda t: 1.0 / (1 + t)), jopt.heavy_ball(0.5))
      >>> g = {"w": jnp.ones(2)}
      >>> state = tx.init(g)
      >>> u, state = tx.update(g, state)
      >>> u, state = tx.update(g, state)
      >>> print(u["w"])  # -(0.5 * 1 + 0.5 * 1)
      [-1. -1.]
    """
    return _momentum(momentum, accumulator_dtype=accumulator_dtype, name="momentum", owner="heavy_ball")


class EmaState(NamedTuple):
    """State of :func:`ema`: step count, the (undebiased) average, and the decay used last."""

    count: Array
    ema: PyTree
    hyperparams: dict[str, Array]


def ema(
    decay: Hyperparam, debias: bool = True, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    r"""Exponential moving average of the updates, returned as the update (``optax.ema``).

    .. math::

        m_t = \beta_t m_{t-1} + (1 - \beta_t) u_t, \qquad
        u_t \leftarrow \begin{cases} m_t / (1 - \beta_t^t) & \texttt{debias=True} \\
                                     m_t & \text{otherwise} \end{cases}

    Unlike :func:`trace`, the update is damped by :math:`1 - \beta`.

    Args:
      decay: :math:`\beta \in [0, 1)`; number, array or schedule.
      debias: divide by :math:`1 - \beta^t` (Adam's bias correction).
      accumulator_dtype: dtype of the stored average; ``None``: the parameters' dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.ema(0.5, debias=False)
      >>> u, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.zeros(2)}))
      >>> u["w"].tolist()
      [0.5, 0.5]
    """
    acc_dtype = None if accumulator_dtype is None else jax.dtypes.canonicalize_dtype(accumulator_dtype)

    def init_fields(params, h):
        return (tree_zeros_like(params, acc_dtype),)

    def step(updates, state, params, h, count_inc):
        new_ema = tree_moment(updates, state.ema, h["decay"], order=1)
        out = tree_bias_correction(new_ema, h["decay"], count_inc) if debias else new_ema
        return out, (new_ema,)

    return hyperparam_transformation(
        "ema", {"decay": decay}, {"decay": UNIT}, EmaState, step, init_fields, counted=True
    )
