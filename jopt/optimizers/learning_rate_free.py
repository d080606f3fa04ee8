r"""Learning-rate-free optimizers: D-Adaptation, Prodigy, DoG, DoWG and COCOB.

Each estimates the step size from the run itself; ``learning_rate`` (default
1.0) only rescales the estimate, so use 1.0 or a schedule that peaks at 1.0.

* :func:`dadapt_adamw`, :func:`dadapt_sgd` (Defazio & Mishchenko, 2023) and
  :func:`prodigy` (Mishchenko & Defazio, 2023) estimate the distance
  :math:`D = \|x_0 - x_*\|` from a weighted sum of gradients. The learning rate
  enters that estimate, so each is one transform that returns the parameter
  update (descent sign included).
* :func:`dog`, :func:`dowg` and :func:`cocob` are chains of the transforms in
  :mod:`jopt.transforms.distance_estimates` and :mod:`jopt.transforms.learning_rate_free`.

Names, signatures and defaults are optax's (``optax.contrib``, 0.2.8), except
:func:`dadapt_sgd`, which optax lacks. With Python-number hyperparameters jopt's
float32 results equal optax's bit for bit; every numeric hyperparameter may also
be an array, a traced value or a schedule. The estimates are shown by
:func:`jopt.current_hyperparams` as ``"estim_lr"`` (see
:mod:`jopt.transforms.distance_estimates`).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

import jopt.tree as jtree
from jopt.core import GradientTransformation, chain, hyperparam_transformation, identity
from jopt.hyperparams import NONNEGATIVE, POSITIVE, UNIT, Hyperparam, Range, compute_dtype
from jopt.transforms.distance_estimates import scalar_dtype, scale_by_dog, scale_by_dowg, state_with_estimates
from jopt.transforms.learning_rate_free import scale_by_cocob
from jopt.transforms.scaling import scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

Array = jax.Array
PyTree = Any

__all__ = [
    "DAdaptAdamWState",
    "DAdaptSGDState",
    "ProdigyState",
    "cocob",
    "dadapt_adamw",
    "dadapt_sgd",
    "dog",
    "dowg",
    "prodigy",
]


def _up(x: Array) -> Array:
    return x.astype(compute_dtype(x.dtype))


def _upcast(tree: PyTree) -> PyTree:
    return jax.tree.map(_up, tree)


def _l1(tree: PyTree) -> Array:
    return jtree.sum(jax.tree.map(jnp.abs, tree))


def _adam_correction(b1: Any, b2: Any, count_inc: Array) -> Array:
    r""":math:`\sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`."""
    return ((1 - b2**count_inc) ** 0.5) / (1 - b1**count_inc)


def _beta_hyperparams(owner: str, betas: tuple[Hyperparam, Hyperparam]) -> dict[str, Hyperparam]:
    beta1, beta2 = betas
    UNIT.check(beta1, "betas[0]", owner)
    UNIT.check(beta2, "betas[1]", owner)
    return {"beta1": beta1, "beta2": beta2}


_RANGES = {
    "learning_rate": NONNEGATIVE,
    "beta1": UNIT,
    "beta2": UNIT,
    "beta3": UNIT,
    "eps": NONNEGATIVE,
    "estim_lr0": POSITIVE,
    "estim_lr_coef": NONNEGATIVE,
    "weight_decay": NONNEGATIVE,
    "momentum": UNIT,
    "growth_rate": Range(1.0),
}


def _estimate_transform(owner, hp, state_cls, step, init_fields):
    """A counted transform needing params, showing its ``estim_lr`` field in ``hyperparams``."""
    return hyperparam_transformation(
        owner,
        hp,
        {k: _RANGES[k] for k in hp},
        state_with_estimates(state_cls, estim_lr=lambda s: s.estim_lr),
        step,
        init_fields,
        counted=True,
        needs_params=True,
    )


# --------------------------------------------------------------------------- D-Adapt AdamW


class DAdaptAdamWState(NamedTuple):
    """State of :func:`dadapt_adamw` (optax's fields between jopt's ``count`` and ``hyperparams``).

    Attributes:
      count: number of updates so far (int32).
      exp_avg: first moment of the :math:`d`-scaled gradients.
      exp_avg_sq: second moment of the gradients.
      grad_sum: :math:`s_t`, the EMA of the :math:`d`-scaled gradients.
      estim_lr: :math:`d_t`, the distance estimate (shown as ``"estim_lr"``).
      numerator_weighted: the EMA numerator of the estimate.
      hyperparams: ``estim_lr``, plus array or scheduled hyperparameters.
    """

    count: Array
    exp_avg: PyTree
    exp_avg_sq: PyTree
    grad_sum: PyTree
    estim_lr: Array
    numerator_weighted: Array
    hyperparams: dict[str, Array]


def _moments_init(n_trees: int, with_params: bool):
    def init_fields(params, h):
        dtype = scalar_dtype(params)
        trees = tuple(jtree.zeros_like(params) for _ in range(n_trees))
        trees = (*trees, params) if with_params else trees
        return (*trees, jnp.asarray(h["estim_lr0"], dtype), jnp.zeros([], dtype))

    return init_fields


def _dadapt_adamw_step(updates, state, params, h, count_inc):
    b1, b2, eps, d = h["beta1"], h["beta2"], h["eps"], state.estim_lr
    sb2 = b2**0.5
    dlr = jnp.asarray(d * h["learning_rate"] * _adam_correction(b1, b2, count_inc), d.dtype)
    g, p = _upcast(updates), _upcast(params)
    ea, eas, sk = _upcast(state.exp_avg), _upcast(state.exp_avg_sq), _upcast(state.grad_sum)
    numerator_acum = jtree.vdot(g, jax.tree.map(lambda s, v: s / (jnp.sqrt(v) + eps), sk, eas))
    ea = jax.tree.map(lambda m, x: b1 * m + (1 - b1) * dlr * x, ea, g)
    eas = jax.tree.map(lambda v, x: b2 * v + (1 - b2) * x * x, eas, g)
    sk = jax.tree.map(lambda s, x: sb2 * s + (1 - sb2) * dlr * x, sk, g)
    numerator = sb2 * state.numerator_weighted + (1 - sb2) * dlr * numerator_acum
    d_new = jnp.maximum(d, numerator / ((1 - sb2) * _l1(sk)))
    wd = h["weight_decay"]
    out = jax.tree.map(lambda m, v, x: -wd * dlr * x - m / (jnp.sqrt(v) + eps), ea, eas, p)
    return out, (ea, eas, sk, d_new, numerator)


def dadapt_adamw(
    learning_rate: Hyperparam = 1.0,
    betas: tuple[Hyperparam, Hyperparam] = (0.9, 0.999),
    eps: Hyperparam = 1e-8,
    estim_lr0: Hyperparam = 1e-6,
    weight_decay: Hyperparam = 0.0,
) -> GradientTransformation:
    r"""AdamW whose learning rate is set by D-Adaptation (Defazio & Mishchenko, 2023).

    With :math:`\gamma_t` the learning rate, :math:`\hat\beta = \sqrt{\beta_2}`
    and :math:`\lambda_t = d_t \gamma_t \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`:

    .. math::

        r_t &= \hat\beta r_{t-1} + (1 - \hat\beta) \lambda_t
            \Big\langle g_t, \frac{s_{t-1}}{\sqrt{v_{t-1}} + \varepsilon} \Big\rangle, \quad
        s_t = \hat\beta s_{t-1} + (1 - \hat\beta) \lambda_t g_t \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) \lambda_t g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
        d_{t+1} = \max\Big(d_t, \frac{r_t}{(1 - \hat\beta) \|s_t\|_1}\Big) \\
        u_t &= -\frac{m_t}{\sqrt{v_t} + \varepsilon} - w\, \lambda_t x_t

    Args:
      learning_rate: :math:`\gamma \ge 0`, scales the estimate (use 1.0 or a schedule).
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\varepsilon \ge 0`.
      estim_lr0: :math:`d_0 > 0`, the initial (under-)estimate of :math:`D`.
      weight_decay: :math:`w \ge 0`, decoupled (AdamW) decay.

    The estimate :math:`d` is ``state.estim_lr`` and ``jopt.current_hyperparams(state)["estim_lr"]``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = jopt.dadapt_adamw()
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> bool(jopt.current_hyperparams(state)["estim_lr"] > 1e-6)  # d has grown
      True
    """
    hp = {"learning_rate": learning_rate, **_beta_hyperparams("dadapt_adamw", betas)}
    hp |= {"eps": eps, "estim_lr0": estim_lr0, "weight_decay": weight_decay}
    init_fields = _moments_init(3, with_params=False)
    return _estimate_transform("dadapt_adamw", hp, DAdaptAdamWState, _dadapt_adamw_step, init_fields)


# --------------------------------------------------------------------------- Prodigy


class ProdigyState(NamedTuple):
    """State of :func:`prodigy` (optax's fields between jopt's ``count`` and ``hyperparams``).

    Attributes:
      count: number of updates so far (int32).
      exp_avg: first moment of the :math:`d`-scaled gradients.
      exp_avg_sq: second moment of the :math:`d`-scaled gradients.
      grad_sum: :math:`s_t`, the weighted sum of gradients.
      params0: the initial point :math:`x_0`.
      estim_lr: :math:`d_t`, the distance estimate (shown as ``"estim_lr"``).
      numerator_weighted: :math:`r_t`, the numerator of the estimate.
      hyperparams: ``estim_lr``, plus array or scheduled hyperparameters.
    """

    count: Array
    exp_avg: PyTree
    exp_avg_sq: PyTree
    grad_sum: PyTree
    params0: PyTree
    estim_lr: Array
    numerator_weighted: Array
    hyperparams: dict[str, Array]


def _prodigy_step(safeguard_warmup: bool):
    def step(updates, state, params, h, count_inc):
        b1, b2, d, d0 = h["beta1"], h["beta2"], state.estim_lr, h["estim_lr0"]
        b3 = h["beta3"] if "beta3" in h else b2**0.5
        dlr = jnp.asarray(d * h["learning_rate"] * _adam_correction(b1, b2, count_inc), d.dtype)
        g, p = _upcast(updates), _upcast(params)
        dg = jax.tree.map(lambda x: d * x, g)
        numerator_acum = jtree.vdot(g, jax.tree.map(lambda x0, x: x0 - x, _upcast(state.params0), p))
        ea = jax.tree.map(lambda m, x: b1 * m + (1 - b1) * x, _upcast(state.exp_avg), dg)
        eas = jax.tree.map(lambda v, x: b2 * v + (1 - b2) * x * x, _upcast(state.exp_avg_sq), dg)
        weight = d if safeguard_warmup else dlr
        sk = jax.tree.map(lambda s, x: b3 * s + weight * x / d0, _upcast(state.grad_sum), dg)
        numerator = b3 * state.numerator_weighted + (d / d0) * dlr * numerator_acum
        d_new = jnp.maximum(d, h["estim_lr_coef"] * numerator / _l1(sk))
        wd, eps = h["weight_decay"], h["eps"]
        out = jax.tree.map(lambda m, v, x: -wd * dlr * x - dlr * m / (jnp.sqrt(v) + d_new * eps), ea, eas, p)
        return out, (ea, eas, sk, state.params0, d_new, numerator)

    return step


def prodigy(
    learning_rate: Hyperparam = 1.0,
    betas: tuple[Hyperparam, Hyperparam] = (0.9, 0.999),
    beta3: Hyperparam | None = None,
    eps: Hyperparam = 1e-8,
    estim_lr0: Hyperparam = 1e-6,
    estim_lr_coef: Hyperparam = 1.0,
    weight_decay: Hyperparam = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformation:
    r"""Prodigy (Mishchenko & Defazio, 2023): D-Adapt AdamW with a faster-growing estimate.

    With :math:`\gamma_t` the learning rate and
    :math:`\lambda_t = d_t \gamma_t \sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) d_t g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) d_t^2 g_t^2 \\
        r_t &= \beta_3 r_{t-1} + \frac{d_t}{d_0} \lambda_t \langle g_t, x_0 - x_t \rangle, \quad
        s_t = \beta_3 s_{t-1} + \frac{\lambda_t}{d_0} d_t g_t, \quad
        d_{t+1} = \max\Big(d_t, c \frac{r_t}{\|s_t\|_1}\Big) \\
        u_t &= -\lambda_t \frac{m_t}{\sqrt{v_t} + d_{t+1} \varepsilon} - w\, \lambda_t x_t

    Args:
      learning_rate: :math:`\gamma \ge 0`, scales the estimate (use 1.0 or a schedule).
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      beta3: :math:`\beta_3 \in [0, 1)`; ``None`` uses :math:`\sqrt{\beta_2}`.
      eps: :math:`\varepsilon \ge 0`.
      estim_lr0: :math:`d_0 > 0`, the initial (under-)estimate.
      estim_lr_coef: :math:`c \ge 0`, multiplies the estimates.
      weight_decay: :math:`w \ge 0`, decoupled (AdamW) decay.
      safeguard_warmup: use :math:`d_t` instead of :math:`\lambda_t` in :math:`s_t`
        (keeps a warm-up of :math:`\gamma` out of the estimate's denominator).

    The estimate :math:`d` is ``state.estim_lr`` and ``jopt.current_hyperparams(state)["estim_lr"]``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = jopt.prodigy()
      >>> state = opt.init(params)
      >>> for _ in range(5):
      ...     grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> bool(jopt.current_hyperparams(state)["estim_lr"] > 1e-6)  # d has grown
      True
    """
    hp = {"learning_rate": learning_rate, **_beta_hyperparams("prodigy", betas)}
    if beta3 is not None:
        hp["beta3"] = beta3
    hp |= {"eps": eps, "estim_lr0": estim_lr0, "estim_lr_coef": estim_lr_coef, "weight_decay": weight_decay}
    step = _prodigy_step(safeguard_warmup)
    return _estimate_transform("prodigy", hp, ProdigyState, step, _moments_init(3, with_params=True))


# --------------------------------------------------------------------------- D-Adapt SGD


class DAdaptSGDState(NamedTuple):
    """State of :func:`dadapt_sgd`'s D-Adaptation step (jopt only; optax has no D-Adapt SGD).

    Attributes:
      count: number of updates so far (int32).
      grad_sum: :math:`s_t = \\sum_k \\lambda_k g_k`.
      params0: the initial point :math:`x_0`.
      estim_lr: :math:`d_t`, the distance estimate (shown as ``"estim_lr"``).
      numerator_weighted: :math:`r_t = \\sum_k \\lambda_k \\langle g_k, s_{k-1} \\rangle`.
      g0_norm: :math:`\\|g_1\\|`, the norm of the first gradient.
      hyperparams: ``estim_lr``, plus array or scheduled hyperparameters.
    """

    count: Array
    grad_sum: PyTree
    params0: PyTree
    estim_lr: Array
    numerator_weighted: Array
    g0_norm: Array
    hyperparams: dict[str, Array]


def _dadapt_sgd_init(params, h):
    dtype = scalar_dtype(params)
    zero = jnp.zeros([], dtype)
    return jtree.zeros_like(params), params, jnp.asarray(h["estim_lr0"], dtype), zero, zero


def _dadapt_sgd_step(updates, state, params, h, count_inc):
    d, lr, momentum = state.estim_lr, h["learning_rate"], h["momentum"]
    g, x = _upcast(updates), _upcast(params)
    g0_norm = jnp.where(state.count == 0, jtree.norm(g), state.g0_norm)
    dlr = d * lr / g0_norm
    numerator = state.numerator_weighted + dlr * jtree.vdot(g, _upcast(state.grad_sum))
    sk = jax.tree.map(lambda s, gi: s + dlr * gi, _upcast(state.grad_sum), g)
    sk_sq = jtree.norm(sk, squared=True)
    moved = sk_sq > 0
    d_hat = 2 * numerator / jnp.sqrt(jnp.where(moved, sk_sq, 1.0))
    grown = jnp.maximum(d, jnp.minimum(d_hat, d * h["growth_rate"]))
    d_new = jnp.where(moved & (lr > 0), grown, d)

    def one(xi, x0, s):
        new = momentum * xi + (1 - momentum) * (_up(x0) - s)
        return jnp.where(moved, new - xi, jnp.zeros_like(xi))

    out = jax.tree.map(one, x, state.params0, sk)
    return out, (sk, state.params0, d_new, numerator, g0_norm)


def dadapt_sgd(
    learning_rate: Hyperparam = 1.0,
    momentum: Hyperparam = 0.0,
    weight_decay: Hyperparam = 0.0,
    estim_lr0: Hyperparam = 1e-6,
    growth_rate: Hyperparam = float("inf"),
) -> GradientTransformation:
    r"""SGD whose learning rate is set by D-Adaptation (Defazio & Mishchenko, 2023).

    The paper's SGD with D-Adaptation (dual averaging with momentum, as in the
    authors' ``DAdaptSGD``), with :math:`\lambda_t = d_t \gamma_t / \|g_1\|`:

    .. math::

        r_t &= r_{t-1} + \lambda_t \langle g_t, s_{t-1} \rangle, \qquad
        s_t = s_{t-1} + \lambda_t g_t \\
        d_{t+1} &= \max\Big(d_t, \min\Big(\frac{2 r_t}{\|s_t\|}, \rho\, d_t\Big)\Big) \\
        x_{t+1} &= \mu\, x_t + (1 - \mu) (x_0 - s_t)

    where :math:`g_t` includes the L2 term :math:`w x_t` (coupled decay, as the
    reference). optax has no D-Adapt SGD; this is tested against a NumPy
    transcription of the rule. No step is taken while :math:`s_t = 0`. A zero
    first gradient gives a non-finite step (the reference divides by :math:`\|g_1\|` too).

    Args:
      learning_rate: :math:`\gamma \ge 0`, scales the estimate (use 1.0 or a schedule).
      momentum: :math:`\mu \in [0, 1)`.
      weight_decay: :math:`w \ge 0`, added to the gradient as :math:`w x_t`.
      estim_lr0: :math:`d_0 > 0`, the initial (under-)estimate of :math:`D`.
      growth_rate: :math:`\rho \ge 1`, the largest factor :math:`d` may grow by per step.

    The estimate :math:`d` is ``jopt.current_hyperparams(state)["estim_lr"]``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = jopt.dadapt_sgd(momentum=0.9)
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> bool(jopt.current_hyperparams(state)["estim_lr"] > 1e-6)  # d has grown
      True
    """
    hp = {"learning_rate": learning_rate, "momentum": momentum, "estim_lr0": estim_lr0}
    hp["growth_rate"] = growth_rate
    rule = _estimate_transform("dadapt_sgd", hp, DAdaptSGDState, _dadapt_sgd_step, _dadapt_sgd_init)
    return chain(add_decayed_weights(weight_decay), rule)


# --------------------------------------------------------------------------- DoG, DoWG, COCOB


def _decay_or_identity(weight_decay: Hyperparam | None, mask: MaskOrFn) -> GradientTransformation:
    return identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)


def dog(
    learning_rate: Hyperparam = 1.0,
    init_step: tuple[Literal["distance", "learning_rate", "heuristic"], Hyperparam] = ("heuristic", 1e-6),
    eps: Hyperparam = 1e-8,
    weight_decay: Hyperparam | None = None,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Distance over Gradients (DoG, Ivgi et al., 2023): SGD with the step of :func:`jopt.scale_by_dog`.

    .. math::

        \bar r_t = \max_{k \le t} \|x_k - x_0\|, \qquad
        \eta_t = \frac{\bar r_t}{\sqrt{\sum_{k \le t} \|g_k\|^2 + \varepsilon}}, \qquad
        x_{t+1} = x_t - \gamma_t \eta_t (g_t + w x_t)

    Args:
      learning_rate: :math:`\gamma`, scales the step (1.0, or a schedule).
      init_step: ``(tag, value)``, see :func:`jopt.scale_by_dog`; the default
        :math:`\bar r_0 = 10^{-6}(1 + \|x_0\|)` needs the real parameters in ``init``.
      eps: :math:`\varepsilon \ge 0`.
      weight_decay: :math:`w \ge 0` added to the gradient before DoG; ``None``: none.
      mask: the leaves to decay (see :func:`jopt.add_decayed_weights`).

    The authors recommend averaging the iterates (e.g. :func:`jopt.ema` of the
    parameters). :math:`\bar r_t` and :math:`\eta_t` are shown by
    :func:`jopt.current_hyperparams` as ``"max_dist"`` and ``"estim_lr"``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> opt = jopt.dog()
      >>> updates, state = opt.update(2 * params, opt.init(params), params)
      >>> round(float(jopt.current_hyperparams(state)["max_dist"]) * 1e6, 5)  # 1e-6 (1 + |x0|)
      4.74166
    """
    return chain(
        _decay_or_identity(weight_decay, mask),
        scale_by_dog(init_step, eps),
        scale_by_learning_rate(learning_rate),
    )


def dowg(
    learning_rate: Hyperparam = 1.0,
    init_estim_sq_dist: Hyperparam | None = None,
    eps: Hyperparam = 1e-4,
    weight_decay: Hyperparam | None = None,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""Distance over Weighted Gradients (DoWG, Khaled et al., 2023): SGD with :func:`jopt.scale_by_dowg`.

    .. math::

        \bar r_t^2 = \max_{k \le t} \|x_k - x_0\|^2, \qquad
        v_t = \sum_{k \le t} \bar r_k^2 \|g_k\|^2, \qquad
        x_{t+1} = x_t - \gamma_t \frac{\bar r_t^2}{\sqrt{v_t} + \varepsilon} (g_t + w x_t)

    Args:
      learning_rate: :math:`\gamma`, scales the step (1.0, or a schedule).
      init_estim_sq_dist: :math:`\bar r_0^2 > 0`; ``None`` uses ``eps``.
      eps: :math:`\varepsilon`.
      weight_decay: :math:`w \ge 0` added to the gradient before DoWG; ``None``: none.
      mask: the leaves to decay (see :func:`jopt.add_decayed_weights`).

    :math:`\bar r_t^2` and the step are shown by :func:`jopt.current_hyperparams`
    as ``"estim_sq_dist"`` and ``"estim_lr"``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> f = lambda x: jnp.sum(x**2)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> opt = jopt.dowg()
      >>> state = opt.init(params)
      >>> for _ in range(5):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> print(f(params))  # optax's docstring shows the same value
      13.268837
    """
    return chain(
        _decay_or_identity(weight_decay, mask),
        scale_by_dowg(init_estim_sq_dist, eps),
        scale_by_learning_rate(learning_rate),
    )


def cocob(
    learning_rate: Hyperparam = 1.0,
    alpha: Hyperparam = 100.0,
    eps: Hyperparam = 1e-8,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""COCOB-Backprop (Orabona & Tommasi, 2017): coin betting on :math:`\gamma_t (g_t + w x_t)`.

    The gradients, with the L2 term :math:`w x_t` and multiplied by
    :math:`\gamma_t` (not negated), are fed to :func:`jopt.scale_by_cocob`,
    which returns the move to the next iterate.

    Args:
      learning_rate: :math:`\gamma`, scales the gradients (1.0, or a schedule).
      alpha: :math:`\alpha \ge 0`, see :func:`jopt.scale_by_cocob`.
      eps: :math:`\varepsilon > 0`, the initial gradient bound.
      weight_decay: :math:`w \ge 0`.
      mask: the leaves to decay (see :func:`jopt.add_decayed_weights`).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> params = jnp.zeros(3)
      >>> opt = jopt.cocob()
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = jopt.apply_updates(params, updates)
      >>> bool(f(params) < 1e-2)
      True
    """
    return chain(
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )
