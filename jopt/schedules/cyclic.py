r"""Cosine, warmup, warmup-stable-decay, one-cycle and warm-restart schedules.

Same rules as :mod:`jopt.schedules.basic`: every numeric argument (values,
step counts, ``alpha``, ``exponent``, ``pct_start``, ``cycle_mult``, ...) may be
a Python number, a concrete array or a traced value; concrete arguments are
validated when the schedule is built, traced ones are not. Strings and lists of
schedules are structural. Outputs have the hyperparameter dtype (float32).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.hyperparams import Scalar, Schedule, check_hyperparam, is_concrete
from jopt.schedules.basic import (
    _cosine_weight,
    _floor_div,
    _fraction,
    _interp,
    _num,
    _out,
    _safe_div,
    _step,
    join,
)

Array = jax.Array

__all__ = [
    "cosine_decay",
    "cosine_with_warm_restarts",
    "one_cycle",
    "sgdr",
    "warmup_cosine_decay",
    "warmup_linear_decay",
    "warmup_stable_decay",
]


def _check_le(a: Any, name_a: str, b: Any, name_b: str, owner: str, why: str = "") -> None:
    """Concrete ``a <= b`` or ValueError naming both arguments."""
    if is_concrete(a) and is_concrete(b) and np.any(np.asarray(a, np.float64) > np.asarray(b, np.float64)):
        raise ValueError(f"{owner}: {name_a} must be <= {name_b}{why}, got {name_a}={a}, {name_b}={b}")


def cosine_decay(
    init_value: Scalar,
    decay_steps: Scalar,
    alpha: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    r"""Cosine decay from ``init_value`` to ``alpha * init_value`` (``optax.cosine_decay_schedule``).

    .. math::
      v_t = I \left[\alpha + (1 - \alpha)
        \left(\tfrac12 \left(1 + \cos \frac{\pi \min(t, T)}{T}\right)\right)^{p}\right]

    Args:
      init_value: :math:`I`.
      decay_steps: :math:`T > 0`.
      alpha: final multiplier :math:`\alpha \in [0, 1]`.
      exponent: :math:`p > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.cosine_decay(1.0, decay_steps=100, alpha=0.1)
      >>> [round(float(sched(t)), 4) for t in (0, 50, 100, 200)]
      [1.0, 0.55, 0.1, 0.1]
    """
    owner = "cosine_decay"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(decay_steps, "decay_steps", low=0.0, low_open=True, owner=owner)
    check_hyperparam(alpha, "alpha", low=0.0, high=1.0, owner=owner)
    check_hyperparam(exponent, "exponent", low=0.0, low_open=True, owner=owner)

    def schedule(count):
        t = _step(count)
        init = _num(init_value)
        p = _fraction(t, 0.0, _num(decay_steps))
        weight = _cosine_weight(p) ** _num(exponent)
        return _out(_interp(_num(alpha) * init, init, weight), t)

    return schedule


def _warmup_then(init, peak, warmup, t, decayed):
    """Linear warmup from ``init`` to ``peak`` over ``warmup`` steps, then ``decayed``."""
    warm = _interp(init, peak, _fraction(t, 0.0, warmup))
    return jnp.where(t < warmup, warm, decayed)


def _check_warmup(owner, init_value, peak_value, warmup_steps, decay_steps, end_value):
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(peak_value, "peak_value", owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    check_hyperparam(warmup_steps, "warmup_steps", low=0.0, owner=owner)
    check_hyperparam(decay_steps, "decay_steps", low=0.0, low_open=True, owner=owner)
    _check_le(
        warmup_steps, "warmup_steps", decay_steps, "decay_steps", owner, " (decay_steps includes the warmup)"
    )


def warmup_cosine_decay(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: Scalar,
    decay_steps: Scalar,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    r"""Linear warmup, then cosine decay (``optax.warmup_cosine_decay_schedule``).

    .. math::
      v_t = \begin{cases}
        I + (P - I)\,\frac{t}{W}, & t < W \\
        E + (P - E) \left(\tfrac12 \left(1 + \cos \pi q_t\right)\right)^{p},
          \quad q_t = \mathrm{clip}\!\left(\frac{t - W}{T - W}, 0, 1\right), & t \ge W
      \end{cases}

    ``decay_steps`` :math:`T` is the total length, warmup included (as optax).
    Unlike optax, every argument may be traced, e.g. vmapped over ``warmup_steps``.
    (For ``peak_value == 0`` optax returns 0 after the warmup whatever
    ``end_value`` is; here the decay still ends at ``end_value``.)

    Args:
      init_value: :math:`I`, value at step 0.
      peak_value: :math:`P`, value at the end of the warmup.
      warmup_steps: :math:`W \ge 0`.
      decay_steps: :math:`T > 0` with :math:`W \le T` (for :math:`W = T` the value
        drops to :math:`E` at step :math:`T`).
      end_value: :math:`E`, value from step :math:`T` on.
      exponent: :math:`p > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.warmup_cosine_decay(0.0, 1.0, warmup_steps=10, decay_steps=110)
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 60, 110)]
      [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    owner = "warmup_cosine_decay"
    _check_warmup(owner, init_value, peak_value, warmup_steps, decay_steps, end_value)
    check_hyperparam(exponent, "exponent", low=0.0, low_open=True, owner=owner)

    def schedule(count):
        t = _step(count)
        warmup, peak = _num(warmup_steps), _num(peak_value)
        q = _fraction(t, warmup, _num(decay_steps) - warmup)
        decayed = _interp(_num(end_value), peak, _cosine_weight(q) ** _num(exponent))
        return _out(_warmup_then(_num(init_value), peak, warmup, t, decayed), t)

    return schedule


def warmup_linear_decay(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: Scalar,
    decay_steps: Scalar,
    end_value: Scalar = 0.0,
) -> Schedule:
    r"""Linear warmup, then linear decay; ``decay_steps`` includes the warmup.

    .. math::
      v_t = \begin{cases}
        I + (P - I)\,\frac{t}{W}, & t < W \\
        P + (E - P)\,\mathrm{clip}\!\left(\frac{t - W}{T - W}, 0, 1\right), & t \ge W
      \end{cases}

    Args:
      init_value: :math:`I`.
      peak_value: :math:`P`.
      warmup_steps: :math:`W \ge 0`.
      decay_steps: total length :math:`T > 0`, :math:`W \le T`.
      end_value: :math:`E`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.warmup_linear_decay(0.0, 1.0, warmup_steps=10, decay_steps=20)
      >>> [float(sched(t)) for t in (0, 5, 10, 15, 20, 30)]
      [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    owner = "warmup_linear_decay"
    _check_warmup(owner, init_value, peak_value, warmup_steps, decay_steps, end_value)

    def schedule(count):
        t = _step(count)
        warmup, peak = _num(warmup_steps), _num(peak_value)
        q = _fraction(t, warmup, _num(decay_steps) - warmup)
        decayed = _interp(peak, _num(end_value), q)
        return _out(_warmup_then(_num(init_value), peak, warmup, t, decayed), t)

    return schedule


_WSD_DECAYS = ("linear", "cosine", "sqrt")


def warmup_stable_decay(
    peak_value: Scalar,
    warmup_steps: Scalar,
    stable_steps: Scalar,
    decay_steps: Scalar,
    init_value: Scalar = 0.0,
    end_value: Scalar = 0.0,
    decay: str = "linear",
) -> Schedule:
    r"""Warmup-stable-decay (WSD, "trapezoidal") schedule.

    Linear warmup to ``peak_value`` over :math:`W` steps, constant for :math:`S`
    steps, then a cooldown to ``end_value`` over :math:`D` steps:

    .. math::
      v_t = \begin{cases}
        I + (P - I)\,\frac{t}{W}, & t < W \\
        P, & W \le t < W + S \\
        E + (P - E)\, w(q_t), \quad q_t = \mathrm{clip}\!\left(\frac{t - W - S}{D}, 0, 1\right),
          & t \ge W + S
      \end{cases}

    with :math:`w(q) = 1 - q` (``"linear"``), :math:`\tfrac12 (1 + \cos \pi q)`
    (``"cosine"``) or :math:`1 - \sqrt{q}` (``"sqrt"``, the "1-sqrt" cooldown of
    Hägele et al., 2024). The total length is :math:`W + S + D`.

    Args:
      peak_value: :math:`P`.
      warmup_steps: :math:`W \ge 0`.
      stable_steps: :math:`S \ge 0`.
      decay_steps: :math:`D \ge 0` (length of the cooldown alone; 0 drops to
        :math:`E` at step :math:`W + S`).
      init_value: :math:`I`.
      end_value: :math:`E`.
      decay: cooldown shape, one of ``"linear"``, ``"cosine"``, ``"sqrt"`` (structural).

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.warmup_stable_decay(1.0, 10, 20, 10)
      >>> [float(sched(t)) for t in (0, 5, 10, 29, 30, 35, 40)]
      [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    owner = "warmup_stable_decay"
    if decay not in _WSD_DECAYS:
        raise ValueError(f"{owner}: decay must be one of {_WSD_DECAYS}, got {decay!r}")
    check_hyperparam(peak_value, "peak_value", owner=owner)
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    check_hyperparam(warmup_steps, "warmup_steps", low=0.0, owner=owner)
    check_hyperparam(stable_steps, "stable_steps", low=0.0, owner=owner)
    check_hyperparam(decay_steps, "decay_steps", low=0.0, owner=owner)

    def schedule(count):
        t = _step(count)
        warmup, peak = _num(warmup_steps), _num(peak_value)
        decay_begin = warmup + _num(stable_steps)
        q = _fraction(t, decay_begin, _num(decay_steps))
        if decay == "linear":
            weight = 1.0 - q
        elif decay == "cosine":
            weight = _cosine_weight(q)
        else:
            weight = 1.0 - jnp.sqrt(q)
        decayed = jnp.where(t < decay_begin, peak, _interp(_num(end_value), peak, weight))
        return _out(_warmup_then(_num(init_value), peak, warmup, t, decayed), t)

    return schedule


def one_cycle(
    transition_steps: Scalar,
    peak_value: Scalar,
    pct_start: Scalar = 0.3,
    div_factor: Scalar = 25.0,
    final_div_factor: Scalar = 1e4,
) -> Schedule:
    r"""One-cycle schedule with cosine phases (``optax.cosine_onecycle_schedule``).

    With :math:`v_0 = P / d`, :math:`v_\infty = v_0 / f` and the peak at
    :math:`b = \lfloor \rho\, T \rfloor`:

    .. math::
      v_t = \begin{cases}
        P + (v_0 - P)\, c\!\left(\frac{t}{\max(b, 1)}\right), & t < b \\
        v_\infty + (P - v_\infty)\, c\!\left(\frac{t - b}{\max(T - b, 1)}\right), & b \le t < T \\
        v_\infty, & t \ge T
      \end{cases}
      \qquad c(q) = \tfrac12 (1 + \cos \pi q)

    :math:`b` is computed in the hyperparameter dtype (float32), which can differ
    by one step from optax's float64 ``int(pct_start * transition_steps)`` when
    the product is within float32 rounding of an integer.

    Args:
      transition_steps: :math:`T > 0`.
      peak_value: :math:`P`.
      pct_start: :math:`\rho \in [0, 1]`, fraction of the steps spent increasing.
      div_factor: :math:`d > 0`.
      final_div_factor: :math:`f > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.one_cycle(100, 1.0, pct_start=0.3, div_factor=10, final_div_factor=100)
      >>> [round(float(sched(t)), 4) for t in (0, 30, 100)]
      [0.1, 1.0, 0.001]
    """
    owner = "one_cycle"
    check_hyperparam(transition_steps, "transition_steps", low=0.0, low_open=True, owner=owner)
    check_hyperparam(peak_value, "peak_value", owner=owner)
    check_hyperparam(pct_start, "pct_start", low=0.0, high=1.0, owner=owner)
    check_hyperparam(div_factor, "div_factor", low=0.0, low_open=True, owner=owner)
    check_hyperparam(final_div_factor, "final_div_factor", low=0.0, low_open=True, owner=owner)

    def schedule(count):
        t = _step(count)
        total, peak = _num(transition_steps), _num(peak_value)
        first = peak / _num(div_factor)
        last = first / _num(final_div_factor)
        b = jnp.floor(_num(pct_start) * total)
        up = _interp(peak, first, _cosine_weight(_fraction(t, 0.0, jnp.maximum(b, 1.0))))
        down = _interp(last, peak, _cosine_weight(_fraction(t, b, jnp.maximum(total - b, 1.0))))
        return _out(jnp.where(t < b, up, jnp.where(t < total, down, last)), t)

    return schedule


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


def sgdr(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    r"""SGDR as a list of warmup-cosine cycles (``optax.sgdr_schedule``).

    Cycle :math:`k` is ``warmup_cosine_decay(**cosine_kwargs[k])``, started at
    :math:`\sum_{j<k} T_j` where :math:`T_j` is cycle :math:`j`'s ``decay_steps``:

    .. math:: v_t = f_k\!\left(t - \textstyle\sum_{j<k} T_j\right)

    The number of cycles is structural; every value in the dicts may be traced.

    Args:
      cosine_kwargs: one dict of :func:`warmup_cosine_decay` arguments per cycle.

    Example:
      >>> import jopt
      >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
      >>> sched = jopt.schedules.sgdr([cycle, cycle])
      >>> [round(float(sched(t)), 4) for t in (0, 2, 10, 11, 12)]
      [0.0, 1.0, 0.0, 0.5, 1.0]
    """
    schedules, boundaries, total = [], [], 0
    for kwargs in cosine_kwargs:
        schedules.append(warmup_cosine_decay(**kwargs))
        total = total + kwargs["decay_steps"]
        boundaries.append(total)
    if not schedules:
        raise ValueError("sgdr: cosine_kwargs must hold at least one cycle")
    return join(schedules, boundaries[:-1])
