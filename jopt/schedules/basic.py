r"""Basic schedules: constant, polynomial/linear, exponential and inverse-time decay,
piecewise constant values, and joining schedules.

A schedule is a pure function ``step -> value``. Every *numeric* argument of every
schedule (values, rates, step counts, boundaries, ...) may be a Python number, a
concrete array or a **traced** value: no Python branch inspects an argument's
value, so::

    jax.vmap(lambda r: jopt.schedules.exponential_decay(1.0, 100, r)(step))(rates)

works, and a jitted function taking schedule arguments compiles once for all
their values. Only *structural* arguments are Python: flags such as
``staircase``, and the *number* of boundaries (the length of the list or of the
1-D array; its contents may be traced).

Concrete arguments are validated when the schedule is built (``ValueError``
naming the argument and its accepted range); traced arguments cannot be
inspected and are **not validated**. For traced values outside the documented
ranges the schedules still return finite values where that makes sense (a
traced ``transition_steps`` of 0 holds ``init_value``, like optax).

The step may be a Python int, an int32 scalar (traced or not) or an array of
steps (schedules with scalar arguments are elementwise in the step). Arithmetic
is done in :func:`jopt.hyperparams.hyperparam_dtype` (float32, float64 under
x64), so steps above :math:`2^{24}` are rounded to float32 resolution; outputs
have that dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    hyperparam_dtype,
    is_concrete,
    resolve,
)

Array = jax.Array
Boundaries = Sequence[Scalar] | Array

__all__ = [
    "constant",
    "exponential_decay",
    "inverse_time_decay",
    "join",
    "linear",
    "piecewise_constant",
    "piecewise_constant_values",
    "polynomial",
    "step_decay",
]


# --------------------------------------------------------------------------- private helpers
# (also used by jopt.schedules.cyclic)


def _num(x: Any) -> Array:
    """An argument as an array of the hyperparameter dtype (traced values stay traced)."""
    return jnp.asarray(x).astype(hyperparam_dtype())


def _step(count: Any) -> Array:
    """The step as a float array of the hyperparameter dtype."""
    return jnp.asarray(count).astype(hyperparam_dtype())


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


def _check_boundaries(boundaries: Any, owner: str, *, strict: bool = True) -> int:
    """Validate concrete boundaries (>= 0, increasing); return their static count."""
    n = _length(boundaries, "boundaries", owner)
    if n:
        check_hyperparam(boundaries, "boundaries", low=0.0, owner=owner)
        _check_increasing(boundaries, "boundaries", owner, strict=strict)
    return n


def _out(value: Array, t: Array) -> Array:
    """Broadcast ``value`` against the step shape and cast to the hyperparameter dtype."""
    return jnp.broadcast_to(value, jnp.broadcast_shapes(jnp.shape(value), jnp.shape(t))).astype(
        hyperparam_dtype()
    )


# --------------------------------------------------------------------------- schedules


def constant(value: Scalar) -> Schedule:
    r"""The constant schedule (``optax.constant_schedule``).

    .. math:: v_t = v

    Example:
      >>> import jopt
      >>> float(jopt.schedules.constant(0.5)(1000))
      0.5
    """
    check_hyperparam(value, "value", owner="constant")

    def schedule(count):
        t = _step(count)
        return _out(_num(value), t)

    return schedule


def polynomial(
    init_value: Scalar,
    end_value: Scalar,
    power: Scalar,
    transition_steps: Scalar,
    transition_begin: Scalar = 0,
) -> Schedule:
    r"""Polynomial transition from ``init_value`` to ``end_value`` (``optax.polynomial_schedule``).

    .. math::
      v_t = \begin{cases}
        I, & t < B \\
        E + (I - E) \left(1 - \frac{t - B}{T}\right)^{P}, & B \le t < B + T \\
        E, & t \ge B + T
      \end{cases}

    Args:
      init_value: :math:`I`, the value up to ``transition_begin``.
      end_value: :math:`E`, the value from ``transition_begin + transition_steps`` on.
      power: :math:`P > 0`.
      transition_steps: :math:`T \ge 0`; ``0`` holds :math:`I` for ever (as optax).
      transition_begin: :math:`B \ge 0`, steps to wait before the transition starts.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.polynomial(1.0, 0.0, power=2, transition_steps=10)
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20)]
      [1.0, 0.25, 0.0, 0.0]
    """
    owner = "polynomial"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    check_hyperparam(power, "power", low=0.0, low_open=True, owner=owner)
    check_hyperparam(transition_steps, "transition_steps", low=0.0, owner=owner)
    check_hyperparam(transition_begin, "transition_begin", low=0.0, owner=owner)

    def schedule(count):
        t = _step(count)
        frac = _fraction(t, _num(transition_begin), _num(transition_steps))
        frac = jnp.where(_num(transition_steps) > 0, frac, 0.0)
        weight = (1.0 - frac) ** _num(power)
        return _out(_interp(_num(end_value), _num(init_value), weight), t)

    return schedule


def linear(
    init_value: Scalar,
    end_value: Scalar,
    transition_steps: Scalar,
    transition_begin: Scalar = 0,
) -> Schedule:
    r"""Linear transition from ``init_value`` to ``end_value`` (``optax.linear_schedule``).

    .. math::
      v_t = I + (E - I)\,\mathrm{clip}\!\left(\frac{t - B}{T}, 0, 1\right)

    Args:
      init_value: :math:`I`.
      end_value: :math:`E`.
      transition_steps: :math:`T \ge 0`; ``0`` holds :math:`I` for ever (as optax).
      transition_begin: :math:`B \ge 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.linear(1.0, 0.0, transition_steps=4)
      >>> [float(sched(t)) for t in range(6)]
      [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    owner = "linear"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    check_hyperparam(transition_steps, "transition_steps", low=0.0, owner=owner)
    check_hyperparam(transition_begin, "transition_begin", low=0.0, owner=owner)

    def schedule(count):
        t = _step(count)
        frac = _fraction(t, _num(transition_begin), _num(transition_steps))
        frac = jnp.where(_num(transition_steps) > 0, frac, 0.0)
        return _out(_interp(_num(init_value), _num(end_value), frac), t)

    return schedule


def _exponential(init_value, decay_rate, transition_steps, transition_begin, staircase, end_value):
    def schedule(count):
        t = _step(count)
        init, rate = _num(init_value), _num(decay_rate)
        elapsed = t - _num(transition_begin)
        steps = _num(transition_steps)
        p = _floor_div(elapsed, steps) if staircase else _safe_div(elapsed, steps)
        value = jnp.where(elapsed <= 0, init, init * rate ** jnp.maximum(p, 0.0))
        if end_value is not None:
            end = _num(end_value)
            value = jnp.where(rate < 1, jnp.maximum(value, end), jnp.minimum(value, end))
        return _out(value, t)

    return schedule


def exponential_decay(
    init_value: Scalar,
    transition_steps: Scalar,
    decay_rate: Scalar,
    transition_begin: Scalar = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    r"""Exponential decay (``optax.exponential_decay``, same arguments).

    .. math::
      v_t = I \, r^{\,p_t}, \qquad
      p_t = \frac{\max(t - B, 0)}{T} \quad\text{or}\quad
      \left\lfloor \frac{\max(t - B, 0)}{T} \right\rfloor \text{ (staircase)}

    With ``end_value`` :math:`E`, the value is clipped at :math:`E`: from below
    when :math:`r < 1`, from above otherwise. ``staircase=True`` is the classic
    "step decay" (see :func:`step_decay`).

    Args:
      init_value: :math:`I`.
      transition_steps: :math:`T > 0`, steps per factor :math:`r`.
      decay_rate: :math:`r > 0`.
      transition_begin: :math:`B \ge 0`; the value is held at :math:`I` before it.
      staircase: decay in discrete jumps every :math:`T` steps (structural).
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
    return _exponential(init_value, decay_rate, transition_steps, transition_begin, staircase, end_value)


def step_decay(init_value: Scalar, drop: Scalar, every: Scalar) -> Schedule:
    r"""Step decay: multiply by ``drop`` every ``every`` steps.

    .. math:: v_t = I \, d^{\lfloor t / n \rfloor}

    Same as ``exponential_decay(init_value, every, drop, staircase=True)``.

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
    return _exponential(init_value, drop, every, 0, True, None)


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


def piecewise_constant(
    init_value: Scalar,
    boundaries: Boundaries | Mapping[int, float],
    scales: Sequence[Scalar] | Array | None = None,
) -> Schedule:
    r"""Piecewise constant with multiplicative jumps (``optax.piecewise_constant_schedule``).

    .. math:: v_t = I \prod_{i \,:\, t \ge b_i} s_i

    Args:
      init_value: :math:`I`.
      boundaries: steps :math:`b_i \ge 0`, strictly increasing (a list, or a 1-D
        array that may be traced); or optax's ``{boundary: scale}`` dict when
        ``scales`` is omitted.
      scales: factors :math:`s_i \ge 0`, one per boundary.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.piecewise_constant(1.0, [10, 20], [0.1, 0.5])
      >>> [round(float(sched(t)), 4) for t in (0, 10, 25)]
      [1.0, 0.1, 0.05]
    """
    owner = "piecewise_constant"
    if scales is None:
        if not isinstance(boundaries, Mapping):
            raise TypeError(f"{owner}: pass scales, or a {{boundary: scale}} dict as boundaries")
        items = sorted(boundaries.items())
        boundaries, scales = [b for b, _ in items], [s for _, s in items]
    check_hyperparam(init_value, "init_value", owner=owner)
    n = _check_boundaries(boundaries, owner)
    n_scales = _length(scales, "scales", owner)
    check_same_length("boundaries", np.zeros(n), "scales", np.zeros(n_scales))
    if n:
        check_hyperparam(scales, "scales", low=0.0, owner=owner)

    def schedule(count):
        t = _step(count)
        value = _num(init_value)
        for b, s in zip(_items(boundaries, n), _items(scales, n), strict=True):
            value = value * jnp.where(t >= b, s, 1.0)
        return _out(value, t)

    return schedule


def piecewise_constant_values(boundaries: Boundaries, values: Sequence[Scalar] | Array) -> Schedule:
    r"""Piecewise constant given by its values: ``values[i]`` on :math:`[b_{i-1}, b_i)`.

    .. math:: v_t = y_{k(t)}, \qquad k(t) = \#\{i : t \ge b_i\}

    Args:
      boundaries: :math:`n` strictly increasing steps :math:`b_i \ge 0` (a list,
        or a 1-D array that may be traced).
      values: :math:`n + 1` values :math:`y_0, \dots, y_n`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.piecewise_constant_values([10, 20], [1.0, 0.5, 0.25])
      >>> [float(sched(t)) for t in (0, 9, 10, 20, 99)]
      [1.0, 1.0, 0.5, 0.25, 0.25]
    """
    owner = "piecewise_constant_values"
    n = _check_boundaries(boundaries, owner)
    n_values = _length(values, "values", owner)
    check_same_length("boundaries", np.zeros(n), "values", np.zeros(n_values), offset=1)
    check_hyperparam(values, "values", owner=owner)

    def schedule(count):
        t = _step(count)
        ys = _items(values, n + 1)
        value = ys[0]
        for b, y in zip(_items(boundaries, n), ys[1:], strict=True):
            value = jnp.where(t >= b, y, value)
        return _out(value, t)

    return schedule


def join(schedules: Sequence[Hyperparam | Callable[[Array], Any]], boundaries: Boundaries) -> Schedule:
    r"""Run schedules one after another (``optax.join_schedules``).

    .. math:: v_t = f_k(t - b_{k}), \qquad k = \#\{i : t \ge b_i\},\ b_0 = 0

    Each schedule :math:`f_k` sees the step counted from its own start
    :math:`b_k`. A member may also be a constant (number or array).

    Args:
      schedules: :math:`n + 1` schedules (the list is structural).
      boundaries: :math:`n` non-decreasing steps :math:`\ge 0` (may be traced; an
        equal pair gives a zero-length phase). They are cast to the step's
        dtype before being subtracted from it.

    Example:
      >>> import jopt
      >>> warmup = jopt.schedules.linear(0.0, 1.0, 10)
      >>> sched = jopt.schedules.join([warmup, jopt.schedules.constant(1.0), 0.1], [10, 20])
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20)]
      [0.0, 0.5, 1.0, 0.1]
    """
    owner = "join"
    schedules = list(schedules)
    n = _check_boundaries(boundaries, owner, strict=False)
    check_same_length("boundaries", np.zeros(n), "schedules", np.zeros(len(schedules)), offset=1)

    def schedule(count):
        step = jnp.asarray(count)
        if isinstance(boundaries, (list, tuple)):
            bs = [jnp.asarray(b).astype(step.dtype) for b in boundaries]
        else:
            arr = jnp.asarray(boundaries).astype(step.dtype)
            bs = [arr[i] for i in range(n)]
        value = resolve(schedules[0], step)
        for b, sched in zip(bs, schedules[1:], strict=True):
            value = jnp.where(step < b, value, resolve(sched, step - b))
        return _out(value, step)

    return schedule
