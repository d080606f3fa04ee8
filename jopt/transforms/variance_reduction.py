r"""MARS (Yuan et al., 2024): variance-reduced gradients for Adam- and Lion-type updates.

MARS replaces the gradient fed to a preconditioned optimizer by a STORM-style
variance-reduced estimate

.. math::

    c_t = g_t + \gamma \frac{\beta_1}{1 - \beta_1} \big(g_t - g_{t-1}\big),
    \qquad c_t \leftarrow c_t \cdot \min\!\Big(1, \frac{\tau}{\lVert c_t \rVert_2}\Big),

where :math:`\gamma` scales the correction (0 gives back the plain optimizer)
and the optional clipping to norm :math:`\tau` (1 in the paper) is per leaf,
as the authors do per parameter tensor. :math:`g_{t-1}` is the previous step's
gradient, kept in the state ("MARS-approx", the authors' default). The exact
variant evaluates the previous parameters on the *current* batch; pass that
gradient as the extra argument ``previous_grads=`` to ``update``.

* :func:`scale_by_mars`: MARS-AdamW, Adam's bias-corrected moments of :math:`c_t`.
* :func:`scale_by_mars_lion`: MARS-Lion, :math:`\operatorname{sign}` of the EMA of :math:`c_t`.

The authors' MARS-Shampoo variant and their default of running plain AdamW
(with separate ``betas_1d``, ``lr_1d``) on vector parameters are not built in;
for the latter, route the vectors to :func:`jopt.adamw` with :func:`jopt.partition`.
MARS is not in optax; the tests compare with a NumPy transcription of the
authors' update rule.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, POSITIVE, UNIT, Hyperparam, cast_hyperparam, compute_dtype
from jopt.tree import bias_correction, tree_moment, zeros_like

Array = jax.Array
PyTree = Any
DType = Any

__all__ = [
    "ScaleByMarsLionState",
    "ScaleByMarsState",
    "mars_corrected_gradient",
    "scale_by_mars",
    "scale_by_mars_lion",
]

_EXTRA_ARGS = ("previous_grads",)


class ScaleByMarsState(NamedTuple):
    """State of MARS-AdamW: counter, moments of :math:`c_t`, previous gradient :math:`g_{t-1}`."""

    count: Array
    mu: PyTree
    nu: PyTree
    last_grad: PyTree
    hyperparams: dict[str, Array]


class ScaleByMarsLionState(NamedTuple):
    """State of MARS-Lion: counter (``None`` without schedules), momentum, previous gradient."""

    count: Array | None
    mu: PyTree
    last_grad: PyTree
    hyperparams: dict[str, Array]


def mars_corrected_gradient(
    grads: PyTree, previous: PyTree, b1: Any, gamma: Any, max_norm: Any | None
) -> PyTree:
    r"""MARS's :math:`c_t = g_t + \gamma \beta_1 / (1 - \beta_1) (g_t - g_{t-1})`, clipped per leaf.

    Each leaf's :math:`c_t` is scaled down to norm ``max_norm`` when above it;
    ``max_norm=None`` skips the clipping. Arithmetic in at least float32.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.transforms.variance_reduction import mars_corrected_gradient
      >>> c = mars_corrected_gradient({"w": jnp.array([0.3])}, {"w": jnp.array([0.1])}, 0.5, 0.5, None)
      >>> round(float(c["w"][0]), 4)  # 0.3 + 0.5 * 0.5 / 0.5 * (0.3 - 0.1)
      0.4
    """
    scale = gamma * (b1 / (1 - b1))

    def one(g, g_prev):
        dt = compute_dtype(jnp.promote_types(g.dtype, g_prev.dtype))
        g = g.astype(dt)
        c = (g - g_prev.astype(dt)) * cast_hyperparam(scale, dt) + g
        if max_norm is None:
            return c
        norm = jnp.sqrt(jnp.sum(jnp.real(c * jnp.conj(c))))
        tau = cast_hyperparam(max_norm, norm.dtype)
        shrink = tau / jnp.where(norm > 0, norm, 1)
        return jnp.where(norm > tau, c * shrink.astype(dt), c)

    return jax.tree.map(one, grads, previous)


def _mars_hyperparams(b1, gamma, max_norm, **others) -> tuple[dict, dict]:
    hp = {"b1": b1, **others, "gamma": gamma}
    ranges = {"b1": UNIT, "b2": UNIT, "eps": NONNEGATIVE, "gamma": NONNEGATIVE, "max_norm": POSITIVE}
    if max_norm is not None:
        hp["max_norm"] = max_norm
    return hp, {k: ranges[k] for k in hp}


def _corrected(grads, state, h) -> PyTree:
    previous = h.get("previous_grads")
    previous = state.last_grad if previous is None else previous
    return mars_corrected_gradient(grads, previous, h["b1"], h["gamma"], h.get("max_norm"))


def scale_by_mars(
    b1: Hyperparam = 0.95,
    b2: Hyperparam = 0.99,
    eps: Hyperparam = 1e-8,
    gamma: Hyperparam = 0.025,
    mu_dtype: DType | None = None,
    *,
    max_norm: Hyperparam | None = 1.0,
) -> GradientTransformation:
    r"""MARS-AdamW's direction: Adam on the variance-reduced gradient :math:`c_t`.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) c_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) c_t^2 \\
        u_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \varepsilon}

    with :math:`c_t` from the module docstring (:math:`g_0 = 0` before the first step).

    Args:
      b1: decay :math:`\beta_1 \in [0, 1)` of the momentum (also sets the correction's weight).
      b2: decay :math:`\beta_2 \in [0, 1)` of the second moment.
      eps: :math:`\varepsilon \ge 0`.
      gamma: :math:`\gamma \ge 0`, scale of the variance-reduction term (0: AdamW).
      mu_dtype: dtype of the momentum; ``None``: the parameters' dtype.
      max_norm: :math:`\tau > 0`, per-leaf norm bound of :math:`c_t`; ``None`` disables the clipping.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_mars()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.array([0.5, -2.0])}, tx.init(params))
      >>> print(u["w"].round(4), state.last_grad["w"])
      [ 1. -1.] [ 0.5 -2. ]
    """
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
    hp, ranges = _mars_hyperparams(b1, gamma, max_norm, b2=b2, eps=eps)

    def init_fields(params, h):
        return zeros_like(params, mu_dtype), zeros_like(params), zeros_like(params)

    def step(grads, state, params, h, count_inc):
        c = _corrected(grads, state, h)
        mu = tree_moment(c, state.mu, h["b1"], 1)
        nu = tree_moment(c, state.nu, h["b2"], 2)
        mu_hat = bias_correction(mu, h["b1"], count_inc)
        nu_hat = bias_correction(nu, h["b2"], count_inc)
        direction = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v) + cast_hyperparam(h["eps"], v.dtype)), mu_hat, nu_hat
        )
        return direction, (mu, nu, grads)

    return hyperparam_transformation(
        "scale_by_mars",
        hp,
        ranges,
        ScaleByMarsState,
        step,
        init_fields,
        counted=True,
        extra_args=_EXTRA_ARGS,
    )


def scale_by_mars_lion(
    b1: Hyperparam = 0.95,
    gamma: Hyperparam = 0.025,
    mu_dtype: DType | None = None,
    *,
    max_norm: Hyperparam | None = 1.0,
) -> GradientTransformation:
    r"""MARS-Lion's direction: the sign of the EMA of the variance-reduced gradient.

    .. math:: m_t = \beta_1 m_{t-1} + (1 - \beta_1) c_t, \qquad u_t = \operatorname{sign}(m_t)

    (as the authors' code: no second interpolation as in Lion's update).

    Args:
      b1: decay :math:`\beta_1 \in [0, 1)` of the momentum.
      gamma: :math:`\gamma \ge 0`, scale of the variance-reduction term.
      mu_dtype: dtype of the momentum; ``None``: the parameters' dtype.
      max_norm: :math:`\tau > 0`, per-leaf norm bound of :math:`c_t`; ``None`` disables the clipping.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.scale_by_mars_lion()
      >>> params = {"w": jnp.ones(2)}
      >>> u, state = tx.update({"w": jnp.array([0.5, -2.0])}, tx.init(params))
      >>> print(u["w"])
      [ 1. -1.]
    """
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
    hp, ranges = _mars_hyperparams(b1, gamma, max_norm)

    def init_fields(params, h):
        return zeros_like(params, mu_dtype), zeros_like(params)

    def step(grads, state, params, h, count_inc):
        mu = tree_moment(_corrected(grads, state, h), state.mu, h["b1"], 1)
        return jax.tree.map(jnp.sign, mu), (mu, grads)

    return hyperparam_transformation(
        "scale_by_mars_lion",
        hp,
        ranges,
        ScaleByMarsLionState,
        step,
        init_fields,
        extra_args=_EXTRA_ARGS,
    )
