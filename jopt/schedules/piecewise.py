r"""Piecewise schedules: multiplicative jumps, given values, and interpolated pieces.

``piecewise_constant_schedule`` and ``piecewise_interpolate_schedule`` take optax's
``{boundary: scale}`` dict (``boundaries_and_scales``) and compute optax's float32
values bit for bit when the scales are Python numbers. The dict's *keys* are
structural (Python numbers); its values may be traced. :func:`piecewise_constant`
is the same schedule with boundaries and scales as two sequences (1-D arrays
allowed, both may be traced); :func:`piecewise_constant_values` gives the values
themselves. The rules of :mod:`jopt.schedules.basic` apply (validation of
concrete arguments, traced ones unchecked, elementwise in the step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.hyperparams import Scalar, Schedule, check_hyperparam, check_same_length
from jopt.schedules.basic import (
    Boundaries,
    _arg,
    _check_boundaries,
    _elements,
    _fit,
    _is_static,
    _items,
    _length,
    _out,
    _step,
)

Array = jax.Array

__all__ = [
    "piecewise_constant",
    "piecewise_constant_schedule",
    "piecewise_constant_values",
    "piecewise_interpolate_schedule",
]

_INTERPOLATIONS = ("linear", "cosine")


def _sorted_dict(boundaries_and_scales: Mapping[Any, Any] | None, owner: str) -> tuple[list, list]:
    """Validated ``(boundaries, scales)`` of optax's ``{boundary: scale}`` dict, by boundary."""
    if boundaries_and_scales is None:
        return [], []
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(f"{owner}: boundaries_and_scales must be a {{boundary: scale}} dict or None")
    items = sorted(boundaries_and_scales.items())
    name = "boundaries_and_scales"
    for b, s in items:
        check_hyperparam(b, f"{name} (boundary)", low=0.0, owner=owner)
        check_hyperparam(s, f"{name} (scale)", low=0.0, owner=owner)
    return [_arg(b) for b, _ in items], [_arg(s) for _, s in items]


def _merge_repeated(boundaries: list, scales: list) -> tuple[list, list]:
    """Boundaries and scales as a dict built from them would hold them (optax builds such dicts).

    A boundary given twice keeps the *last* scale, at its *first* position. With
    Python boundaries this is a dict; with traced ones (assumed non-decreasing) a
    repeated boundary stays in the list with scale 1, which gives the same values.
    """
    if all(_is_static(b) for b in boundaries):
        merged = {}
        for b, s in zip(boundaries, scales, strict=True):
            merged[b] = s
        items = sorted(merged.items())
        return [b for b, _ in items], [s for _, s in items]
    run = list(scales)
    for i in range(len(boundaries) - 2, -1, -1):
        run[i] = jnp.where(boundaries[i] == boundaries[i + 1], run[i + 1], scales[i])
    merged_scales = [run[0]] + [
        jnp.where(boundaries[i] == boundaries[i - 1], 1.0, run[i]) for i in range(1, len(boundaries))
    ]
    return boundaries, merged_scales


# --------------------------------------------------------------------------- implementations


def _piecewise_constant(init_value: Any, boundaries: list, scales: list) -> Schedule:
    def schedule(count):
        count = _fit(count)
        value = _arg(init_value)
        for b, s in zip(map(_fit, boundaries), scales, strict=True):
            before = jnp.maximum(0.0, jnp.sign(b - count))  # 1 before the boundary, 0 from it on
            value = value * before + (1 - before) * s * value
        return _out(value, count)

    return schedule


def _linear_piece(start, end, pct):
    return (end - start) * pct + start


def _cosine_piece(start, end, pct):
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


def _piecewise_interpolate(interpolate_type: str, init_value: Any, boundaries: list, scales: list):
    piece = _linear_piece if interpolate_type == "linear" else _cosine_piece

    def schedule(count):
        count = _fit(count)
        t = jnp.expand_dims(jnp.asarray(count), -1)  # pieces along a trailing axis
        bounds = jnp.stack([0, *map(_fit, boundaries)])
        values = jnp.cumprod(jnp.stack([_arg(init_value), *scales]))
        lengths = jnp.maximum(bounds[1:] - bounds[:-1], 1)
        inside = (bounds[:-1] <= t) & (t < bounds[1:])
        pct = (t - bounds[:-1]) / lengths
        pieces = piece(values[:-1], values[1:], pct)
        # At most one piece is selected: the sum is that piece's value exactly.
        value = jnp.sum(jnp.where(inside, pieces, 0.0), axis=-1) + (bounds[-1] <= count) * values[-1]
        return _out(value, count)

    return schedule


# --------------------------------------------------------------------------- schedules


def piecewise_constant_schedule(
    init_value: Scalar, boundaries_and_scales: Mapping[int, Scalar] | None = None
) -> Schedule:
    r"""Piecewise constant with multiplicative jumps (as ``optax.piecewise_constant_schedule``).

    .. math:: v_t = I \prod_{i \,:\, t \ge b_i} s_i

    computed as optax does, one boundary at a time in increasing order:
    :math:`v \leftarrow v\,\beta_i + (1 - \beta_i)\, s_i\, v` with
    :math:`\beta_i = \max(0, \mathrm{sign}(b_i - t))`. Unlike optax's, the scales
    and ``init_value`` may be traced. For boundaries that are themselves traced,
    use :func:`piecewise_constant`.

    Args:
      init_value: :math:`I`.
      boundaries_and_scales: ``{b_i: s_i}``, boundaries :math:`b_i \ge 0` (Python
        numbers) and scales :math:`s_i \ge 0`; ``None`` or ``{}``: constant :math:`I`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})
      >>> [round(float(sched(t)), 4) for t in (0, 10, 25)]
      [1.0, 0.1, 0.05]
    """
    owner = "piecewise_constant_schedule"
    check_hyperparam(init_value, "init_value", owner=owner)
    boundaries, scales = _sorted_dict(boundaries_and_scales, owner)
    return _piecewise_constant(init_value, boundaries, scales)


def piecewise_constant(
    init_value: Scalar,
    boundaries: Boundaries | Mapping[int, float],
    scales: Sequence[Scalar] | Array | None = None,
) -> Schedule:
    r""":func:`piecewise_constant_schedule` with boundaries and scales as two sequences.

    .. math:: v_t = I \prod_{i \,:\, t \ge b_i} s_i

    Both sequences may be traced (e.g. vmapped over the boundaries).

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
        check_hyperparam(init_value, "init_value", owner=owner)
        return _piecewise_constant(init_value, *_sorted_dict(boundaries, owner))
    check_hyperparam(init_value, "init_value", owner=owner)
    n = _check_boundaries(boundaries, owner)
    n_scales = _length(scales, "scales", owner)
    check_same_length("boundaries", np.zeros(n), "scales", np.zeros(n_scales))
    if n:
        check_hyperparam(scales, "scales", low=0.0, owner=owner)
    return _piecewise_constant(init_value, _elements(boundaries, n), _elements(scales, n))


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


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: Scalar,
    boundaries_and_scales: Mapping[int, Scalar] | None = None,
) -> Schedule:
    r"""Interpolation between accumulated scales (as ``optax.piecewise_interpolate_schedule``).

    With boundaries :math:`0 = b_0 < b_1 < \dots < b_n` and the accumulated values
    :math:`y_0 = I`, :math:`y_i = y_{i-1} s_i` (a cumulative product), on
    :math:`[b_{i-1}, b_i)` the value goes from :math:`y_{i-1}` to :math:`y_i`:

    .. math::
      v_t = \begin{cases}
        (y_i - y_{i-1})\, q + y_{i-1}, & \text{linear} \\
        y_i + \tfrac{y_{i-1} - y_i}{2} \left(\cos \pi q + 1\right), & \text{cosine}
      \end{cases}
      \qquad q = \frac{t - b_{i-1}}{\max(b_i - b_{i-1}, 1)}

    and :math:`v_t = y_n` from :math:`t = b_n` on. The scales and ``init_value``
    may be traced; the boundaries (dict keys) are Python numbers.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"`` (structural).
      init_value: :math:`I`.
      boundaries_and_scales: ``{b_i: s_i}`` with :math:`b_i \ge 0` and :math:`s_i \ge 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
      >>> [round(float(sched(t)), 6) for t in (0, 2, 4, 6, 8, 10)]
      [1.0, 0.55, 0.1, 0.0505, 0.001, 0.001]
    """
    owner = "piecewise_interpolate_schedule"
    if interpolate_type not in _INTERPOLATIONS:
        got = f"got {interpolate_type!r}"
        raise ValueError(f"{owner}: interpolate_type must be one of {_INTERPOLATIONS}, {got}")
    check_hyperparam(init_value, "init_value", owner=owner)
    boundaries, scales = _sorted_dict(boundaries_and_scales, owner)
    return _piecewise_interpolate(interpolate_type, init_value, boundaries, scales)
