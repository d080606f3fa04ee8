r"""Explicit regularizers: coupled L2, L1 subgradient and the L1 proximal step.

Where they go in a chain matters:

* :func:`add_l2_penalty` and :func:`add_l1_subgradient` add the penalty's
  (sub)gradient to the raw gradient, so place them *before* the preconditioner
  ("Adam + L2"): ``chain(add_l2_penalty(1e-4), scale_by_adam(), scale_by_learning_rate(lr))``.
  Compare :func:`jopt.add_decayed_weights` (decoupled decay, placed *after* it).
* :func:`proximal_l1` is a soft-threshold applied to the parameters the
  optimizer would produce, so place it *last*, after the learning rate:
  ``chain(scale_by_adam(), scale_by_learning_rate(lr), proximal_l1(l1, lr))``.
  Unlike the subgradient it sets small weights to exactly zero.

Every strength is a hyperparameter (number, array, traced value or schedule).
``mask`` is a pytree (or prefix) of booleans, or a function ``params -> mask``,
selecting the leaves to regularize; a leaf of the mask may also be a boolean
array (elementwise mask).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype
from jopt.transforms.weight_decay import MaskOrFn, resolve_mask

Array = jax.Array
PyTree = Any

__all__ = ["RegularizationState", "add_l1_subgradient", "add_l2_penalty", "proximal_l1"]


class RegularizationState(NamedTuple):
    """Step counter and the regularization strengths used at the latest step."""

    count: Array
    hyperparams: dict[str, Array]


def _masked_param_rule(
    owner: str,
    hp: dict[str, Hyperparam],
    mask: MaskOrFn,
    rule: Callable[[Array, Array, dict[str, Array]], Array],
) -> GradientTransformation:
    """Apply ``rule(u, p, h)`` (in the compute dtype) to the selected leaves."""

    def step(updates, state, params, h, count):
        def one(on, u, p):
            if on is False:
                return u
            dt = compute_dtype(u.dtype)
            hd = {k: cast_hyperparam(v, dt) for k, v in h.items()}
            new = rule(u.astype(dt), p.astype(dt), hd).astype(u.dtype)
            return new if on is True else jnp.where(on, new, u)

        return jax.tree.map(one, resolve_mask(mask, params), updates, params), ()

    ranges = {k: NONNEGATIVE for k in hp}
    return hyperparam_transformation(owner, hp, ranges, RegularizationState, step, needs_params=True)


def add_l2_penalty(l2: Hyperparam, mask: MaskOrFn = None) -> GradientTransformation:
    r"""Add the gradient of :math:`\tfrac{\lambda}{2}\|\theta\|^2` to the gradient (coupled L2).

    .. math:: g \leftarrow g + \lambda_t\,\theta

    Place it before the preconditioner (e.g. Adam), which then rescales the
    penalty like any other gradient; that is the difference from decoupled
    weight decay (:func:`jopt.add_decayed_weights`).

    Args:
      l2: :math:`\lambda \ge 0`; number, array or schedule.
      mask: leaves to regularize (see module docstring); all when ``None``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.add_l2_penalty(0.1)
      >>> p = {"w": jnp.array([1.0, -2.0])}
      >>> u, _ = tx.update({"w": jnp.zeros(2)}, tx.init(p), p)
      >>> [round(float(x), 4) for x in u["w"]]
      [0.1, -0.2]
    """
    return _masked_param_rule("add_l2_penalty", {"l2": l2}, mask, lambda u, p, h: u + h["l2"] * p)


def add_l1_subgradient(l1: Hyperparam, mask: MaskOrFn = None) -> GradientTransformation:
    r"""Add a subgradient of :math:`\lambda\|\theta\|_1` to the gradient.

    .. math:: g \leftarrow g + \lambda_t\,\operatorname{sign}(\theta)

    (with :math:`\operatorname{sign}(0) = 0`). Weights oscillate around zero
    rather than reaching it; use :func:`proximal_l1` for exact sparsity.

    Args:
      l1: :math:`\lambda \ge 0`; number, array or schedule.
      mask: leaves to regularize (see module docstring); all when ``None``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.add_l1_subgradient(0.1)
      >>> p = {"w": jnp.array([3.0, 0.0, -2.0])}
      >>> u, _ = tx.update({"w": jnp.zeros(3)}, tx.init(p), p)
      >>> [round(float(x), 4) for x in u["w"]]
      [0.1, 0.0, -0.1]
    """
    return _masked_param_rule(
        "add_l1_subgradient", {"l1": l1}, mask, lambda u, p, h: u + h["l1"] * jnp.sign(p)
    )


def proximal_l1(l1: Hyperparam, learning_rate: Hyperparam, mask: MaskOrFn = None) -> GradientTransformation:
    r"""Proximal step of :math:`\lambda\|\theta\|_1` (soft-thresholding), expressed as an update.

    With :math:`\tilde\theta = \theta + u` the parameters the preceding
    transforms propose:

    .. math::
       \theta_{\text{new}} = \operatorname{sign}(\tilde\theta)\,
         \max(|\tilde\theta| - \eta_t \lambda_t,\ 0),
       \qquad u \leftarrow \theta_{\text{new}} - \theta

    Entries with :math:`|\tilde\theta| \le \eta\lambda` become exactly zero after
    ``apply_updates``. Place it last in the chain (after the learning rate), and
    pass the same ``learning_rate`` (number or schedule) the optimizer uses: with
    a schedule both count the same steps.

    Args:
      l1: :math:`\lambda \ge 0`; number, array or schedule.
      learning_rate: :math:`\eta \ge 0`; number, array or schedule.
      mask: leaves to regularize (see module docstring); all when ``None``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.chain(jopt.scale_by_learning_rate(0.1), jopt.proximal_l1(1.0, 0.1))
      >>> p = {"w": jnp.array([0.05, 1.0])}
      >>> u, _ = tx.update({"w": jnp.zeros(2)}, tx.init(p), p)
      >>> [round(float(x), 4) for x in jopt.apply_updates(p, u)["w"]]
      [0.0, 0.9]
    """

    def rule(u, p, h):
        proposed = p + u
        shrunk = jnp.maximum(jnp.abs(proposed) - h["learning_rate"] * h["l1"], 0.0)
        return jnp.sign(proposed) * shrunk - p

    return _masked_param_rule("proximal_l1", {"l1": l1, "learning_rate": learning_rate}, mask, rule)
