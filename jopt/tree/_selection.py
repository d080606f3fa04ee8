"""Finding, reading and replacing entries of optimizer states by name.

A state is searched for a *key*: a dict key, a field of a ``NamedTuple``, or the
class name of a ``NamedTuple`` (which selects the whole tuple). Paths are tuples
of JAX key entries in which every ``NamedTuple`` field appears as a
:class:`NamedTupleKey` naming both the tuple's class and the field, so equal
field names in different states (``ScaleByAdamState.count`` and
``ScaleByScheduleState.count``) can be told apart by a ``filtering(path, value)``
predicate. Matches are listed breadth first: the outermost matches in
flattening order, then, match by match, those nested inside them (optax's order).

:func:`map_params` maps a function over every copy of the parameter tree inside
an optimizer state (e.g. to build sharding specs for the state from those of
the parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax

PyTree = Any
KeyPath = tuple[Any, ...]
Filter = Callable[[KeyPath, Any], bool]

__all__ = ["NamedTupleKey", "get", "get_all_with_path", "map_params", "set"]


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """Path entry for the field ``name`` of a ``NamedTuple`` of class ``tuple_name``.

    ``str(key)`` is ``"tuple_name.name"``, so :func:`jax.tree_util.keystr` of a
    path reads like ``"[0]ScaleByAdamState.mu"``.

    Example:
      >>> import jopt
      >>> str(jopt.tree.NamedTupleKey("ScaleByAdamState", "mu"))
      'ScaleByAdamState.mu'
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _has_any(node: Any, keys: Sequence[Any]) -> bool:
    """Whether ``node`` is a dict with one of ``keys``, or a NamedTuple with such a field or class name."""
    if _is_named_tuple(node):
        return type(node).__name__ in keys or any(k in node._fields for k in keys)
    return isinstance(node, dict) and any(k in node for k in keys)


def _field_entry(node: tuple, field: str) -> NamedTupleKey:
    return NamedTupleKey(type(node).__name__, field)


def _children(path: KeyPath, node: Any) -> list[tuple[KeyPath, Any]]:
    """Direct children of a NamedTuple (by field) or a dict (in insertion order), with paths."""
    if _is_named_tuple(node):
        return [((*path, _field_entry(node, f)), getattr(node, f)) for f in node._fields]
    if isinstance(node, dict):
        return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]
    raise ValueError(f"expected a dict or a NamedTuple, got {type(node).__name__}")


def _leaves_with_named_path(tree: PyTree, stop: Callable[[Any], bool]) -> list[tuple[KeyPath, Any]]:
    """Leaves of ``tree`` (and nodes where ``stop`` holds) with paths using :class:`NamedTupleKey`."""
    out = []
    for path, node in jax.tree_util.tree_leaves_with_path(
        tree, is_leaf=lambda x: stop(x) or _is_named_tuple(x)
    ):
        if stop(node) or not _is_named_tuple(node):
            out.append((path, node))
            continue
        for field in node._fields:
            entry = _field_entry(node, field)
            out.extend(
                ((*path, entry, *sub), v) for sub, v in _leaves_with_named_path(getattr(node, field), stop)
            )
    return out


def _entry_value(path: KeyPath, node: Any, key: Any) -> tuple[KeyPath, Any]:
    """The match for ``key`` in a node that has it: the NamedTuple itself (class name) or its entry."""
    if _is_named_tuple(node):
        if type(node).__name__ == key:
            return path, node
        return (*path, _field_entry(node, key)), getattr(node, key)
    return (*path, jax.tree_util.DictKey(key)), node[key]


def _find(tree: PyTree, key: Any) -> list[tuple[KeyPath, Any]]:
    has_key = lambda node: _has_any(node, (key,))
    holders = [(p, n) for p, n in _leaves_with_named_path(tree, has_key) if has_key(n)]
    found = [_entry_value(p, n, key) for p, n in holders]
    for path, node in holders:
        for child_path, child in _children(path, node):
            found.extend(((*child_path, *sub), v) for sub, v in _find(child, key))
    return found


def get_all_with_path(tree: PyTree, key: Any, filtering: Filter | None = None) -> list[tuple[KeyPath, Any]]:
    """All ``(path, value)`` pairs of ``tree`` matching ``key`` (and ``filtering(path, value)`` if given).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> state = jopt.adam(0.1).init(jnp.zeros(2))
      >>> [jax.tree_util.keystr(p) for p, _ in jopt.tree.get_all_with_path(state, "mu")]
      ['[0]ScaleByAdamState.mu']
    """
    found = _find(tree, key)
    if filtering is not None:
        found = [(p, v) for p, v in found if filtering(p, v)]
    return found


def get(tree: PyTree, key: Any, default: Any | None = None, filtering: Filter | None = None) -> Any:
    """The single value of ``tree`` matching ``key`` (and ``filtering``); ``default`` when there is none.

    Raises:
      KeyError: when several values match.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> state = jopt.adam(0.1).init(jnp.zeros(2))
      >>> jopt.tree.get(state, "mu").tolist()
      [0.0, 0.0]
    """
    found = get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        raise KeyError(f"get: {len(found)} values match {key!r}; pass a filtering(path, value) to choose one")
    return found[0][1] if found else default


def set(tree: PyTree, filtering: Filter | None = None, /, **kwargs: Any) -> PyTree:  # noqa: A001 - optax's name
    """A copy of ``tree`` in which every entry matching a keyword's name (and ``filtering``) is replaced.

    Raises:
      KeyError: when some keyword matches nothing in ``tree``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> state = jopt.adam(0.1).init(jnp.zeros(2))
      >>> jopt.tree.get(jopt.tree.set(state, mu=jnp.ones(2)), "mu").tolist()
      [1.0, 1.0]
    """
    for key in kwargs:
        if not get_all_with_path(tree, key, filtering):
            how = " given the filtering" if filtering is not None else ""
            raise KeyError(f"set: nothing matches {key!r}{how} in the tree")
    keys = tuple(kwargs)
    has_key = lambda node: _has_any(node, keys)
    accepts = lambda path, value: filtering is None or filtering(path, value)

    def replace(path: KeyPath, node: Any) -> Any:
        if not has_key(node):
            return node
        name = type(node).__name__ if _is_named_tuple(node) else None
        if name in kwargs and accepts(path, node):
            return kwargs[name]
        new = {}
        for child_path, child in _children(path, node):
            entry = child_path[-1]
            k = entry.name if isinstance(entry, NamedTupleKey) else entry.key
            if k in kwargs and accepts(child_path, child):
                new[k] = kwargs[k]
            elif isinstance(child, (dict, list, tuple)):
                new[k] = replace(child_path, child)
            else:
                new[k] = child
        return node._replace(**new) if _is_named_tuple(node) else new

    treedef = jax.tree.structure(tree, is_leaf=has_key)
    return jax.tree.unflatten(treedef, [replace(p, n) for p, n in _leaves_with_named_path(tree, has_key)])


@jax.tree_util.register_pytree_node_class
class _ParamsMarker:
    """Stands for the parameter tree when an optimizer state is built by ``init``: a node without leaves."""

    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux, children
        return cls()


def map_params(
    initable: Any,
    f: Callable[..., Any],
    state: PyTree,
    /,
    *rest: Any,
    transform_non_params: Callable[[Any], Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> PyTree:
    """Map ``f`` over every copy of the parameter tree inside an optimizer ``state``.

    The copies are found by calling ``initable.init`` (or ``initable`` itself, a
    function ``params -> state``) on a marker standing for the parameters: the
    subtrees of ``state`` where the marker lands (moments, traces, ...) are
    replaced by ``jax.tree.map(f, subtree, *rest, is_leaf=is_leaf)``; every other
    entry by ``transform_non_params(entry)`` when given, else kept.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> opt = jopt.adam(0.1)
      >>> state = opt.init({"w": jnp.zeros(2)})
      >>> specs = jopt.tree_map_params(opt, lambda p: "spec", state, transform_non_params=lambda _: None)
      >>> specs[0].mu, specs[0].count
      ({'w': 'spec'}, None)
    """
    init = initable.init if hasattr(initable, "init") else initable
    skeleton = init(_ParamsMarker())

    def one(marker, value):
        if isinstance(marker, _ParamsMarker):
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else transform_non_params(value)

    return jax.tree.map(one, skeleton, state, is_leaf=lambda x: isinstance(x, _ParamsMarker))
