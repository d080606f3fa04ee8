r"""Hyperparameters injected into the optimizer state, writable between steps (``optax.inject_hyperparams``).

``inject_hyperparams(factory)(**arguments)`` builds ``factory(**arguments)``
afresh at every step with the hyperparameters held in the state::

    opt = jopt.inject_hyperparams(jopt.adam)(learning_rate=1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    state.hyperparams["learning_rate"] = 1e-4      # the next update uses it

Every numeric argument (Python number or array) is a hyperparameter in
``state.hyperparams``; every callable argument is a schedule, evaluated at
each step with its own step count (its value is written to ``hyperparams``, so
writing a scheduled entry has no effect); booleans, ``None``, dtypes and the
names listed in ``static_args`` are passed to ``factory`` unchanged. Stateful
schedules with optax's protocol (``init()``, ``update(state, **extra_args)``,
``__call__(state, **extra_args)``) are supported too.

Numbers
-------
Floating-point hyperparameters are stored as arrays of the dtype of the
parameters (or ``hyperparam_dtype``), as optax does, so in float32 the results
equal ``optax.inject_hyperparams`` of the same optimizer bit for bit. Note that
this is array arithmetic: ``1 - b2`` is computed in float32 (``jopt.adam(...)``
with Python numbers computes it in double precision, as ``optax.adam`` does).
Deliberate difference: the dtype is at least float32, so with bfloat16 or
float16 parameters jopt keeps float32 hyperparameters where optax rounds them
to the parameters' dtype (optax turns ``b2=0.999`` into ``1.0`` in bfloat16).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import GradientTransformation, as_transformation, transformation
from jopt.hyperparams import hyperparam_dtype as _default_dtype
from jopt.transforms.parameter_groups import _forwarded
from jopt.tree import safe_increment

Array = jax.Array

__all__ = [
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "WrappedSchedule",
    "WrappedScheduleState",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
]


class InjectHyperparamsState(NamedTuple):
    """optax's former state of :func:`inject_hyperparams` (kept for compatibility; no longer returned)."""

    count: Array
    hyperparams: dict[str, Array]
    inner_state: Any


class InjectStatefulHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`.

    Attributes:
      count: number of ``update`` calls so far.
      hyperparams: the hyperparameters used at the latest step, by name; write a
        numeric entry to change it for the next step.
      hyperparams_states: the state of each scheduled hyperparameter.
      inner_state: state of the inner transform.
    """

    count: Array
    hyperparams: dict[str, Array]
    hyperparams_states: dict[str, Any]
    inner_state: Any


class WrappedScheduleState(NamedTuple):
    """State of a :class:`WrappedSchedule`: its step count."""

    count: Array


class WrappedSchedule:
    """A schedule ``step -> value`` as a stateful schedule counting its own steps.

    Example:
      >>> import jopt
      >>> s = jopt.WrappedSchedule(lambda t: 2 * t)
      >>> state = s.update(s.init())
      >>> int(s(state))
      2
    """

    def __init__(self, schedule_fn: Callable[[Array], Any]):
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        """Count 0."""
        return WrappedScheduleState(jnp.zeros([], jnp.int32))

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        """One more step."""
        del extra_args
        return WrappedScheduleState(safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        """The schedule's value at the current count."""
        del extra_args
        return self.schedule_fn(state.count)


def _is_stateful_schedule(value: Any) -> bool:
    return all(callable(getattr(value, name, None)) for name in ("init", "update", "__call__"))


def _convert_floats(value: Any, dtype: Any) -> Any:
    """Floating values (Python, NumPy or weakly typed) as ``dtype`` arrays; anything else unchanged."""
    if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
        return value
    current = value.dtype if hasattr(value, "dtype") else type(value)
    if jax.dtypes.issubdtype(current, jnp.floating):
        return jnp.asarray(value, dtype=dtype)
    return value


def _split_arguments(arguments: dict[str, Any], static: set[str]):
    """(schedules, numeric hyperparameters, other arguments), as optax classifies them."""
    schedules, numeric, other = {}, {}, {}
    for name, value in arguments.items():
        if name in static or isinstance(value, bool):
            other[name] = value
        elif _is_stateful_schedule(value):
            schedules[name] = value
        elif callable(value):
            schedules[name] = WrappedSchedule(value)
        elif isinstance(value, (int, float, jax.Array, np.ndarray, np.generic)):
            numeric[name] = value
        else:
            other[name] = value
    return schedules, numeric, other


def _injected(inner_factory, schedules, numeric, other, dtype_override) -> GradientTransformation:
    def dtype_for(params):
        if dtype_override is not None:
            return dtype_override
        dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
        return functools.reduce(jnp.promote_types, dtypes, _default_dtype())

    def build(h):
        return as_transformation(inner_factory(**other, **h))

    first = {k: f(f.init()) for k, f in schedules.items()}
    names = build({**numeric, **first}).extra_args
    names = names.union(*(getattr(f, "extra_args", frozenset()) for f in schedules.values()))

    def init(params):
        dtype = dtype_for(params)
        h = {k: jnp.asarray(_convert_floats(v, dtype)) for k, v in numeric.items()}
        schedule_states = {k: f.init() for k, f in schedules.items()}
        h.update({k: _convert_floats(f(schedule_states[k]), dtype) for k, f in schedules.items()})
        count = jnp.zeros([], jnp.int32)
        return InjectStatefulHyperparamsState(count, h, schedule_states, build(h).init(params))

    def update(updates, state, params=None, **extra_args):
        dtype = dtype_for(params)
        h = {k: _convert_floats(v, dtype) for k, v in state.hyperparams.items()}
        old = state.hyperparams_states
        h.update({k: _convert_floats(f(old[k], **extra_args), dtype) for k, f in schedules.items()})
        schedule_states = {k: f.update(old[k], **extra_args) for k, f in schedules.items()}
        inner = build(h)
        updates, inner_state = inner.update(
            updates, state.inner_state, params, **_forwarded(inner, extra_args)
        )
        new_state = InjectStatefulHyperparamsState(
            safe_increment(state.count), h, schedule_states, inner_state
        )
        return updates, new_state

    return transformation(init, update, extra_args=names)


def inject_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., GradientTransformation]:
    r"""Wrap a transform factory so that its hyperparameters live in the state (readable, writable).

    At step :math:`t`, with :math:`h_t` the hyperparameters in the state (and
    each schedule :math:`\eta` evaluated at its count, :math:`h_t[\eta] = \eta(t)`):

    .. math:: (u_t, s_t) = \mathrm{factory}(h_t).\mathrm{update}(g_t, s_{t-1})

    Args:
      inner_factory: a function returning a transform, e.g. ``jopt.adam`` (or an
        optax factory).
      static_args: names of arguments passed unchanged even when callable
        (callables are otherwise schedules).
      hyperparam_dtype: dtype of the floating hyperparameters; default: the
        parameters' (highest) dtype, at least float32 (see the module docstring).

    Returns:
      A function with ``inner_factory``'s arguments returning the transform; its
      state is an :class:`InjectStatefulHyperparamsState`.

    Raises:
      ValueError: when ``static_args`` names an argument ``inner_factory`` lacks.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.inject_hyperparams(jopt.sgd)(learning_rate=0.1)
      >>> p = {"w": jnp.ones(2)}
      >>> state = opt.init(p)
      >>> state.hyperparams["learning_rate"] = 0.5
      >>> u, state = opt.update({"w": jnp.ones(2)}, state, p)
      >>> u["w"].tolist()
      [-0.5, -0.5]
    """
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static.issubset(signature.parameters):
        raise ValueError(
            f"inject_hyperparams: static_args must name parameters of inner_factory, got {sorted(static)}; "
            f"its parameters are {sorted(signature.parameters)}"
        )

    @functools.wraps(inner_factory)
    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        schedules, numeric, other = _split_arguments(dict(bound.arguments), static)
        return _injected(inner_factory, schedules, numeric, other, hyperparam_dtype)

    return wrapped


def inject_stateful_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any | None = None,
) -> Callable[..., GradientTransformation]:
    r"""Deprecated alias of :func:`inject_hyperparams` (as in optax), which supports stateful schedules.

    .. math:: (u_t, s_t) = \mathrm{factory}(h_t).\mathrm{update}(g_t, s_{t-1})

    Example:
      >>> import warnings, jopt
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore", DeprecationWarning)
      ...     opt = jopt.inject_stateful_hyperparams(jopt.sgd)(learning_rate=0.1)
    """
    warnings.warn(
        "inject_stateful_hyperparams is deprecated, use inject_hyperparams", DeprecationWarning, stacklevel=2
    )
    return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)
