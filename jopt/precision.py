r"""Mixed precision: a dtype policy and dynamic loss scaling.

Mixed-precision training keeps **float32 master parameters** and optimizer
state, runs the model in a low-precision **compute dtype** (bfloat16 or
float16) and returns outputs (logits, loss) in an **output dtype**::

    policy = jopt.precision.Policy.from_string("params=float32,compute=bfloat16,output=float32")

    def loss_fn(params, x, y):
        logits = model(policy.cast_to_compute(params), policy.cast_to_compute(x))
        return loss(policy.cast_to_output(logits), y)

Gradients with respect to the float32 parameters are float32, so every jopt
optimizer runs unchanged, and hyperparameters are always resolved in at least
float32 (``b2=0.999`` is never rounded to 1 in bfloat16).

float16 has a narrow range (about :math:`6\cdot10^{-8}` to :math:`65504`):
small gradients underflow to zero and large ones overflow to ``inf``.
**Dynamic loss scaling** multiplies the loss by a scale :math:`S` before
differentiating and divides the gradients by :math:`S` afterwards. With
:math:`c` consecutive finite steps, growth factor :math:`\gamma \ge 1`, backoff
:math:`\beta \in (0, 1]` and growth interval :math:`N`:

.. math::

    \hat g = g / S, \qquad
    (u, s) \leftarrow \begin{cases}
        f(\hat g, s) & \hat g \text{ finite} \\
        (0, s) & \text{otherwise (step skipped)}
    \end{cases}

    S \leftarrow \begin{cases}
        \min(\gamma S, S_{max}) & \hat g \text{ finite and } c + 1 \ge N \\
        S & \hat g \text{ finite and } c + 1 < N \\
        \max(\beta S, S_{min}) & \text{otherwise}
    \end{cases}

bfloat16 has float32's range and needs no loss scaling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, transformation
from jopt.hyperparams import (
    Hyperparam,
    as_array,
    check_hyperparam,
    is_concrete,
    resolve,
)
from jopt.tree import safe_increment, tree_all_finite

Array = jax.Array
PyTree = Any

__all__ = [
    "LossScaleState",
    "Policy",
    "current_loss_scale",
    "dynamic_loss_scale",
    "scale_loss",
    "unscale_grads",
]

_ALIASES = {
    "f32": "float32", "fp32": "float32", "float32": "float32", "full": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "f16": "float16", "fp16": "float16", "float16": "float16", "half": "float16",
    "f64": "float64", "fp64": "float64", "float64": "float64",
}  # fmt: skip


def _float_dtype(dtype: Any, name: str) -> jnp.dtype:
    if isinstance(dtype, str):
        dtype = _ALIASES.get(dtype.strip().lower(), dtype)
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"Policy: {name} must be a floating dtype, got {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"Policy: {name} must be a floating dtype, got {dtype!r}")
    return dt


def _cast_floats(tree: PyTree, dtype: jnp.dtype) -> PyTree:
    def one(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree.map(one, tree)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Dtypes of parameters, computation and outputs; casts touch floating leaves only.

    Attributes:
      param_dtype: dtype of the stored (master) parameters, typically float32.
      compute_dtype: dtype the model computes in (bfloat16, float16 or float32).
      output_dtype: dtype of the model's outputs and loss, typically float32.

    Example:
      >>> import jax.numpy as jnp, jopt, jopt.precision
      >>> policy = jopt.precision.Policy.from_string("params=float32,compute=bf16,output=float32")
      >>> tree = policy.cast_to_compute({"w": jnp.ones(2), "step": jnp.array(3)})
      >>> tree["w"].dtype, tree["step"].dtype
      (dtype(bfloat16), dtype('int32'))
    """

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    output_dtype: Any = jnp.float32

    def __post_init__(self):
        for field in ("param_dtype", "compute_dtype", "output_dtype"):
            object.__setattr__(self, field, _float_dtype(getattr(self, field), field))

    @classmethod
    def from_string(cls, spec: str) -> Policy:
        """Parse ``"params=float32,compute=bfloat16,output=float32"`` (``p``/``c``/``o`` also accepted).

        A single dtype (``"bf16"``) sets all three.
        """
        keys = {"params": "param_dtype", "param": "param_dtype", "p": "param_dtype",
                "compute": "compute_dtype", "c": "compute_dtype",
                "output": "output_dtype", "o": "output_dtype"}  # fmt: skip
        if "=" not in spec:
            return cls(spec, spec, spec)
        kwargs = {}
        for part in spec.split(","):
            key, _, value = part.partition("=")
            if key.strip().lower() not in keys or not value:
                raise ValueError(
                    f"Policy: spec entries must be params=/compute=/output=<dtype>, got {part!r}"
                )
            kwargs[keys[key.strip().lower()]] = value
        return cls(**kwargs)

    def cast_to_param(self, tree: PyTree) -> PyTree:
        """Cast floating leaves to ``param_dtype``."""
        return _cast_floats(tree, self.param_dtype)

    def cast_to_compute(self, tree: PyTree) -> PyTree:
        """Cast floating leaves to ``compute_dtype`` (parameters and inputs before the model)."""
        return _cast_floats(tree, self.compute_dtype)

    def cast_to_output(self, tree: PyTree) -> PyTree:
        """Cast floating leaves to ``output_dtype`` (model outputs, before the loss)."""
        return _cast_floats(tree, self.output_dtype)


class LossScaleState(NamedTuple):
    """State of :func:`dynamic_loss_scale`.

    Attributes:
      count: number of ``update`` calls.
      loss_scale: current scale :math:`S` (float32, whatever the parameter dtype).
      good_steps: consecutive finite steps since the scale last changed.
      skipped: total number of skipped (non-finite) steps.
      last_finite: whether the latest gradient was finite.
      inner_state: state of the wrapped optimizer (untouched by skipped steps).
      hyperparams: growth_factor, backoff_factor, growth_interval, min_scale and
        max_scale used at the latest step.
    """

    count: Array
    loss_scale: Array
    good_steps: Array
    skipped: Array
    last_finite: Array
    inner_state: Any
    hyperparams: dict[str, Array]


def dynamic_loss_scale(
    inner: Any,
    initial_scale: Hyperparam = 2.0**15,
    growth_factor: Hyperparam = 2.0,
    backoff_factor: Hyperparam = 0.5,
    growth_interval: Hyperparam = 2000,
    min_scale: Hyperparam = 1.0,
    max_scale: Hyperparam = 2.0**24,
) -> GradientTransformation:
    r"""Wrap ``inner`` with dynamic loss scaling (see the module docstring for the rule).

    ``update`` receives the gradients of the *scaled* loss
    (:func:`scale_loss`), divides them by :math:`S` in float32, and either
    applies ``inner`` or skips the step (zero update, ``inner`` state unchanged)
    when they are not finite; then it adjusts :math:`S`. All arguments except
    ``inner`` are data: they may be traced, vmapped or given as schedules.

    In data-parallel ``shard_map``/``pmap`` code put
    :func:`jopt.distributed.mean_gradients_over` *before* this wrapper
    (``jopt.chain(mean_gradients_over("data"), dynamic_loss_scale(opt))``), so
    that an overflow on one replica makes every replica skip the step.

    Args:
      inner: the optimizer to wrap (jopt or optax).
      initial_scale: :math:`S_0 > 0`.
      growth_factor: :math:`\gamma \ge 1` applied after ``growth_interval`` finite steps.
      backoff_factor: :math:`\beta \in (0, 1]` applied on a non-finite step.
      growth_interval: :math:`N \ge 1` (integer), finite steps between growths.
      min_scale: :math:`S_{min} > 0`, lower bound of the scale (use a value
        below 1 if even the unscaled gradients may overflow).
      max_scale: :math:`S_{max} \ge S_{min}`, upper bound of the scale.

    Example:
      >>> import jax, jax.numpy as jnp, jopt, jopt.precision
      >>> opt = jopt.precision.dynamic_loss_scale(jopt.sgd(0.1), initial_scale=1024.0)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> grads = jax.grad(lambda p: jopt.precision.scale_loss(loss(p), state))(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> [round(u, 6) for u in updates["w"].tolist()], float(state.loss_scale)
      ([-0.2, -0.2], 1024.0)
    """
    inner = as_transformation(inner)
    owner = "dynamic_loss_scale"
    check_hyperparam(initial_scale, "initial_scale", low=0.0, low_open=True, owner=owner)
    check_hyperparam(growth_factor, "growth_factor", low=1.0, owner=owner)
    check_hyperparam(backoff_factor, "backoff_factor", low=0.0, high=1.0, low_open=True, owner=owner)
    check_hyperparam(growth_interval, "growth_interval", low=1.0, integer=True, owner=owner)
    check_hyperparam(min_scale, "min_scale", low=0.0, low_open=True, owner=owner)
    check_hyperparam(max_scale, "max_scale", low=0.0, low_open=True, owner=owner)
    if is_concrete(min_scale) and is_concrete(max_scale) and float(min_scale) > float(max_scale):
        raise ValueError(f"{owner}: max_scale must be >= min_scale = {min_scale}, got {max_scale}")
    hp = {
        "growth_factor": growth_factor,
        "backoff_factor": backoff_factor,
        "growth_interval": growth_interval,
        "min_scale": min_scale,
        "max_scale": max_scale,
    }

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        return LossScaleState(
            count=zero,
            loss_scale=as_array(resolve(initial_scale, zero)),
            good_steps=zero,
            skipped=zero,
            last_finite=jnp.array(True),
            inner_state=inner.init(params),
            hyperparams={k: as_array(resolve(v, zero)) for k, v in hp.items()},
        )

    def update(updates, state, params=None, **extra_args):
        kwargs = {k: v for k, v in extra_args.items() if k in inner.extra_args}
        h = {k: as_array(resolve(v, state.count)) for k, v in hp.items()}
        scale = state.loss_scale
        grads = unscale_grads(updates, scale)
        finite = tree_all_finite(grads)

        def run_inner(inner_state):
            return inner.update(grads, inner_state, params, **kwargs)

        out_shape = jax.eval_shape(run_inner, state.inner_state)

        def skip(inner_state):
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape[0])
            same = jax.tree.map(lambda x, s: jnp.asarray(x, s.dtype), inner_state, out_shape[1])
            return zeros, same

        new_updates, inner_state = jax.lax.cond(finite, run_inner, skip, state.inner_state)
        good = safe_increment(state.good_steps)
        grow = finite & (good.astype(h["growth_interval"].dtype) >= h["growth_interval"])
        sdt = scale.dtype
        grown = jnp.minimum(scale * h["growth_factor"].astype(sdt), h["max_scale"].astype(sdt))
        shrunk = jnp.maximum(scale * h["backoff_factor"].astype(sdt), h["min_scale"].astype(sdt))
        new_scale = jnp.where(finite, jnp.where(grow, grown, scale), shrunk)
        new_state = LossScaleState(
            count=safe_increment(state.count),
            loss_scale=new_scale,
            good_steps=jnp.where(finite & ~grow, good, 0).astype(state.good_steps.dtype),
            skipped=jnp.where(finite, state.skipped, safe_increment(state.skipped)),
            last_finite=finite,
            inner_state=inner_state,
            hyperparams=h,
        )
        return new_updates, new_state

    return transformation(init, update, extra_args=inner.extra_args)


def current_loss_scale(state_or_scale: Any) -> Array:
    """The loss scale :math:`S`: from a :class:`LossScaleState`, any optimizer state containing one
    (e.g. ``jopt.chain(..., dynamic_loss_scale(...))``), or a number/array (returned as float32).

    Raises:
      ValueError: if a state contains no :class:`LossScaleState`.
    """
    if isinstance(state_or_scale, LossScaleState):
        return state_or_scale.loss_scale
    if isinstance(state_or_scale, (int, float)) or (
        hasattr(state_or_scale, "dtype") and hasattr(state_or_scale, "shape")
    ):
        return resolve(state_or_scale, 0)
    found = [
        s
        for s in jax.tree.leaves(state_or_scale, is_leaf=lambda n: isinstance(n, LossScaleState))
        if isinstance(s, LossScaleState)
    ]
    if not found:
        raise ValueError(
            "state_or_scale: the optimizer state contains no LossScaleState (dynamic_loss_scale)"
        )
    return found[0].loss_scale


def scale_loss(loss: Array, state_or_scale: Any) -> Array:
    r"""The scaled loss :math:`S\,L`, computed in at least float32 (so :math:`S` is never rounded).

    ``state_or_scale`` is a :class:`LossScaleState`, an optimizer state containing
    one, or the scale itself.
    """
    scale = current_loss_scale(state_or_scale)
    loss = jnp.asarray(loss)
    dt = jnp.promote_types(loss.dtype, scale.dtype)
    return loss.astype(dt) * scale.astype(dt)


def unscale_grads(grads: PyTree, state_or_scale: Any) -> PyTree:
    r""":math:`g / S` for every leaf, divided in at least float32, keeping each leaf's dtype."""
    scale = current_loss_scale(state_or_scale)

    def one(g):
        dt = jnp.promote_types(g.dtype, scale.dtype)
        return (g.astype(dt) / scale.astype(dt)).astype(g.dtype)

    return jax.tree.map(one, grads)
