r"""The gradient-transformation protocol and its basic combinators.

A :class:`GradientTransformation` is a pair of pure functions::

    state = tx.init(params)
    updates, state = tx.update(grads, state, params=None, **extra_args)
    params = jopt.apply_updates(params, updates)

It is a ``NamedTuple`` of exactly ``init`` and ``update`` (``init, update = tx``
works), so jopt transforms are accepted wherever optax expects a transformation
(``optax.chain``, ``flax.training.train_state.TrainState``,
``flax.nnx.Optimizer``), and optax transforms can be put inside
:func:`jopt.chain`. ``isinstance(tx, optax.GradientTransformation)`` is False
for a jopt transform: supporting it would need optax's class as a base, and
jopt's core does not depend on optax. Duck-type instead
(``hasattr(tx, "init") and hasattr(tx, "update")``), as optax's own combinators do.

Extra arguments
---------------
Some transforms need more than gradients, e.g. the plateau schedule needs the
loss (``value=loss``). A transform *declares* the extra arguments it consumes
(``tx.extra_args``); combinators forward each member only the names it
declares, and extra arguments nobody declares are ignored, as in optax (one
training loop can pass ``value=loss`` to every optimizer). A misspelling is not
silently lost: when a transform that declares extra arguments is called with an
undeclared name close to one of them (``valeu=`` where ``value`` is declared),
``update`` emits a :class:`UserWarning` with the suggestion. The check depends
only on the transform being called, never on what else was built in the
process. Foreign (optax) transforms inside :func:`chain` receive the
keyword-only arguments named in their ``update`` signature, or the names given
to :func:`with_extra_args`.

Reading hyperparameters
-----------------------
Transforms record the hyperparameter values used at the latest step in a
``hyperparams`` field of their state; :func:`current_hyperparams` collects them
(e.g. the current learning rate) for logging, without wrapping the optimizer.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jopt.hyperparams import (
    Hyperparam,
    Range,
    as_array,
    check_hyperparams,
    is_python_number,
    resolve,
)
from jopt.tree import safe_increment, tree_cast_like

Array = jax.Array
PyTree = Any
Params = Any
Updates = Any
OptState = Any

__all__ = [
    "AcceptsAnyExtraArg",
    "EmptyState",
    "GradientTransformationExtraArgs",
    "GradientTransformation",
    "apply_updates",
    "as_transformation",
    "chain",
    "current_hyperparams",
    "identity",
    "init_empty_state",
    "hyperparam_transformation",
    "named_chain",
    "resolve_hyperparams",
    "stateless",
    "stored_hyperparams",
    "transformation",
    "with_extra_args",
    "with_extra_args_support",
]


class InitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class UpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair; see the module docstring for the protocol.

    Attributes:
      init: ``params -> state``.
      update: ``(updates, state, params=None, **extra_args) -> (updates, state)``.

    ``extra_args`` (a property) names the extra keyword arguments ``update``
    consumes; it is carried by the ``update`` function, so the tuple stays a pair.
    """

    init: InitFn
    update: UpdateFn

    @property
    def extra_args(self) -> frozenset[str]:
        """Names of the extra keyword arguments ``update`` consumes (e.g. ``{"value"}``)."""
        return getattr(self.update, "extra_args", frozenset())


class GradientTransformationExtraArgs(GradientTransformation):
    """A transformation whose ``update`` accepts extra keyword arguments (optax's class of that name).

    Every transformation jopt builds (with :func:`transformation` and the
    combinators) is one; a bare ``GradientTransformation(init, update)`` written
    by hand is not, until wrapped by :func:`with_extra_args_support`, as in optax.
    """


class EmptyState(NamedTuple):
    """State of a stateless transform."""


class AcceptsAnyExtraArg(frozenset):
    """Declared extra-argument names of a transform that also takes every other name.

    ``name in declared`` is always true, so combinators forward such a transform
    (e.g. a line search, whose ``value_fn`` takes the data as keyword arguments)
    every extra argument of the call, while iterating yields only the names it
    consumes itself. A combinator with such a member is itself one.
    """

    def __contains__(self, name: object) -> bool:
        return True


def _union_extra_args(members: Iterable[GradientTransformation]) -> frozenset[str]:
    """The extra arguments a combinator declares: its members' (open if any member's is)."""
    members = list(members)
    names = frozenset().union(*(tx.extra_args for tx in members))
    return (
        AcceptsAnyExtraArg(names)
        if any(isinstance(tx.extra_args, AcceptsAnyExtraArg) for tx in members)
        else names
    )


def _warn_near_misses(given: Iterable[str], declared: frozenset[str]) -> None:
    """Warn about undeclared extra-argument names that look like misspellings of declared ones."""
    for name in given:
        if name in declared:
            continue
        close = difflib.get_close_matches(name, sorted(declared), n=1)
        if close:
            warnings.warn(
                f"update() got extra argument {name!r}, which this transform ignores; "
                f"did you mean {close[0]!r}? (it declares {sorted(declared)})",
                UserWarning,
                stacklevel=3,
            )


def _with_extra_args_attr(update: Callable[..., Any], names: frozenset[str]) -> UpdateFn:
    """``update`` declaring ``names``, called with the declared extra arguments only."""

    def update_with_names(updates, state, params=None, **extra_args):
        return update(updates, state, params, **{k: v for k, v in extra_args.items() if k in names})

    update_with_names.extra_args = names  # type: ignore[attr-defined]
    update_with_names.__wrapped__ = update  # type: ignore[attr-defined]
    return update_with_names


def transformation(
    init: InitFn, update: UpdateFn, *, extra_args: Iterable[str] = ()
) -> GradientTransformation:
    """Build a :class:`GradientTransformation` that declares the extra arguments it consumes.

    ``update`` must accept ``**extra_args``; every extra argument is passed
    through. When ``extra_args`` is not empty, an undeclared name close to a
    declared one (a likely typo) triggers a ``UserWarning``.

    Example:
      >>> import jopt
      >>> init, update = jopt.transformation(lambda p: (), lambda u, s, p=None, **kw: (u, s))
    """
    names = extra_args if isinstance(extra_args, AcceptsAnyExtraArg) else frozenset(extra_args)

    def checked_update(updates, state, params=None, **kwargs):
        if names and kwargs:
            _warn_near_misses(kwargs, names)
        return update(updates, state, params, **kwargs)

    checked_update.extra_args = names  # type: ignore[attr-defined]
    checked_update.__wrapped__ = update  # type: ignore[attr-defined]
    return GradientTransformationExtraArgs(init, checked_update)


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a transform without state (optax's name)."""
    del params
    return EmptyState()


def stateless(
    f: Callable[[Updates, Params | None], Updates],
) -> GradientTransformation:
    """A transform with no state from ``f(updates, params) -> updates`` (optax's signature)."""

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return f(updates, params), state

    return transformation(init_empty_state, update)


def identity() -> GradientTransformation:
    """The transform that returns its updates unchanged."""
    return stateless(lambda updates, params: updates)


def _foreign_extra_args(tx: Any) -> frozenset[str]:
    """Declared names of a transform jopt did not build: its ``extra_args``, else its signature's.

    From the signature: the keyword-only parameters of ``update``; when it also
    takes ``**kwargs`` (optax's ``GradientTransformationExtraArgs``), every name.
    """
    names = getattr(tx.update, "extra_args", None)
    if names is None and not isinstance(tx, GradientTransformation):
        names = getattr(tx, "extra_args", None)
    if isinstance(names, frozenset):
        return names
    try:
        params = inspect.signature(tx.update).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    keyword_only = frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return AcceptsAnyExtraArg(keyword_only) if takes_any else keyword_only


def with_extra_args(tx: Any, *names: str) -> GradientTransformation:
    """Wrap a foreign (e.g. optax) transform, declaring the extra arguments it consumes.

    Example:
      >>> import jopt, optax
      >>> tx = jopt.with_extra_args(optax.chain(optax.contrib.reduce_on_plateau()), "value")
    """
    return GradientTransformationExtraArgs(tx.init, _with_extra_args_attr(tx.update, frozenset(names)))


def with_extra_args_support(tx: Any) -> GradientTransformationExtraArgs:
    """``tx`` as a :class:`GradientTransformationExtraArgs`, dropping extra arguments it does not take.

    Example:
      >>> import jopt
      >>> bare = jopt.GradientTransformation(lambda p: (), lambda u, s, p=None: (u, s))
      >>> tx = jopt.with_extra_args_support(bare)
      >>> isinstance(tx, jopt.GradientTransformationExtraArgs), tx.update(1.0, (), unused="x")[0]
      (True, 1.0)
    """
    return as_transformation(tx)


def as_transformation(tx: Any) -> GradientTransformation:
    """A jopt transform as is; any other object with ``init``/``update`` (e.g. optax's) adapted.

    The extra arguments a foreign transform consumes are its ``extra_args``
    attribute if it has one, else the keyword-only parameters of its ``update``.
    Every combinator (:func:`chain`, :func:`jopt.masked`, :func:`jopt.partition`, ...)
    accepts its members through this function.

    Example:
      >>> import jopt, optax
      >>> tx = jopt.as_transformation(optax.scale(-0.1))
      >>> tx.extra_args
      frozenset()
    """
    if isinstance(tx, GradientTransformationExtraArgs) and hasattr(tx.update, "extra_args"):
        return tx
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"expected a gradient transformation (init and update), got {type(tx).__name__}")
    return GradientTransformationExtraArgs(tx.init, _with_extra_args_attr(tx.update, _foreign_extra_args(tx)))


def _run_chain(members, states, updates, params, extra_args):
    new_states = []
    for tx, state in zip(members, states):
        kwargs = {k: v for k, v in extra_args.items() if k in tx.extra_args}
        updates, state = tx.update(updates, state, params, **kwargs)
        new_states.append(state)
    return updates, new_states


def chain(*transforms: Any) -> GradientTransformation:
    r"""Apply transforms in sequence: :math:`u \mapsto f_n(\dots f_1(u))`.

    Members may be jopt or optax transforms. The state is a tuple of member states.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.chain(
      ...     jopt.clip_by_global_norm(1.0), jopt.scale_by_adam(), jopt.scale_by_learning_rate(1e-3)
      ... )
      >>> state = tx.init({"w": jnp.ones(3)})
    """
    members = tuple(as_transformation(tx) for tx in transforms)
    names = _union_extra_args(members)

    def init(params):
        return tuple(tx.init(params) for tx in members)

    def update(updates, state, params=None, **extra_args):
        updates, new_states = _run_chain(members, state, updates, params, extra_args)
        return updates, tuple(new_states)

    return transformation(init, update, extra_args=names)


def named_chain(*named_transforms: tuple[str, Any]) -> GradientTransformation:
    """Like :func:`chain`, with a dict state keyed by the given names.

    Example:
      >>> import jopt
      >>> tx = jopt.named_chain(("clip", jopt.clip_by_global_norm(1.0)), ("sgd", jopt.sgd(0.1)))
    """
    keys = [name for name, _ in named_transforms]
    if len(set(keys)) != len(keys):
        raise ValueError(f"named_chain names must be unique, got {keys}")
    members = tuple(as_transformation(tx) for _, tx in named_transforms)
    names = _union_extra_args(members)

    def init(params):
        return {k: tx.init(params) for k, tx in zip(keys, members)}

    def update(updates, state, params=None, **extra_args):
        states = [state[k] for k in keys]
        updates, new_states = _run_chain(members, states, updates, params, extra_args)
        return updates, dict(zip(keys, new_states))

    return transformation(init, update, extra_args=names)


def apply_updates(params: Params, updates: Updates) -> Params:
    r""":math:`\theta \leftarrow \theta + u`, keeping each parameter's dtype; ``None`` leaves stay ``None``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> jopt.apply_updates({"w": jnp.ones(2), "frozen": None}, {"w": jnp.ones(2), "frozen": None})
      {'frozen': None, 'w': Array([2., 2.], dtype=float32)}
    """

    def one(p, u):
        if p is None or u is None:
            return p
        return jnp.asarray(p + u).astype(jnp.asarray(p).dtype)

    return jax.tree.map(one, params, updates, is_leaf=lambda x: x is None)


def resolve_hyperparams(
    hyperparams: Mapping[str, Hyperparam], count: Array | None
) -> dict[str, Array | float]:
    """Resolve every hyperparameter (number, array or schedule) at step ``count`` (see :func:`resolve`)."""
    return {name: resolve(value, count) for name, value in hyperparams.items()}


def stored_hyperparams(
    hyperparams: Mapping[str, Hyperparam], resolved: Mapping[str, Array | float]
) -> dict[str, Array]:
    """The resolved hyperparameters a transform keeps in its state (for :func:`current_hyperparams`).

    Values given as Python numbers never change and are not stored: every state
    leaf is a buffer that each jitted step passes in and out, so constants would
    only slow the step down. Arrays (including traced values, e.g. in a sweep)
    and schedules are stored.
    """
    return {k: as_array(v) for k, v in resolved.items() if not is_python_number(hyperparams[k])}


def initial_count(hyperparams: Mapping[str, Hyperparam]) -> Array | None:
    """A zero step counter if any hyperparameter is a schedule, else ``None`` (no state leaf)."""
    return jnp.zeros([], jnp.int32) if any(callable(v) for v in hyperparams.values()) else None


def next_count(count: Array | None) -> Array | None:
    """``count + 1`` (saturating), passing ``None`` through."""
    return None if count is None else safe_increment(count)


# init_fields(params, h) -> the state fields between ``count`` and ``hyperparams``.
InitFields = Callable[[Params, dict[str, Any]], tuple[Any, ...]]
# step(updates, state, params, h, count_inc) -> (updates, new fields).
StepFn = Callable[[Updates, OptState, Params | None, dict[str, Any], Array | None], tuple[Updates, tuple]]


def _no_fields(params: Params, h: dict[str, Any]) -> tuple[()]:
    del params, h
    return ()


def hyperparam_transformation(
    owner: str,
    hyperparams: Mapping[str, Hyperparam],
    ranges: Mapping[str, Range],
    state_cls: Callable[..., OptState],
    step: StepFn,
    init_fields: InitFields = _no_fields,
    *,
    counted: bool = False,
    needs_params: bool = False,
    cast_fields: bool = True,
    extra_args: Iterable[str] = (),
) -> GradientTransformation:
    """The one builder for transforms with hyperparameters and state.

    The state is ``state_cls(count, *fields, hyperparams)``:

    * ``count`` is an int32 step counter when ``counted`` (e.g. for bias
      correction) or when some hyperparameter is a schedule, else ``None``;
    * ``fields`` are built by ``init_fields(params, h)`` with the hyperparameters
      ``h`` resolved at step 0, and replaced by the second output of
      ``step(updates, state, params, h, count_inc)`` (``count_inc`` is the
      incremented count, or ``None``); with ``cast_fields`` each new field is cast
      to its stored dtype;
    * ``hyperparams`` holds the non-constant hyperparameters used at the latest
      step (see :func:`stored_hyperparams`).

    Extra arguments named in ``extra_args`` (e.g. ``value``) are passed to
    ``step`` in ``h`` next to the hyperparameters; they are not stored.

    Every hyperparameter is validated at construction against its declared range
    (``ranges[name]``, a :class:`jopt.hyperparams.Range`) and resolved at each
    step with :func:`jopt.hyperparams.resolve`: Python numbers stay Python numbers
    (optax's arithmetic), arrays and schedules become arrays of at least float32.
    The returned updates are cast to the incoming updates' dtypes.
    ``needs_params`` raises a ``ValueError`` naming ``owner`` when ``update`` gets
    no ``params``. A transform without state fields accepts any other ``state`` (e.g. ``None``,
    as optax's stateless transforms do) and starts from its initial state.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> from typing import NamedTuple
      >>> from jopt.hyperparams import NONNEGATIVE
      >>> class ScaleState(NamedTuple):
      ...     count: jax.Array | None
      ...     hyperparams: dict
      >>> def halve_by(factor):
      ...     step = lambda u, state, params, h, count: (jax.tree.map(lambda g: g * h["f"], u), ())
      ...     ranges = {"f": NONNEGATIVE}
      ...     return jopt.hyperparam_transformation("halve_by", {"f": factor}, ranges, ScaleState, step)
      >>> tx = halve_by(0.5)
      >>> tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))[0]["w"].tolist()
      [0.5, 0.5]
    """
    hyperparams = dict(hyperparams)
    check_hyperparams(owner, ranges, hyperparams)

    def first_count():
        return jnp.zeros([], jnp.int32) if counted else initial_count(hyperparams)

    def init(params):
        count = first_count()
        h = resolve_hyperparams(hyperparams, count)
        return state_cls(count, *init_fields(params, h), stored_hyperparams(hyperparams, h))

    def update(updates, state, params=None, **extra):
        if needs_params and params is None:
            raise ValueError(f"{owner} needs params: call update(updates, state, params)")
        if init_fields is _no_fields and not isinstance(state, state_cls):
            state = init(params)  # optax's stateless transforms ignore the state they are given (e.g. None)
        resolved = resolve_hyperparams(hyperparams, state.count)
        h = {**resolved, **{k: v for k, v in extra.items() if k in extra_args}}
        count_inc = next_count(state.count)
        new_updates, fields = step(updates, state, params, h, count_inc)
        old_fields = tuple(state)[1:-1]
        if cast_fields:
            fields = tuple(tree_cast_like(new, old) for new, old in zip(fields, old_fields, strict=True))
        new_updates = tree_cast_like(new_updates, updates)
        return new_updates, state_cls(count_inc, *fields, stored_hyperparams(hyperparams, resolved))

    return transformation(init, update, extra_args=extra_args)


def _state_children(node: Any):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return [(f, getattr(node, f)) for f in node._fields]
    if isinstance(node, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(node)]
    if isinstance(node, Mapping):
        return [(str(k), v) for k, v in node.items()]
    return []


def current_hyperparams(state: OptState) -> dict[str, Array]:
    """Hyperparameter values used at the latest step, collected from an optimizer state.

    Each transform with hyperparameters keeps them in a ``hyperparams`` dict in its
    state: every schedule's current value, every array or traced value (e.g. the
    hyperparameters of a vectorized sweep), and always the learning rate. Values
    given as Python numbers are constants and are not stored (see
    :func:`stored_hyperparams`). Names that occur once are returned as is
    (``"learning_rate"``); a name that occurs in several transforms is qualified
    with its path in the state (``"0/eps"``, ``"2/eps"``).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.adamw(jopt.schedules.linear(1e-3, 0.0, 100))
      >>> state = opt.init({"w": jnp.ones(3)})
      >>> round(float(jopt.current_hyperparams(state)["learning_rate"]), 6)
      0.001
    """
    found: list[tuple[str, str, Array]] = []

    def walk(node, path):
        if isinstance(node, tuple) and hasattr(node, "_fields") and "hyperparams" in node._fields:
            for name, value in node.hyperparams.items():
                found.append((name, "/".join(path), value))
        for key, child in _state_children(node):
            if key != "hyperparams":
                walk(child, path + [key])

    walk(state, [])
    counts: dict[str, int] = {}
    for name, _, _ in found:
        counts[name] = counts.get(name, 0) + 1
    result = {}
    for name, path, value in found:
        key = name if counts[name] == 1 else f"{path}/{name}" if path else name
        result[key] = value
    return result
