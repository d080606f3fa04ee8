r"""Gradient accumulation over micro-batches: ``MultiSteps`` and ``apply_every`` (optax's semantics).

:class:`MultiSteps` (and jopt's :func:`accumulate_gradients`, which returns its
transformation) averages the gradients of ``k`` consecutive calls and hands the
average to the inner optimizer on every ``k``-th call; the other calls return
zero updates. The inner update runs under ``lax.cond``, so it is only computed
on emitting calls (optax computes it at every call and discards it; the
results are the same). Under ``jax.vmap`` with a batched ``k`` both branches
run, as ``lax.cond`` becomes a select.

Training on ``k`` micro-batches of size ``b`` with accumulation is then the same
as training on one batch of size ``k b`` without it (for a loss that is a mean
over examples), with ``k`` times less activation memory.

:func:`apply_every` is the stateless-inner variant for the middle of a chain: it
sums ``k`` updates and emits the sum every ``k``-th call (the transforms before
it in the chain still update their state at every call).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, transformation
from jopt.hyperparams import Hyperparam, cast_hyperparam, check_hyperparam, compute_dtype, is_python_number
from jopt.transforms.conditionals import run_inner_if
from jopt.tree import safe_increment

Array = jax.Array
PyTree = Any

__all__ = [
    "AccumulateGradientsState",
    "ApplyEvery",
    "MultiSteps",
    "MultiStepsState",
    "ShouldSkipUpdateFunction",
    "accumulate_gradients",
    "accumulation_emitted",
    "apply_every",
    "skip_large_updates",
    "skip_not_finite",
]


class ShouldSkipUpdateFunction(Protocol):
    """``fn(updates, gradient_step, params) -> (skip: bool scalar, skip_state: pytree)``."""

    def __call__(
        self, updates: PyTree, gradient_step: Array, params: PyTree | None
    ) -> tuple[Array, PyTree]: ...


def skip_not_finite(updates: PyTree, gradient_step: Array, params: PyTree | None) -> tuple[Array, dict]:
    r"""A :class:`MultiSteps` skip test: skip a micro-step whose updates contain NaN or Inf.

    .. math:: \text{skip} = \#\{i : u_i \notin \mathbb{R}\} > 0

    Returns:
      ``(should_skip, {"should_skip": ..., "num_not_finite": ...})``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> skip, info = jopt.skip_not_finite({"w": jnp.array([1.0, jnp.inf])}, 0, None)
      >>> bool(skip), int(info["num_not_finite"])
      (True, 1)
    """
    del gradient_step, params
    counts = [jnp.sum(jnp.logical_not(jnp.isfinite(u))) for u in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.array(counts))
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: PyTree, gradient_step: Array, params: PyTree | None, max_squared_norm: Hyperparam
) -> tuple[Array, dict]:
    r"""A :class:`MultiSteps` skip test: skip a micro-step whose squared global norm is too large.

    .. math:: \text{skip} = \neg\left(\textstyle\sum_i u_i^2 < n_{\max}\right)

    (so a NaN norm is skipped too). Use it as
    ``functools.partial(skip_large_updates, max_squared_norm=...)``; the bound may
    be traced. Squares are summed in at least float32.

    Returns:
      ``(should_skip, {"should_skip": ..., "norm_squared": ...})``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> skip, info = jopt.skip_large_updates({"w": jnp.array([3.0, 4.0])}, 0, None, 20.0)
      >>> bool(skip), float(info["norm_squared"])
      (True, 25.0)
    """
    del gradient_step, params
    squares = [jnp.sum(u.astype(compute_dtype(u.dtype)) ** 2) for u in jax.tree.leaves(updates)]
    norm_sq = jnp.sum(jnp.array(squares))
    should_skip = jnp.logical_not(norm_sq < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}


def _never_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return jnp.array(False), ()


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps` (optax's fields, plus jopt's ``hyperparams``).

    Attributes:
      mini_step: micro-steps accumulated since the last emitted update.
      gradient_step: number of inner (emitted) updates so far.
      inner_opt_state: state of the inner optimizer (advances on emitting calls only).
      acc_grads: running mean (or sum) of the gradients of the current window.
      skip_state: what ``should_skip_update_fn`` returned at the latest call.
      hyperparams: ``every_k`` used at the latest call, when it is an array or a schedule.
    """

    mini_step: Array
    gradient_step: Array
    inner_opt_state: Any
    acc_grads: PyTree
    skip_state: PyTree = ()
    hyperparams: dict[str, Array] = {}


AccumulateGradientsState = MultiStepsState


class MultiSteps:
    r"""Accumulate gradients over ``k`` calls and apply ``opt`` to them every ``k``-th call.

    With :math:`j` the micro-step within the current window and :math:`k` the
    window length (``use_grad_mean``: running mean, numerically stable):

    .. math::
       a_{j+1} &= a_j + \frac{g - a_j}{j + 1}, \qquad a_0 = 0 \\
       u &= \begin{cases} f(a_k) & j + 1 = k \quad\text{(then } a \leftarrow 0,\ j \leftarrow 0) \\
            0 & \text{otherwise} \end{cases}

    where :math:`f` is the inner optimizer, which sees (and advances its state
    on) emitting calls only; without ``use_grad_mean``, :math:`a_{j+1} = g + a_j`.
    Extra arguments (e.g. ``value=loss``) of the emitting call are forwarded to
    ``opt`` when it declares them.

    Args:
      opt: the optimizer applied to accumulated gradients (jopt or optax).
      every_k_schedule: window length :math:`k \ge 1`: an int, an int array (may
        be traced) or a schedule ``gradient_step -> k`` evaluated at the number of
        emitted updates (to grow the effective batch during training).
      use_grad_mean: average the gradients of a window (default) or sum them.
      should_skip_update_fn: a :class:`ShouldSkipUpdateFunction`, e.g.
        :func:`skip_not_finite`; a skipped micro-step leaves the state unchanged
        (except ``skip_state``) and returns zero updates.
      accumulator_dtype: dtype of the accumulator; ``None`` (default): at least
        float32 (optax's default is float32, which is the same for float32,
        bfloat16 and float16 parameters).

    Use :meth:`gradient_transformation` (or the object itself, which has
    ``init`` and ``update``) as the optimizer.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> ms = jopt.MultiSteps(jopt.scale_by_learning_rate(1.0), every_k_schedule=2)
      >>> p = {"w": jnp.zeros(1)}
      >>> s = ms.init(p)
      >>> u1, s = ms.update({"w": jnp.array([1.0])}, s, p)
      >>> u2, s = ms.update({"w": jnp.array([3.0])}, s, p)
      >>> float(u1["w"][0]), float(u2["w"][0]), bool(ms.has_updated(s))
      (0.0, -2.0, True)
    """

    def __init__(
        self,
        opt: Any,
        every_k_schedule: Hyperparam,
        use_grad_mean: bool = True,
        should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
        accumulator_dtype: Any | None = None,
    ):
        check_hyperparam(every_k_schedule, "every_k_schedule", low=1, integer=True, owner="MultiSteps")
        self._opt = as_transformation(opt)
        self._every_k = every_k_schedule
        self._use_grad_mean = use_grad_mean
        self._skip = should_skip_update_fn if should_skip_update_fn is not None else _never_skip
        self._accumulator_dtype = accumulator_dtype
        self._tx = transformation(self._init, self._update, extra_args=self._opt.extra_args)

    @property
    def inner_opt(self) -> GradientTransformation:
        """The wrapped optimizer."""
        return self._opt

    @property
    def extra_args(self) -> frozenset[str]:
        """The extra arguments forwarded to the wrapped optimizer."""
        return self._opt.extra_args

    def _k(self, gradient_step: Array) -> Array | int:
        k = self._every_k(gradient_step) if callable(self._every_k) else self._every_k
        return cast_hyperparam(k, jnp.int32)

    def _stored(self, k: Array | int) -> dict[str, Array]:
        return {} if is_python_number(self._every_k) else {"every_k": jnp.asarray(k, jnp.int32)}

    def _acc_dtype(self, x: Array) -> Any:
        return self._accumulator_dtype if self._accumulator_dtype is not None else compute_dtype(x.dtype)

    def _init(self, params: PyTree) -> MultiStepsState:
        zero = jnp.zeros([], jnp.int32)
        zeros = jax.tree.map(jnp.zeros_like, params)
        _, skip_state = self._skip(zeros, zero, params)
        return MultiStepsState(
            mini_step=zero,
            gradient_step=zero,
            inner_opt_state=self._opt.init(params),
            acc_grads=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=self._acc_dtype(p)), params),
            skip_state=skip_state,
            hyperparams=self._stored(self._k(zero)),
        )

    def _accumulate(self, updates: PyTree, acc_grads: PyTree, mini_step: Array) -> PyTree:
        def one(g, a):
            dt = compute_dtype(jnp.promote_types(g.dtype, a.dtype))
            g, a = g.astype(dt), a.astype(dt)
            return a + (g - a) / (mini_step + 1) if self._use_grad_mean else g + a

        return jax.tree.map(one, updates, acc_grads)

    def _update(self, updates, state, params=None, **extra_args):
        k = self._k(state.gradient_step)
        skip, skip_state = self._skip(updates, state.gradient_step, params)
        skip = jnp.asarray(skip)
        if (skip.dtype, skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "MultiSteps: should_skip_update_fn must return a boolean scalar, "
                f"got dtype {skip.dtype} and shape {skip.shape}"
            )
        acc = self._accumulate(updates, state.acc_grads, state.mini_step)
        emit = jnp.logical_and(jnp.logical_not(skip), state.mini_step + 1 >= k)

        def accumulated(operands):  # recomputed inside the emitting branch (see run_inner_if)
            g, old_acc, mini_step = operands
            return jax.tree.map(lambda a, g: a.astype(g.dtype), self._accumulate(g, old_acc, mini_step), g)

        new_updates, inner_state = run_inner_if(
            emit,
            self._opt,
            (updates, state.acc_grads, state.mini_step),
            state.inner_opt_state,
            params,
            extra_args,
            prepare=accumulated,
        )
        mini_step = jnp.where(emit, 0, state.mini_step + 1)
        new_acc = jax.tree.map(
            lambda a, old: jnp.where(skip, old, jnp.where(emit, jnp.zeros_like(a), a)).astype(old.dtype),
            acc,
            state.acc_grads,
        )
        new_state = MultiStepsState(
            mini_step=jnp.where(skip, state.mini_step, mini_step).astype(jnp.int32),
            gradient_step=jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step),
            inner_opt_state=inner_state,
            acc_grads=new_acc,
            skip_state=skip_state,
            hyperparams=self._stored(k),
        )
        return new_updates, new_state

    def init(self, params: PyTree) -> MultiStepsState:
        """The initial :class:`MultiStepsState`."""
        return self._tx.init(params)

    def update(
        self, updates: PyTree, state: MultiStepsState, params: PyTree | None = None, **extra_args: Any
    ) -> tuple[PyTree, MultiStepsState]:
        """Accumulate ``updates``; the inner optimizer's updates every ``k``-th call, zeros otherwise."""
        return self._tx.update(updates, state, params, **extra_args)

    def has_updated(self, state: MultiStepsState) -> Array:
        """Whether the latest ``update`` applied the inner optimizer (``mini_step == 0 < gradient_step``)."""
        return accumulation_emitted(state)

    def gradient_transformation(self) -> GradientTransformation:
        """This accumulation as a :class:`jopt.GradientTransformation`."""
        return self._tx


def accumulate_gradients(
    inner: Any, every_k: Hyperparam, *, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    r"""jopt's name for ``MultiSteps(inner, every_k, accumulator_dtype=...).gradient_transformation()``.

    .. math:: u = f\Big(\tfrac1k \textstyle\sum_{j=1}^{k} g_j\Big) \text{ every } k\text{-th call, else } 0

    See :class:`MultiSteps`; the state is a :class:`MultiStepsState`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.accumulate_gradients(jopt.scale_by_learning_rate(1.0), every_k=2)
      >>> p = {"w": jnp.zeros(1)}
      >>> s = tx.init(p)
      >>> u1, s = tx.update({"w": jnp.array([1.0])}, s, p)
      >>> u2, s = tx.update({"w": jnp.array([3.0])}, s, p)
      >>> float(u1["w"][0]), float(u2["w"][0])
      (0.0, -2.0)
    """
    return MultiSteps(inner, every_k, accumulator_dtype=accumulator_dtype).gradient_transformation()


def accumulation_emitted(state: MultiStepsState) -> Array:
    """Whether the latest ``update`` of :class:`MultiSteps` applied the inner optimizer.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.accumulate_gradients(jopt.scale_by_learning_rate(1.0), every_k=2)
      >>> p = {"w": jnp.zeros(1)}
      >>> _, s = tx.update(p, tx.init(p), p)
      >>> bool(jopt.accumulation_emitted(s))
      False
    """
    return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)


class ApplyEvery(NamedTuple):
    """State of :func:`apply_every`: calls modulo ``k`` and the running sum of the updates."""

    count: Array
    grad_acc: PyTree


def apply_every(k: Hyperparam = 1) -> GradientTransformation:
    r"""Sum ``k`` consecutive updates and emit the sum every ``k``-th call (zeros otherwise).

    With :math:`c` the call index modulo :math:`k`:

    .. math::
       a \leftarrow \begin{cases} g & c = 0 \\ a + g & \text{otherwise} \end{cases}, \qquad
       u = \begin{cases} a & c = k - 1 \\ 0 & \text{otherwise} \end{cases}

    In a chain the transforms before it still update their state at every call;
    :class:`MultiSteps` runs a whole optimizer on accumulated gradients instead.

    Args:
      k: :math:`k \ge 1`; an int or an int array (may be traced). The sum is kept
        in at least float32.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.apply_every(2)
      >>> p = {"w": jnp.zeros(1)}
      >>> u1, s = tx.update({"w": jnp.array([1.0])}, tx.init(p))
      >>> u2, s = tx.update({"w": jnp.array([3.0])}, s)
      >>> float(u1["w"][0]), float(u2["w"][0])
      (0.0, 4.0)
    """
    check_hyperparam(k, "k", low=1, integer=True, owner="apply_every")
    period = k if is_python_number(k) else jnp.asarray(k)

    def init(params):
        acc = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=compute_dtype(p.dtype)), params)
        return ApplyEvery(jnp.zeros([], jnp.int32), acc)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        c = state.count % period
        keep = c != 0
        emit = c == period - 1
        acc = jax.tree.map(lambda g, a: keep * a + g.astype(a.dtype), updates, state.grad_acc)
        out = jax.tree.map(lambda a, g: (emit * a).astype(g.dtype), acc, updates)
        return out, ApplyEvery(safe_increment(state.count) % period, acc)

    return transformation(init, update)
