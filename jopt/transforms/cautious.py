r"""Cautious updates (Liang et al., 2024) and cautious weight decay (Chen et al., 2025).

*Cautious optimizers* keep only the update coordinates that point the same way
as the current gradient, and rescale the kept ones so that the update keeps its
size. With :math:`u_t` the optimizer's direction (the parameter moves by
:math:`-\eta u_t`) and :math:`d` the number of coordinates of a leaf,

.. math::

    \phi_t = \mathbb{1}(u_t \odot g_t > 0), \qquad
    \bar u_t = \frac{d}{\lVert\phi_t\rVert_0 + 1}\, \phi_t \odot u_t

(the rescaling of the paper's Algorithm 1 and C-Lion code; the authors'
later C-AdamW code divides by :math:`\max(\operatorname{mean}\phi_t, 10^{-3})`
instead, ``rescale="mean"``). :func:`cautious` wraps any optimizer this way.

*Cautious weight decay* (CWD, arXiv 2510.12402) applies decoupled decay only
where it agrees with the update, i.e. where the update already moves the
parameter towards zero:

.. math::

    \theta_{t+1} = \theta_t - \eta_t \big(u_t + \lambda\, \mathbb{1}(u_t \odot \theta_t \ge 0)
        \odot \theta_t\big)

:func:`add_cautious_decayed_weights` is that term, to be placed where
:func:`jopt.add_decayed_weights` goes (after the preconditioner, before the
learning rate). Neither is in optax; the tests compare with NumPy
transcriptions of these rules.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, hyperparam_transformation, transformation
from jopt.hyperparams import NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype
from jopt.transforms.weight_decay import MaskOrFn, resolve_mask

Array = jax.Array

__all__ = ["AddCautiousDecayedWeightsState", "CautiousState", "add_cautious_decayed_weights", "cautious"]

_RESCALES = ("paper", "mean", "none")


class CautiousState(NamedTuple):
    """State of :func:`cautious`: the wrapped optimizer's state."""

    inner_state: Any


def _alignment(u: Array, other: Array, dt: Any) -> Array:
    """:math:`\\operatorname{Re}(u \\bar v)` in ``dt``: positive where the two point the same way."""
    return jnp.real(u.astype(dt) * jnp.conj(other.astype(dt)))


def _cautious_leaf(u: Array | None, g: Array, descent_updates: bool, rescale: str) -> Array | None:
    if u is None:
        return None
    dt = compute_dtype(jnp.promote_types(u.dtype, g.dtype))
    agree = _alignment(u, g, dt)
    keep = (agree < 0 if descent_updates else agree > 0).astype(jnp.real(jnp.zeros((), dt)).dtype)
    if rescale == "paper":
        keep = keep * (keep.size / (jnp.sum(keep) + 1))
    elif rescale == "mean":
        keep = keep / jnp.maximum(jnp.mean(keep), 1e-3)
    return (u.astype(dt) * keep).astype(u.dtype)


def cautious(inner: Any, *, descent_updates: bool = True, rescale: str = "paper") -> GradientTransformation:
    r"""Wrap an optimizer so that it only moves coordinates where its update agrees with the gradient.

    .. math::

        \phi &= \mathbb{1}(\text{update and } -g \text{ have the same sign}), \qquad
        \text{update} \leftarrow s(\phi)\, \phi \odot \text{update}

    per leaf, with :math:`s(\phi) = d / (\lVert\phi\rVert_0 + 1)` (``rescale="paper"``),
    :math:`1 / \max(\operatorname{mean}\phi, 10^{-3})` (``"mean"``) or 1 (``"none"``).

    Args:
      inner: the optimizer (a jopt or optax transformation).
      descent_updates: ``True`` (default) when ``inner``'s updates are added to the
        parameters as they are (a whole optimizer such as :func:`jopt.adamw`,
        learning rate applied): a coordinate is kept where update and gradient
        have *opposite* signs. ``False`` for a direction that a later
        :func:`jopt.scale_by_learning_rate` negates (e.g. ``cautious(scale_by_adam())``
        inside a chain): kept where they have the *same* sign.
      rescale: ``"paper"``, ``"mean"`` or ``"none"`` (structural).

    Note that wrapping a whole optimizer with weight decay (``cautious(adamw(...))``)
    masks the decay too; the paper's C-AdamW masks only Adam's direction
    (:func:`jopt.cautious_adamw`).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.cautious(jopt.sgd(1.0, momentum=0.9))
      >>> params = {"w": jnp.zeros(3)}
      >>> state = opt.init(params)
      >>> _, state = opt.update({"w": jnp.array([1.0, 1.0, 1.0])}, state, params)
      >>> u, state = opt.update({"w": jnp.array([1.0, -0.5, 0.5])}, state, params)
      >>> print(u["w"])  # momentum 0.4 > 0 against g = -0.5: dropped; the rest scaled by 3/(2+1)
      [-1.9 -0.  -1.4]
    """
    if rescale not in _RESCALES:
        raise ValueError(f"cautious: rescale must be one of {list(_RESCALES)}, got {rescale!r}")
    inner = as_transformation(inner)

    def init(params):
        return CautiousState(inner.init(params))

    def update(updates, state, params=None, **extra_args):
        kwargs = {k: v for k, v in extra_args.items() if k in inner.extra_args}
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **kwargs)
        masked = jax.tree.map(
            lambda u, g: _cautious_leaf(u, g, descent_updates, rescale),
            new_updates,
            updates,
            is_leaf=lambda x: x is None,
        )
        return masked, CautiousState(inner_state)

    return transformation(init, update, extra_args=inner.extra_args)


class AddCautiousDecayedWeightsState(NamedTuple):
    """Step counter (``None`` without a schedule) and the weight decay (if not a constant)."""

    count: Array | None
    hyperparams: dict[str, Array]


def add_cautious_decayed_weights(
    weight_decay: Hyperparam = 0.0, mask: MaskOrFn = None
) -> GradientTransformation:
    r"""Add :math:`\lambda_t\, \mathbb{1}(u \odot \theta \ge 0) \odot \theta` to the direction :math:`u`.

    Cautious weight decay (Chen et al., 2025): decoupled decay only on the
    coordinates where the direction :math:`u` (to be negated by the learning
    rate) and the parameter have the same sign, so the decay never opposes the
    optimizer. Place it where :func:`jopt.add_decayed_weights` goes.

    Args:
      weight_decay: :math:`\lambda \ge 0`; number, array or schedule.
      mask: pytree of bools (or a function ``params -> pytree``) selecting the leaves to decay.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.add_cautious_decayed_weights(0.5)
      >>> p = {"w": jnp.array([2.0, 2.0])}
      >>> u, _ = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(p), p)
      >>> print(u["w"])  # decayed where u and theta agree in sign
      [ 2. -1.]
    """

    def step(updates, state, params, h, count):
        wd = h["weight_decay"]

        def decay(u, p, on):
            if on is False or u is None:
                return u
            dt = compute_dtype(jnp.promote_types(u.dtype, p.dtype))
            gate = (_alignment(u, p, dt) >= 0).astype(dt)
            new = (u.astype(dt) + cast_hyperparam(wd, dt) * gate * p.astype(dt)).astype(u.dtype)
            return new if on is True else jnp.where(on, new, u)

        selected = resolve_mask(mask, params)
        return jax.tree.map(lambda on, u, p: decay(u, p, on), selected, updates, params), ()

    hp, ranges = {"weight_decay": weight_decay}, {"weight_decay": NONNEGATIVE}
    return hyperparam_transformation(
        "add_cautious_decayed_weights", hp, ranges, AddCautiousDecayedWeightsState, step, needs_params=True
    )
