r"""The gradient-transformation protocol and its basic combinators.

A :class:`GradientTransformation` is a pair of pure functions::

    state = tx.init(params)
    updates, state = tx.update(grads, state, params=None, **extra_args)
    params = jopt.apply_updates(params, updates)

It is a ``NamedTuple`` whose first two fields are ``init`` and ``update``, so
jopt transforms are accepted wherever optax expects a transformation
(``optax.chain``, ``flax.training.train_state.TrainState``,
``flax.nnx.Optimizer``), and optax transforms can be put inside
:func:`jopt.chain`.

Extra arguments
---------------
Some transforms need more than gradients, e.g. the plateau schedule needs the
loss (``value=loss``). A transform *declares* the extra arguments it consumes
(``GradientTransformation.extra_args``). Every declared name is registered
globally. Passing a name that **no** jopt transform declares raises
``TypeError`` with a did-you-mean suggestion, so a typo (``valeu=loss``) is
never silently dropped. Passing a declared name that a particular optimizer
does not use is allowed (one training loop can pass ``value=loss`` to every
optimizer). Foreign (optax) transforms inside :func:`chain` receive the
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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jopt.hyperparams import Hyperparam, resolve
from jopt.tree import safe_increment

Array = jax.Array
PyTree = Any
Params = Any
Updates = Any
OptState = Any

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "apply_updates",
    "as_transformation",
    "chain",
    "current_hyperparams",
    "declare_extra_args",
    "identity",
    "named_chain",
    "resolve_hyperparams",
    "stateless",
    "stored_hyperparams",
    "transformation",
    "with_extra_args",
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
      extra_args: names of the extra keyword arguments ``update`` consumes.
    """

    init: InitFn
    update: UpdateFn
    extra_args: frozenset[str] = frozenset()


class EmptyState(NamedTuple):
    """State of a stateless transform."""


# Every extra-argument name any transform has declared; see module docstring.
_DECLARED_EXTRA_ARGS: set[str] = {"value"}


def declare_extra_args(*names: str) -> None:
    """Register extra-argument names so that passing them is not treated as a typo."""
    _DECLARED_EXTRA_ARGS.update(names)


def _check_extra_args(extra_args: Mapping[str, Any]) -> None:
    for name in extra_args:
        if name not in _DECLARED_EXTRA_ARGS:
            close = difflib.get_close_matches(name, sorted(_DECLARED_EXTRA_ARGS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"update() got unknown extra argument {name!r}{hint} "
                f"(extra arguments known to jopt: {sorted(_DECLARED_EXTRA_ARGS)})"
            )


def transformation(
    init: InitFn, update: UpdateFn, *, extra_args: Iterable[str] = ()
) -> GradientTransformation:
    """Build a :class:`GradientTransformation`, checking extra-argument names.

    ``update`` must accept ``**extra_args``. Names in ``extra_args`` are
    declared (see module docstring). The returned ``update`` raises
    ``TypeError`` on a name no transform declares, and otherwise passes every
    extra argument through.
    """
    names = frozenset(extra_args)
    declare_extra_args(*names)

    def checked_update(updates, state, params=None, **kwargs):
        _check_extra_args(kwargs)
        return update(updates, state, params, **kwargs)

    checked_update.__wrapped__ = update  # type: ignore[attr-defined]
    return GradientTransformation(init, checked_update, names)


def stateless(
    fn: Callable[[Updates, Params | None], Updates],
) -> GradientTransformation:
    """A transform with no state from ``fn(updates, params) -> updates``."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return fn(updates, params), state

    return transformation(init, update)


def identity() -> GradientTransformation:
    """The transform that returns its updates unchanged."""
    return stateless(lambda updates, params: updates)


def _foreign_extra_args(tx: Any) -> frozenset[str]:
    names = getattr(tx, "extra_args", None)
    if isinstance(names, frozenset):
        return names
    try:
        sig = inspect.signature(tx.update)
    except (TypeError, ValueError):
        return frozenset()
    return frozenset(p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def with_extra_args(tx: Any, *names: str) -> GradientTransformation:
    """Wrap a foreign (e.g. optax) transform, declaring the extra arguments it consumes.

    Example:
      >>> import jopt, optax
      >>> tx = jopt.with_extra_args(optax.chain(optax.contrib.reduce_on_plateau()), "value")
    """
    declare_extra_args(*names)
    return GradientTransformation(tx.init, tx.update, frozenset(names))


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
    if isinstance(tx, GradientTransformation):
        return tx
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"expected a gradient transformation (init and update), got {type(tx).__name__}")
    names = _foreign_extra_args(tx)
    declare_extra_args(*names)
    return GradientTransformation(tx.init, tx.update, names)


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
    names = frozenset().union(*(tx.extra_args for tx in members))

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
    names = frozenset().union(*(tx.extra_args for tx in members))

    def init(params):
        return {k: tx.init(params) for k, tx in zip(keys, members)}

    def update(updates, state, params=None, **extra_args):
        states = [state[k] for k in keys]
        updates, new_states = _run_chain(members, states, updates, params, extra_args)
        return updates, dict(zip(keys, new_states))

    return transformation(init, update, extra_args=names)


def apply_updates(params: Params, updates: Updates) -> Params:
    r""":math:`\theta \leftarrow \theta + u`, keeping each parameter's dtype; ``None`` leaves skip."""
    return jax.tree.map(
        lambda p, u: p if u is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
        params,
        updates,
        is_leaf=lambda x: x is None,
    )


def resolve_hyperparams(hyperparams: Mapping[str, Hyperparam], count: Array | None) -> dict[str, Array]:
    """Resolve every hyperparameter (number, array or schedule) at step ``count``."""
    return {name: resolve(value, count) for name, value in hyperparams.items()}


def _is_python_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float)) and not callable(value)


def stored_hyperparams(
    hyperparams: Mapping[str, Hyperparam], resolved: Mapping[str, Array]
) -> dict[str, Array]:
    """The resolved hyperparameters a transform keeps in its state (for :func:`current_hyperparams`).

    Values given as Python numbers never change and are not stored: every state
    leaf is a buffer that each jitted step passes in and out, so constants would
    only slow the step down. Arrays (including traced values, e.g. in a sweep)
    and schedules are stored.
    """
    return {k: v for k, v in resolved.items() if not _is_python_number(hyperparams[k])}


def initial_count(hyperparams: Mapping[str, Hyperparam]) -> Array | None:
    """A zero step counter if any hyperparameter is a schedule, else ``None`` (no state leaf)."""
    return jnp.zeros([], jnp.int32) if any(callable(v) for v in hyperparams.values()) else None


def next_count(count: Array | None) -> Array | None:
    """``count + 1`` (saturating), passing ``None`` through."""
    return None if count is None else safe_increment(count)


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
