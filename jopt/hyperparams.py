"""Hyperparameters as data: resolution, validation and dtype rules.

Every hyperparameter in jopt may be

* a Python number,
* a JAX/NumPy array (possibly a tracer under ``jax.jit`` / ``jax.vmap``), or
* a schedule: a callable ``step -> value`` (see :mod:`jopt.schedules`).

No Python branch ever inspects a hyperparameter's *value* during an update, so
vmapping over any hyperparameter works and a jitted step taking hyperparameters
as arguments compiles once for all values.

Validation happens once, when a transform or schedule is constructed, and only
for *concrete* values (numbers and concrete arrays). Traced values cannot be
inspected at trace time and are **not validated**; a sweep validates its search
space before tracing instead.

Hyperparameters are always resolved to at least float32, so that e.g.
``b2=0.999`` is not rounded to ``1.0`` when parameters are bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Schedule = Callable[[Array], Array]
Scalar = Union[float, int, Array, np.ndarray, np.generic]
Hyperparam = Union[Scalar, Schedule]

__all__ = [
    "Hyperparam",
    "Schedule",
    "check_hyperparam",
    "check_same_length",
    "compute_dtype",
    "hyperparam_dtype",
    "is_concrete",
    "resolve",
]


def hyperparam_dtype() -> jnp.dtype:
    """The float dtype hyperparameters are resolved to (float32, or float64 under x64)."""
    return jnp.result_type(float)


def compute_dtype(dtype: Any) -> jnp.dtype:
    """Dtype in which update arithmetic is done: at least the hyperparameter dtype."""
    return jnp.promote_types(dtype, hyperparam_dtype())


def is_concrete(value: Any) -> bool:
    """True when ``value`` can be inspected in Python (not a tracer, not a schedule)."""
    if callable(value):
        return False
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def resolve(value: Hyperparam, count: Array | int) -> Array:
    """Value of a hyperparameter at step ``count`` as an array of at least float32.

    Args:
      value: a number, an array, or a schedule ``step -> value``.
      count: the current step (int32 scalar).

    Returns:
      ``value(count)`` for a schedule, else ``value``; cast to at least float32.
    """
    if callable(value):
        value = value(count)
    value = jnp.asarray(value)
    return value.astype(compute_dtype(value.dtype)) if value.dtype != jnp.bool_ else value


def _format_range(low, high, low_open, high_open) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def check_hyperparam(
    value: Hyperparam,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    owner: str | None = None,
) -> Hyperparam:
    """Validate a concrete hyperparameter; schedules and tracers pass through.

    Raises:
      ValueError: naming ``name`` and the accepted range when a concrete value is
        outside ``[low, high]`` (ends open when ``low_open``/``high_open``), not
        finite, or not an integer when ``integer`` is set.

    Returns:
      ``value`` unchanged, so it can be used inline.
    """
    if value is None or not is_concrete(value):
        return value
    where = f"{owner}: " if owner else ""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}{name} must be a number, an array or a schedule, got {value!r}") from err
    expected = _format_range(low, high, low_open, high_open)
    if arr.size == 0:
        raise ValueError(f"{where}{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        if not (high is None and np.all(np.isposinf(arr) | np.isfinite(arr))):
            raise ValueError(f"{where}{name} must be finite and in {expected}, got {value!r}")
    bad = np.zeros(arr.shape, bool)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if np.any(bad):
        shown = arr[bad].ravel()[0]
        raise ValueError(f"{where}{name} must be in {expected}, got {shown:g}")
    if integer and not np.all(np.isposinf(arr) | (np.floor(arr) == arr)):
        raise ValueError(f"{where}{name} must be an integer, got {value!r}")
    return value


def check_same_length(name_a: str, a: Any, name_b: str, b: Any, *, offset: int = 0) -> None:
    """Raise ValueError unless ``len(b) == len(a) + offset`` (concrete sequences only)."""
    if not (is_concrete(a) and is_concrete(b)):
        return
    len_a = int(np.shape(a)[0]) if np.ndim(a) else 1
    len_b = int(np.shape(b)[0]) if np.ndim(b) else 1
    if len_b != len_a + offset:
        rel = f"len({name_a})" + (f" + {offset}" if offset else "")
        raise ValueError(f"len({name_b}) must equal {rel} = {len_a + offset}, got {len_b}")
