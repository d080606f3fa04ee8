r"""Schedule-Free learning (Defazio et al., 2024): averaging and interpolation instead of momentum.

`The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_ keeps three
sequences: the base optimizer's iterate :math:`z_t`, its weighted average
:math:`x_t` (where the model is *evaluated*) and their interpolation
:math:`y_t` (where gradients are taken, and what the training loop holds as
``params``). Only :math:`z` is stored; :math:`x` is recovered from :math:`y` and
:math:`z`, so the memory cost is the base optimizer's plus one copy of the
parameters. No learning-rate decay is needed; evaluate (and export) the
parameters given by :func:`schedule_free_eval_params`.

The names, arguments and defaults are optax's (``optax.contrib.schedule_free``);
the optimizers built on this wrapper are in :mod:`jopt.optimizers.schedule_free`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, hyperparam_transformation
from jopt.hyperparams import (
    ANY,
    NONNEGATIVE,
    Hyperparam,
    Range,
    cast_hyperparam,
    compute_dtype,
    is_python_number,
)
from jopt.tree import dtype as tree_dtype
from jopt.tree import safe_increment

Array = jax.Array
PyTree = Any

__all__ = ["ScheduleFreeState", "schedule_free", "schedule_free_eval_params"]

B1_RANGE = Range(0.0, 1.0, low_open=True)
r""":math:`\beta_1 \in (0, 1]`: the eval point :math:`x` is recovered by dividing by :math:`\beta_1`."""


class ScheduleFreeState(NamedTuple):
    r"""State of :func:`schedule_free`: optax's fields, with ``count`` first and ``hyperparams`` last.

    Attributes:
      count: number of updates so far (int32); optax's ``step_count`` is ``count + 1``
        (also available as the ``step_count`` property).
      b1: the :math:`\beta_1` of the latest step, read by :func:`schedule_free_eval_params`.
      weight_sum: :math:`\sum_{i \le t} \eta_{\max,i}^r`, the total averaging weight.
      max_lr: the largest learning rate seen, :math:`\eta_{\max,t}`.
      base_optimizer_state: the wrapped optimizer's state.
      z: the base optimizer's iterate :math:`z_t` (in ``state_dtype``).
      hyperparams: the hyperparameters of the latest step that are not Python numbers.
    """

    count: Array
    b1: Array
    weight_sum: Array
    max_lr: Array
    base_optimizer_state: Any
    z: PyTree
    hyperparams: dict[str, Array]

    @property
    def step_count(self) -> Array:
        """optax's 1-based step counter, ``count + 1`` (saturating)."""
        return safe_increment(self.count)


def _is_schedule_free_state(node: Any) -> bool:
    fields = getattr(node, "_fields", ())
    return isinstance(node, tuple) and "b1" in fields and "z" in fields


def _find_state(state: Any) -> Any:
    """The one schedule-free state in ``state`` (the state itself, or one nested in a combinator's)."""
    if _is_schedule_free_state(state):
        return state
    nodes = jax.tree.leaves(state, is_leaf=_is_schedule_free_state)
    found = [n for n in nodes if _is_schedule_free_state(n)]
    if len(found) != 1:
        what = "none" if not found else f"{len(found)}"
        raise ValueError(
            "schedule_free_eval_params requires a ScheduleFreeState as input "
            f"(or an optimizer state holding exactly one; found {what})"
        )
    return found[0]


def _result_dtype(y: Array, z: Array) -> Any:
    """The parameters' dtype, unless a complex ``z`` meets real parameters (then the promoted one)."""
    if jnp.iscomplexobj(z) and not jnp.iscomplexobj(y):
        return jnp.promote_types(y.dtype, z.dtype)
    return y.dtype


def schedule_free_eval_params(state: Any, params: PyTree) -> PyTree:
    r"""The evaluation point :math:`x_t` of :func:`schedule_free`, from the training parameters :math:`y_t`.

    .. math:: x_t = \frac{y_t - (1 - \beta_1)\, z_t}{\beta_1}

    Args:
      state: a :class:`ScheduleFreeState`, or an optimizer state holding exactly
        one (e.g. ``chain(clip_by_global_norm(1.0), schedule_free_adamw())``'s).
      params: the parameters the training loop holds (:math:`y_t`).

    Returns:
      :math:`x_t`, with the parameters' structure and dtypes.

    Raises:
      ValueError: when ``state`` holds no schedule-free state (or several).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.schedule_free_sgd(learning_rate=0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jax.grad(lambda p: jnp.sum(p**2))(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> [round(v, 3) for v in params.tolist()]  # the training point y
      [0.631, -1.262]
      >>> [round(v, 3) for v in jopt.schedule_free_eval_params(state, params).tolist()]  # the eval point x
      [0.646, -1.292]
    """
    found = _find_state(state)
    b1 = found.b1

    def one(y, z):
        return ((y - (1.0 - b1) * z) / b1).astype(_result_dtype(y, z))

    return jax.tree.map(one, params, found.z)


def _at_step_count(value: Hyperparam) -> Hyperparam:
    """A schedule called with optax's ``step_count`` (``count + 1``); other values unchanged."""
    if not callable(value):
        return value
    return lambda count: value(safe_increment(count))


def _averaging_weight(max_lr: Array, weight_sum: Array, power: Any) -> tuple[Array, Array]:
    r"""The averaging coefficient :math:`c_t = w_t / \sum_{i \le t} w_i`, :math:`w_t = \eta_{\max,t}^r`.

    A zero total (zero learning rates so far) gives :math:`c_t = 0`; a NaN weight stays NaN.
    """
    weight = max_lr ** cast_hyperparam(power, max_lr.dtype)
    total = weight_sum + weight
    ck = jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf)
    ck = jnp.where(jnp.isnan(weight) | jnp.isnan(total), jnp.nan, ck)
    return ck, total


def _interpolate(y, z_old, z_new, ck, b1_prev, b1_now):
    """One leaf: recover :math:`x_t` from :math:`(y_t, z_t)`, average in :math:`z_{t+1}`, return the step."""
    dt = compute_dtype(jnp.promote_types(y.dtype, z_old.dtype))
    y, z_old, z_new = y.astype(dt), z_old.astype(dt), z_new.astype(dt)
    x_prev = (y - (1.0 - b1_prev) * z_old) / b1_prev
    x = (1.0 - ck) * x_prev + ck * z_new
    return b1_now * x + (1.0 - b1_now) * z_new - y


def schedule_free(
    base_optimizer: Any,
    learning_rate: Hyperparam,
    b1: Hyperparam = 0.9,
    weight_lr_power: Hyperparam = 2.0,
    state_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Make ``base_optimizer`` schedule-free (Defazio et al., 2024).

    With :math:`u_t` the base optimizer's update at the training parameters
    :math:`y_t`, :math:`\eta_{\max,t} = \max_{i \le t} \eta_i` and :math:`r` =
    ``weight_lr_power``:

    .. math::

        z_{t+1} &= z_t + u_t, \qquad
        c_{t+1} = \frac{\eta_{\max,t}^r}{\sum_{i \le t} \eta_{\max,i}^r} \\
        x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}, \qquad
        y_{t+1} = \beta_1 x_{t+1} + (1 - \beta_1)\, z_{t+1}

    with :math:`x_t = (y_t - (1 - \beta_1) z_t) / \beta_1` recomputed at every
    step and :math:`x_0 = y_0 = z_0` the initial parameters. The returned update
    is :math:`y_{t+1} - y_t`. Evaluate at :math:`x_t`
    (:func:`schedule_free_eval_params`). Give the base optimizer no momentum
    (e.g. ``adam(..., b1=0.0)``): the interpolation replaces it.

    Args:
      base_optimizer: the optimizer producing :math:`u_t` (jopt or optax).
      learning_rate: :math:`\eta_t \ge 0`, only used for the averaging weights
        (pass the base optimizer's rate: constant, or a warmup without decay).
        A schedule is called with optax's ``step_count`` (``count + 1``).
      b1: :math:`\beta_1 \in (0, 1]`, the interpolation weight of :math:`x`.
      weight_lr_power: :math:`r`, the power of :math:`\eta_{\max}` in the averaging weights.
      state_dtype: dtype of :math:`z`; ``None``: the parameters' dtypes.

    Every numeric argument may be a number, an array, a traced value or a
    schedule (called with ``count + 1``, as optax's ``learning_rate``).
    ``weight_sum``, ``max_lr`` and ``b1`` are kept in at least float32 (optax
    keeps them in the parameters' lowest dtype, e.g. bfloat16).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.schedule_free(jopt.sgd(0.1), learning_rate=0.1, b1=0.9)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([1.0, 1.0])}, state, params)
      >>> [round(v, 4) for v in updates["w"].tolist()]  # c_1 = 1: x_1 = z_1 = params - 0.1 g = y_1
      [-0.1, -0.1]
    """
    base = as_transformation(base_optimizer)
    hp = {"learning_rate": learning_rate, "b1": b1, "weight_lr_power": weight_lr_power}
    ranges = {"learning_rate": NONNEGATIVE, "b1": B1_RANGE, "weight_lr_power": ANY}
    b1_is_constant = is_python_number(b1)
    state_dtype = None if state_dtype is None else jax.dtypes.canonicalize_dtype(state_dtype)

    def init_fields(params, h):
        sdt = jnp.finfo(compute_dtype(tree_dtype(params, "lowest"))).dtype
        z = params if state_dtype is None else jax.tree.map(lambda p: p.astype(state_dtype), params)
        z = jax.tree.map(jnp.array, z)  # a copy: params and z may both be donated to a jitted step
        weight_sum, max_lr = jnp.zeros([], sdt), jnp.zeros([], sdt)  # distinct buffers (donation)
        return (jnp.array(h["b1"], sdt), weight_sum, max_lr, base.init(params), z)

    def step(grads, state, params, h, count_inc):
        sdt = state.max_lr.dtype
        max_lr = jnp.maximum(state.max_lr, cast_hyperparam(h["learning_rate"], sdt))
        ck, weight_sum = _averaging_weight(max_lr, state.weight_sum, h["weight_lr_power"])
        extra = {k: v for k, v in h.items() if k not in hp}
        updates, base_state = base.update(grads, state.base_optimizer_state, params, **extra)
        z = jax.tree.map(lambda zi, u: (zi + u).astype(zi.dtype), state.z, updates)
        # A constant b1 is used as the Python number (optax's arithmetic); otherwise the x of
        # the previous step is recovered with the b1 that formed y there (a schedule may change it).
        b1_now = h["b1"] if b1_is_constant else cast_hyperparam(h["b1"], sdt)
        b1_prev = h["b1"] if b1_is_constant else state.b1
        new_updates = jax.tree.map(
            lambda y, z_old, z_new: _interpolate(y, z_old, z_new, ck, b1_prev, b1_now), params, state.z, z
        )
        return new_updates, (jnp.array(b1_now, sdt), weight_sum, max_lr, base_state, z)

    return hyperparam_transformation(
        "schedule_free",
        {k: _at_step_count(v) for k, v in hp.items()},
        ranges,
        ScheduleFreeState,
        step,
        init_fields,
        counted=True,
        needs_params=True,
        cast_fields=False,
        extra_args=base.extra_args,
    )
