"""Tasks: what one trial computes, as three pure functions of its hyperparameters.

A :class:`Task` is::

    init(hp, key) -> state                       # build the training state
    step(hp, state, key) -> (state, metrics)     # one training step; metrics: dict of scalars
    evaluate(hp, state) -> objective | (objective, metrics)

``hp`` is a :class:`~jopt.sweep.space.Hyperparams` mapping: traced names are JAX
scalars, static names are Python values. Data lives on the device and is closed
over by the functions, shared by all trials; each trial draws its own
minibatches from ``key``. The engine vmaps the functions over trials, so they
are written for one trial.

:func:`check_task` traces the three functions abstractly (``jax.eval_shape``,
no compile) and turns the usual mistakes into clear errors: reading a
hyperparameter that is not in the space, using a traced hyperparameter as a
shape, or a ``step`` that changes the state's structure.

:func:`supervised_task` builds a task from a flax (linen) model, a jopt
optimizer factory and a :class:`jopt.datasets.Dataset`.

Example (a hand-written task: logistic regression with SGD):
  >>> import jax, jax.numpy as jnp
  >>> from jopt import sweep
  >>> x = jax.random.normal(jax.random.key(0), (64, 3)); y = (x[:, 0] > 0).astype(jnp.float32)
  >>> def loss(w, xb, yb):
  ...     z = xb @ w
  ...     return jnp.mean(jnp.logaddexp(0.0, z) - yb * z)
  >>> def init(hp, key):
  ...     return jnp.zeros(3)
  >>> def step(hp, w, key):
  ...     i = jax.random.randint(key, (16,), 0, 64)
  ...     l, g = jax.value_and_grad(loss)(w, x[i], y[i])
  ...     return w - hp["lr"] * g, {"loss": l}
  >>> def evaluate(hp, w):
  ...     return loss(w, x, y)
  >>> task = sweep.Task(init, step, evaluate)
  >>> sweep.check_task(task, sweep.Space(lr=sweep.loguniform(1e-3, 1.0)))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep import folds as folds_lib
from jopt.sweep.space import Hyperparams, SearchSpaceError, Space

__all__ = [
    "BoundTask",
    "Task",
    "TrainState",
    "abstract_hyperparams",
    "bind_group",
    "check_task",
    "eval_objective",
    "group_hyperparams",
    "supervised_task",
]


class Task(NamedTuple):
    """A trial's computation; see the module docstring.

    Attributes:
      init: ``(hp, key) -> state``.
      step: ``(hp, state, key) -> (state, metrics)``; ``metrics`` is a dict of scalars
        (a non-finite value marks the trial diverged).
      evaluate: ``(hp, state) -> objective`` or ``(objective, metrics)``.
      params: optional ``state -> parameters`` used by :meth:`SweepResult.params`
        (default: the ``params`` attribute or key of the state, else the state).
    """

    init: Callable[..., Any]
    step: Callable[..., Any]
    evaluate: Callable[..., Any]
    params: Callable[[Any], Any] | None = None


class TrainState(NamedTuple):
    """State of a :func:`supervised_task`: model parameters and optimizer state."""

    params: Any
    opt_state: Any


def eval_objective(task: Task, hp: Hyperparams, state: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Call ``task.evaluate`` and normalize its output to ``(float32 scalar, dict of float32)``."""
    out = task.evaluate(hp, state)
    if isinstance(out, tuple):
        if len(out) != 2:
            raise SearchSpaceError("task.evaluate must return objective or (objective, metrics)")
        objective, metrics = out
    else:
        objective, metrics = out, {}
    objective = jnp.asarray(objective, jnp.float32)
    if objective.shape != ():
        raise SearchSpaceError(f"task.evaluate must return a scalar objective, got shape {objective.shape}")
    return objective, {k: jnp.asarray(v, jnp.float32) for k, v in dict(metrics).items()}


def group_hyperparams(
    statics: Mapping[str, Any], num_folds: int | None, accessed: set[str] | None = None
) -> Callable[[Mapping[str, Any]], Hyperparams]:
    """``traced values -> Hyperparams`` of one static group: the one place where a group's static
    values join the traced ones (``accessed``, if given, collects the names the task reads)."""
    statics = dict(statics)

    def hp_of(traced: Mapping[str, Any]) -> Hyperparams:
        hp = Hyperparams({**traced, **statics}, num_folds)
        if accessed is not None:
            hp.accessed = accessed
        return hp

    return hp_of


class BoundTask(NamedTuple):
    """A task bound to one static group: functions of the traced values only, with normalized
    outputs (float32 scalar metrics and objective); see :func:`bind_group`."""

    init: Callable[..., Any]
    step: Callable[..., Any]
    evaluate: Callable[..., Any]


def bind_group(task: Task, statics: Mapping[str, Any], num_folds: int | None) -> BoundTask:
    """``task`` with the static values of one group bound (via :func:`group_hyperparams`).

    Example:
      >>> import jax.numpy as jnp
      >>> t = Task(lambda hp, k: jnp.float32(hp["w0"]), lambda hp, w, k: (w * hp["a"], {"w": w}),
      ...          lambda hp, w: w)
      >>> b = bind_group(t, {"w0": 2.0}, None)
      >>> b.step({"a": jnp.float32(3.0)}, b.init({}, None), None)[0]
      Array(6., dtype=float32)
    """
    hp_of = group_hyperparams(statics, num_folds)

    def step(hp, state, key):
        state, metrics = task.step(hp_of(hp), state, key)
        return state, {k: jnp.asarray(v, jnp.float32) for k, v in dict(metrics).items()}

    return BoundTask(
        lambda hp, key: task.init(hp_of(hp), key),
        step,
        lambda hp, state: eval_objective(task, hp_of(hp), state),
    )


def abstract_hyperparams(traced_dtypes: Mapping[str, str], num_folds: int | None) -> dict[str, str]:
    """Traced names and dtypes a member receives (adds ``fold`` in a cross-validated sweep)."""
    out = dict(traced_dtypes)
    if num_folds:
        out["fold"] = "int32"
    return out


_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
)


def _trace(task: Task, statics: Mapping[str, Any], hp_abs: Mapping[str, Any], num_folds: int | None):
    """Abstractly evaluate init, step and evaluate; return the hyperparameter names read."""
    key = jax.eval_shape(lambda: jax.random.key(0))
    seen: set[str] = set()
    hp_of = group_hyperparams(statics, num_folds, seen)

    def phase(name, fn, *args):
        try:
            return jax.eval_shape(fn, *args)
        except KeyError as err:
            raise SearchSpaceError(f"task.{name}: {err.args[0] if err.args else err}") from None

    state = phase("init", lambda h, k: task.init(hp_of(h), k), hp_abs, key)
    out = phase("step", lambda h, s, k: task.step(hp_of(h), s, k), hp_abs, state, key)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        raise SearchSpaceError("task.step must return (state, metrics) with metrics a dict of scalars")
    new_state, metrics = out
    if jax.tree.structure(new_state) != jax.tree.structure(state) or any(
        (a.shape, a.dtype) != (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True)
    ):
        raise SearchSpaceError(
            "task.step must return a state with the same structure, shapes and dtypes as task.init's; "
            f"init gave {jax.tree.map(lambda a: (a.shape, str(a.dtype)), state)}, "
            f"step gave {jax.tree.map(lambda a: (a.shape, str(a.dtype)), new_state)}"
        )
    bad = {k: v.shape for k, v in metrics.items() if v.shape != ()}
    if bad:
        raise SearchSpaceError(f"task.step metrics must be scalars, got shapes {bad}")
    phase("evaluate", lambda h, s: eval_objective(task, hp_of(h), s), hp_abs, state)
    return seen


def _culprits(task, statics, hp_abs, example, num_folds) -> list[str]:
    found = []
    for name in hp_abs:
        trial_abs = {k: v for k, v in hp_abs.items() if k != name}
        trial_static = {**statics, name: example[name]}
        try:
            _trace(task, trial_static, trial_abs, num_folds)
        except Exception:  # noqa: BLE001 - still failing: this name is not the (only) cause
            continue
        found.append(name)
    return found


def check_task(
    task: Task,
    space: Space,
    configs: Sequence[Mapping[str, Any]] | None = None,
    *,
    num_folds: int | None = None,
) -> None:
    """Trace ``task`` once per static group (no compile) and raise clear errors.

    Raises:
      SearchSpaceError: a task function reads a name not in the space; a traced
        hyperparameter is used where a concrete value is needed (e.g. a shape) --
        the message names it and says to declare it static; ``step`` changes the
        state's structure; metrics or objective are not scalars.
    Warns:
      UserWarning: when a traced hyperparameter of the space is never read.
    """
    if not isinstance(task, Task):
        raise TypeError(f"expected a jopt.sweep.Task, got {type(task).__name__}")
    if configs is None:
        from jopt.sweep.samplers import sample

        configs = sample(space, "random", 1, seed=0)
    traced = {n: space[n].dtype for n in space.traced_names}
    hp_abs = {
        k: jax.ShapeDtypeStruct((), np.dtype(d)) for k, d in abstract_hyperparams(traced, num_folds).items()
    }
    groups: dict[tuple, Mapping[str, Any]] = {}
    for cfg in configs:
        groups.setdefault(tuple(repr(cfg[n]) for n in space.static_names), cfg)
    read: set[str] = set()
    for cfg in groups.values():
        statics = {n: cfg[n] for n in space.static_names}
        try:
            read |= _trace(task, statics, hp_abs, num_folds)
        except SearchSpaceError:
            raise
        except Exception as err:  # noqa: BLE001 - find out whether a traced value is the cause
            example = dict(cfg, fold=0)
            names = _culprits(task, statics, hp_abs, example, num_folds)
            if not names and not isinstance(err, _TRACER_ERRORS):
                raise
            which = ", ".join(repr(n) for n in names) if names else "a traced hyperparameter"
            raise SearchSpaceError(
                f"the task uses {which} where a concrete Python value is needed (e.g. an array shape "
                "or Python control flow); traced hyperparameters cannot change shapes or program "
                "structure. Declare it static, e.g. sweep.choice([...], static=True). "
                f"Original error: {type(err).__name__}: {str(err).splitlines()[0]}"
            ) from None
    unused = [n for n in space.traced_names if n not in read]
    if unused:
        warnings.warn(f"the task never reads hyperparameter(s) {unused}", UserWarning, stacklevel=2)


# ----------------------------------------------------------------------------- supervised helper


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def _resolve(value: Any, hp: Hyperparams) -> Any:
    if hasattr(value, "init") and hasattr(value, "apply"):
        return value
    return value(hp) if callable(value) else value


def supervised_task(
    model: Any,
    optimizer: Callable[[Hyperparams], Any],
    data: Any,
    *,
    batch_size: int | Callable[[Hyperparams], int] = 128,
    objective: str = "loss",
    fold_seed: int = 0,
    eval_params: Callable[[Any, Any], Any] | None = None,
) -> Task:
    """A classification task from a flax model, a jopt optimizer factory and a dataset.

    Args:
      model: a ``flax.linen.Module`` (anything with ``init(key, x)`` and ``apply(params, x)``),
        or a function ``hp -> Module`` (static hyperparameters such as a width).
      optimizer: ``hp -> GradientTransformation``; pass traced hyperparameters
        straight in, e.g. ``lambda hp: jopt.adamw(hp["learning_rate"], weight_decay=hp["wd"])``.
      data: a :class:`jopt.datasets.Dataset` (``x_train, y_train, x_val, y_val``).
      batch_size: an int or ``hp -> int`` (a static hyperparameter).
      objective: ``"loss"`` (validation cross-entropy) or ``"error"`` (1 - accuracy); minimize either.
      fold_seed: shuffle seed of the k-fold split in a cross-validated sweep
        (``folds=k``: the training set is split, the validation set is unused).
      eval_params: ``(opt_state, params) -> params`` at which to evaluate, for
        optimizers whose evaluation point is not the training point, e.g.
        ``jopt.schedule_free_eval_params``; also what the task's ``params`` (and
        so :meth:`SweepResult.params`) returns. ``None``: the training parameters.

    Returns:
      A :class:`Task` with :class:`TrainState` states, training metric ``loss`` and
      evaluation metrics ``loss`` and ``accuracy``.

    Example:
      >>> import flax.linen as nn, jopt
      >>> from jopt import sweep, datasets
      >>> data = datasets.synthetic_classification(64)
      >>> task = sweep.supervised_task(
      ...     lambda hp: nn.Dense(data.num_classes),
      ...     lambda hp: jopt.chain(jopt.scale_by_learning_rate(hp["lr"])),
      ...     data, batch_size=16)
      >>> sweep.check_task(task, sweep.Space(lr=sweep.loguniform(1e-3, 1.0)))
    """
    if objective not in ("loss", "error"):
        raise ValueError(f"objective must be 'loss' or 'error', got {objective!r}")
    splits: dict[int, folds_lib.FoldSplit] = {}
    n_train = int(data.x_train.shape[0])

    def split_for(k: int) -> folds_lib.FoldSplit:
        if k not in splits:
            splits[k] = folds_lib.kfold_split(n_train, k, fold_seed)
        return splits[k]

    def params_of(state: TrainState) -> Any:
        return state.params if eval_params is None else eval_params(state.opt_state, state.params)

    def init(hp, key):
        module = _resolve(model, hp)
        params = module.init(key, data.x_train[:1])
        return TrainState(params, optimizer(hp).init(params))

    def step(hp, state, key):
        module, tx, bs = _resolve(model, hp), optimizer(hp), int(_resolve(batch_size, hp))
        if hp.num_folds:
            idx = folds_lib.sample_train(split_for(hp.num_folds), hp["fold"], key, bs)
        else:
            idx = jax.random.randint(key, (bs,), 0, n_train)
        xb, yb = data.x_train[idx], data.y_train[idx]

        def loss_fn(p):
            return jnp.mean(_cross_entropy(module.apply(p, xb), yb))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), state.params, updates)
        return TrainState(params, opt_state), {"loss": loss}

    def evaluate(hp, state):
        module = _resolve(model, hp)
        if hp.num_folds:
            idx, weight = folds_lib.val_batch(split_for(hp.num_folds), hp["fold"])
            x, y = data.x_train[idx], data.y_train[idx]
        else:
            x, y = data.x_val, data.y_val
            weight = jnp.ones(y.shape, jnp.float32)
        logits = module.apply(params_of(state), x)
        total = jnp.sum(weight)
        loss = jnp.sum(weight * _cross_entropy(logits, y)) / total
        acc = jnp.sum(weight * (jnp.argmax(logits, -1) == y)) / total
        value = loss if objective == "loss" else 1.0 - acc
        return value, {"loss": loss, "accuracy": acc}

    return Task(init, step, evaluate, params=params_of)
