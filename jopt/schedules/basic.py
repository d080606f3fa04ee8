r"""Basic schedules: constant, polynomial/linear, exponential, inverse-time and cosine decay,
and joining schedules.

A schedule is a pure function ``step -> value``. Each of optax's schedules exists
under optax's name with optax's arguments (``constant_schedule``,
``linear_schedule``, ``polynomial_schedule``, ``exponential_decay``,
``cosine_decay_schedule``, ``join_schedules``); jopt's shorter names
(``constant``, ``linear``, ``polynomial``, ``cosine_decay``, ``join``) are the
same functions.

**Numbers.** With Python (or NumPy scalar) arguments the arithmetic is optax's,
operation for operation, and so are the float32 results, bit for bit:
arithmetic between two arguments (e.g. ``init_value - end_value``) is done by
Python in double precision, as optax does, and the step enters as an integer
where optax keeps it an integer. Integers beyond the int32 range (a step count
of ``10**10``) are turned into floats instead of overflowing.

**Traced arguments.** Every *numeric* argument (values, rates, step counts,
boundaries, ...) may also be a concrete array or a **traced** value: no Python
branch inspects a traced argument, so::

    jax.vmap(lambda r: jopt.schedules.exponential_decay(1.0, 100, r)(step))(rates)

works (optax's ``exponential_decay`` fails there), and a jitted function taking
schedule arguments compiles once for all their values. Only *structural*
arguments are Python: whether ``end_value`` is ``None``, and the *number* of
boundaries (the length of the list or of the 1-D array; its contents may be
traced). A ``staircase`` flag may be a Python bool or a (traced) boolean.

**Validation.** Concrete arguments are validated when the schedule is built
(``ValueError`` naming the argument and its accepted range); traced arguments
cannot be inspected and are **not validated**. For traced values outside the
documented ranges the schedules fall back as optax's Python branches do (a
traced ``transition_steps`` of 0 holds ``init_value``) and stay finite.

The step may be a Python int, an integer scalar (traced or not) or an array of
steps: schedules with scalar arguments are elementwise in the step. Outputs
have the dtype :func:`jopt.hyperparams.hyperparam_dtype` (float32, float64
under x64) and the shape of the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.hyperparams import (
    Hyperparam,
    Scalar,
    Schedule,
    check_hyperparam,
    check_same_length,
    compute_dtype,
    hyperparam_dtype,
    is_concrete,
)

Array = jax.Array
Boundaries = Sequence[Scalar] | Array

__all__ = [
    "constant",
    "constant_schedule",
    "cosine_decay",
    "cosine_decay_schedule",
    "exponential_decay",
    "inverse_time_decay",
    "join",
    "join_schedules",
    "linear",
    "linear_schedule",
    "polynomial",
    "polynomial_schedule",
    "step_decay",
]

_INT32 = np.iinfo(np.int32)


# --------------------------------------------------------------------------- private helpers
# (also used by the other schedule modules)


def _is_static(x: Any) -> bool:
    """A Python or NumPy scalar: arithmetic on it stays in Python/NumPy (double precision), as in optax."""
    return isinstance(x, (int, float, np.number))


def _fit(x: Any) -> Any:
    """``x`` unchanged, except that integers outside the int32 range become floats (JAX would overflow)."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return x if _INT32.min <= x <= _INT32.max else float(x)
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu" and x.size:
        if x.min() < _INT32.min or x.max() > _INT32.max:
            return x.astype(np.float64)
    return x


def _arg(x: Any) -> Any:
    """A numeric argument ready for optax's arithmetic.

    Python and NumPy values stay as they are (so that arithmetic between them is
    optax's); JAX arrays of a float dtype narrower than float32 are widened to it.
    """
    x = _fit(x)
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(compute_dtype(x.dtype))
    return x


def _select(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` else ``b``; a Python bool picks one without an operation."""
    if isinstance(cond, (bool, np.bool_)):
        return a if cond else b
    return jnp.where(cond, a, b)


def _both(a: Any, b: Any) -> Any:
    """Logical and of two conditions (Python bools stay Python bools)."""
    if isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)):
        return bool(a and b)
    return jnp.logical_and(a, b)


def _positive(x: Any) -> tuple[Any, Any]:
    """``(divisor, x > 0)``: ``x`` itself where positive, else 1 (a safe divisor)."""
    if _is_static(x):
        return (x, True) if x > 0 else (1, False)
    return jnp.where(x > 0, x, 1), x > 0


def _nonneg(x: Any) -> Any:
    """``max(x, 0)``: optax's fallback for a negative ``transition_begin``."""
    return max(x, 0) if _is_static(x) else jnp.maximum(x, 0)


def _int_to_float(x: Any) -> Any:
    """A Python int as a Python float (optax's cosine decay computes in float)."""
    return float(x) if isinstance(x, int) and not isinstance(x, bool) else x


def _out(value: Any, t: Any) -> Array:
    """Broadcast ``value`` against the step shape and cast to the hyperparameter dtype."""
    shape = jnp.broadcast_shapes(jnp.shape(value), jnp.shape(t))
    return jnp.broadcast_to(value, shape).astype(hyperparam_dtype())


def _call(member: Any, step: Any) -> Any:
    """A join member at ``step``: a schedule is called, a constant is returned as is."""
    return member(step) if callable(member) else _arg(member)


def _num(x: Any) -> Array:
    """An argument as an array of the hyperparameter dtype (traced values stay traced)."""
    return jnp.asarray(_fit(x)).astype(hyperparam_dtype())


def _step(count: Any) -> Array:
    """The step as a float array of the hyperparameter dtype."""
    return _num(count)


def _safe_div(num: Array, den: Array) -> Array:
    """``num / den`` where ``den > 0``; callers mask the other case."""
    return num / jnp.where(den > 0, den, jnp.ones_like(den))


def _fraction(t: Array, begin: Array, length: Array) -> Array:
    r"""Progress :math:`\mathrm{clip}((t - B) / L, 0, 1)` through a phase; 1 when :math:`L \le 0`.

    Exactly 1 from :math:`t = B + L` on: under ``jit`` XLA may compute ``x / L`` as
    ``x * (1 / L)``, which can give ``L / L = 0.99999994``.
    """
    elapsed = t - begin
    frac = jnp.clip(_safe_div(elapsed, length), 0.0, 1.0)
    return jnp.where((length > 0) & (elapsed < length), frac, 1.0)


def _floor_div(x: Array, y: Array) -> Array:
    r""":math:`\lfloor x / y \rfloor` for :math:`y > 0`, exact for integer-valued ``x`` and ``y``.

    Corrects the quotient by one where XLA's reciprocal rewrite of ``x / y``
    rounded it to the wrong side of an integer.
    """
    q = jnp.floor(_safe_div(x, y))
    q = jnp.where((q + 1) * y <= x, q + 1, q)
    return jnp.where(q * y > x, q - 1, q)


def _interp(start: Array, end: Array, p: Array) -> Array:
    r"""Linear interpolation :math:`s + (e - s)\,p` for :math:`p \in [0, 1]`.

    Exact at both ends (``start`` at ``p = 0``, ``end`` at ``p = 1``), clipped to
    ``[min(s, e), max(s, e)]`` and monotone in ``p`` despite rounding.
    """
    lo = jnp.minimum(start, end)
    hi = jnp.maximum(start, end)
    value = jnp.clip(start + (end - start) * p, lo, hi)
    return jnp.where(p >= 1, end, value)


def _cosine_weight(p: Array) -> Array:
    r""":math:`\tfrac12 (1 + \cos \pi p)`: 1 at :math:`p = 0`, 0 at :math:`p = 1`."""
    return 0.5 * (1.0 + jnp.cos(jnp.pi * p))


def _length(x: Any, name: str, owner: str) -> int:
    """Static length of a 1-D sequence or array (the structural part of ``x``)."""
    if isinstance(x, (list, tuple)):
        return len(x)
    if jnp.ndim(x) != 1:
        raise ValueError(f"{owner}: {name} must be a 1-D sequence, got shape {jnp.shape(x)}")
    return int(jnp.shape(x)[0])


def _elements(x: Any, n: int) -> list[Any]:
    """The ``n`` elements of a sequence or 1-D array, each ready for arithmetic (:func:`_arg`)."""
    if isinstance(x, (list, tuple)):
        return [_arg(v) for v in x]
    arr = x if isinstance(x, jax.Array) else np.asarray(x)
    return [_arg(arr[i]) for i in range(n)]


def _items(x: Any, n: int) -> list[Array]:
    """Elements of a length-``n`` sequence or 1-D array as arrays of the hyperparameter dtype."""
    if isinstance(x, (list, tuple)):
        return [_num(v) for v in x]
    arr = _num(x)
    return [arr[i] for i in range(n)]


def _check_increasing(values: Any, name: str, owner: str, *, strict: bool = True) -> None:
    """Concrete, non-empty ``values`` must be (strictly) increasing; traced values pass."""
    if not is_concrete(values) or len(values) < 2:
        return
    diffs = np.diff(np.asarray(values, dtype=np.float64))
    bad = np.any(diffs <= 0) if strict else np.any(diffs < 0)
    if bad:
        kind = "strictly increasing" if strict else "non-decreasing"
        raise ValueError(f"{owner}: {name} must be {kind}, got {list(np.asarray(values).tolist())}")


def _check_boundaries(boundaries: Any, owner: str, *, strict: bool = True, name: str = "boundaries") -> int:
    """Validate concrete boundaries (>= 0, increasing); return their static count."""
    n = _length(boundaries, name, owner)
    if n:
        check_hyperparam(boundaries, name, low=0.0, owner=owner)
        _check_increasing(boundaries, name, owner, strict=strict)
    return n


# --------------------------------------------------------------------------- implementations
# Unvalidated cores, shared by the public schedules (which validate their own arguments).


def _polynomial(init_value, end_value, power, transition_steps, transition_begin) -> Schedule:
    def schedule(count):
        count = _fit(count)
        init, end, p = _arg(init_value), _arg(end_value), _arg(power)
        steps, active = _positive(_arg(transition_steps))
        elapsed = jnp.clip(count - _nonneg(_arg(transition_begin)), 0, steps)
        frac = 1 - elapsed / steps
        value = (init - end) * frac**p + end
        return _out(_select(active, value, init), count)

    return schedule


def _exponential(init_value, transition_steps, decay_rate, transition_begin, staircase, end_value):
    def schedule(count):
        count = _fit(count)
        init, rate = _arg(init_value), _arg(decay_rate)
        steps, active = _positive(_arg(transition_steps))
        elapsed = count - _nonneg(_arg(transition_begin))
        p = elapsed / steps
        p = _select(staircase, _staircase(p, elapsed, steps), p)
        value = jnp.where(elapsed <= 0, init, init * jnp.power(rate, p))
        if end_value is not None:
            end = _arg(end_value)
            value = _select(rate < 1.0, jnp.maximum(value, end), jnp.minimum(value, end))
        return _out(_select(_both(active, rate != 0), value, init), count)

    return schedule


def _staircase(p: Any, elapsed: Any, steps: Any) -> Array:
    r""":math:`\lfloor p \rfloor` for :math:`p = x / T`, corrected where the division rounded past an integer.

    XLA computes ``x / T`` as ``x * (1 / T)``, so ``floor(T / T)`` can be 0 (``T = 47`` on
    CPU): optax's staircase then decays one step late at such multiples of :math:`T`. Only
    those steps change (where :math:`(q + 1) T \le x` or :math:`q T > x`; exact below
    :math:`2^{24}`); everywhere else this is optax's ``floor(p)``.
    """
    q = jnp.floor(p)
    q = jnp.where((q + 1) * steps <= elapsed, q + 1, q)
    return jnp.where(q * steps > elapsed, q - 1, q)


def _cosine(init_value, decay_steps, alpha, exponent) -> Schedule:
    def schedule(count):
        count = _int_to_float(_fit(count))
        init, a, p = _arg(init_value), _arg(alpha), _arg(exponent)
        steps, active = _positive(_int_to_float(_arg(decay_steps)))
        t = jnp.minimum(count, steps)
        # A traced decay_steps <= 0 counts as a finished decay (optax raises for concrete ones).
        angle = _select(active, jnp.pi * t / steps, jnp.pi)
        weight = 0.5 * (1 + jnp.cos(angle))
        decayed = (1 - a) * weight**p + a
        return _out(init * decayed, count)

    return schedule


def _join(schedules: Sequence[Any], boundaries: Sequence[Any]) -> Schedule:
    def schedule(step):
        step = _fit(step)
        value = _call(schedules[0], step)
        for b, member in zip(boundaries, schedules[1:], strict=True):
            value = jnp.where(step < b, value, _call(member, step - b))
        return _out(value, step)

    return schedule


# --------------------------------------------------------------------------- schedules


def constant_schedule(value: Scalar) -> Schedule:
    r"""The constant schedule (as ``optax.constant_schedule``; alias :func:`constant`).

    .. math:: v_t = v

    Args:
      value: :math:`v`, any finite number or array (may be traced).

    Example:
      >>> import jopt
      >>> float(jopt.schedules.constant_schedule(0.5)(1000))
      0.5
    """
    check_hyperparam(value, "value", owner="constant_schedule")

    def schedule(count):
        return _out(_arg(value), _fit(count))

    return schedule


def polynomial_schedule(
    init_value: Scalar,
    end_value: Scalar,
    power: Scalar,
    transition_steps: Scalar,
    transition_begin: Scalar = 0,
) -> Schedule:
    r"""Polynomial transition from ``init_value`` to ``end_value`` (as ``optax.polynomial_schedule``).

    .. math::
      v_t = (I - E) \left(1 - \frac{\mathrm{clip}(t - B,\ 0,\ T)}{T}\right)^{P} + E

    so :math:`v_t = I` up to :math:`t = B` and :math:`v_t = E` from :math:`t = B + T` on.
    ``transition_steps`` :math:`T = 0` holds :math:`I` for ever (as optax).
    Alias: :func:`polynomial`.

    Args:
      init_value: :math:`I`, the value up to ``transition_begin``.
      end_value: :math:`E`, the value from ``transition_begin + transition_steps`` on.
      power: :math:`P > 0`.
      transition_steps: :math:`T \ge 0`.
      transition_begin: :math:`B \ge 0`, steps to wait before the transition starts.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20)]
      [1.0, 0.25, 0.0, 0.0]
    """
    owner = "polynomial_schedule"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    check_hyperparam(power, "power", low=0.0, low_open=True, owner=owner)
    check_hyperparam(transition_steps, "transition_steps", low=0.0, owner=owner)
    check_hyperparam(transition_begin, "transition_begin", low=0.0, owner=owner)
    return _polynomial(init_value, end_value, power, transition_steps, transition_begin)


def linear_schedule(
    init_value: Scalar,
    end_value: Scalar,
    transition_steps: Scalar,
    transition_begin: Scalar = 0,
) -> Schedule:
    r"""Linear transition from ``init_value`` to ``end_value`` (as ``optax.linear_schedule``).

    :func:`polynomial_schedule` with power 1:

    .. math:: v_t = (I - E) \left(1 - \frac{\mathrm{clip}(t - B,\ 0,\ T)}{T}\right) + E

    Alias: :func:`linear`.

    Args:
      init_value: :math:`I`.
      end_value: :math:`E`.
      transition_steps: :math:`T \ge 0`; ``0`` holds :math:`I` for ever (as optax).
      transition_begin: :math:`B \ge 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.linear_schedule(1.0, 0.0, transition_steps=4)
      >>> [float(sched(t)) for t in range(6)]
      [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    owner = "linear_schedule"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    check_hyperparam(transition_steps, "transition_steps", low=0.0, owner=owner)
    check_hyperparam(transition_begin, "transition_begin", low=0.0, owner=owner)
    return _polynomial(init_value, end_value, 1, transition_steps, transition_begin)


def exponential_decay(
    init_value: Scalar,
    transition_steps: Scalar,
    decay_rate: Scalar,
    transition_begin: Scalar = 0,
    staircase: bool | Array = False,
    end_value: Scalar | None = None,
) -> Schedule:
    r"""Exponential decay (as ``optax.exponential_decay``, same arguments).

    .. math::
      v_t = \begin{cases} I, & t \le B \\ I \, r^{\,p_t}, & t > B \end{cases}
      \qquad
      p_t = \frac{t - B}{T} \quad\text{or}\quad
      \left\lfloor \frac{t - B}{T} \right\rfloor \text{ (staircase)}

    With ``end_value`` :math:`E`, the value is clipped at :math:`E`: from below
    when :math:`r < 1`, from above otherwise. ``staircase=True`` is the classic
    "step decay" (see :func:`step_decay`). Unlike optax's, every argument may be
    traced (e.g. vmapped over ``decay_rate``), and the staircase drops exactly at
    the multiples of :math:`T`: optax's ``floor((t - B) / T)`` is one too small at
    some of them (e.g. :math:`T = 47`, :math:`t = 47`) because XLA divides by
    multiplying with :math:`1 / T`; jopt corrects those steps and equals optax
    everywhere else.

    Args:
      init_value: :math:`I`.
      transition_steps: :math:`T > 0`, steps per factor :math:`r`.
      decay_rate: :math:`r > 0`.
      transition_begin: :math:`B \ge 0`; the value is held at :math:`I` until then.
      staircase: decay in discrete jumps every :math:`T` steps (a bool, may be traced).
      end_value: optional bound :math:`E` (``None``: no bound; structural).

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
      >>> [round(float(sched(t)), 4) for t in (0, 10, 15, 20)]
      [1.0, 0.5, 0.3536, 0.25]
    """
    owner = "exponential_decay"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(decay_rate, "decay_rate", low=0.0, low_open=True, owner=owner)
    check_hyperparam(transition_steps, "transition_steps", low=0.0, low_open=True, owner=owner)
    check_hyperparam(transition_begin, "transition_begin", low=0.0, owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    return _exponential(init_value, transition_steps, decay_rate, transition_begin, staircase, end_value)


def step_decay(init_value: Scalar, drop: Scalar, every: Scalar) -> Schedule:
    r"""Step decay: multiply by ``drop`` every ``every`` steps.

    .. math:: v_t = I \, d^{\lfloor t / n \rfloor}

    The same schedule as ``exponential_decay(init_value, every, drop, staircase=True)``.

    Args:
      init_value: :math:`I`.
      drop: :math:`d > 0` (typically in :math:`(0, 1)`).
      every: :math:`n > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.step_decay(1.0, drop=0.5, every=10)
      >>> [float(sched(t)) for t in (0, 9, 10, 25)]
      [1.0, 1.0, 0.5, 0.25]
    """
    owner = "step_decay"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(drop, "drop", low=0.0, low_open=True, owner=owner)
    check_hyperparam(every, "every", low=0.0, low_open=True, owner=owner)
    return _exponential(init_value, every, drop, 0, True, None)


def inverse_time_decay(
    init_value: Scalar,
    decay_rate: Scalar,
    decay_steps: Scalar = 1,
    staircase: bool = False,
) -> Schedule:
    r"""Inverse-time ("time-based") decay, as Keras' ``InverseTimeDecay``.

    .. math::
      v_t = \frac{I}{1 + r\, p_t}, \qquad
      p_t = \frac{t}{T} \quad\text{or}\quad \left\lfloor \frac{t}{T} \right\rfloor \text{ (staircase)}

    Args:
      init_value: :math:`I`.
      decay_rate: :math:`r \ge 0`.
      decay_steps: :math:`T > 0`.
      staircase: decay in discrete jumps every :math:`T` steps (structural).

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.inverse_time_decay(1.0, decay_rate=1.0, decay_steps=10)
      >>> [float(sched(t)) for t in (0, 10, 30)]
      [1.0, 0.5, 0.25]
    """
    owner = "inverse_time_decay"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(decay_rate, "decay_rate", low=0.0, owner=owner)
    check_hyperparam(decay_steps, "decay_steps", low=0.0, low_open=True, owner=owner)

    def schedule(count):
        t = _step(count)
        elapsed, steps = jnp.maximum(t, 0.0), _num(decay_steps)
        p = _floor_div(elapsed, steps) if staircase else _safe_div(elapsed, steps)
        return _out(_num(init_value) / (1.0 + _num(decay_rate) * p), t)

    return schedule


def cosine_decay_schedule(
    init_value: Scalar,
    decay_steps: Scalar,
    alpha: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    r"""Cosine decay from ``init_value`` to ``alpha * init_value`` (as ``optax.cosine_decay_schedule``).

    .. math::
      v_t = I \left[(1 - \alpha)
        \left(\tfrac12 \left(1 + \cos \frac{\pi \min(t, T)}{T}\right)\right)^{p} + \alpha\right]

    Integer steps and ``decay_steps`` are converted to floats first (as optax), so
    counts beyond the int32 range work, e.g. ``decay_steps=10**10``. Alias:
    :func:`cosine_decay`.

    Args:
      init_value: :math:`I`.
      decay_steps: :math:`T > 0`.
      alpha: final multiplier :math:`\alpha \in [0, 1]`.
      exponent: :math:`p > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.cosine_decay_schedule(1.0, decay_steps=100, alpha=0.1)
      >>> [round(float(sched(t)), 4) for t in (0, 50, 100, 200)]
      [1.0, 0.55, 0.1, 0.1]
    """
    owner = "cosine_decay_schedule"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(decay_steps, "decay_steps", low=0.0, low_open=True, owner=owner)
    check_hyperparam(alpha, "alpha", low=0.0, high=1.0, owner=owner)
    check_hyperparam(exponent, "exponent", low=0.0, low_open=True, owner=owner)
    return _cosine(init_value, decay_steps, alpha, exponent)


def join_schedules(
    schedules: Sequence[Hyperparam | Callable[[Array], Any]], boundaries: Boundaries
) -> Schedule:
    r"""Run schedules one after another (as ``optax.join_schedules``; alias :func:`join`).

    .. math:: v_t = f_k(t - b_k), \qquad k = \#\{i \ge 1 : t \ge b_i\},\ b_0 = 0

    Each schedule :math:`f_k` sees the step counted from its own start
    :math:`b_k`. A member may also be a constant (number or array).

    Args:
      schedules: :math:`n + 1` schedules (the list is structural).
      boundaries: :math:`n` non-decreasing steps :math:`b_1, \dots, b_n \ge 0` (a
        list, or a 1-D array; may be traced; an equal pair gives a zero-length phase).

    Example:
      >>> import jopt
      >>> warmup = jopt.schedules.linear_schedule(0.0, 1.0, 10)
      >>> sched = jopt.schedules.join_schedules([warmup, jopt.schedules.constant(1.0), 0.1], [10, 20])
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20)]
      [0.0, 0.5, 1.0, 0.1]
    """
    owner = "join_schedules"
    schedules = list(schedules)
    n = _check_boundaries(boundaries, owner, strict=False)
    check_same_length("boundaries", np.zeros(n), "schedules", np.zeros(len(schedules)), offset=1)
    return _join(schedules, _elements(boundaries, n))


# jopt's names for the same schedules.
constant = constant_schedule
linear = linear_schedule
polynomial = polynomial_schedule
cosine_decay = cosine_decay_schedule
join = join_schedules
