r"""Reduce-on-plateau: a loss-driven learning-rate scale.

The loss (or a validation metric) is averaged over ``accumulation_size`` calls;
each time an average is complete it is compared with the best average so far.
It *improves* when it beats the best by the relative and absolute tolerances:

.. math::
  \bar\ell < \ell_{\mathrm{best}} - \mathrm{rtol}\, |\ell_{\mathrm{best}}| - \mathrm{atol}

computed as :math:`(1 - \mathrm{rtol})\,\ell_{\mathrm{best}} - \mathrm{atol}` for
:math:`\ell_{\mathrm{best}} \ge 0` (optax's expression, with optax's bits) and as
:math:`(1 + \mathrm{rtol})\,\ell_{\mathrm{best}} - \mathrm{atol}` for a negative best.
After ``patience`` averages in a row without improvement the scale is multiplied
by ``factor`` (never below ``min_scale``), and the next ``cooldown`` averages are
ignored. These are the semantics of ``optax.contrib.reduce_on_plateau``, except
for negative losses: optax's threshold :math:`(1 - \mathrm{rtol})\,\ell_{\mathrm{best}}`
then lies *above* the best value, so a loss stuck at :math:`-1` counts as an
improvement every time and the scale never drops; here it is a plateau, exactly
like a loss stuck at :math:`+1`.

Two forms share this logic:

* :func:`reduce_on_plateau` is a *stateful schedule* (see
  :class:`jopt.transforms.scaling.StatefulSchedule`): the learning rate of any
  optimizer, e.g. ``jopt.adam(jopt.schedules.reduce_on_plateau(1e-3, patience=5))``
  or ``jopt.scale_by_learning_rate(...)``. The current (reduced) rate is readable
  with ``jopt.current_hyperparams(state)["learning_rate"]``.
* :func:`scale_by_plateau` is a gradient transformation scaling the updates, a
  drop-in for ``optax.contrib.reduce_on_plateau`` (same arguments and state fields).

Both read the loss from the extra argument ``value``:
``tx.update(grads, state, params, value=loss)``; forgetting it raises
``TypeError``. Every numeric argument (``factor``, ``patience``, ``cooldown``,
``rtol``, ``atol``, ``accumulation_size``, ``min_scale`` and the learning rate)
may be traced, so runs can be vmapped over them; concrete values are validated,
traced ones are not. ``patience``, ``cooldown`` and ``accumulation_size`` count
averages and are meant to be integers (a traced float is compared with the
integer counters as is; ``cooldown`` is truncated).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import GradientTransformation, transformation
from jopt.hyperparams import (
    Hyperparam,
    Scalar,
    check_hyperparam,
    hyperparam_dtype,
    is_concrete,
    is_python_number,
    resolve,
)
from jopt.tree import safe_increment, tree_scale, tree_select

Array = jax.Array

__all__ = [
    "PlateauState",
    "ReduceOnPlateau",
    "ScaleByPlateauState",
    "reduce_on_plateau",
    "scale_by_plateau",
]


class PlateauState(NamedTuple):
    """State of the plateau logic (field names and order as optax's ``ReduceLROnPlateauState``).

    Attributes:
      scale: current multiplier of the learning rate / updates.
      best_value: best average loss so far (``inf`` at first).
      plateau_count: averages since the last improvement (int32).
      cooldown_count: averages left in the current cooldown (int32).
      count: losses accumulated into ``avg_value`` so far (int32).
      avg_value: running mean of the losses of the current accumulation window.
    """

    scale: Array
    best_value: Array
    plateau_count: Array
    cooldown_count: Array
    count: Array
    avg_value: Array


class ScaleByPlateauState(NamedTuple):
    """State of :func:`scale_by_plateau`: :class:`PlateauState`'s fields plus the logged scale.

    Attributes:
      hyperparams: ``{"plateau_scale": scale}`` after the latest step (may be left out when a
        state is built by hand, as optax's ``ReduceLROnPlateauState(...)``; never mutated).
    """

    scale: Array
    best_value: Array
    plateau_count: Array
    cooldown_count: Array
    count: Array
    avg_value: Array
    hyperparams: dict[str, Array] = {}  # noqa: RUF012 - a default for hand-built states


def _check(owner: str, factor, patience, rtol, atol, cooldown, accumulation_size, min_scale) -> None:
    check_hyperparam(factor, "factor", low=0.0, high=1.0, low_open=True, high_open=True, owner=owner)
    check_hyperparam(patience, "patience", low=1.0, integer=True, owner=owner)
    check_hyperparam(rtol, "rtol", low=0.0, high=1.0, owner=owner)
    check_hyperparam(atol, "atol", low=0.0, owner=owner)
    check_hyperparam(cooldown, "cooldown", low=0.0, integer=True, owner=owner)
    check_hyperparam(accumulation_size, "accumulation_size", low=1.0, integer=True, owner=owner)
    check_hyperparam(min_scale, "min_scale", low=0.0, high=1.0, owner=owner)
    both_zero = is_concrete(rtol) and is_concrete(atol) and not (np.any(rtol) or np.any(atol))
    if both_zero:
        raise ValueError(f"{owner}: at least one of rtol and atol must be positive, got rtol=0 and atol=0")


def _initial_state() -> PlateauState:
    dt = hyperparam_dtype()
    zero = jnp.zeros([], jnp.int32)
    return PlateauState(
        scale=jnp.ones([], dt),
        best_value=jnp.asarray(jnp.inf, dt),
        plateau_count=zero,
        cooldown_count=zero,
        count=zero,
        avg_value=jnp.zeros([], dt),
    )


def _missing_value(owner: str) -> TypeError:
    return TypeError(
        f"{owner} needs the loss as the extra argument `value`: call update(..., value=loss) "
        "(for an optimizer: opt.update(grads, state, params, value=loss); note that optax.chain "
        "does not forward extra arguments to jopt transforms, jopt.chain does)"
    )


class _Config(NamedTuple):
    factor: Any
    patience: Any
    rtol: Any
    atol: Any
    cooldown: Any
    accumulation_size: Any
    min_scale: Any


def _plateau_step(state: PlateauState, value: Any, cfg: _Config, owner: str) -> PlateauState:
    """Accumulate one loss and, when the window is full, update the scale (optax semantics)."""
    if value is None:
        raise _missing_value(owner)
    value = jnp.asarray(value)
    if value.ndim != 0:
        raise ValueError(f"{owner}: value must be a scalar loss, got shape {value.shape}")
    dt = state.avg_value.dtype
    new_count = safe_increment(state.count)
    avg = ((state.count * state.avg_value + value.astype(dt)) / new_count).astype(dt)

    # Python numbers stay Python numbers (1 - rtol in double precision, as optax).
    rtol, atol, factor = (resolve(x, None) for x in (cfg.rtol, cfg.atol, cfg.factor))
    best_value = state.best_value
    shrunk = jnp.where(best_value >= 0, (1 - rtol) * best_value, (1 + rtol) * best_value)
    improved = avg < shrunk - atol  # avg < best - rtol * |best| - atol
    best = jnp.where(improved, avg, best_value)
    plateau = jnp.where(improved, 0, safe_increment(state.plateau_count))
    in_cooldown = state.cooldown_count > 0
    # plateau == 0 exactly when improved, so patience < 1 (only possible traced) acts as 1.
    reduce = jnp.logical_and(~in_cooldown, plateau >= jnp.maximum(jnp.asarray(cfg.patience), 1))
    scaled = jnp.where(reduce, state.scale * factor, state.scale)
    reduced = jnp.maximum(scaled, resolve(cfg.min_scale, None))
    cooldown = jnp.where(reduce, jnp.asarray(cfg.cooldown).astype(jnp.int32), 0)
    evaluated = PlateauState(
        scale=jnp.where(in_cooldown, state.scale, reduced).astype(state.scale.dtype),
        best_value=best.astype(state.best_value.dtype),
        plateau_count=jnp.where(in_cooldown | reduce, 0, plateau).astype(jnp.int32),
        cooldown_count=jnp.where(in_cooldown, state.cooldown_count - 1, cooldown).astype(jnp.int32),
        count=jnp.zeros([], jnp.int32),
        avg_value=jnp.zeros([], dt),
    )
    pending = state._replace(count=new_count, avg_value=avg)
    return tree_select(new_count >= jnp.asarray(cfg.accumulation_size), evaluated, pending)


class ReduceOnPlateau:
    r"""A learning rate reduced when the loss plateaus; built by :func:`reduce_on_plateau`.

    Implements :class:`jopt.transforms.scaling.StatefulSchedule`:
    ``init()`` returns a :class:`PlateauState` and
    ``update(state, count, value=loss)`` returns ``(learning_rate, new_state)``
    with :math:`\eta_t = \eta^{\mathrm{base}}_t \cdot s_t`, where :math:`s_t` is
    the plateau scale *after* taking this step's loss into account (as optax,
    which scales the current step's updates by the new scale).

    Attributes:
      extra_args: ``frozenset({"value"})``.
      initial_value: the base learning rate (number, array or schedule), the
        rate before any loss has been seen.
    """

    extra_args: frozenset[str] = frozenset({"value"})

    def __init__(self, learning_rate: Hyperparam, config: _Config):
        self.learning_rate = learning_rate
        self.config = config

    @property
    def initial_value(self) -> Hyperparam:
        return self.learning_rate

    def init(self) -> PlateauState:
        """The initial :class:`PlateauState` (scale 1, best value ``inf``)."""
        return _initial_state()

    def update(self, state: PlateauState, count: Array, *, value: Any = None) -> tuple[Array, PlateauState]:
        """Take the loss ``value`` of step ``count``; return the learning rate and the new state."""
        new_state = _plateau_step(state, value, self.config, "reduce_on_plateau")
        base = resolve(self.learning_rate, count)
        scale = new_state.scale if is_python_number(base) else new_state.scale.astype(base.dtype)
        return base * scale, new_state

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config._asdict().items())
        return f"reduce_on_plateau({self.learning_rate!r}, {args})"


def reduce_on_plateau(
    learning_rate: Hyperparam,
    *,
    factor: Scalar = 0.1,
    patience: Scalar = 10,
    rtol: Scalar = 1e-4,
    atol: Scalar = 0.0,
    cooldown: Scalar = 0,
    accumulation_size: Scalar = 1,
    min_scale: Scalar = 0.0,
) -> ReduceOnPlateau:
    r"""A learning rate that is reduced when the loss stops improving (a stateful schedule).

    .. math::
      \eta_t = \eta^{\mathrm{base}}_t\, s_t, \qquad
      s_t = \max(\gamma\, s_{t-1},\ s_{\min}) \text{ after } P \text{ averages without improvement}

    (see the module docstring for the improvement test and the cooldown). Use it
    as the learning rate of any optimizer and pass the loss with ``value=loss``.

    Args:
      learning_rate: base rate :math:`\eta^{\mathrm{base}}` (number, array,
        traced value or schedule ``step -> rate``), :math:`\ge 0`.
      factor: :math:`\gamma \in (0, 1)`.
      patience: :math:`P \ge 1` averages without improvement before reducing.
      rtol: relative tolerance in :math:`[0, 1]`.
      atol: absolute tolerance :math:`\ge 0` (not both zero).
      cooldown: averages to ignore after a reduction, :math:`\ge 0`.
      accumulation_size: losses averaged per comparison, :math:`\ge 1`.
      min_scale: :math:`s_{\min} \in [0, 1]`, lower bound of the scale.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_learning_rate(jopt.schedules.reduce_on_plateau(0.1, patience=2, factor=0.5))
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for loss in [1.0, 1.0, 1.0]:
      ...     updates, state = tx.update(params, state, params, value=loss)
      >>> round(float(jopt.current_hyperparams(state)["learning_rate"]), 6)
      0.05
    """
    owner = "reduce_on_plateau"
    if not callable(learning_rate):
        check_hyperparam(learning_rate, "learning_rate", low=0.0, owner=owner)
    _check(owner, factor, patience, rtol, atol, cooldown, accumulation_size, min_scale)
    cfg = _Config(factor, patience, rtol, atol, cooldown, accumulation_size, min_scale)
    return ReduceOnPlateau(learning_rate, cfg)


def scale_by_plateau(
    factor: Scalar = 0.1,
    patience: Scalar = 10,
    rtol: Scalar = 1e-4,
    atol: Scalar = 0.0,
    cooldown: Scalar = 0,
    accumulation_size: Scalar = 1,
    min_scale: Scalar = 0.0,
) -> GradientTransformation:
    r"""Scale updates by a factor reduced on loss plateaus (``optax.contrib.reduce_on_plateau``).

    .. math::
      u_t \leftarrow s_t\, u_t, \qquad
      s_t = \max(\gamma\, s_{t-1},\ s_{\min}) \text{ after } P \text{ averages without improvement}

    Same arguments (in the same order) and state fields as optax; unlike optax,
    every argument may be traced. The scale is kept in float32 and the updates
    keep their dtype. ``update`` requires the loss: ``value=loss``.

    Args:
      factor: :math:`\gamma \in (0, 1)`.
      patience: :math:`P \ge 1`.
      rtol: relative tolerance in :math:`[0, 1]`.
      atol: absolute tolerance :math:`\ge 0` (not both zero).
      cooldown: averages to ignore after a reduction, :math:`\ge 0`.
      accumulation_size: losses averaged per comparison, :math:`\ge 1`.
      min_scale: :math:`s_{\min} \in [0, 1]`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.chain(jopt.sgd(0.1), jopt.schedules.scale_by_plateau(factor=0.5, patience=1))
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> for loss in [1.0, 1.0]:
      ...     updates, state = tx.update(params, state, params, value=loss)
      >>> float(state[1].scale)
      0.5
    """
    owner = "scale_by_plateau"
    _check(owner, factor, patience, rtol, atol, cooldown, accumulation_size, min_scale)
    cfg = _Config(factor, patience, rtol, atol, cooldown, accumulation_size, min_scale)

    def init(params):
        del params
        s = _initial_state()
        return ScaleByPlateauState(*s, hyperparams={"plateau_scale": s.scale})

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        s = _plateau_step(PlateauState(*state[:6]), value, cfg, owner)
        return tree_scale(updates, s.scale), ScaleByPlateauState(*s, hyperparams={"plateau_scale": s.scale})

    return transformation(init, update, extra_args=("value",))
