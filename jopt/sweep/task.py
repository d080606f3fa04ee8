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
    "objective_name",
    "check_task_object",
    "group_hyperparams",
    "scalar_metrics",
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


def _is_number(value: Any) -> bool:
    """A Python number or a numeric (bool, integer, floating) array or array scalar."""
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return True
    dtype = getattr(value, "dtype", None)
    if not isinstance(value, (jax.Array, np.ndarray)) or dtype is None:
        return False
    return bool(jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_))


def _describe(value: Any) -> str:
    """A short description of ``value`` for error messages."""
    if value is None:
        return "None"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        kind = "an array" if isinstance(value, jax.Array) else f"a {type(value).__name__}"
        return f"{kind} of shape {tuple(shape)} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def scalar_metrics(metrics: Any, what: str) -> dict[str, jax.Array]:
    """``metrics`` (a dict of numeric scalars) as float32 scalars, else :class:`SearchSpaceError`
    naming ``what`` (e.g. ``"task.step metrics"``).

    Example:
      >>> scalar_metrics({"loss": 1}, "task.step metrics")
      {'loss': Array(1., dtype=float32)}
      >>> scalar_metrics({"loss": "low"}, "step metrics")
      Traceback (most recent call last):
      ...
      jopt.sweep.space.SearchSpaceError: step metrics must be a dict of numeric scalars; 'loss' is str 'low'
    """
    if not isinstance(metrics, Mapping):
        raise SearchSpaceError(f"{what} must be a dict of numeric scalars, got {_describe(metrics)}")
    out = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise SearchSpaceError(f"{what} must be a dict with string keys, got key {k!r}")
        if not _is_number(v) or np.shape(v) != ():
            raise SearchSpaceError(f"{what} must be a dict of numeric scalars; {k!r} is {_describe(v)}")
        out[k] = jnp.asarray(v, jnp.float32)
    return out


def eval_objective(task: Task, hp: Hyperparams, state: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Call ``task.evaluate`` and normalize its output to ``(float32 scalar, dict of float32)``.

    Raises:
      SearchSpaceError: the output is not a numeric scalar objective or ``(objective, metrics)``
        with ``metrics`` a dict of numeric scalars (raised while tracing, before any compile).
    """
    out = task.evaluate(hp, state)
    expected = "task.evaluate must return a scalar objective (or (objective, metrics) with metrics a dict)"
    if isinstance(out, tuple):
        if len(out) != 2:
            raise SearchSpaceError(f"{expected}, got a tuple of length {len(out)}")
        objective, metrics = out
    else:
        objective, metrics = out, {}
    expected += " or a 1-D array of objectives (a multi-objective search, directions=...)"
    if not _is_number(objective):
        raise SearchSpaceError(f"{expected}, got {_describe(objective)}")
    metrics = scalar_metrics(metrics, "task.evaluate metrics")
    shape = tuple(np.shape(objective))
    if len(shape) == 1 and shape[0] >= 2:
        objectives = jnp.asarray(objective, jnp.float32)
        metrics.update({objective_name(i): objectives[i] for i in range(shape[0])})
        return objectives[0], metrics
    if shape != ():
        raise SearchSpaceError(f"{expected}, got shape {shape}")
    return jnp.asarray(objective, jnp.float32), metrics


def objective_name(index: int) -> str:
    """The evaluation metric holding objective ``index`` of a multi-objective task (the engine's
    scalar objective is objective 0).

    Example:
      >>> objective_name(1)
      'objective_1'
    """
    return f"objective_{index}"


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
        return state, scalar_metrics(metrics, "task.step metrics")

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


def _state_arrays(state: Any, what: str) -> Any:
    """``state`` if every leaf is an array or a number, else :class:`SearchSpaceError` naming the leaf."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex)):
            where = jax.tree_util.keystr(path) or "the state"
            raise SearchSpaceError(
                f"{what} must return a pytree of arrays (the training state); {where} is {_describe(leaf)}"
            )
    return state


def _step_output(out: Any) -> tuple[Any, dict[str, jax.Array]]:
    """``task.step``'s output checked: ``(state of arrays, dict of numeric scalars)``."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise SearchSpaceError(
            f"task.step must return (state, metrics) with metrics a dict of scalars, got {_describe(out)}"
        )
    if not isinstance(out[1], Mapping):
        raise SearchSpaceError(
            "task.step must return (state, metrics) with metrics a dict of scalars; its second element "
            f"is {_describe(out[1])}"
        )
    return _state_arrays(out[0], "task.step"), scalar_metrics(out[1], "task.step metrics")


def check_task_object(task: Any) -> Task:
    """``task`` if it is a :class:`Task` of callables, else ``ValueError`` naming the bad part.

    Example:
      >>> try:
      ...     check_task_object((print, print, print))
      ... except ValueError as err:
      ...     print(err)
      task must be a jopt.sweep.Task(init, step, evaluate) (e.g. from sweep.supervised_task), got tuple
    """
    if not isinstance(task, Task):
        raise ValueError(
            "task must be a jopt.sweep.Task(init, step, evaluate) (e.g. from sweep.supervised_task), "
            f"got {type(task).__name__}"
        )
    for name in ("init", "step", "evaluate"):
        if not callable(getattr(task, name)):
            raise ValueError(f"task.{name} must be a function, got {_describe(getattr(task, name))}")
    if task.params is not None and not callable(task.params):
        raise ValueError(f"task.params must be None or a function state -> parameters, got {task.params!r}")
    return task


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

    state = phase("init", lambda h, k: _state_arrays(task.init(hp_of(h), k), "task.init"), hp_abs, key)
    new_state, metrics = phase(
        "step", lambda h, s, k: _step_output(task.step(hp_of(h), s, k)), hp_abs, state, key
    )
    if jax.tree.structure(new_state) != jax.tree.structure(state) or any(
        (a.shape, a.dtype) != (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True)
    ):
        raise SearchSpaceError(
            "task.step must return a state with the same structure, shapes and dtypes as task.init's; "
            f"init gave {jax.tree.map(lambda a: (a.shape, str(a.dtype)), state)}, "
            f"step gave {jax.tree.map(lambda a: (a.shape, str(a.dtype)), new_state)}"
        )
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
        state's structure; init's state is not a pytree of arrays; metrics are not a dict of
        numeric scalars; the objective is not a numeric scalar (each message names the function).
      ValueError: ``task`` is not a :class:`Task` of functions.
    Warns:
      UserWarning: when a traced hyperparameter of the space is never read.
    """
    check_task_object(task)
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
    active = {n for cfg in groups.values() for n in space.active_names(cfg)}
    unused = [n for n in space.traced_names if n not in read and n in active]
    if unused:
        warnings.warn(f"the task never reads hyperparameter(s) {unused}", UserWarning, stacklevel=2)


# ----------------------------------------------------------------------------- supervised helper


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


_DATA_FIELDS = ("x_train", "y_train", "x_val", "y_val")


def _check_data(data: Any) -> int:
    """The number of training examples of a valid ``data``, else ``ValueError`` naming the field.

    Inputs and labels of a split must have the same length (a shorter label array would be read
    out of bounds, which JAX clamps: wrong labels, silently); labels must be integers in
    ``[0, num_classes)``. Inputs are not scanned for NaN: a NaN input makes the trials that see it
    diverge, which the results report.
    """
    missing = [f for f in _DATA_FIELDS if not hasattr(getattr(data, f, None), "shape")]
    if missing:
        raise ValueError(
            "data must be a jopt.datasets.Dataset (arrays x_train, y_train, x_val, y_val and "
            f"num_classes); {_describe(data)} lacks {', '.join(missing)}"
        )
    for split in ("train", "val"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if len(x.shape) < 1 or len(y.shape) != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"data.x_{split} and data.y_{split} must have the same length (one label per example, "
                f"y one-dimensional), got shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"data.y_{split} must hold integer class labels, got dtype {y.dtype}")
    if data.x_train.shape[0] < 1:
        raise ValueError("data.x_train is empty: the training set needs at least one example")
    if tuple(data.x_train.shape[1:]) != tuple(data.x_val.shape[1:]):
        raise ValueError(
            "data.x_train and data.x_val must have the same example shape, got "
            f"{tuple(data.x_train.shape[1:])} and {tuple(data.x_val.shape[1:])}"
        )
    classes = getattr(data, "num_classes", None)
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        for split in ("train", "val"):
            y = np.asarray(getattr(data, f"y_{split}"))
            if y.size and (y.min() < 0 or y.max() >= classes):
                raise ValueError(
                    f"data.y_{split} must hold labels in [0, num_classes={classes}), got values in "
                    f"[{y.min()}, {y.max()}]"
                )
    return int(data.x_train.shape[0])


def _check_batch_size(value: Any, n_train: int) -> int:
    """``batch_size`` as an int in ``[1, n_train]``, else :class:`SearchSpaceError` naming it."""
    if isinstance(value, jax.Array) and value.shape == ():
        value = int(value)  # a traced value raises here: check_task says to declare it static
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= n_train:
        raise SearchSpaceError(
            f"batch_size must be an int in [1, {n_train}] (the training examples) or a function "
            f"hp -> such an int, got {value!r}"
        )
    return int(value)


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
      data: a :class:`jopt.datasets.Dataset` (``x_train, y_train, x_val, y_val``; device or
        NumPy arrays; one integer label in ``[0, num_classes)`` per example).
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

    Raises:
      ValueError: naming the bad argument: ``model``, ``optimizer`` or ``eval_params`` not
        callable, ``objective`` unknown, ``fold_seed`` negative, ``batch_size`` not an int in
        ``[1, len(x_train)]`` (a function's value is checked when the task is traced), ``data``
        without the four arrays, inputs and labels of different lengths, labels not integers in
        ``[0, num_classes)``. Inputs are not scanned for NaN (trials that see one diverge).

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
    if not (hasattr(model, "init") and hasattr(model, "apply")) and not callable(model):
        raise ValueError(f"model must be a flax Module or a function hp -> Module, got {_describe(model)}")
    if not callable(optimizer):
        raise ValueError(
            f"optimizer must be a function hp -> GradientTransformation, got {_describe(optimizer)}"
        )
    if objective not in ("loss", "error"):
        raise ValueError(f"objective must be 'loss' or 'error', got {objective!r}")
    if eval_params is not None and not callable(eval_params):
        raise ValueError(
            f"eval_params must be None or a function (opt_state, params) -> params, got {eval_params!r}"
        )
    if isinstance(fold_seed, bool) or not isinstance(fold_seed, (int, np.integer)) or fold_seed < 0:
        raise ValueError(f"fold_seed must be a non-negative int, got {fold_seed!r}")
    n_train = _check_data(data)
    if not callable(batch_size):
        _check_batch_size(batch_size, n_train)
    # on the device: NumPy arrays cannot be indexed by traced minibatch indices
    x_train, y_train, x_val, y_val = (
        a if isinstance(a, jax.Array) else jax.device_put(np.asarray(a))
        for a in (getattr(data, f) for f in _DATA_FIELDS)
    )
    splits: dict[int, folds_lib.FoldSplit] = {}

    def split_for(k: int) -> folds_lib.FoldSplit:
        if k not in splits:
            splits[k] = folds_lib.kfold_split(n_train, k, fold_seed)
        return splits[k]

    def params_of(state: TrainState) -> Any:
        return state.params if eval_params is None else eval_params(state.opt_state, state.params)

    def init(hp, key):
        module = _resolve(model, hp)
        params = module.init(key, x_train[:1])
        return TrainState(params, optimizer(hp).init(params))

    def step(hp, state, key):
        module, tx = _resolve(model, hp), optimizer(hp)
        bs = _check_batch_size(_resolve(batch_size, hp), n_train)
        if hp.num_folds:
            idx = folds_lib.sample_train(split_for(hp.num_folds), hp["fold"], key, bs)
        else:
            idx = jax.random.randint(key, (bs,), 0, n_train)
        xb, yb = x_train[idx], y_train[idx]

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
            x, y = x_train[idx], y_train[idx]
        else:
            x, y = x_val, y_val
            weight = jnp.ones(y.shape, jnp.float32)
        logits = module.apply(params_of(state), x)
        total = jnp.sum(weight)
        loss = jnp.sum(weight * _cross_entropy(logits, y)) / total
        acc = jnp.sum(weight * (jnp.argmax(logits, -1) == y)) / total
        value = loss if objective == "loss" else 1.0 - acc
        return value, {"loss": loss, "accuracy": acc}

    return Task(init, step, evaluate, params=params_of)
