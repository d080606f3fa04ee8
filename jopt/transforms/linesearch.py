r"""Backtracking line search, and the plumbing every jopt line search shares.

A line search turns an update direction :math:`u` into the step
:math:`\eta u`, choosing :math:`\eta` by evaluating the objective along the
line :math:`\eta \mapsto f(w + \eta u)`. It needs more than gradients, so its
``update`` takes the extra keyword arguments

* ``value``: :math:`f(w)` at the current parameters,
* ``grad``: :math:`\nabla f(w)`,
* ``value_fn``: the objective :math:`f`, called as ``value_fn(params, **data)``,
* any further keyword arguments (e.g. a batch ``x=..., y=...``): forwarded to
  ``value_fn``, which must accept them (by name, or through ``**kwargs``);
  a name it does not accept raises ``TypeError``, as in optax, so a misspelt
  batch argument is never dropped silently.

The state keeps the value (and, where computed, the gradient) at the accepted
point in fields named ``value`` and ``grad``;
:func:`value_and_grad_from_state` reuses them, so a full-batch loop evaluates
the objective once per line-search probe and never twice at the same point.

Hyperparameters (tolerances, factors, maximal step) may be Python numbers,
arrays, traced values or schedules; structural arguments (``store_grad``,
``verbose``) are static. With Python-number hyperparameters the arithmetic is
optax's, so trajectories equal ``optax.scale_by_backtracking_linesearch``'s bit
for bit in float32 and float64. The line-search scalars (step size, value) are
kept in at least float32 even for lower-precision parameters.

Forwarding extra arguments
--------------------------
``jopt.chain`` forwards each member only the extra arguments it declares. The
line searches declare ``value``, ``grad`` and ``value_fn`` and additionally
accept every other name, so data for ``value_fn`` reaches a line search that is
a direct member of the chain being called (and :func:`jopt.lbfgs` accepts it as
well). A chain nested inside another chain forwards only declared names.
``optax.chain`` forwards no extra argument to a jopt member: put line searches
in :func:`jopt.chain`.

Differences from optax
----------------------
Values are bit-equal (float32, float64 and complex64 trajectories of every
configuration in ``tests/test_lbfgs_linesearch.py``); the differences are in
structure and diagnostics:

* the states have optax's fields at optax's positions, followed by ``count``
  (``None`` unless a hyperparameter is a schedule) and ``hyperparams``;
* ``info.num_linesearch_steps`` is int32 (optax: the default integer, int64
  under x64);
* for bfloat16/float16 parameters the step size and value are kept in float32
  (optax: the parameters' dtype) and trial points keep the parameters' dtypes;
* a ``value_fn`` taking ``**kwargs`` receives every extra argument (optax
  forwards only names in its signature and raises for the others);
* ``verbose=True`` prints jopt's own diagnostics;
* the zoom search evaluates the objective once per trial, choosing the trial
  and its bookkeeping with selects rather than ``lax.cond``, so under
  ``jax.vmap`` it does not evaluate both phases (optax's branches both run
  there), and the objective is compiled once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import (
    AcceptsAnyExtraArg,
    GradientTransformation,
    GradientTransformationExtraArgs,
    hyperparam_transformation,
)
from jopt.hyperparams import NONNEGATIVE, POSITIVE, Hyperparam, Range, cast_hyperparam, compute_dtype
from jopt.tree import add_scale, conj, tree_cast_like, tree_scale, tree_zeros_like, vdot

Array = jax.Array
PyTree = Any

__all__ = [
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "scale_by_backtracking_linesearch",
    "value_and_grad_from_state",
]

LINESEARCH_ARGS = ("value", "grad", "value_fn")
"""The extra arguments every line search consumes."""


# --------------------------------------------------------------------------- shared plumbing


def _bind_data(owner: str, value_fn: Callable[..., Array], data: Mapping[str, Any]) -> Callable[..., Array]:
    """``value_fn`` with ``data`` bound as keywords.

    Raises:
      TypeError: naming the entries of ``data`` that ``value_fn``'s signature does not accept.
    """
    if not data:
        return value_fn
    try:
        parameters = inspect.signature(value_fn).parameters.values()
    except (TypeError, ValueError):  # no signature to check against: let the call decide
        return functools.partial(value_fn, **data)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        names = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
        unused = sorted(k for k in data if k not in names)
        if unused:
            raise TypeError(
                f"Unexpected keyword arguments {unused} in {owner}.update: value_fn does not accept them "
                "(extra arguments other than value, grad and value_fn are passed to value_fn)"
            )
    return functools.partial(value_fn, **data)


def line_search_transformation(owner: str, core: GradientTransformation) -> GradientTransformation:
    """Wrap a line search's core transform: check the extra arguments and bind data to ``value_fn``.

    ``core`` receives exactly ``value``, ``grad`` and ``value_fn`` (the latter
    with the call's other keyword arguments bound, see :func:`_bind_data`).
    """

    def update(updates, state, params=None, **extra_args):
        missing = [name for name in LINESEARCH_ARGS if extra_args.get(name) is None]
        if missing:
            raise TypeError(
                f"{owner} needs the extra arguments value, grad and value_fn (missing {missing}): call "
                "update(updates, state, params, value=loss, grad=grads, value_fn=loss_fn)"
            )
        data = {k: v for k, v in extra_args.items() if k not in LINESEARCH_ARGS}
        value_fn = _bind_data(owner, extra_args["value_fn"], data)
        return core.update(
            updates, state, params, value=extra_args["value"], grad=extra_args["grad"], value_fn=value_fn
        )

    update.extra_args = AcceptsAnyExtraArg(LINESEARCH_ARGS)  # type: ignore[attr-defined]
    update.__wrapped__ = core.update  # type: ignore[attr-defined]
    return GradientTransformationExtraArgs(core.init, update)


def take_line_search_args(h: dict[str, Any]) -> tuple[Array, PyTree, Callable[..., Array]]:
    """Remove ``value``, ``grad`` and ``value_fn`` from the resolved hyperparameters ``h`` and return them.

    They reach the step through ``h`` (``hyperparam_transformation(extra_args=...)``)
    but are not hyperparameters: they must not be recorded in the state.
    """
    return tuple(h.pop(name) for name in LINESEARCH_ARGS)  # type: ignore[return-value]


def scalar_dtype(params: PyTree) -> Any:
    """Dtype of the line-search scalars: the real dtype of the first leaf, at least float32."""
    leaves = jax.tree.leaves(params)
    dtype = jnp.asarray(leaves[0]).dtype if leaves else jnp.float32
    return compute_dtype(jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.inexact) else dtype)


LINESEARCH_FIELDS = ("learning_rate", "value", "grad", "info")
"""The fields of a line-search state, in optax's order (then ``count`` and ``hyperparams``)."""


def state_in_optax_order(state_cls: Callable[..., Any]) -> Callable[..., Any]:
    """``state_cls`` built from the builder's ``(count, *fields, hyperparams)`` argument order.

    :func:`jopt.hyperparam_transformation` passes ``count`` first; a line-search
    state keeps optax's positions (``state[0]`` is the learning rate) and puts
    ``count`` and ``hyperparams`` last.
    """

    def build(count, learning_rate, value, grad, info, hyperparams):
        return state_cls(learning_rate, value, grad, info, count, hyperparams)

    return build


def fields_like_state(fields: tuple, state: Any) -> tuple:
    """The new state ``fields`` (:data:`LINESEARCH_FIELDS`) in the dtypes of ``state``'s.

    A state field that was replaced by a Python number (e.g. ``state._replace(learning_rate=1.0)``)
    takes the new value's dtype, as in optax.
    """
    old = tuple(getattr(state, name) for name in LINESEARCH_FIELDS)
    return jax.tree.map(lambda new, o: jnp.asarray(new, getattr(o, "dtype", None)), fields, old)


def point_on_line(params: PyTree, stepsize: Array, updates: PyTree) -> PyTree:
    r""":math:`w + \eta u`, in the parameters' dtypes."""
    return tree_cast_like(add_scale(params, stepsize, updates), params)


# --------------------------------------------------------------------------- value and grad reuse


def _fields_named(state: Any, name: str) -> list[Any]:
    """Values of every ``NamedTuple`` field called ``name`` anywhere in ``state``."""
    found = []
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        for field in state._fields:
            if field == name:
                found.append(getattr(state, field))
            else:
                found.extend(_fields_named(getattr(state, field), name))
    elif isinstance(state, (tuple, list)):
        for child in state:
            found.extend(_fields_named(child, name))
    elif isinstance(state, Mapping):
        for child in state.values():
            found.extend(_fields_named(child, name))
    return found


def _single_field(state: Any, name: str) -> Any:
    found = _fields_named(state, name)
    if len(found) > 1:  # KeyError, as optax
        raise KeyError(f"value_and_grad_from_state: found {len(found)} fields named {name!r} in the state")
    if not found or found[0] is None:
        raise ValueError(
            f"value_and_grad_from_state: no {name!r} in the optimizer state; use a line search that stores "
            "it (scale_by_zoom_linesearch, or scale_by_backtracking_linesearch(..., store_grad=True))"
        )
    return found[0]


def value_and_grad_from_state(value_fn: Callable[..., Array]) -> Callable[..., tuple[Array, PyTree]]:
    r"""Like :func:`jax.value_and_grad`, but reusing the value and gradient a line search stored.

    The returned function is called as ``value_and_grad(params, *args,
    state=opt_state, **kwargs)``. It returns the ``value`` and ``grad`` fields
    of ``state`` (computed by the line search at the point it accepted, which
    is the new ``params``) when the stored value is finite, and
    ``jax.value_and_grad(value_fn)(params, *args, **kwargs)`` otherwise (at the
    first step the stored value is :math:`+\infty`). The choice is a
    ``jax.lax.cond``, so the function can be jitted.

    Raises:
      ValueError: when the state has no ``value``/``grad`` field, or a ``grad``
        field that is ``None``.
      KeyError: when it has several (as optax).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> def f(x):
      ...     return jnp.sum((x - 1.0) ** 2)
      >>> opt = jopt.chain(
      ...     jopt.sgd(0.25),
      ...     jopt.scale_by_backtracking_linesearch(max_backtracking_steps=15, store_grad=True),
      ... )
      >>> value_and_grad = jopt.value_and_grad_from_state(f)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> value, grad = value_and_grad(params, state=state)  # nothing stored yet: computed
      >>> updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      >>> params = jopt.apply_updates(params, updates)
      >>> value, grad = value_and_grad(params, state=state)  # stored by the line search
      >>> print(float(value), float(state[1].value), grad)
      0.5 0.5 [-1. -1.]
    """

    def value_and_grad(params: PyTree, *fn_args: Any, state: Any, **fn_kwargs: Any):
        value = _single_field(state, "value")
        grad = _single_field(state, "grad")

        def recompute(p, args, kwargs):
            fresh = jax.value_and_grad(value_fn)(p, *args, **kwargs)
            return jax.tree.map(lambda x, like: jnp.asarray(x, like.dtype), fresh, (value, grad))

        return jax.lax.cond(
            jnp.isfinite(value), lambda *_: (value, grad), recompute, params, fn_args, fn_kwargs
        )

    return value_and_grad


# --------------------------------------------------------------------------- backtracking


class BacktrackingLinesearchInfo(NamedTuple):
    """Diagnostics of the latest backtracking search.

    Attributes:
      num_linesearch_steps: objective evaluations in the latest search.
      decrease_error: how much the accepted step misses the sufficient-decrease
        condition (0 when it holds; positive: the search failed).
    """

    num_linesearch_steps: Array
    decrease_error: Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    r"""State of :func:`scale_by_backtracking_linesearch`.

    The first four fields are optax's, at optax's positions.

    Attributes:
      learning_rate: step size :math:`\eta` accepted at the latest step.
      value: objective at the accepted point (:math:`+\infty` before the first step).
      grad: gradient at the accepted point with ``store_grad=True``, else ``None``.
      info: :class:`BacktrackingLinesearchInfo` of the latest search.
      count: step counter (int32) when some hyperparameter is a schedule, else ``None``.
      hyperparams: hyperparameter values used at the latest step.
    """

    learning_rate: Array
    value: Array
    grad: PyTree | None
    info: BacktrackingLinesearchInfo
    count: Array | None
    hyperparams: dict[str, Array]


class _Backtrack(NamedTuple):
    """Carry of the backtracking loop: the latest trial."""

    learning_rate: Array
    value: Array
    grad: PyTree
    decrease_error: Array
    num_steps: Array


_BACKTRACKING_RANGES = {
    "max_backtracking_steps": Range(0.0, integer=True),
    "slope_rtol": Range(0.0, 1.0, high_open=True),
    "decrease_factor": Range(0.0, 1.0, low_open=True, high_open=True),
    "increase_factor": POSITIVE,
    "max_learning_rate": POSITIVE,
    "atol": NONNEGATIVE,
    "rtol": NONNEGATIVE,
}


def _backtracking_search(
    updates: PyTree, params: PyTree, lr_guess: Array, h: dict[str, Any], store_grad: bool
) -> _Backtrack:
    """Shrink ``lr_guess`` by ``decrease_factor`` until the sufficient-decrease condition holds."""
    value, grad, value_fn = take_line_search_args(h)
    dt = lr_guess.dtype
    rtol, slope_rtol, atol = (cast_hyperparam(h[k], dt) for k in ("rtol", "slope_rtol", "atol"))
    decrease_factor, max_steps = cast_hyperparam(h["decrease_factor"], dt), h["max_backtracking_steps"]
    slope = jnp.real(vdot(updates, conj(grad)))

    def violation(lr, new_value):
        err = new_value - (1.0 + rtol) * value - lr * slope_rtol * slope
        return jnp.maximum(jnp.where(jnp.isnan(err), jnp.inf, err), 0.0)

    def keep_going(trial):
        return (~(trial.decrease_error <= atol)) & (trial.num_steps <= max_steps)

    def next_trial(trial):
        # The first trial evaluates the guess itself; later ones shrink it.
        lr = jnp.where(trial.num_steps > 0, decrease_factor * trial.learning_rate, trial.learning_rate)
        candidate = point_on_line(params, lr, updates)
        if store_grad:
            new_value, tangent = jax.linearize(value_fn, candidate)
            err = violation(lr, new_value)
            # Transposing the linearization gives the gradient, needed only at the last trial.
            new_grad = jax.lax.cond(
                (err <= atol) | (trial.num_steps == max_steps),
                lambda p: jax.linear_transpose(tangent, p)(jnp.ones_like(new_value))[0],
                lambda p: trial.grad,
                candidate,
            )
        else:
            new_value = value_fn(candidate)
            err = violation(lr, new_value)
            new_grad = trial.grad
        return tree_cast_like(_Backtrack(lr, new_value, new_grad, err, trial.num_steps + 1), trial)

    first = _Backtrack(
        lr_guess,
        jnp.asarray(value),
        tree_zeros_like(params),
        jnp.asarray(jnp.inf, dt),
        jnp.zeros((), jnp.int32),
    )
    return jax.lax.while_loop(keep_going, next_trial, first)


def scale_by_backtracking_linesearch(
    max_backtracking_steps: Hyperparam,
    slope_rtol: Hyperparam = 1e-4,
    decrease_factor: Hyperparam = 0.8,
    increase_factor: Hyperparam = 1.5,
    max_learning_rate: Hyperparam = 1.0,
    atol: Hyperparam = 0.0,
    rtol: Hyperparam = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformation:
    r"""Scale updates by a step size found by backtracking (Armijo's sufficient decrease).

    Starting from :math:`\eta^{(0)} = \min(\gamma\,\eta_{k-1}, \eta_{\max})`
    (``increase_factor`` :math:`\gamma`, ``max_learning_rate``
    :math:`\eta_{\max}`, :math:`\eta_{-1} = 1`), the trial step is shrunk,
    :math:`\eta^{(i+1)} = \beta\,\eta^{(i)}` (``decrease_factor``), until

    .. math::

        f(w + \eta u) \le (1 + \delta) f(w) + c\,\eta\,\langle u, \nabla f(w)\rangle + \epsilon

    (``slope_rtol`` :math:`c`, ``rtol`` :math:`\delta`, ``atol`` :math:`\epsilon`)
    or ``max_backtracking_steps`` trials after the first. The output is
    :math:`\eta u`. When every trial gives a non-finite value, :math:`\eta = 0`
    (no step). The condition can only be met when :math:`u` is a descent
    direction, :math:`\langle u, \nabla f(w)\rangle < 0` (e.g. after
    :func:`jopt.sgd` without momentum).

    The extra arguments ``value``, ``grad`` and ``value_fn`` are required (see
    the module docstring).

    Args:
      max_backtracking_steps: maximum number of shrinking steps, an integer >= 0.
      slope_rtol: :math:`c \in [0, 1)`.
      decrease_factor: :math:`\beta \in (0, 1)`.
      increase_factor: :math:`\gamma > 0`, usually :math:`\ge 1` (1: start from the
        previous step size; ``math.inf``: always start from :math:`\eta_{\max}`).
      max_learning_rate: :math:`\eta_{\max} > 0`.
      atol: :math:`\epsilon \ge 0`.
      rtol: :math:`\delta \ge 0`.
      store_grad: also compute the gradient at the accepted point and keep it in
        ``state.grad`` for :func:`value_and_grad_from_state` (static).
      verbose: print a message when the search fails (static).

    Example:
      Gradient descent with backtracking on the Rosenbrock function:

      >>> import jax, jax.numpy as jnp, jopt
      >>> def f(x):
      ...     return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
      >>> opt = jopt.chain(
      ...     jopt.sgd(learning_rate=1.0),
      ...     jopt.scale_by_backtracking_linesearch(max_backtracking_steps=30, store_grad=True),
      ... )
      >>> value_and_grad = jopt.value_and_grad_from_state(f)
      >>> @jax.jit
      ... def step(params, state):
      ...     value, grad = value_and_grad(params, state=state)
      ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     return jopt.apply_updates(params, updates), state
      >>> params = jnp.array([-1.0, 1.0])
      >>> state = opt.init(params)
      >>> for _ in range(50):
      ...     params, state = step(params, state)
      >>> print(float(f(params)) < float(f(jnp.array([-1.0, 1.0]))) / 10)
      True
    """
    hp = {
        "max_backtracking_steps": max_backtracking_steps,
        "slope_rtol": slope_rtol,
        "decrease_factor": decrease_factor,
        "increase_factor": increase_factor,
        "max_learning_rate": max_learning_rate,
        "atol": atol,
        "rtol": rtol,
    }

    def init_fields(params, h):
        del h
        dt = scalar_dtype(params)
        grad = tree_zeros_like(params) if store_grad else None
        info = BacktrackingLinesearchInfo(jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dt))
        return jnp.ones((), dt), jnp.asarray(jnp.inf, dt), grad, info

    def step(updates, state, params, h, count_inc):
        del count_inc
        previous = jnp.asarray(state.learning_rate)
        increase, max_lr = (
            cast_hyperparam(h[k], previous.dtype) for k in ("increase_factor", "max_learning_rate")
        )
        guess = jnp.minimum(increase * previous, max_lr)
        trial = _backtracking_search(updates, params, guess, h, store_grad)
        # A search that never saw a finite value takes no step.
        learning_rate = jnp.where(jnp.isinf(trial.decrease_error), 0.0, trial.learning_rate)
        if verbose:
            _report_failure("scale_by_backtracking_linesearch", trial.decrease_error > h["atol"], trial)
        info = BacktrackingLinesearchInfo(trial.num_steps, trial.decrease_error)
        fields = (learning_rate, trial.value, trial.grad if store_grad else None, info)
        return tree_scale(updates, learning_rate), fields_like_state(fields, state)

    core = hyperparam_transformation(
        "scale_by_backtracking_linesearch",
        hp,
        _BACKTRACKING_RANGES,
        state_in_optax_order(ScaleByBacktrackingLinesearchState),
        step,
        init_fields,
        needs_params=True,
        cast_fields=False,  # fields_like_state
        extra_args=LINESEARCH_ARGS,
    )
    return line_search_transformation("scale_by_backtracking_linesearch", core)


def _report_failure(owner: str, failed: Array, trial: Any) -> None:
    """Print the failed search's last step size and decrease error (``verbose=True``)."""
    jax.lax.cond(
        failed,
        lambda: jax.debug.print(
            owner + ": no step size with sufficient decrease found (step size {lr}, decrease error {err})",
            lr=trial.learning_rate,
            err=trial.decrease_error,
            ordered=True,
        ),
        lambda: None,
    )
