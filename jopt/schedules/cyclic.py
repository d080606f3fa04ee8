r"""Cyclic schedules: one-cycle (cosine and linear) and SGDR / cosine with warm restarts.

``cosine_onecycle_schedule``, ``linear_onecycle_schedule`` and ``sgdr_schedule``
have optax's arguments and compute optax's float32 values bit for bit for
Python-number arguments (``one_cycle`` and ``sgdr`` are jopt's names for the
same functions). The rules of :mod:`jopt.schedules.basic` apply: every numeric
argument may be traced (optax's one-cycle schedules need Python numbers to
build their ``{boundary: scale}`` dict), concrete ones are validated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jopt.hyperparams import Scalar, Schedule, check_hyperparam
from jopt.schedules.basic import (
    _arg,
    _cosine_weight,
    _floor_div,
    _fraction,
    _interp,
    _is_static,
    _join,
    _num,
    _out,
    _safe_div,
    _step,
)
from jopt.schedules.piecewise import _merge_repeated, _piecewise_interpolate
from jopt.schedules.warmup import _check_le, warmup_cosine_decay_schedule

Array = jax.Array

__all__ = [
    "cosine_onecycle_schedule",
    "cosine_with_warm_restarts",
    "linear_onecycle_schedule",
    "one_cycle",
    "sgdr",
    "sgdr_schedule",
]


def _onecycle_step(pct: Any, transition_steps: Any) -> Any:
    """optax's ``int(pct * transition_steps)``: in Python for Python numbers, else truncated in float."""
    if _is_static(pct) and _is_static(transition_steps):
        return int(pct * transition_steps)
    return jnp.trunc(_arg(pct) * _arg(transition_steps))


def _check_onecycle(owner, transition_steps, peak_value, pct_start, div_factor, final_div_factor):
    check_hyperparam(transition_steps, "transition_steps", low=0.0, low_open=True, owner=owner)
    check_hyperparam(peak_value, "peak_value", owner=owner)
    check_hyperparam(pct_start, "pct_start", low=0.0, high=1.0, owner=owner)
    check_hyperparam(div_factor, "div_factor", low=0.0, low_open=True, owner=owner)
    check_hyperparam(final_div_factor, "final_div_factor", low=0.0, low_open=True, owner=owner)


def cosine_onecycle_schedule(
    transition_steps: Scalar,
    peak_value: Scalar,
    pct_start: Scalar = 0.3,
    div_factor: Scalar = 25.0,
    final_div_factor: Scalar = 1e4,
) -> Schedule:
    r"""One-cycle schedule with cosine phases (as ``optax.cosine_onecycle_schedule``).

    :func:`jopt.schedules.piecewise_interpolate_schedule` (cosine) from
    :math:`v_0 = P / d` with the scales :math:`\{b: d,\ T: 1/(d f)\}`,
    :math:`b = \lfloor \rho T \rfloor`: up from :math:`v_0` to :math:`v_0 d \approx P`
    on :math:`[0, b)`, down to :math:`v_0 / f` on :math:`[b, T)`, then constant:

    .. math::
      v_t = y_i + \tfrac{y_{i-1} - y_i}{2}\left(\cos \pi q + 1\right), \qquad
      (y_0, y_1, y_2) = (v_0,\ v_0 d,\ v_0 d / (d f))

    As optax, :math:`b = T` (``pct_start=1``) merges the two boundaries (the
    second scale wins). With traced arguments :math:`b` is truncated in float32,
    which can differ by one step from Python's ``int(pct_start * transition_steps)``
    when the product is within float32 rounding of an integer. Alias: :func:`one_cycle`.

    Args:
      transition_steps: :math:`T > 0`.
      peak_value: :math:`P`.
      pct_start: :math:`\rho \in [0, 1]`, fraction of the steps spent increasing.
      div_factor: :math:`d > 0`.
      final_div_factor: :math:`f > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.cosine_onecycle_schedule(100, 1.0, 0.3, div_factor=10, final_div_factor=100)
      >>> [round(float(sched(t)), 4) for t in (0, 30, 100)]
      [0.1, 1.0, 0.001]
    """
    owner = "cosine_onecycle_schedule"
    _check_onecycle(owner, transition_steps, peak_value, pct_start, div_factor, final_div_factor)
    peak, div, final = _arg(peak_value), _arg(div_factor), _arg(final_div_factor)
    steps = _arg(transition_steps)
    last = int(steps) if _is_static(steps) else jnp.trunc(steps)
    boundaries, scales = _merge_repeated([_onecycle_step(pct_start, steps), last], [div, 1.0 / (div * final)])
    return _piecewise_interpolate("cosine", peak / div, boundaries, scales)


def linear_onecycle_schedule(
    transition_steps: Scalar,
    peak_value: Scalar,
    pct_start: Scalar = 0.3,
    pct_final: Scalar = 0.85,
    div_factor: Scalar = 25.0,
    final_div_factor: Scalar = 1e4,
) -> Schedule:
    r"""One-cycle schedule with linear phases (as ``optax.linear_onecycle_schedule``).

    :func:`jopt.schedules.piecewise_interpolate_schedule` (linear) from
    :math:`v_0 = P / d` with the scales
    :math:`\{\lfloor \rho_s T \rfloor: d,\ \lfloor \rho_f T \rfloor: 1/d,\ T: 1/f\}`:
    up to :math:`\approx P` at :math:`\lfloor \rho_s T \rfloor`, back to :math:`\approx v_0`
    at :math:`\lfloor \rho_f T \rfloor`, down to :math:`\approx v_0 / f` at :math:`T`:

    .. math::
      v_t = (y_i - y_{i-1})\, q + y_{i-1}, \qquad
      (y_0, \dots, y_3) = (v_0,\ v_0 d,\ v_0 d / d,\ v_0 d / (d f))

    on each piece (:math:`q` the fraction of the piece elapsed). Coinciding
    boundaries merge as optax's dict does (the later scale wins).

    Args:
      transition_steps: :math:`T > 0`.
      peak_value: :math:`P`.
      pct_start: :math:`\rho_s \in [0, 1]`, where the peak is reached.
      pct_final: :math:`\rho_f \in [\rho_s, 1]`, where the value is back at :math:`v_0`.
      div_factor: :math:`d > 0`.
      final_div_factor: :math:`f > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.linear_onecycle_schedule(10, 1000, 0.3, 0.7, 10.0, 100.0)
      >>> [round(float(sched(t)), 3) for t in (0, 3, 5, 7, 10)]
      [100.0, 1000.0, 550.0, 100.0, 1.0]
    """
    owner = "linear_onecycle_schedule"
    _check_onecycle(owner, transition_steps, peak_value, pct_start, div_factor, final_div_factor)
    check_hyperparam(pct_final, "pct_final", low=0.0, high=1.0, owner=owner)
    _check_le(pct_start, "pct_start", pct_final, "pct_final", owner)
    peak, div, final = _arg(peak_value), _arg(div_factor), _arg(final_div_factor)
    steps = _arg(transition_steps)
    keys = [_onecycle_step(pct_start, steps), _onecycle_step(pct_final, steps), steps]
    boundaries, scales = _merge_repeated(keys, [div, 1.0 / div, 1.0 / final])
    return _piecewise_interpolate("linear", peak / div, boundaries, scales)


def cosine_with_warm_restarts(
    init_value: Scalar,
    first_cycle_steps: Scalar,
    cycle_mult: Scalar = 1.0,
    alpha: Scalar = 0.0,
) -> Schedule:
    r"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    Cycle :math:`k = 0, 1, \dots` lasts :math:`L_k = T_0 m^k` steps and starts at
    :math:`S_k = \sum_{j<k} L_j` (:math:`= k T_0` for :math:`m = 1`, else
    :math:`T_0 (m^k - 1)/(m - 1)`). For :math:`S_k \le t < S_{k+1}`:

    .. math::
      v_t = I \left[\alpha + (1 - \alpha)\,
        \tfrac12 \left(1 + \cos \frac{\pi (t - S_k)}{L_k}\right)\right]

    The cycle index is found in closed form,
    :math:`k = \lfloor \log(1 + t (m - 1) / T_0) / \log m \rfloor` (or
    :math:`\lfloor t / T_0 \rfloor` for :math:`m = 1`, selected with
    ``jnp.where`` so ``cycle_mult`` may be traced), then corrected by one cycle
    if rounding put it on the wrong side of a start. Cycle starts are computed
    in float32, so with non-integer :math:`S_k` (e.g. :math:`m` not a dyadic
    rational) a restart may move by one step from the exact real-number one.

    Args:
      init_value: :math:`I`, value at each restart.
      first_cycle_steps: :math:`T_0 > 0`.
      cycle_mult: :math:`m \ge 1`, growth factor of the cycle length.
      alpha: :math:`\alpha \in [0, 1]`, final multiplier of each cycle.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.cosine_with_warm_restarts(1.0, 10, cycle_mult=2.0)
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 20, 30)]
      [1.0, 0.5, 1.0, 0.5, 1.0]
    """
    owner = "cosine_with_warm_restarts"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(first_cycle_steps, "first_cycle_steps", low=0.0, low_open=True, owner=owner)
    check_hyperparam(cycle_mult, "cycle_mult", low=1.0, owner=owner)
    check_hyperparam(alpha, "alpha", low=0.0, high=1.0, owner=owner)

    def schedule(count):
        t = jnp.maximum(_step(count), 0.0)
        init, t0, m = _num(init_value), _num(first_cycle_steps), _num(cycle_mult)
        equal = m == 1.0
        m_safe = jnp.where(equal, 2.0, m)  # keeps the unused geometric branch finite

        def start(k):
            geometric = t0 * _safe_div(m_safe ** k.astype(jnp.int32) - 1.0, m_safe - 1.0)
            return jnp.where(equal, k * t0, geometric)

        k = jnp.where(
            equal,
            _floor_div(t, t0),
            jnp.floor(jnp.log1p(_safe_div(t, t0) * (m_safe - 1.0)) / jnp.log(m_safe)),
        )
        k = jnp.where(t >= start(k + 1.0), k + 1.0, k)
        k = jnp.maximum(jnp.where(t < start(k), k - 1.0, k), 0.0)
        length = t0 * jnp.where(equal, 1.0, m_safe ** k.astype(jnp.int32))
        q = _fraction(t, start(k), length)
        return _out(_interp(_num(alpha) * init, init, _cosine_weight(q)), t)

    return schedule


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    r"""SGDR as a list of warmup-cosine cycles (as ``optax.sgdr_schedule``).

    Cycle :math:`k` is ``warmup_cosine_decay_schedule(**cosine_kwargs[k])``,
    started at :math:`\sum_{j<k} T_j` where :math:`T_j` is cycle :math:`j`'s
    ``decay_steps``:

    .. math:: v_t = f_k\!\left(t - \textstyle\sum_{j<k} T_j\right)

    The number of cycles is structural; every value in the dicts may be traced.
    Alias: :func:`sgdr`.

    Args:
      cosine_kwargs: one dict of :func:`jopt.schedules.warmup_cosine_decay_schedule`
        arguments per cycle.

    Example:
      >>> import jopt
      >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
      >>> sched = jopt.schedules.sgdr_schedule([cycle, cycle])
      >>> [round(float(sched(t)), 4) for t in (0, 2, 10, 11, 12)]
      [0.0, 1.0, 0.0, 0.5, 1.0]
    """
    schedules, boundaries, total = [], [], 0
    for kwargs in cosine_kwargs:
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        total = total + _arg(kwargs["decay_steps"])
        boundaries.append(total)
    if not schedules:
        raise ValueError("sgdr_schedule: cosine_kwargs must hold at least one cycle")
    return _join(schedules, boundaries[:-1])


# jopt's names for the same schedules.
one_cycle = cosine_onecycle_schedule
sgdr = sgdr_schedule
