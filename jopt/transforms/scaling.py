r"""Scaling transforms: constant factors, learning rates and schedules.

The learning rate accepts a number, an array, a schedule ``step -> value``, or a
*stateful schedule* (e.g. :func:`jopt.schedules.reduce_on_plateau`) that also
reads extra arguments such as the loss. The value used at the latest step is
kept in the state (``state.hyperparams["learning_rate"]``) for logging.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jopt.core import (
    EmptyState,
    GradientTransformation,
    initial_count,
    next_count,
    stored_hyperparams,
    transformation,
)
from jopt.hyperparams import Hyperparam, as_array, check_hyperparam, resolve
from jopt.tree import safe_increment, tree_scale

Array = jax.Array

__all__ = [
    "ScaleByLearningRateState",
    "ScheduleState",
    "StatefulSchedule",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
]


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule whose value depends on its own state and on extra arguments.

    ``init()`` returns the schedule state; ``update(state, count, **extra_args)``
    returns ``(value, new_state)`` for the current step. ``extra_args`` names the
    extra arguments it reads (e.g. ``{"value"}`` for the loss).
    """

    extra_args: frozenset[str]

    def init(self) -> Any: ...

    def update(self, state: Any, count: Array, **extra_args: Any) -> tuple[Array, Any]: ...


class ScaleState(NamedTuple):
    """State of :func:`scale`: the factor used (for logging)."""

    hyperparams: dict[str, Array]


def scale(step_size: Hyperparam) -> GradientTransformation:
    r"""Multiply updates by a constant (or traced) factor: :math:`u \leftarrow s\,u`."""
    check_hyperparam(step_size, "step_size", owner="scale")
    if callable(step_size):
        return scale_by_schedule(step_size)

    def init(params):
        del params
        return ScaleState(stored_hyperparams({"step_size": step_size}, {"step_size": resolve(step_size, 0)}))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree_scale(updates, resolve(step_size, 0)), state

    return transformation(init, update)


class ScheduleState(NamedTuple):
    """Step counter and the value of the schedule at the latest step."""

    count: Array
    hyperparams: dict[str, Array]


def scale_by_schedule(step_size_fn: Hyperparam, *, name: str = "step_size") -> GradientTransformation:
    r"""Multiply updates by :math:`s(t)` where ``t`` counts calls to ``update``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_schedule(lambda t: 1.0 / (1 + t))
      >>> u, s = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
    """

    def init(params):
        del params
        count = jnp.zeros([], jnp.int32)
        return ScheduleState(count, {name: as_array(resolve(step_size_fn, count))})

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        value = resolve(step_size_fn, state.count)
        return tree_scale(updates, value), ScheduleState(safe_increment(state.count), {name: as_array(value)})

    return transformation(init, update)


class ScaleByLearningRateState(NamedTuple):
    """Step counter, state of a stateful schedule (or ``EmptyState``), current learning rate."""

    count: Array
    schedule_state: Any
    hyperparams: dict[str, Array]


def scale_by_learning_rate(
    learning_rate: Hyperparam | StatefulSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    r"""Scale updates by the learning rate: :math:`u \leftarrow -\eta_t\,u`.

    Args:
      learning_rate: number, array, schedule ``step -> rate`` or stateful schedule
        (e.g. :func:`jopt.schedules.reduce_on_plateau`, which reads ``value=loss``).
      flip_sign: multiply by ``-learning_rate`` (descent) when True.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_learning_rate(0.1)
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> u, state = tx.update({"w": jnp.ones(2)}, state)
      >>> round(float(jopt.current_hyperparams(state)["learning_rate"]), 6)
      0.1
    """
    sign = -1.0 if flip_sign else 1.0
    if isinstance(learning_rate, StatefulSchedule):
        stateful = learning_rate
    else:
        stateful = None
        check_hyperparam(learning_rate, "learning_rate", low=0.0, owner="scale_by_learning_rate")

    def current(state_count, schedule_state, extra_args):
        if stateful is None:
            return resolve(learning_rate, state_count), schedule_state
        kwargs = {k: v for k, v in extra_args.items() if k in stateful.extra_args}
        value, schedule_state = stateful.update(schedule_state, state_count, **kwargs)
        return resolve(value, state_count), schedule_state

    def init(params):
        del params
        if stateful is None:  # a step counter only for a schedule; the rate is always logged
            count = initial_count({"learning_rate": learning_rate})
            return ScaleByLearningRateState(
                count, EmptyState(), {"learning_rate": as_array(resolve(learning_rate, count))}
            )
        count = jnp.zeros([], jnp.int32)
        schedule_state = stateful.init()
        first = getattr(stateful, "initial_value", None)
        lr0 = resolve(first if first is not None else 0.0, count)
        return ScaleByLearningRateState(count, schedule_state, {"learning_rate": as_array(lr0)})

    def update(updates, state, params=None, **extra_args):
        del params
        lr, schedule_state = current(state.count, state.schedule_state, extra_args)
        updates = tree_scale(updates, sign * lr)
        logged = {"learning_rate": as_array(lr)}
        new_state = ScaleByLearningRateState(next_count(state.count), schedule_state, logged)
        return updates, new_state

    names = stateful.extra_args if stateful is not None else ()
    return transformation(init, update, extra_args=names)
