r"""Sharpness-aware minimization: SAM (Foret et al., 2021) and adaptive SAM (Kwon et al., 2021).

SAM minimizes the worst loss in a neighbourhood of the parameters. Each outer
step first climbs: an *adversarial* optimizer moves the parameters towards
higher loss (SAM: :math:`\tilde\theta = \theta + \rho\, g / \|g\|`), the gradient
is taken there, and the *outer* optimizer applies that gradient to the original
parameters:

.. math::

    \tilde\theta_t = \theta_t + \rho \frac{\nabla L(\theta_t)}{\|\nabla L(\theta_t)\|_2}, \qquad
    \theta_{t+1} = \theta_t + \operatorname{opt}\big(\nabla L(\tilde\theta_t)\big)

:func:`sam` wraps any outer optimizer and any adversarial optimizer (the paper's
is ``chain(normalize(), sgd(rho))``; ``sync_period - 1`` adversarial steps per
outer step). Adaptive SAM (ASAM) scales the perturbation by the parameters'
magnitudes, making the sharpness measure invariant to rescaling of the weights:
use :func:`normalize_adaptive` in place of :func:`normalize`.

The names, arguments and defaults of :func:`sam`, :class:`SAMState` and
:func:`normalize` are optax 0.2.8's (``optax.contrib``); with the same members
the float32 and float64 results equal optax's bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import (
    AcceptsAnyExtraArg,
    GradientTransformation,
    as_transformation,
    hyperparam_transformation,
    transformation,
)
from jopt.hyperparams import NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype
from jopt.transforms.normalization import NormalizeState
from jopt.transforms.weight_decay import MaskOrFn, resolve_mask
from jopt.tree import norm

Array = jax.Array
PyTree = Any
GradFn = Callable[[PyTree, int], PyTree]

__all__ = ["SAMState", "normalize", "normalize_adaptive", "sam"]


def normalize() -> GradientTransformation:
    r"""Divide the updates by their global Euclidean norm (SAM's perturbation direction).

    .. math:: u \leftarrow \frac{g}{\|g\|_2}

    There is no :math:`\epsilon`: a zero gradient gives NaN, as in optax. The
    state is an empty :class:`jopt.NormalizeState` (optax's is ``EmptyState``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.normalize()
      >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([-4.0])}, tx.init(None))[0]["b"].tolist()
      [-0.800000011920929]
    """

    def step(updates, state, params, h, count_inc):
        del state, params, h, count_inc
        total = norm(updates)
        return jax.tree.map(lambda g: g / total, updates), ()

    return hyperparam_transformation("normalize", {}, {}, NormalizeState, step)


def normalize_adaptive(eta: Hyperparam = 0.01, mask: MaskOrFn = None) -> GradientTransformation:
    r"""Adaptive SAM's perturbation direction: the gradient in the parameters' own scale (Kwon et al., 2021).

    With the elementwise scale :math:`T_\theta = |\theta| + \eta` (:math:`T = 1` on
    leaves the mask leaves out):

    .. math:: u \leftarrow \frac{T_\theta^2 \odot g}{\|T_\theta \odot g\|_2}

    so ``sam(opt, chain(normalize_adaptive(eta), sgd(rho)))`` perturbs the
    parameters by :math:`\rho\, T_\theta^2 g / \|T_\theta g\|` (ASAM's
    :math:`\epsilon^*`, elementwise normalization; the norm is over all leaves).
    Needs ``params``. ASAM's radius is usually larger than SAM's (the paper uses
    :math:`\rho` from 0.5 to 2).

    Args:
      eta: :math:`\eta \ge 0`, keeps zero parameters perturbable; number, array or schedule.
      mask: the leaves scaled by :math:`|\theta| + \eta` (a pytree of bools, a prefix
        of one, or ``params -> pytree``; default all). The authors scale weights
        only: ``mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.normalize_adaptive(eta=0.0)
      >>> params = jnp.array([1.0, 2.0])
      >>> tx.update(jnp.array([3.0, 2.0]), tx.init(params), params)[0].tolist()  # (3, 8) / |(3, 4)|
      [0.6000000238418579, 1.600000023841858]
    """

    def step(updates, state, params, h, count_inc):
        del state, count_inc

        def scale(on, p):
            dt = compute_dtype(p.dtype)
            t = jnp.abs(p.astype(dt)) + cast_hyperparam(h["eta"], dt)
            return t if on is True else jnp.where(on, t, jnp.ones_like(t))

        scales = jax.tree.map(scale, resolve_mask(mask, params), params)
        scaled = jax.tree.map(lambda g, t: t * g.astype(t.dtype), updates, scales)
        total = norm(scaled)
        return jax.tree.map(lambda g, t: t * g / total.astype(g.dtype), scaled, scales), ()

    return hyperparam_transformation(
        "normalize_adaptive", {"eta": eta}, {"eta": NONNEGATIVE}, NormalizeState, step, needs_params=True
    )


class SAMState(NamedTuple):
    """State of :func:`sam`.

    Attributes:
      steps_since_sync: adversarial steps since the last outer step (int32).
      opt_state: the outer optimizer's state.
      adv_state: the adversarial optimizer's state.
      cache: the parameters at the last outer step (``None`` in opaque mode).
    """

    steps_since_sync: Array
    opt_state: Any
    adv_state: Any
    cache: PyTree | None


def _declared(*members: GradientTransformation) -> frozenset[str]:
    """``grad_fn`` and the members' extra arguments (open if a member takes any)."""
    names = frozenset({"grad_fn"}).union(*(tx.extra_args for tx in members))
    open_ = any(isinstance(tx.extra_args, AcceptsAnyExtraArg) for tx in members)
    return AcceptsAnyExtraArg(names) if open_ else names


def _for(tx: GradientTransformation, extra: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra.items() if k in tx.extra_args}


def _pick(cond: Array, if_true: PyTree, if_false: PyTree) -> PyTree:
    """``if_true`` where ``cond`` else ``if_false``, leafwise; floats as :math:`c a + (1 - c) b` (optax's)."""

    def one(a, b):
        if jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            return cond * a + (1 - cond) * b
        return jnp.where(cond, a, b)

    return jax.tree.map(one, if_true, if_false)


def _negate(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: -x, tree)


def _check_sync_period(sync_period: Any) -> None:
    if not isinstance(sync_period, int) or isinstance(sync_period, bool):
        raise TypeError(f"sam: sync_period must be an int, got {type(sync_period).__name__}")
    if sync_period < 1:
        raise ValueError(f"sam: sync_period must be in [1, inf], got {sync_period}")


def sam(
    optimizer: Any,
    adv_optimizer: Any,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformation:
    r"""Sharpness-aware minimization around any outer and adversarial optimizer.

    Each cycle of ``sync_period`` = :math:`K` steps makes :math:`K - 1`
    adversarial steps from the outer parameters :math:`\theta`, then one outer
    step with the last gradient, applied to :math:`\theta`:

    .. math::

        \tilde\theta^{(0)} = \theta, \quad
        \tilde\theta^{(i+1)} = \tilde\theta^{(i)} - \operatorname{adv}(g^{(i)}), \quad
        g^{(i)} = \nabla L(\tilde\theta^{(i)}), \qquad
        \theta \leftarrow \theta + \operatorname{opt}(g^{(K-1)})

    (the adversarial updates are negated: ``chain(normalize(), sgd(rho))`` climbs
    :math:`\rho\, g / \|g\|`).

    * Transparent mode (default): one step per ``update`` call. The caller's
      parameters follow the adversarial points, and every :math:`K`-th call
      returns the update that goes back to the cached outer parameters and
      applies the outer step, :math:`\theta + \operatorname{opt}(g) - \tilde\theta`.
      Fits any training loop.
    * Opaque mode: every call does a whole cycle; ``update`` then needs
      ``grad_fn=lambda params, i: gradients`` (the ``i``-th adversarial step's
      gradient function, called :math:`K - 1` times) and returns the outer update.
      Use it when a call has side effects besides the parameters (e.g. batch
      statistics).

    ``grad_fn`` is a declared extra argument in both modes; the members' own
    declared extra arguments are forwarded to them.

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the adversarial optimizer (its updates are negated).
      sync_period: :math:`K \ge 1` (an int, structural).
      reset_state: re-initialize the adversarial optimizer's state after each outer step.
      opaque_mode: run the whole cycle inside each ``update`` (see above).
      batch_axis_name: opaque mode only: average the adversarial gradients over
        this mapped axis (``jax.lax.pmean``).

    Floating-point state and updates are selected between the two branches as
    :math:`c\,a + (1 - c)\,b`, optax's arithmetic (needed for its bits under
    ``jax.jit``, where XLA fuses the selection with the arithmetic around it), so a
    NaN or infinity in the branch not taken propagates, as in optax (e.g.
    ``normalize`` of an exactly zero gradient). Integer and other leaves are
    selected with ``jnp.where``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.sam(jopt.sgd(0.1), jopt.chain(jopt.normalize(), jopt.sgd(0.05)))
      >>> loss = lambda p: jnp.sum(p**2)
      >>> params = jnp.array([3.0, 4.0])
      >>> state = opt.init(params)
      >>> for _ in range(2):  # an adversarial step, then the outer step
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> params.tolist()  # 0.8 * (3, 4) - 0.2 * 0.05 * (0.6, 0.8)
      [2.3940000534057617, 3.191999912261963]
    """
    _check_sync_period(sync_period)
    opt, adv = as_transformation(optimizer), as_transformation(adv_optimizer)

    def init(params):
        return SAMState(
            jnp.zeros([], jnp.int32), opt.init(params), adv.init(params), None if opaque_mode else params
        )

    def transparent_update(updates, state, params=None, grad_fn=None, **extra):
        del grad_fn
        first, last = state.steps_since_sync == 0, state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv.update(updates, state.adv_state, params, **_for(adv, extra))
        opt_updates, opt_state = opt.update(updates, state.opt_state, state.cache, **_for(opt, extra))
        back = jax.tree.map(lambda c, p, u: c - p + u, state.cache, params, opt_updates)
        kept_adv = adv.init(params) if reset_state else state.adv_state
        new_state = SAMState(
            (state.steps_since_sync + 1) % sync_period,
            _pick(last, opt_state, state.opt_state),
            _pick(last, kept_adv, adv_state),
            _pick(first, params, state.cache),
        )
        return _pick(last, back, _negate(adv_updates)), new_state

    def opaque_update(updates, state, params=None, grad_fn=None, **extra):
        if grad_fn is None:
            raise ValueError("sam(opaque_mode=True) needs the gradient function: pass grad_fn=f to update")
        adv_params, adv_state = params, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv.update(updates, adv_state, adv_params, **_for(adv, extra))
            adv_params = jax.tree.map(lambda p, u: (p - u).astype(p.dtype), adv_params, adv_updates)
            updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                updates = jax.lax.pmean(updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv.init(params)
        updates, opt_state = opt.update(updates, state.opt_state, params, **_for(opt, extra))
        return updates, SAMState(jnp.zeros([], jnp.int32), opt_state, adv_state, None)

    update = opaque_update if opaque_mode else transparent_update
    return transformation(init, update, extra_args=_declared(opt, adv))
