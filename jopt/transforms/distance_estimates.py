r"""Distance-based step sizes: DoG (Ivgi et al., 2023) and DoWG (Khaled et al., 2023).

Both scale plain gradients by a step size built from how far the iterates have
moved from the initial point :math:`x_0` and from the gradients seen so far, so
no learning rate has to be tuned (``optax.contrib.dog`` / ``dowg``).

Reading the estimates
---------------------
The learning-rate-free methods of jopt (:mod:`jopt.transforms.distance_estimates`,
:mod:`jopt.transforms.learning_rate_free`, :mod:`jopt.optimizers.learning_rate_free`)
keep their estimates as state fields and also show them in the state's
``hyperparams`` dict, so :func:`jopt.current_hyperparams` returns them next to
the (scheduled) learning rate, e.g. ``jopt.current_hyperparams(state)["estim_lr"]``.
``"estim_lr"`` is always the learning-rate multiplier the method has estimated
(DoG/DoWG: the step :math:`\eta_t` of the latest update). The helper
:func:`state_with_estimates` builds such a state for
:func:`jopt.core.hyperparam_transformation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

import jopt.tree as jtree
from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, POSITIVE, Hyperparam, compute_dtype

Array = jax.Array
PyTree = Any

__all__ = ["DoGState", "DoWGState", "scale_by_dog", "scale_by_dowg"]

_INIT_STEPS = ("distance", "learning_rate", "heuristic")


def scalar_dtype(params: PyTree) -> Any:
    """Dtype of a method's scalar estimates: the lowest parameter dtype, at least float32.

    optax uses the lowest parameter dtype itself (bfloat16 for bfloat16
    parameters); jopt keeps estimates in at least float32 on purpose.
    """
    return compute_dtype(jtree.dtype(params, "lowest"))


def state_with_estimates(
    state_cls: Callable[..., Any], **estimates: Callable[[Any], Array]
) -> Callable[..., Any]:
    """A state constructor for :func:`jopt.core.hyperparam_transformation` that shows estimates.

    The returned callable builds ``state_cls(count, *fields, hyperparams)`` and
    adds ``{name: get(state)}`` for every keyword to the state's ``hyperparams``
    dict, so :func:`jopt.current_hyperparams` reports the estimates (e.g. the
    distance estimate) without a wrapper.

    Example:
      >>> import jax.numpy as jnp
      >>> from typing import NamedTuple
      >>> class S(NamedTuple):
      ...     count: None
      ...     d: jnp.ndarray
      ...     hyperparams: dict
      >>> make = state_with_estimates(S, estim_lr=lambda s: s.d)
      >>> make(None, jnp.ones(()), {}).hyperparams["estim_lr"].item()
      1.0
    """

    def make(count: Any, *fields_and_hyperparams: Any) -> Any:
        state = state_cls(count, *fields_and_hyperparams)
        shown = {name: jnp.asarray(get(state)) for name, get in estimates.items()}
        return state._replace(hyperparams={**state.hyperparams, **shown})

    return make


def distance_to(init_params: PyTree, params: PyTree, *, squared: bool = False) -> Array:
    r"""Euclidean distance :math:`\|x_0 - x\|` over all leaves (its square with ``squared``)."""
    return jtree.norm(jtree.sub(init_params, params), squared=squared)


class DoGState(NamedTuple):
    r"""State of :func:`scale_by_dog` (optax's fields, plus ``count``, ``estim_lr`` and ``hyperparams``).

    Attributes:
      count: step counter, only when a hyperparameter is a schedule.
      is_init_step: True before the first update.
      init_params: the initial point :math:`x_0`.
      max_dist: :math:`\bar r_t`, the largest distance from :math:`x_0` so far.
      sum_sq_norm_grads: :math:`G_t = \sum_k \|g_k\|^2`.
      estim_lr: the step :math:`\eta_t` of the latest update (0 before the first).
      hyperparams: ``max_dist`` and ``estim_lr``, plus array or scheduled hyperparameters.
    """

    count: Array | None
    is_init_step: Array
    init_params: PyTree
    max_dist: Array
    sum_sq_norm_grads: Array
    estim_lr: Array
    hyperparams: dict[str, Array]


def scale_by_dog(
    init_step: tuple[Literal["distance", "learning_rate", "heuristic"], Hyperparam],
    eps: Hyperparam = 1e-8,
) -> GradientTransformation:
    r"""Scale by Distance over Gradients (DoG, Ivgi et al., 2023).

    .. math::

        \bar r_t = \max\big(\bar r_{t-1}, \|x_t - x_0\|\big), \qquad
        G_t = G_{t-1} + \|g_t\|^2, \qquad
        \eta_t = \frac{\bar r_t}{\sqrt{G_t + \varepsilon}}, \qquad u_t = \eta_t\, g_t

    Args:
      init_step: ``(tag, value)``: ``("distance", r)`` starts from
        :math:`\bar r_0 = r`; ``("heuristic", \alpha)`` from
        :math:`\bar r_0 = \alpha (1 + \|x_0\|)` (``init`` must get the real
        parameters); ``("learning_rate", \eta)`` takes :math:`\eta_1 = \eta`.
        The tag is structural (checked at construction); the value, :math:`> 0`,
        may be an array, a traced value or a schedule.
      eps: :math:`\varepsilon \ge 0`, added to :math:`G_t`.

    The distance :math:`\bar r_t` and the latest step :math:`\eta_t` are shown by
    :func:`jopt.current_hyperparams` as ``"max_dist"`` and ``"estim_lr"``.
    Combine with :func:`jopt.scale_by_learning_rate` (see :func:`jopt.dog`).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_dog(("distance", 0.5))
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> u, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> print(u["w"], jopt.current_hyperparams(state)["estim_lr"])  # 0.5 / |g| = 0.1
      [0.3 0.4] 0.1
    """
    tag, value = init_step
    if tag not in _INIT_STEPS:
        raise ValueError(f"scale_by_dog: init_step[0] must be one of {list(_INIT_STEPS)}, got {tag!r}")

    def init_fields(params, h):
        dtype = scalar_dtype(params)
        if tag == "distance":
            r_eps = h["init_step"]
        elif tag == "heuristic":
            r_eps = h["init_step"] * (1 + jtree.norm(params))
        else:
            r_eps = 0.0
        zero = jnp.zeros([], dtype)
        return jnp.asarray(True), params, jnp.asarray(r_eps, dtype), zero, zero

    def step(updates, state, params, h, count_inc):
        max_dist = jnp.maximum(state.max_dist, distance_to(state.init_params, params))
        sum_sq = state.sum_sq_norm_grads + jtree.norm(updates, squared=True)
        lr = max_dist / jnp.sqrt(sum_sq + h["eps"])
        if tag == "learning_rate":
            lr = jnp.where(state.is_init_step, h["init_step"], lr)
        new_fields = (jnp.asarray(False), state.init_params, max_dist, sum_sq, lr)
        return jtree.scale(lr, updates), new_fields

    make_state = state_with_estimates(DoGState, max_dist=lambda s: s.max_dist, estim_lr=lambda s: s.estim_lr)
    return hyperparam_transformation(
        "scale_by_dog",
        {"init_step": value, "eps": eps},
        {"init_step": POSITIVE, "eps": NONNEGATIVE},
        make_state,
        step,
        init_fields,
        needs_params=True,
    )


class DoWGState(NamedTuple):
    r"""State of :func:`scale_by_dowg` (optax's fields, plus ``count``, ``estim_lr`` and ``hyperparams``).

    Attributes:
      count: step counter, only when a hyperparameter is a schedule.
      init_params: the initial point :math:`x_0`.
      weighted_sq_norm_grads: :math:`v_t = \sum_k \bar r_k^2 \|g_k\|^2`.
      estim_sq_dist: :math:`\bar r_t^2`, the largest squared distance from :math:`x_0` so far.
      estim_lr: the step :math:`\eta_t` of the latest update (0 before the first).
      hyperparams: ``estim_sq_dist`` and ``estim_lr``, plus array or scheduled hyperparameters.
    """

    count: Array | None
    init_params: PyTree
    weighted_sq_norm_grads: Array
    estim_sq_dist: Array
    estim_lr: Array
    hyperparams: dict[str, Array]


def scale_by_dowg(
    init_estim_sq_dist: Hyperparam | None = None,
    eps: Hyperparam = 1e-4,
) -> GradientTransformation:
    r"""Scale by Distance over Weighted Gradients (DoWG, Khaled et al., 2023).

    .. math::

        \bar r_t^2 = \max\big(\bar r_{t-1}^2, \|x_t - x_0\|^2\big), \qquad
        v_t = v_{t-1} + \bar r_t^2 \|g_t\|^2, \qquad
        \eta_t = \frac{\bar r_t^2}{\sqrt{v_t} + \varepsilon}, \qquad u_t = \eta_t\, g_t

    Args:
      init_estim_sq_dist: :math:`\bar r_0^2 > 0`, the initial guess of the
        squared distance to the solution; ``None`` uses ``eps``.
      eps: :math:`\varepsilon`, added to :math:`\sqrt{v_t}` (:math:`\ge 0`;
        :math:`> 0` when it is also :math:`\bar r_0^2`).

    The squared distance :math:`\bar r_t^2` and the latest step :math:`\eta_t`
    are shown by :func:`jopt.current_hyperparams` as ``"estim_sq_dist"`` and
    ``"estim_lr"``. Combine with :func:`jopt.scale_by_learning_rate` (see :func:`jopt.dowg`).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_dowg(init_estim_sq_dist=1.0, eps=0.0)
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> u, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> print(u["w"], jopt.current_hyperparams(state)["estim_lr"])  # 1 / |g| = 0.2
      [0.6 0.8] 0.2
    """
    hp = {"eps": eps}
    ranges = {"eps": NONNEGATIVE, "init_estim_sq_dist": POSITIVE}
    if init_estim_sq_dist is None:
        ranges["eps"] = POSITIVE
    else:
        hp["init_estim_sq_dist"] = init_estim_sq_dist
    first_key = "eps" if init_estim_sq_dist is None else "init_estim_sq_dist"

    def init_fields(params, h):
        dtype = scalar_dtype(params)
        zero = jnp.zeros([], dtype)
        return params, zero, jnp.asarray(h[first_key], dtype), zero

    def step(updates, state, params, h, count_inc):
        sq_dist = jnp.maximum(state.estim_sq_dist, distance_to(state.init_params, params, squared=True))
        weighted = sq_dist * jtree.norm(updates, squared=True) + state.weighted_sq_norm_grads
        lr = sq_dist / (jnp.sqrt(weighted) + h["eps"])
        return jtree.scale(lr, updates), (state.init_params, weighted, sq_dist, lr)

    make_state = state_with_estimates(
        DoWGState, estim_sq_dist=lambda s: s.estim_sq_dist, estim_lr=lambda s: s.estim_lr
    )
    return hyperparam_transformation(
        "scale_by_dowg", hp, ranges, make_state, step, init_fields, needs_params=True
    )
