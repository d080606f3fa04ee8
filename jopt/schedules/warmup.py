r"""Warmup schedules: a linear warmup followed by a constant, cosine, exponential,
linear or warmup-stable-decay phase.

``warmup_constant_schedule``, ``warmup_cosine_decay_schedule`` and
``warmup_exponential_decay_schedule`` have optax's arguments and compute optax's
float32 values bit for bit for Python-number arguments (``warmup_cosine_decay``
is jopt's name for the cosine one). Unlike optax's, every numeric argument may
be traced, e.g. vmapped over ``warmup_steps`` or ``peak_value``. The rules of
:mod:`jopt.schedules.basic` apply. ``decay_steps`` includes the warmup in the
cosine and linear variants (as optax).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.hyperparams import Scalar, Schedule, check_hyperparam, is_concrete
from jopt.schedules.basic import (
    _arg,
    _cosine,
    _cosine_weight,
    _exponential,
    _fraction,
    _interp,
    _is_static,
    _join,
    _num,
    _out,
    _polynomial,
    _step,
)

Array = jax.Array

__all__ = [
    "warmup_constant_schedule",
    "warmup_cosine_decay",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_linear_decay",
    "warmup_stable_decay",
]


def _check_le(a: Any, name_a: str, b: Any, name_b: str, owner: str, why: str = "") -> None:
    """Concrete ``a <= b`` or ValueError naming both arguments."""
    if not (is_concrete(a) and is_concrete(b)):
        return
    # compared in the arguments' own precision (a float32 0.85 is not above a Python 0.85)
    a_, b_ = (x if isinstance(x, (int, float)) else np.asarray(x) for x in (a, b))
    if np.any(a_ > b_):
        raise ValueError(f"{owner}: {name_a} must be <= {name_b}{why}, got {name_a}={a}, {name_b}={b}")


def _check_warmup(owner, init_value, peak_value, warmup_steps, decay_steps, end_value):
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(peak_value, "peak_value", owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    check_hyperparam(warmup_steps, "warmup_steps", low=0.0, owner=owner)
    check_hyperparam(decay_steps, "decay_steps", low=0.0, low_open=True, owner=owner)
    _check_le(
        warmup_steps, "warmup_steps", decay_steps, "decay_steps", owner, " (decay_steps includes the warmup)"
    )


def _warmup(init_value, peak_value, warmup_steps) -> Schedule:
    return _polynomial(init_value, peak_value, 1, warmup_steps, 0)


def _end_over_peak(end_value: Any, peak_value: Any) -> Any:
    """optax's ``alpha``: ``end / peak``, 0 for a zero peak (in Python for Python numbers)."""
    end, peak = _arg(end_value), _arg(peak_value)
    if _is_static(end) and _is_static(peak):
        return 0.0 if peak == 0.0 else end / peak
    return jnp.where(peak == 0, 0.0, end / jnp.where(peak == 0, 1, peak))


def warmup_constant_schedule(init_value: Scalar, peak_value: Scalar, warmup_steps: Scalar) -> Schedule:
    r"""Linear warmup, then constant (as ``optax.warmup_constant_schedule``).

    .. math:: v_t = (I - P) \left(1 - \frac{\mathrm{clip}(t, 0, W)}{W}\right) + P

    Args:
      init_value: :math:`I`, value at step 0.
      peak_value: :math:`P`, value from step :math:`W` on.
      warmup_steps: :math:`W \ge 0` (``0``: :math:`I` for ever, as optax).

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
      >>> [float(sched(t)) for t in (0, 2, 4, 100)]
      [0.0, 0.5, 1.0, 1.0]
    """
    owner = "warmup_constant_schedule"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(peak_value, "peak_value", owner=owner)
    check_hyperparam(warmup_steps, "warmup_steps", low=0.0, owner=owner)
    return _warmup(init_value, peak_value, warmup_steps)


def warmup_cosine_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: Scalar,
    decay_steps: Scalar,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    r"""Linear warmup, then cosine decay (as ``optax.warmup_cosine_decay_schedule``).

    The warmup of :func:`warmup_constant_schedule` up to step :math:`W`, then
    :func:`jopt.schedules.cosine_decay_schedule` of :math:`P` over :math:`T - W`
    steps with :math:`\alpha = E / P` (0 when :math:`P = 0`):

    .. math::
      v_t = P \left[(1 - \alpha)
        \left(\tfrac12 \left(1 + \cos \frac{\pi \min(t - W,\ T - W)}{T - W}\right)\right)^{p}
        + \alpha\right], \quad t \ge W

    As optax, a zero ``peak_value`` gives 0 after the warmup whatever
    ``end_value`` is. ``decay_steps`` :math:`T` is the total length, warmup
    included. Unlike optax's, every argument may be traced, e.g. vmapped over
    ``warmup_steps``; and :math:`W = T` is allowed (the value drops to
    :math:`P\alpha \approx E` at step :math:`T`; optax raises). Alias:
    :func:`warmup_cosine_decay`.

    Args:
      init_value: :math:`I`, value at step 0.
      peak_value: :math:`P`, value at the end of the warmup.
      warmup_steps: :math:`W \ge 0`.
      decay_steps: :math:`T > 0` with :math:`W \le T`.
      end_value: :math:`E`, value from step :math:`T` on.
      exponent: :math:`p > 0`.

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110)
      >>> [round(float(sched(t)), 4) for t in (0, 5, 10, 60, 110)]
      [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    owner = "warmup_cosine_decay_schedule"
    _check_warmup(owner, init_value, peak_value, warmup_steps, decay_steps, end_value)
    check_hyperparam(exponent, "exponent", low=0.0, low_open=True, owner=owner)
    alpha = _end_over_peak(end_value, peak_value)
    decay = _cosine(peak_value, _arg(decay_steps) - _arg(warmup_steps), alpha, exponent)
    return _join([_warmup(init_value, peak_value, warmup_steps), decay], [_arg(warmup_steps)])


def warmup_exponential_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: Scalar,
    transition_steps: Scalar,
    decay_rate: Scalar,
    transition_begin: Scalar = 0,
    staircase: bool | Array = False,
    end_value: Scalar | None = None,
) -> Schedule:
    r"""Linear warmup, then exponential decay (as ``optax.warmup_exponential_decay_schedule``).

    The warmup of :func:`warmup_constant_schedule` up to step :math:`W`, then
    :func:`jopt.schedules.exponential_decay` of :math:`P`, counted from :math:`W`:

    .. math::
      v_t = P\, r^{\,p_{t - W}}, \quad t \ge W, \qquad
      p_s = \frac{\max(s - B, 0)}{T} \text{ (floored with staircase)}

    (clipped at ``end_value`` when given, see :func:`jopt.schedules.exponential_decay`).

    Args:
      init_value: :math:`I`, value at step 0.
      peak_value: :math:`P`, value at the end of the warmup.
      warmup_steps: :math:`W \ge 0`.
      transition_steps: :math:`T > 0`.
      decay_rate: :math:`r > 0`.
      transition_begin: :math:`B \ge 0`, steps after the warmup before the decay starts.
      staircase: decay in discrete jumps (a bool, may be traced).
      end_value: optional bound (``None``: no bound; structural).

    Example:
      >>> import jopt
      >>> sched = jopt.schedules.warmup_exponential_decay_schedule(0.0, 1.0, 2, 10, 0.5)
      >>> [round(float(sched(t)), 4) for t in (0, 1, 2, 12, 22)]
      [0.0, 0.5, 1.0, 0.5, 0.25]
    """
    owner = "warmup_exponential_decay_schedule"
    check_hyperparam(init_value, "init_value", owner=owner)
    check_hyperparam(peak_value, "peak_value", owner=owner)
    check_hyperparam(warmup_steps, "warmup_steps", low=0.0, owner=owner)
    check_hyperparam(transition_steps, "transition_steps", low=0.0, low_open=True, owner=owner)
    check_hyperparam(decay_rate, "decay_rate", low=0.0, low_open=True, owner=owner)
    check_hyperparam(transition_begin, "transition_begin", low=0.0, owner=owner)
    check_hyperparam(end_value, "end_value", owner=owner)
    decay = _exponential(peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value)
    return _join([_warmup(init_value, peak_value, warmup_steps), decay], [_arg(warmup_steps)])


def _warmup_then(init, peak, warmup, t, decayed):
    """Linear warmup from ``init`` to ``peak`` over ``warmup`` steps, then ``decayed``."""
    warm = _interp(init, peak, _fraction(t, 0.0, warmup))
    return jnp.where(t < warmup, warm, decayed)


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

    (optax has no such schedule; its composition
    ``join_schedules([linear_schedule(I, P, W), linear_schedule(P, E, T - W)], [W])``
    gives the same values up to float32 rounding). Exact at the ends and monotone.

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


# jopt's name for the same schedule.
warmup_cosine_decay = warmup_cosine_decay_schedule
