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

Two arithmetic paths, one rule
------------------------------
A hyperparameter given as a **Python number** stays a Python number through
:func:`resolve`: expressions such as ``1 - b2`` are evaluated by Python in double
precision and only then meet the (float32) arrays as weakly typed constants.
This is optax's arithmetic, so with Python-number hyperparameters jopt's float32
trajectories equal optax's bit for bit. A hyperparameter given as an **array**,
a traced value or a schedule is resolved to an array of at least float32 and
the same expressions are evaluated in that dtype. The two paths agree to float32
rounding (``1 - float32(0.999)`` is ``0.0009999871``, ``float32(1 - 0.999)`` is
``0.001``); which path a value takes is decided by its Python type, never by its
value, so vmapping over an array hyperparameter never recompiles.

Transforms therefore never call ``.astype`` on a hyperparameter; they use
:func:`cast_hyperparam`, which leaves Python numbers alone. Update arithmetic is
done in at least float32 (:func:`compute_dtype`), so ``b2=0.999`` keeps its
precision when parameters are bfloat16 (optax rounds it to 1.0 there).

Ranges
------
Each transform states the accepted range of each hyperparameter once, as a
:class:`Range` (:data:`UNIT` for decays in [0, 1), :data:`NONNEGATIVE`,
:data:`POSITIVE`, ...), and :func:`check_hyperparams` validates every concrete
value against it at construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Schedule = Callable[[Array], Array]
Scalar = Union[float, int, Array, np.ndarray, np.generic]
Hyperparam = Union[Scalar, Schedule]

__all__ = [
    "ANY",
    "NONNEGATIVE",
    "POSITIVE",
    "PROBABILITY",
    "UNIT",
    "Hyperparam",
    "Range",
    "Schedule",
    "as_array",
    "cast_hyperparam",
    "check_hyperparam",
    "check_hyperparams",
    "is_python_number",
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


def is_python_number(value: Any) -> bool:
    """True for a Python ``int`` or ``float`` (not ``bool``): a constant on the weak-type path."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve(value: Hyperparam, count: Array | int | None) -> Array | float:
    """Value of a hyperparameter at step ``count``.

    Args:
      value: a number, an array, or a schedule ``step -> value``.
      count: the current step (int32 scalar); schedules are called with it.

    Returns:
      A Python number unchanged (see the module docstring: optax's weak-type
      arithmetic); otherwise ``value(count)`` for a schedule, else ``value``, as
      an array of at least float32 (booleans stay boolean).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.hyperparams import resolve
      >>> resolve(0.9, 0)
      0.9
      >>> resolve(jnp.asarray(0.9, jnp.bfloat16), 0).dtype
      dtype('float32')
    """
    if callable(value):
        value = value(count)
    if is_python_number(value):
        return value
    value = jnp.asarray(value)
    return value.astype(compute_dtype(value.dtype)) if value.dtype != jnp.bool_ else value


def as_array(value: Array | float) -> Array:
    """A resolved hyperparameter as an array (a Python number in :func:`hyperparam_dtype`), e.g. for a state.

    Example:
      >>> from jopt.hyperparams import as_array
      >>> as_array(0.5).dtype
      dtype('float32')
    """
    return jnp.asarray(value, hyperparam_dtype()) if is_python_number(value) else value


def cast_hyperparam(value: Array | float, dtype: Any) -> Array | float:
    """``value`` in ``dtype`` for arrays; a Python number is returned unchanged (weakly typed).

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.hyperparams import cast_hyperparam
      >>> cast_hyperparam(0.5, jnp.float32), cast_hyperparam(jnp.ones(()), jnp.bfloat16).dtype
      (0.5, dtype(bfloat16))
    """
    return value if is_python_number(value) else jnp.asarray(value).astype(dtype)


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
    if isinstance(value, (str, bytes)) or np.asarray(value).dtype.kind in "USO":
        raise ValueError(f"{where}{name} must be a number, an array or a schedule, got {value!r}")
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


class Range(NamedTuple):
    """The accepted values of a hyperparameter: ``[low, high]``, ends open when asked.

    ``None`` bounds are unbounded; ``integer`` also requires whole numbers.
    ``check`` validates a concrete value (see :func:`check_hyperparam`).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def check(self, value: Hyperparam, name: str, owner: str | None = None) -> Hyperparam:
        """Validate ``value`` against this range; returns it unchanged."""
        return check_hyperparam(value, name, owner=owner, **self._asdict())


ANY = Range()
"""Any finite number."""
NONNEGATIVE = Range(0.0)
r""":math:`[0, \infty)`: rates, epsilons, penalties."""
POSITIVE = Range(0.0, low_open=True)
r""":math:`(0, \infty)`."""
UNIT = Range(0.0, 1.0, high_open=True)
""":math:`[0, 1)`: decays of moving averages and momenta."""
PROBABILITY = Range(0.0, 1.0)
""":math:`[0, 1]`."""


def check_hyperparams(owner: str, ranges: Mapping[str, Range], values: Mapping[str, Hyperparam]) -> None:
    """Validate each concrete ``values[name]`` against ``ranges[name]`` (``None`` values pass).

    Raises:
      ValueError: naming ``owner``, the argument and the accepted range.
      KeyError: when a value has no declared range (a programming error in jopt).

    Example:
      >>> from jopt.hyperparams import UNIT, check_hyperparams
      >>> check_hyperparams("scale_by_adam", {"b1": UNIT}, {"b1": 1.5})
      Traceback (most recent call last):
      ...
      ValueError: scale_by_adam: b1 must be in [0, 1), got 1.5
    """
    for name, value in values.items():
        ranges[name].check(value, name, owner)


def check_same_length(name_a: str, a: Any, name_b: str, b: Any, *, offset: int = 0) -> None:
    """Raise ValueError unless ``len(b) == len(a) + offset`` (concrete sequences only)."""
    if not (is_concrete(a) and is_concrete(b)):
        return
    len_a = int(np.shape(a)[0]) if np.ndim(a) else 1
    len_b = int(np.shape(b)[0]) if np.ndim(b) else 1
    if len_b != len_a + offset:
        rel = f"len({name_a})" + (f" + {offset}" if offset else "")
        raise ValueError(f"len({name_b}) must equal {rel} = {len_a + offset}, got {len_b}")
