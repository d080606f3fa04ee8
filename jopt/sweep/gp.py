r"""A small Gaussian-process regression model in pure JAX (the surrogate of :mod:`jopt.sweep.bayes`).

Model. Inputs :math:`x \in [0, 1]^d` (configurations mapped to the unit cube), outputs
standardized to mean 0 and variance 1. The prior is :math:`f \sim \mathcal{GP}(0, k)` with the
Matern-5/2 kernel with ARD (one length scale per input dimension),

.. math::

    r = \Big\| \frac{x - x'}{\ell} \Big\|_2, \qquad
    k(x, x') = \sigma_f^2 \Big(1 + \sqrt5\, r + \tfrac53 r^2\Big) e^{-\sqrt5\, r},

and observations :math:`y = f(x) + \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, \sigma_n^2)`.

Posterior. With :math:`K = k(X, X) + \sigma_n^2 I = L L^\top` (Cholesky),
:math:`\alpha = K^{-1} y`, :math:`K_* = k(X_*, X)` and :math:`V = L^{-1} K_*^\top`:

.. math::

    \mu_* = K_* \alpha, \qquad \Sigma_* = k(X_*, X_*) - V^\top V, \qquad
    \log p(y \mid X) = -\tfrac12 y^\top \alpha - \textstyle\sum_i \log L_{ii} - \tfrac n2 \log 2\pi .

Hyperparameter fit (:func:`fit`). :math:`(\ell, \sigma_f^2, \sigma_n^2)` maximize the log
marginal likelihood plus weak log-normal priors (a MAP estimate, which keeps the fit sane with
a handful of points). The log-parameters :math:`\log\theta` are optimized by projected
:func:`jopt.adam` (each step followed by clipping to the box :data:`BOUNDS`) with the
closed-form gradient of :func:`lml_gradient`, for ``steps`` steps from ``restarts`` starting
points at once (``vmap`` over restarts, ``lax.scan`` over steps, one ``jax.jit``); the restart
with the best final objective wins. Adam rather than L-BFGS because a fixed-length, branch-free
loop jits and vmaps over restarts trivially (no line search to fail in float32); in log space a
few hundred steps reach the optimum, bounds included, for the few-dozen-point problems of
hyperparameter search.

Padding. Every function takes an optional 0/1 ``mask`` over the observations: masked rows
become independent unit-variance points with target 0, which contribute nothing to the
likelihood or the posterior. :func:`pad` pads to a power-of-two size so a growing data set
recompiles only when it doubles.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt.sweep import gp
  >>> x = jnp.linspace(0.0, 1.0, 8)[:, None]
  >>> y = jnp.sin(6.0 * x[:, 0])
  >>> params = gp.fit(x, y, key=jax.random.key(0))
  >>> mean, var = gp.posterior(params, x, y, x)
  >>> bool(jnp.max(jnp.abs(mean - y)) < 0.05)
  True
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import apply_updates
from jopt.optimizers.adam_family import adam

__all__ = [
    "BOUNDS",
    "GPParams",
    "PRIORS",
    "fit",
    "lml_gradient",
    "log_marginal_likelihood",
    "matern52",
    "pad",
    "posterior",
    "posterior_samples",
    "standardize",
]

# Box bounds on (length scale, signal variance, noise variance) for unit-cube inputs and
# standardized outputs. The noise floor 1e-4 keeps float32 Cholesky factorizations stable.
BOUNDS = {"lengthscale": (1e-2, 2e1), "signal": (5e-2, 2e1), "noise": (1e-4, 2.0)}
# Weak log-normal priors (mean of log, std of log) for the MAP fit.
PRIORS = {"lengthscale": (math.log(0.5), 1.5), "signal": (0.0, 1.5), "noise": (math.log(1e-3), 3.0)}
_SQRT5 = math.sqrt(5.0)


class GPParams(NamedTuple):
    """GP hyperparameters in natural units.

    Attributes:
      lengthscales: ``(d,)`` ARD length scales :math:`\\ell` (unit-cube units).
      signal_variance: :math:`\\sigma_f^2` (standardized-output units).
      noise_variance: :math:`\\sigma_n^2` (standardized-output units).
    """

    lengthscales: jax.Array
    signal_variance: jax.Array
    noise_variance: jax.Array


def matern52(x1: jax.Array, x2: jax.Array, lengthscales: jax.Array, signal_variance: jax.Array) -> jax.Array:
    """Matern-5/2 ARD kernel matrix ``k(x1, x2)`` of shape ``(n1, n2)`` (see the module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> k = matern52(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones(2), jnp.float32(2.0))
      >>> float(k[0, 0])
      2.0
    """
    d1 = x1 / lengthscales
    d2 = x2 / lengthscales
    r2 = jnp.sum(d1**2, -1)[:, None] + jnp.sum(d2**2, -1)[None, :] - 2.0 * d1 @ d2.T
    r2 = jnp.maximum(r2, 0.0)
    # sqrt has an infinite derivative at 0: differentiate through a safe branch there.
    positive = r2 > 1e-12
    r = jnp.where(positive, jnp.sqrt(jnp.where(positive, r2, 1.0)), 0.0)
    return signal_variance * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r2) * jnp.exp(-_SQRT5 * r)


def _ones_mask(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    return jnp.ones(x.shape[0], x.dtype) if mask is None else jnp.asarray(mask, x.dtype)


def _train_cholesky(params: GPParams, x: jax.Array, mask: jax.Array) -> jax.Array:
    k = matern52(x, x, params.lengthscales, params.signal_variance)
    k = k + params.noise_variance * jnp.eye(x.shape[0], dtype=x.dtype)
    k = mask[:, None] * mask[None, :] * k + jnp.diag(1.0 - mask)
    return jnp.linalg.cholesky(k)


@jax.jit
def log_marginal_likelihood(
    params: GPParams, x: jax.Array, y: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """:math:`\\log p(y \\mid X, \\theta)` of the (unmasked) observations."""
    mask = _ones_mask(x, mask)
    chol = _train_cholesky(params, x, mask)
    y = y * mask
    alpha = jax.scipy.linalg.cho_solve((chol, True), y)
    n = jnp.sum(mask)
    return -0.5 * y @ alpha - jnp.sum(jnp.log(jnp.diagonal(chol))) - 0.5 * n * math.log(2 * math.pi)


@jax.jit
def posterior(
    params: GPParams,
    x: jax.Array,
    y: jax.Array,
    xs: jax.Array,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Posterior mean and variance of the latent :math:`f` at ``xs`` (noise not included)."""
    mask = _ones_mask(x, mask)
    chol = _train_cholesky(params, x, mask)
    ks = matern52(xs, x, params.lengthscales, params.signal_variance) * mask[None, :]
    alpha = jax.scipy.linalg.cho_solve((chol, True), y * mask)
    v = jax.scipy.linalg.solve_triangular(chol, ks.T, lower=True)
    var = params.signal_variance - jnp.sum(v**2, 0)
    return ks @ alpha, jnp.maximum(var, 1e-12)


@partial(jax.jit, static_argnames=("num_samples",))
def posterior_samples(
    params: GPParams,
    x: jax.Array,
    y: jax.Array,
    xs: jax.Array,
    key: jax.Array,
    num_samples: int,
    mask: jax.Array | None = None,
    jitter: float = 1e-6,
) -> jax.Array:
    r"""Joint samples of the latent :math:`f` at the ``m`` points ``xs``: shape ``(num_samples, m)``.

    :math:`f_* = \mu_* + C z` with :math:`C C^\top = \Sigma_* + \epsilon\,\sigma_f^2 I`,
    :math:`z \sim \mathcal N(0, I)`. ``C`` is the Cholesky factor with the smallest
    :math:`\epsilon \in \{10^0, 10^1, \dots, 10^4\} \times` ``jitter`` that factorizes in float32
    (posterior covariances over thousands of nearby points are numerically rank-deficient), or,
    failing all, a symmetric square root from an eigendecomposition (negative eigenvalues clipped).
    """
    mask = _ones_mask(x, mask)
    chol = _train_cholesky(params, x, mask)
    ks = matern52(xs, x, params.lengthscales, params.signal_variance) * mask[None, :]
    alpha = jax.scipy.linalg.cho_solve((chol, True), y * mask)
    v = jax.scipy.linalg.solve_triangular(chol, ks.T, lower=True)
    cov = matern52(xs, xs, params.lengthscales, params.signal_variance) - v.T @ v
    cov = 0.5 * (cov + cov.T)
    eye = jnp.eye(xs.shape[0], dtype=xs.dtype)
    jitters = jitter * params.signal_variance * 10.0 ** jnp.arange(5, dtype=xs.dtype)

    def failed(state):
        i, factor = state
        return (i < jitters.shape[0]) & ~jnp.all(jnp.isfinite(factor))

    def attempt(state):
        i, _ = state
        return i + 1, jnp.linalg.cholesky(cov + jitters[i] * eye)

    _, factor = jax.lax.while_loop(failed, attempt, (0, jnp.full_like(cov, jnp.nan)))

    def eig_root(c):
        w, q = jnp.linalg.eigh(c)
        return q * jnp.sqrt(jnp.maximum(w, 0.0))[None, :]

    factor = jax.lax.cond(jnp.all(jnp.isfinite(factor)), lambda c: factor, eig_root, cov + jitters[0] * eye)
    z = jax.random.normal(key, (xs.shape[0], num_samples), xs.dtype)
    return (ks @ alpha)[None, :] + (factor @ z).T


# ----------------------------------------------------------------------------- fitting


def _per_parameter(table: dict, i: int, d: int) -> list[float]:
    """Entry ``i`` of ``table`` for each log-parameter: d length scales, signal, noise."""
    return [table["lengthscale"][i]] * d + [table["signal"][i], table["noise"][i]]


def _bounds(d: int) -> tuple[jax.Array, jax.Array]:
    lo, hi = (np.log(_per_parameter(BOUNDS, i, d)) for i in (0, 1))
    return jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)


def _unpack(log_theta: jax.Array) -> GPParams:
    e = jnp.exp(log_theta)
    return GPParams(e[:-2], e[-2], e[-1])


@jax.jit
def lml_gradient(params: GPParams, x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    r"""Closed-form gradient of :func:`log_marginal_likelihood` in the log-parameters
    :math:`(\log\ell_1, \dots, \log\ell_d, \log\sigma_f^2, \log\sigma_n^2)`.

    .. math::

        rac{\partial \log p}{\partial 	heta_i} = 	frac12 \operatorname{tr}\Big(
            (lphalpha^	op - K^{-1}) rac{\partial K}{\partial 	heta_i}\Big), \qquad
        rac{\partial K_{ab}}{\partial \log \ell_j} = 	frac53 \sigma_f^2 (1 + \sqrt5 r_{ab})
            e^{-\sqrt5 r_{ab}} rac{(x_{aj} - x_{bj})^2}{\ell_j^2},

    :math:`\partial K / \partial \log\sigma_f^2 = k(X, X)`,
    :math:`\partial K / \partial \log\sigma_n^2 = \sigma_n^2 I`. Cheaper to compile and run
    than differentiating through the Cholesky factorization.
    """
    mask = _ones_mask(x, mask)
    outer = mask[:, None] * mask[None, :]
    chol = _train_cholesky(params, x, mask)
    alpha = jax.scipy.linalg.cho_solve((chol, True), y * mask)
    k_inv = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(x.shape[0], dtype=x.dtype))
    w = (alpha[:, None] * alpha[None, :] - k_inv) * outer
    d = x / params.lengthscales
    r2 = jnp.maximum(jnp.sum(d**2, -1)[:, None] + jnp.sum(d**2, -1)[None, :] - 2.0 * d @ d.T, 0.0)
    r = jnp.sqrt(r2 + 1e-30)
    e = jnp.exp(-_SQRT5 * r)
    m = w * (params.signal_variance * (5.0 / 3.0) * (1.0 + _SQRT5 * r) * e)
    # sum_ab m_ab (d_aj - d_bj)^2 for symmetric m
    g_ls = 0.5 * (2.0 * jnp.sum(m, 1) @ d**2 - 2.0 * jnp.sum(d * (m @ d), 0))
    kf = params.signal_variance * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r2) * e
    g_signal = 0.5 * jnp.sum(w * kf)
    g_noise = 0.5 * params.noise_variance * jnp.sum(jnp.diagonal(w))
    return jnp.concatenate([g_ls, jnp.stack([g_signal, g_noise])])


def _prior_terms(log_theta: jax.Array) -> tuple[jax.Array, jax.Array]:
    d = log_theta.shape[0] - 2
    mu, sd = (jnp.asarray(_per_parameter(PRIORS, i, d), jnp.float32) for i in (0, 1))
    return -0.5 * jnp.sum(((log_theta - mu) / sd) ** 2), -(log_theta - mu) / sd**2


def _neg_objective(log_theta, x, y, mask) -> jax.Array:
    """``-(log p(y) + log prior) / n``, the objective :func:`fit` minimizes."""
    n = jnp.maximum(jnp.sum(mask), 1.0)
    return -(log_marginal_likelihood(_unpack(log_theta), x, y, mask) + _prior_terms(log_theta)[0]) / n


def _neg_objective_grad(log_theta, x, y, mask) -> jax.Array:
    n = jnp.maximum(jnp.sum(mask), 1.0)
    return -(lml_gradient(_unpack(log_theta), x, y, mask) + _prior_terms(log_theta)[1]) / n


@partial(jax.jit, static_argnames=("steps",))
def _fit(starts, x, y, mask, steps: int, learning_rate: float):
    lo, hi = _bounds(x.shape[1])
    opt = adam(learning_rate)

    def one(theta):
        def body(carry, _):
            theta, state = carry
            g = _neg_objective_grad(theta, x, y, mask)
            u, state = opt.update(jnp.where(jnp.isfinite(g), g, 0.0), state, theta)
            return (jnp.clip(apply_updates(theta, u), lo, hi), state), None

        (theta, _), _ = jax.lax.scan(body, (theta, opt.init(theta)), None, length=steps)
        loss = _neg_objective(theta, x, y, mask)
        return theta, jnp.where(jnp.isfinite(loss), loss, jnp.inf)  # a failed restart never wins

    thetas, losses = jax.vmap(one)(jnp.clip(starts, lo, hi))
    best = jnp.argmin(losses)
    return thetas[best], losses[best]


def fit(
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    mask: jax.Array | None = None,
    steps: int = 300,
    restarts: int = 4,
    learning_rate: float = 0.05,
    init: GPParams | None = None,
) -> GPParams:
    """Fit the hyperparameters to ``(x, y)`` (inputs in the unit cube, ``y`` standardized).

    Maximizes the log marginal likelihood plus weak log-normal priors (:data:`PRIORS`) over the
    box :data:`BOUNDS` with Adam, from ``restarts`` starting points: ``init`` (default: length
    scales 0.3, signal 1, noise 1e-2) and ``restarts - 1`` points drawn with ``key``. Same
    inputs and key, same result.
    """
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    d = x.shape[1]
    if init is None:
        first = jnp.log(jnp.asarray([0.3] * d + [1.0, 1e-2], jnp.float32))
    else:
        first = jnp.log(jnp.concatenate([jnp.ravel(jnp.asarray(t, jnp.float32)) for t in init]))
    # random restarts: length scales in [0.05, 2], signal in [0.3, 3], noise in [1e-4, 0.1] (log-uniform)
    rlo = jnp.log(jnp.asarray([0.05] * d + [0.3, 1e-4], jnp.float32))
    rhi = jnp.log(jnp.asarray([2.0] * d + [3.0, 0.1], jnp.float32))
    u = jax.random.uniform(key, (restarts - 1, d + 2))
    starts = jnp.concatenate([first[None], rlo + u * (rhi - rlo)], 0)
    log_theta, _ = _fit(starts, x, y, _ones_mask(x, mask), steps, learning_rate)
    return _unpack(log_theta)


# ----------------------------------------------------------------------------- data helpers


def standardize(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``((y - mean) / scale, mean, scale)``; ``scale`` is 1 when ``y`` is constant."""
    y = np.asarray(y, np.float64)
    mean = float(np.mean(y))
    scale = float(np.std(y))
    scale = scale if scale > 1e-12 else 1.0
    return (y - mean) / scale, mean, scale


def pad(x: np.ndarray, y: np.ndarray, size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad ``(x, y)`` with masked rows to ``size`` (default: the next power of two, at least 16).

    Returns ``(x, y, mask)`` as float32 arrays.

    Example:
      >>> import numpy as np
      >>> xp, yp, m = pad(np.zeros((5, 2)), np.ones(5))
      >>> xp.shape, int(m.sum())
      ((16, 2), 5)
    """
    n = x.shape[0]
    size = max(16, 1 << max(n - 1, 0).bit_length()) if size is None else size
    if size < n:
        raise ValueError(f"pad size {size} is smaller than the {n} observations")
    xp = np.full((size, x.shape[1]), 0.5, np.float32)
    xp[:n] = x
    yp = np.zeros(size, np.float32)
    yp[:n] = y
    mask = np.zeros(size, np.float32)
    mask[:n] = 1.0
    return xp, yp, mask
