r"""Zoom line search: a step size satisfying the strong Wolfe conditions.

The search (Nocedal & Wright, 2006, Alg. 3.5 and 3.6) runs in two phases
inside one ``jax.lax.while_loop``:

1. *bracketing*: grow the trial step from an initial guess (by
   ``increase_factor``, capped at ``max_learning_rate``) until an interval
   known to contain an acceptable step is found;
2. *zoom*: shrink that interval, trying the minimiser of a cubic
   interpolation of the last three points, else of a quadratic one, else the
   midpoint, until a trial is acceptable.

Every trial evaluates the value and the gradient of the objective once (the
phase only selects which step is tried, so under ``jax.vmap`` a batch of
searches still evaluates the objective once per iteration). When the
search runs out of trials it returns the best step found with sufficient
decrease, if any. Extra arguments, dtypes and the reuse of ``value``/``grad``
through :func:`jopt.value_and_grad_from_state` are as described in
:mod:`jopt.transforms.linesearch`. With Python-number hyperparameters the
arithmetic is optax's, so float32 and float64 trajectories equal
``optax.scale_by_zoom_linesearch``'s bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, POSITIVE, Hyperparam, Range, hyperparam_dtype
from jopt.transforms.linesearch import (
    LINESEARCH_ARGS,
    fields_like_state,
    line_search_transformation,
    point_on_line,
    scalar_dtype,
    state_in_optax_order,
    take_line_search_args,
)
from jopt.tree import conj, safe_increment, tree_cast_like, tree_scale, tree_select, tree_zeros_like, vdot

Array = jax.Array
PyTree = Any

__all__ = ["ScaleByZoomLinesearchState", "ZoomLinesearchInfo", "scale_by_zoom_linesearch"]


class ZoomLinesearchInfo(NamedTuple):
    """Diagnostics of the latest zoom search.

    Attributes:
      num_linesearch_steps: value-and-gradient evaluations in the latest search.
      decrease_error: how much the accepted step misses the sufficient-decrease
        condition (0 when it holds).
      curvature_error: how much it misses the curvature condition (0 when it
        holds; a positive value is benign when caused by ``max_learning_rate``).
    """

    num_linesearch_steps: Array
    decrease_error: Array
    curvature_error: Array


class ScaleByZoomLinesearchState(NamedTuple):
    r"""State of :func:`scale_by_zoom_linesearch`.

    The first four fields are optax's, at optax's positions.

    Attributes:
      learning_rate: step size :math:`\eta` accepted at the latest step.
      value: objective at the accepted point (:math:`+\infty` before the first step).
      grad: gradient at the accepted point.
      info: :class:`ZoomLinesearchInfo` of the latest search.
      count: step counter (int32) when some hyperparameter is a schedule, else ``None``.
      hyperparams: hyperparameter values used at the latest step.
    """

    learning_rate: Array
    value: Array
    grad: PyTree
    info: ZoomLinesearchInfo
    count: Array | None
    hyperparams: dict[str, Array]


class _Line(NamedTuple):
    r"""The one-dimensional problem :math:`\phi(\eta) = f(w + \eta u)`; constant during a search."""

    params: PyTree
    updates: PyTree
    value_and_grad: Callable[[PyTree], tuple[Array, PyTree]]
    value_init: Array  # phi(0)
    slope_init: Array  # phi'(0)
    guess: Array  # first trial step


class _Criteria(NamedTuple):
    """Resolved hyperparameters; ``max_stepsize`` and ``approx_dec_rtol`` may be ``None`` (unused)."""

    max_steps: Any
    max_stepsize: Any
    tol: Any
    increase_factor: Any
    slope_rtol: Any
    curv_rtol: Any
    approx_dec_rtol: Any
    interval_threshold: Any


class _Search(NamedTuple):
    """Carry of the search loop: the latest trial, the bracket and the best safe trial."""

    count: Array  # trials so far
    stepsize: Array  # latest trial and its value, gradient, slope and errors
    value: Array
    grad: PyTree
    slope: Array
    decrease_error: Array
    curvature_error: Array
    interval_found: Array  # phase 2 (zoom) once true
    done: Array
    failed: Array
    low: Array  # bracket end with the lower value (not necessarily the smaller step)
    value_low: Array
    slope_low: Array
    high: Array
    value_high: Array
    slope_high: Array
    cubic_ref: Array  # third point of the cubic interpolation
    value_cubic_ref: Array
    safe_stepsize: Array  # best trial with sufficient decrease (0: none yet)
    safe_value: Array
    safe_grad: PyTree


_ZOOM_RANGES = {
    "max_linesearch_steps": Range(1.0, integer=True),
    "max_learning_rate": POSITIVE,
    "tol": NONNEGATIVE,
    "increase_factor": POSITIVE,
    "slope_rtol": Range(0.0, 1.0, high_open=True),
    "curv_rtol": NONNEGATIVE,
    "approx_dec_rtol": NONNEGATIVE,
    "stepsize_precision": NONNEGATIVE,
}
_GUESSES = ("one", "keep")


# --------------------------------------------------------------------------- criteria


def _probe(line: _Line, stepsize: Array) -> tuple[Array, PyTree, Array]:
    r""":math:`\phi(\eta)`, :math:`\nabla f(w + \eta u)` and :math:`\phi'(\eta)`."""
    value, grad = line.value_and_grad(point_on_line(line.params, stepsize, line.updates))
    return value, grad, jnp.real(vdot(conj(grad), line.updates))


def _decrease_error(crit: _Criteria, line: _Line, stepsize: Array, value: Array, slope: Array) -> Array:
    """Violation of sufficient decrease (Armijo), or of Hager-Zhang's approximate form near a minimum."""
    err = value - line.value_init - crit.slope_rtol * stepsize * line.slope_init
    if crit.approx_dec_rtol is not None:
        approx = slope - (2 * crit.slope_rtol - 1.0) * line.slope_init
        not_lower = value - line.value_init - crit.approx_dec_rtol * jnp.abs(line.value_init)
        err = jnp.minimum(jnp.maximum(approx, not_lower), err)
    err = jnp.maximum(err, 0.0)
    return jnp.where(jnp.isnan(err), jnp.inf, err)


def _curvature_error(crit: _Criteria, line: _Line, slope: Array) -> Array:
    r"""Violation of the curvature condition :math:`|\phi'(\eta)| \le c_2 |\phi'(0)|`."""
    err = jnp.abs(slope) - crit.curv_rtol * jnp.abs(line.slope_init)
    err = jnp.maximum(err, 0.0)
    return jnp.where(jnp.isnan(err), jnp.inf, err)


def _cubic_minimizer(a, fa, fpa, b, fb, c, fc) -> Array:
    r"""Stationary point of the cubic through :math:`(a, f_a), (b, f_b), (c, f_c)`, slope :math:`f'_a` at a.

    NaN when the cubic has no real stationary point (the caller then rejects it).
    """
    db, dc = b - a, c - a
    denom = (db * dc) ** 2 * (db - dc)
    basis = jnp.array([[dc**2, -(db**2)], [-(dc**3), db**3]])
    rhs = jnp.array([fb - fa - fpa * db, fc - fa - fpa * dc])
    cubic, quadratic = jnp.dot(basis, rhs, precision=jax.lax.Precision.HIGHEST) / denom
    radical = quadratic * quadratic - 3.0 * cubic * fpa
    return a + (-quadratic + jnp.sqrt(radical)) / (3.0 * cubic)


def _quadratic_minimizer(a, fa, fpa, b, fb) -> Array:
    r"""Stationary point of the parabola through :math:`(a, f_a), (b, f_b)` with slope :math:`f'_a` at a."""
    db = b - a
    curvature = (fb - fa - fpa * db) / (db**2)
    return a - fpa / (2.0 * curvature)


def _inside(x: Array, left: Array, right: Array, margin: Array) -> Array:
    return (x > left + margin) & (x < right - margin)


# --------------------------------------------------------------------------- the two phases


class _Trial(NamedTuple):
    """One evaluated trial step."""

    stepsize: Array
    value: Array
    grad: PyTree
    slope: Array
    decrease_error: Array
    curvature_error: Array


def _evaluate(crit: _Criteria, line: _Line, stepsize: Array) -> _Trial:
    value, grad, slope = _probe(line, stepsize)
    dec = _decrease_error(crit, line, stepsize, value, slope)
    return _Trial(stepsize, value, grad, slope, dec, _curvature_error(crit, line, slope))


def _grown_step(crit: _Criteria, line: _Line, s: _Search) -> tuple[Array, Array]:
    """Phase 1's next trial: the guess, then larger steps; and whether the cap is reached."""
    stepsize = jnp.where(s.count == 0, line.guess, crit.increase_factor * s.stepsize)
    if crit.max_stepsize is None:
        return stepsize, jnp.asarray(False)
    return jnp.minimum(stepsize, crit.max_stepsize), stepsize >= crit.max_stepsize


def _interpolated_step(crit: _Criteria, s: _Search) -> tuple[Array, Array]:
    """Phase 2's next trial: cubic, else quadratic interpolant's minimiser, else the midpoint.

    An interpolant's minimiser is used only well inside the interval (20% and 10%
    margins). Also returns whether the interval is narrower than the threshold.
    """
    low, high = s.low, s.high
    width = jnp.abs(high - low)
    left, right = jnp.minimum(high, low), jnp.maximum(high, low)
    cubic = _cubic_minimizer(
        low, s.value_low, s.slope_low, high, s.value_high, s.cubic_ref, s.value_cubic_ref
    )
    use_cubic = _inside(cubic, left, right, 0.2 * width)
    quadratic = _quadratic_minimizer(low, s.value_low, s.slope_low, high, s.value_high)
    use_quadratic = ~use_cubic & _inside(quadratic, left, right, 0.1 * width)
    middle = jnp.where(use_cubic, cubic, jnp.where(use_quadratic, quadratic, (low + high) / 2.0))
    return middle, width <= crit.interval_threshold


def _after_growth(crit: _Criteria, s: _Search, t: _Trial, at_max: Array) -> _Search:
    """Phase 1 bookkeeping: does the trial close an interval, or is it acceptable?"""
    acceptable = jnp.maximum(t.decrease_error, t.curvature_error) <= crit.tol
    safe = tree_select(
        t.decrease_error <= crit.tol,
        (t.stepsize, t.value, t.grad),
        (s.safe_stepsize, s.safe_value, s.safe_grad),
    )
    # The trial closes the interval as its far end (too high a value) or its near end (slope >= 0).
    new_is_high = (t.decrease_error > 0.0) | ((t.value >= s.value) & (s.count > 0))
    new_is_low = (t.slope >= 0.0) & ~new_is_high
    new, prev = (t.stepsize, t.value, t.slope), (s.stepsize, s.value, s.slope)
    low, high = tree_select(new_is_low, (new, prev), (prev, new))
    found = new_is_high | new_is_low | acceptable
    # At the largest allowed step with no interval, a larger one cannot be tried: stop there.
    done = acceptable | (at_max & ~found)
    failed = (s.count + 1 >= crit.max_steps) & ~done
    out = _Search(
        safe_increment(s.count), *t, found, done, failed, *low, *high, low[0], low[1], *safe,
    )  # fmt: skip
    return tree_cast_like(out, s)


def _after_zoom(crit: _Criteria, s: _Search, t: _Trial, too_small: Array) -> _Search:
    """Phase 2 bookkeeping: shrink the interval around the trial, unless it is acceptable."""
    done = jnp.maximum(t.decrease_error, t.curvature_error) <= crit.tol
    better = (t.decrease_error <= crit.tol) & (t.value < s.safe_value)
    safe = tree_select(better, (t.stepsize, t.value, t.grad), (s.safe_stepsize, s.safe_value, s.safe_grad))
    mid, lo, hi = (
        (t.stepsize, t.value, t.slope),
        (s.low, s.value_low, s.slope_low),
        (s.high, s.value_high, s.slope_high),
    )
    high_to_middle = (t.decrease_error > 0.0) | (t.value >= s.value_low)
    high_to_low = (t.slope * (s.high - s.low) >= 0.0) & ~high_to_middle
    new_high = tree_select(high_to_middle, mid, tree_select(high_to_low, lo, hi))
    new_low = tree_select(high_to_middle, lo, mid)
    # The end that was replaced becomes the third point of the next cubic.
    ref = tree_select(high_to_middle | high_to_low, hi[:2], lo[:2])
    # Stop on the trial budget, or on a tiny interval once some step decreases enough.
    out_of_room = (s.count + 1 >= crit.max_steps) | (too_small & (safe[0] > 0.0))
    out = _Search(
        safe_increment(s.count), *t, s.interval_found, done, out_of_room & ~done,
        *new_low, *new_high, *ref, *safe,
    )  # fmt: skip
    return tree_cast_like(out, s)


def _fall_back(s: _Search) -> _Search:
    """On failure, return the safe trial if there is one (or if the latest value is not finite)."""
    use_safe = (s.safe_stepsize > 0.0) | jnp.isinf(s.decrease_error)
    stepsize, value, grad = tree_select(
        use_safe, (s.safe_stepsize, s.safe_value, s.safe_grad), (s.stepsize, s.value, s.grad)
    )
    return tree_cast_like(s._replace(stepsize=stepsize, value=value, grad=grad), s)


def _zoom_search(crit: _Criteria, line: _Line, grad: PyTree, dtype: Any) -> _Search:
    """Run both phases to the end; ``dtype`` is the dtype of the trial step.

    Each iteration evaluates the objective once: the phase only selects which
    trial step is evaluated and how the result is booked (``jnp.where``, not
    ``lax.cond``), so under ``jax.vmap`` a batch of searches still costs one
    evaluation per iteration, and the objective is compiled once.
    """
    default = hyperparam_dtype()
    zero, inf, false = jnp.zeros((), default), jnp.asarray(jnp.inf, default), jnp.asarray(False)
    first = _Search(
        jnp.zeros((), jnp.int32), jnp.zeros((), dtype), line.value_init.astype(dtype), grad, line.slope_init,
        inf, inf, false, false, false,
        zero, line.value_init, line.slope_init, zero, line.value_init, line.slope_init, zero, line.value_init,
        zero, line.value_init, grad,
    )  # fmt: skip

    def one_trial(s):
        zooming = s.interval_found
        grown, at_max = _grown_step(crit, line, s)
        middle, too_small = _interpolated_step(crit, s)
        t = _evaluate(crit, line, jnp.where(zooming, middle, grown))
        s = tree_select(zooming, _after_zoom(crit, s, t, too_small), _after_growth(crit, s, t, at_max))
        return tree_select(s.failed, _fall_back(s), s)

    return jax.lax.while_loop(lambda s: ~(s.done | s.failed), one_trial, first)


def _print_if(condition: Array, message: str, **values: Any) -> None:
    jax.lax.cond(condition, lambda: jax.debug.print(message, **values, ordered=True), lambda: None)


def _report(s: _Search, line: _Line, crit: _Criteria) -> None:
    """Print why a search ended without meeting both conditions (``verbose=True``)."""
    owner = "scale_by_zoom_linesearch: "
    _print_if(
        s.failed,
        owner + "no step size met both conditions within the trial budget; taking {stepsize} "
        "(decrease error {dec}, curvature error {curv})",
        stepsize=s.stepsize,
        dec=s.decrease_error,
        curv=s.curvature_error,
    )
    _print_if(
        s.failed & (line.slope_init >= 0.0),
        owner + "the update is not a descent direction: its slope at step 0 is {slope} >= 0",
        slope=line.slope_init,
    )
    _print_if(
        s.done & (s.curvature_error > crit.tol),
        owner + "stopped at max_learning_rate {stepsize} without meeting the curvature condition "
        "(a larger max_learning_rate may meet it)",
        stepsize=s.stepsize,
    )


def scale_by_zoom_linesearch(
    max_linesearch_steps: Hyperparam,
    max_learning_rate: Hyperparam | None = None,
    tol: Hyperparam = 0.0,
    increase_factor: Hyperparam = 2.0,
    slope_rtol: Hyperparam = 1e-4,
    curv_rtol: Hyperparam = 0.9,
    approx_dec_rtol: Hyperparam | None = 1e-6,
    stepsize_precision: Hyperparam = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> GradientTransformation:
    r"""Scale updates by a step size satisfying the strong Wolfe conditions, found by a zoom search.

    With :math:`\phi(\eta) = f(w + \eta u)`, a step :math:`\eta` is accepted when

    .. math::

        \phi(\eta) &\le \phi(0) + c_1\,\eta\,\phi'(0) + \epsilon
            \qquad \text{(sufficient decrease)} \\
        |\phi'(\eta)| &\le c_2\,|\phi'(0)| + \epsilon
            \qquad \text{(curvature)}

    (``slope_rtol`` :math:`c_1`, ``curv_rtol`` :math:`c_2`, ``tol``
    :math:`\epsilon`). Close to a minimum, where values stop resolving the
    decrease, sufficient decrease may instead be met in Hager & Zhang's
    approximate form :math:`\phi'(\eta) \le (2 c_1 - 1)\,\phi'(0)`, used
    only if :math:`\phi(\eta) \le \phi(0) + c_3 |\phi(0)|` (``approx_dec_rtol``
    :math:`c_3`; ``None`` disables it). The output is :math:`\eta u`; the search
    phases are described in the module docstring.

    The extra arguments ``value``, ``grad`` and ``value_fn`` are required (see
    :mod:`jopt.transforms.linesearch`); the value and gradient at the accepted
    point are kept in the state.

    Args:
      max_linesearch_steps: maximum number of trials per search, an integer >= 1.
      max_learning_rate: largest step tried, > 0; ``None``: unbounded.
      tol: :math:`\epsilon \ge 0`.
      increase_factor: factor > 0 (usually > 1) growing the trial step in the
        bracketing phase.
      slope_rtol: :math:`c_1 \in [0, 1)`.
      curv_rtol: :math:`c_2 \ge 0` (``math.inf`` disables the curvature condition).
      approx_dec_rtol: :math:`c_3 \ge 0`, or ``None``.
      stepsize_precision: once the interval is narrower than this and some trial
        met sufficient decrease, the search stops with the best such trial.
      initial_guess_strategy: first trial step, ``"one"`` (1, suited to
        quasi-Newton directions) or ``"keep"`` (the previous step size, suited
        to gradient descent); static.
      verbose: print a message when a search fails (static).

    Raises:
      ValueError: for an out-of-range hyperparameter or an unknown
        ``initial_guess_strategy``.

    Example:
      Gradient descent with a zoom line search on the Rosenbrock function:

      >>> import jax, jax.numpy as jnp, jopt
      >>> def f(x):
      ...     return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
      >>> opt = jopt.chain(jopt.sgd(1.0), jopt.scale_by_zoom_linesearch(max_linesearch_steps=20))
      >>> value_and_grad = jopt.value_and_grad_from_state(f)
      >>> @jax.jit
      ... def step(params, state):
      ...     value, grad = value_and_grad(params, state=state)
      ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     return jopt.apply_updates(params, updates), state
      >>> params = jnp.array([-1.0, 1.0])
      >>> state = opt.init(params)
      >>> for _ in range(20):
      ...     params, state = step(params, state)
      >>> print(float(f(params)) < float(f(jnp.array([-1.0, 1.0]))) / 10)
      True
    """
    if initial_guess_strategy not in _GUESSES:
        raise ValueError(
            f"scale_by_zoom_linesearch: initial_guess_strategy must be one of {_GUESSES}, "
            f"got {initial_guess_strategy!r}"
        )
    given = {
        "max_linesearch_steps": max_linesearch_steps,
        "max_learning_rate": max_learning_rate,
        "tol": tol,
        "increase_factor": increase_factor,
        "slope_rtol": slope_rtol,
        "curv_rtol": curv_rtol,
        "approx_dec_rtol": approx_dec_rtol,
        "stepsize_precision": stepsize_precision,
    }
    hp = {k: v for k, v in given.items() if v is not None}  # None disables a criterion (structural)

    def init_fields(params, h):
        del h
        dt, default = scalar_dtype(params), hyperparam_dtype()
        info = ZoomLinesearchInfo(
            jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, default), jnp.asarray(jnp.inf, default)
        )
        return jnp.ones((), dt), jnp.asarray(jnp.inf, dt), tree_zeros_like(params), info

    def step(updates, state, params, h, count_inc):
        del count_inc
        value, grad, value_fn = take_line_search_args(h)
        value = jnp.asarray(value)
        crit = _Criteria(
            h["max_linesearch_steps"],
            h.get("max_learning_rate"),
            h["tol"],
            h["increase_factor"],
            h["slope_rtol"],
            h["curv_rtol"],
            h.get("approx_dec_rtol"),
            h["stepsize_precision"],
        )
        previous = jnp.asarray(state.learning_rate)
        guess = jnp.ones((), hyperparam_dtype()) if initial_guess_strategy == "one" else previous
        slope = jnp.real(vdot(updates, grad))
        line = _Line(params, updates, jax.value_and_grad(value_fn), value, slope, guess)
        final = _zoom_search(crit, line, grad, previous.dtype)
        if verbose:
            _report(final, line, crit)
        info = ZoomLinesearchInfo(final.count, final.decrease_error, final.curvature_error)
        fields = (final.stepsize, final.value, final.grad, info)
        return tree_scale(updates, final.stepsize), fields_like_state(fields, state)

    core = hyperparam_transformation(
        "scale_by_zoom_linesearch",
        hp,
        _ZOOM_RANGES,
        state_in_optax_order(ScaleByZoomLinesearchState),
        step,
        init_fields,
        needs_params=True,
        cast_fields=False,  # fields_like_state
        extra_args=LINESEARCH_ARGS,
    )
    return line_search_transformation("scale_by_zoom_linesearch", core)
