r"""Averages of the parameter iterates: exponential (EMA) and uniform (Polyak).

Two ways to use them:

* as the **last transform of an optimizer**, which keeps the average in the
  optimizer state and passes the updates through unchanged::

    tx = jopt.chain(jopt.scale_by_adam(), jopt.scale_by_learning_rate(1e-3), jopt.ema_params(0.999))
    ...
    eval_params = jopt.averaged_params(opt_state)   # e.g. for evaluation

  It needs ``params`` in ``update`` and averages :math:`\theta + u`, the
  parameters after the step;
* as a **pure function** in a training loop that keeps the average itself:
  ``avg = jopt.ema_update(avg, params, 0.999)``.

Averages are kept in at least float32 (``accumulator_dtype`` overrides), so a
decay close to 1 is not lost to bfloat16 rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import PROBABILITY, Hyperparam, cast_hyperparam, compute_dtype, resolve

Array = jax.Array
PyTree = Any

__all__ = ["ParamAverageState", "averaged_params", "ema_params", "ema_update", "polyak_params"]


class ParamAverageState(NamedTuple):
    """State of :func:`ema_params` / :func:`polyak_params`.

    Attributes:
      count: number of ``update`` calls so far.
      average: the averaged parameters (read it with :func:`averaged_params`).
      hyperparams: the decay used at the latest step (empty for Polyak averaging).
    """

    count: Array
    average: PyTree
    hyperparams: dict[str, Array]


def ema_update(average: PyTree, params: PyTree, decay: Hyperparam) -> PyTree:
    r"""One EMA step, :math:`\bar\theta \leftarrow \beta\,\bar\theta + (1 - \beta)\,\theta`.

    Computed in at least float32; the result keeps the dtypes of ``average``.
    ``decay`` is a number or array (possibly traced).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> avg = jopt.ema_update({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 0.9)
      >>> [round(float(x), 4) for x in avg["w"]]
      [0.1, 0.1]
    """
    beta = resolve(decay, 0)

    def one(a, p):
        dt = compute_dtype(a.dtype)
        b = cast_hyperparam(beta, dt)
        return (b * a.astype(dt) + (1 - b) * p.astype(dt)).astype(a.dtype)

    return jax.tree.map(one, average, params)


def _averaging_transform(
    hp: dict[str, Hyperparam], owner: str, accumulator_dtype: Any | None, step
) -> GradientTransformation:
    """``step(average, new_params, h, count_after)`` -> new average (in the compute dtype)."""

    def init_fields(params, h):
        def cast(x):
            return x.astype(accumulator_dtype if accumulator_dtype is not None else compute_dtype(x.dtype))

        return (jax.tree.map(cast, params),)

    def update_average(updates, state, params, h, count):
        def one(a, p, u):
            dt = compute_dtype(jnp.promote_types(a.dtype, p.dtype))
            new_p = p.astype(dt) + u.astype(dt)
            hd = {k: cast_hyperparam(v, dt) for k, v in h.items()}
            return step(a.astype(dt), new_p, hd, count)

        return updates, (jax.tree.map(one, state.average, params, updates),)

    ranges = {"decay": PROBABILITY}
    return hyperparam_transformation(
        owner, hp, ranges, ParamAverageState, update_average, init_fields, counted=True, needs_params=True
    )


def ema_params(decay: Hyperparam, *, accumulator_dtype: Any | None = None) -> GradientTransformation:
    r"""Exponential moving average of the parameters; updates pass through unchanged.

    .. math::
       \bar\theta_0 = \theta_0, \qquad
       \bar\theta_{t+1} = \beta_t\,\bar\theta_t + (1 - \beta_t)\,(\theta_t + u_t)

    Place it last in the chain (after the learning rate) so that
    :math:`\theta_t + u_t` is the next iterate; read the average with
    :func:`averaged_params`.

    Args:
      decay: :math:`\beta \in [0, 1]`; number, array or schedule.
      accumulator_dtype: dtype of the average; default: at least float32.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.chain(jopt.scale_by_learning_rate(1.0), jopt.ema_params(0.5))
      >>> p = {"w": jnp.zeros(1)}
      >>> u, s = tx.update({"w": jnp.array([-2.0])}, tx.init(p), p)
      >>> float(jopt.averaged_params(s)["w"][0])
      1.0
    """

    def step(avg, new_p, h, count):
        del count
        return h["decay"] * avg + (1 - h["decay"]) * new_p

    return _averaging_transform({"decay": decay}, "ema_params", accumulator_dtype, step)


def polyak_params(*, accumulator_dtype: Any | None = None) -> GradientTransformation:
    r"""Uniform (Polyak-Ruppert) average of all iterates so far; updates pass through unchanged.

    .. math::
       \bar\theta_t = \frac{1}{t + 1}\sum_{s=0}^{t} \theta_s,
       \qquad \bar\theta_{t+1} = \bar\theta_t + \frac{(\theta_t + u_t) - \bar\theta_t}{t + 2}

    Place it last in the chain; read the average with :func:`averaged_params`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.chain(jopt.scale_by_learning_rate(1.0), jopt.polyak_params())
      >>> p = {"w": jnp.zeros(1)}
      >>> u, s = tx.update({"w": jnp.array([-3.0])}, tx.init(p), p)
      >>> float(jopt.averaged_params(s)["w"][0])
      1.5
    """

    def step(avg, new_p, h, count):
        del h
        return avg + (new_p - avg) / (count.astype(avg.dtype) + 1)

    return _averaging_transform({}, "polyak_params", accumulator_dtype, step)


def _children(node: Any):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return [(f, getattr(node, f)) for f in node._fields]
    if isinstance(node, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(node)]
    if isinstance(node, Mapping):
        return [(str(k), v) for k, v in node.items()]
    return []


def averaged_params(state: Any) -> PyTree:
    """The averaged parameters kept by :func:`ema_params` / :func:`polyak_params` in an optimizer state.

    ``state`` may be the whole optimizer state (a chain, partition, accumulation
    wrapper, ...); the averaging transform's state is found inside it.

    Raises:
      ValueError: when the state holds no averaging state, or more than one.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.chain(jopt.scale_by_learning_rate(0.1), jopt.ema_params(0.9))
      >>> s = tx.init({"w": jnp.ones(2)})
      >>> jopt.averaged_params(s)["w"].tolist()
      [1.0, 1.0]
    """
    found: list[tuple[str, ParamAverageState]] = []

    def walk(node, path):
        if isinstance(node, ParamAverageState):
            found.append(("/".join(path), node))
            return
        for key, child in _children(node):
            walk(child, path + [key])

    walk(state, [])
    if not found:
        raise ValueError("averaged_params: the state holds no ema_params/polyak_params state")
    if len(found) > 1:
        raise ValueError(
            f"averaged_params: the state holds {len(found)} averages, at {[p for p, _ in found]}; "
            "pass the sub-state you want"
        )
    return found[0][1].average
