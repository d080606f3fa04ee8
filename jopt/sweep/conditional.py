"""Conditional search spaces: a static choice whose branches carry their own sub-spaces.

``sweep.choice`` given a dict ``branch key -> sub-space`` builds a :class:`Conditional`
dimension::

    space = sweep.Space(
        optimizer=sweep.choice({
            "adam": {"learning_rate": sweep.loguniform(1e-4, 1e-2), "b1": sweep.uniform(0.8, 0.99)},
            "sgd": {"learning_rate": sweep.loguniform(1e-3, 1.0), "momentum": sweep.uniform(0.0, 0.99)},
        }),
        batch_size=128,
    )

What it means:

* **The branch is static.** ``hp["optimizer"]`` is the branch key (a ``str``) and every branch
  is its own static group: one compiled program per branch; the branch's range hyperparameters
  are traced as usual. A static dimension inside a branch splits only that branch's group.
* **Names (flattening).** The branches' names join the space. A name declared by several
  branches with *equal* dimensions is one hyperparameter (one column of the results, one traced
  array). A name declared by several branches with *different* dimensions is qualified per
  branch, ``"adam.learning_rate"`` and ``"sgd.learning_rate"`` above; inside the task the short
  name reads the active branch's value (``hp["learning_rate"]`` in the ``sgd`` group is
  ``sgd.learning_rate``), and an explicit configuration may give either form. A name of a single
  branch keeps its name. Branch names may not repeat a top-level name or another conditional's.
* **Active names** (:meth:`Space.active_names <jopt.sweep.space.Space.active_names>`): the
  unconditional names, the branch choice and the chosen branch's names. Every configuration
  still carries every name, because the engine keeps one traced array per name: an *inactive*
  name holds a fixed placeholder (:meth:`Conditional.placeholder`: the dimension's centre,
  ``from_unit(0.5)``; a fixed value itself) that the task never sees -- reading it raises a
  ``KeyError`` naming its branch, which the task check reports before any compile.
* Branches may not nest (a branch's sub-space holds no conditional choice).

The branch values configurations carry are :class:`BranchKey` strings: equal to, hashing and
printing like the plain keys (JSON writes them as strings), they also tell
:class:`~jopt.sweep.space.Hyperparams` which names are inactive and which short names alias
qualified ones.

Example:
  >>> from jopt import sweep
  >>> space = sweep.Space(opt=sweep.choice({
  ...     "adam": {"lr": sweep.loguniform(1e-4, 1e-2), "b1": sweep.uniform(0.8, 0.99)},
  ...     "sgd": {"lr": sweep.loguniform(1e-3, 1.0), "momentum": sweep.uniform(0.0, 0.9)},
  ... }))
  >>> list(space), space.static_names
  (['opt', 'adam.lr', 'sgd.lr', 'b1', 'momentum'], ('opt',))
  >>> cfg = space.validate_config({"opt": "sgd", "lr": 0.1, "momentum": 0.5})
  >>> space.active_config(cfg)
  {'opt': 'sgd', 'sgd.lr': 0.1, 'momentum': 0.5}
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jopt.sweep.space import RESERVED, Choice, Dimension, Fixed, SearchSpaceError, as_dimension

__all__ = ["BranchKey", "Conditional", "Flattened", "branch_examples", "flatten", "resolve"]


class BranchKey(str):
    """A branch key as configurations carry it (see the module docstring).

    Attributes:
      dimension: the conditional dimension's name.
      aliases: short name -> qualified name of this branch's qualified hyperparameters.
      owners: every hyperparameter of the conditional -> the branch keys where it is active.
    """

    dimension: str
    aliases: dict[str, str]
    owners: dict[str, tuple[str, ...]]

    def __new__(cls, key: str, dimension: str, aliases: Mapping[str, str], owners: Mapping[str, tuple]):
        obj = super().__new__(cls, key)
        obj.dimension, obj.aliases, obj.owners = dimension, dict(aliases), dict(owners)
        return obj

    @property
    def inactive(self) -> frozenset[str]:
        """The conditional's hyperparameters that are inactive in this branch."""
        return frozenset(n for n, keys in self.owners.items() if str(self) not in keys)

    def __reduce__(self):
        return (BranchKey, (str(self), self.dimension, self.aliases, self.owners))


@dataclass(frozen=True)
class Conditional(Choice):
    """A static choice of branches, each with its own sub-space; see :func:`jopt.sweep.choice`.

    ``values`` are the branch keys, ``branches`` the pairs ``(key, ((name, dimension), ...))``
    as declared; a :class:`~jopt.sweep.space.Space` resolves them (:func:`flatten`).
    """

    static: bool = True
    branches: tuple = ()
    names: tuple = field(default=(), compare=False)  # per branch: (local name, flat name) pairs

    def validate(self, name: str) -> None:
        if self.static is not True:
            raise SearchSpaceError(
                f"{name}: a choice of branches is static (each branch is its own compiled group); "
                f"drop static={self.static!r}"
            )
        if not self.branches:
            raise SearchSpaceError(f"{name}: a choice of branches needs at least one branch")

    def sub_space(self, key: str) -> dict[str, Dimension]:
        """The declared sub-space of branch ``key`` (short names)."""
        for k, sub in self.branches:
            if k == key:
                return dict(sub)
        raise KeyError(f"no branch {key!r}; the branches are {list(self.values)!r}")

    @staticmethod
    def placeholder(dim: Dimension) -> Any:
        """The value an inactive hyperparameter of dimension ``dim`` holds."""
        return dim.value if isinstance(dim, Fixed) else dim.from_unit(0.5)


def make_conditional(branches: Mapping[Any, Any], static: bool | None) -> Conditional:
    """The :class:`Conditional` of ``sweep.choice({key: sub-space, ...})`` (checked by the space)."""
    pairs = []
    for key, sub in branches.items():
        sub = {} if sub is None else sub
        pairs.append((key, tuple(sub.items()) if isinstance(sub, Mapping) else sub))
    return Conditional(tuple(branches), True if static is None else static, tuple(pairs))


@dataclass(frozen=True)
class Flattened:
    """What a conditional dimension adds to a space: ``dims`` (the resolved conditional first,
    then its hyperparameters by flat name), ``owners`` (flat name -> active branch keys),
    ``aliases`` (short name -> qualified names)."""

    dims: dict[str, Dimension]
    owners: dict[str, tuple[str, ...]]
    aliases: dict[str, tuple[str, ...]]


def _branch_dims(name: str, dim: Conditional) -> dict[str, dict[str, Dimension]]:
    """The checked sub-spaces, ``key -> {short name -> dimension}``."""
    out: dict[str, dict[str, Dimension]] = {}
    for key, sub in dim.branches:
        if not isinstance(key, str) or not key.isidentifier():
            raise SearchSpaceError(f"{name}: branch keys must be identifier strings, got {key!r}")
        if not isinstance(sub, tuple):
            raise SearchSpaceError(
                f"{name}[{key!r}]: a branch's sub-space must be a dict name -> dimension (or None), "
                f"got {sub!r}"
            )
        local: dict[str, Dimension] = {}
        for n, d in sub:
            where = f"{name}[{key!r}].{n}"
            if not isinstance(n, str) or not n.isidentifier():
                raise SearchSpaceError(
                    f"{name}[{key!r}]: hyperparameter names must be identifiers, got {n!r}"
                )
            if n in RESERVED or n == name:
                raise SearchSpaceError(f"{where}: the name {n!r} is reserved or the conditional's own")
            d = as_dimension(where, d)
            if isinstance(d, Conditional):
                raise SearchSpaceError(f"{where}: conditional choices cannot nest inside a branch")
            d.validate(where)
            local[n] = d
        out[key] = local
    return out


def flatten(name: str, dim: Conditional) -> Flattened:
    """Resolve conditional ``name`` (see the module docstring for the naming rule).

    Raises:
      SearchSpaceError: naming the dimension (and branch) for a bad key, sub-space or dimension.
    """
    dim.validate(name)
    subs = _branch_dims(name, dim)
    declared: dict[str, list[tuple[str, Dimension]]] = {}
    for key, local in subs.items():
        for n, d in local.items():
            declared.setdefault(n, []).append((key, d))
    dims: dict[str, Dimension] = {}
    owners: dict[str, tuple[str, ...]] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    flat_of: dict[tuple[str, str], str] = {}
    for n, decls in declared.items():
        if all(d == decls[0][1] for _, d in decls):
            dims[n], owners[n] = decls[0][1], tuple(k for k, _ in decls)
            flat_of.update({(k, n): n for k, _ in decls})
            continue
        if len({d.static for _, d in decls}) > 1 or len({d.dtype for _, d in decls}) > 1:
            raise SearchSpaceError(
                f"{name}: {n!r} is declared by branches {[k for k, _ in decls]} with different kinds "
                "(static/traced or dtype); give the branches' versions different names"
            )
        for k, d in decls:
            dims[f"{k}.{n}"], owners[f"{k}.{n}"], flat_of[(k, n)] = d, (k,), f"{k}.{n}"
        aliases[n] = tuple(f"{k}.{n}" for k, _ in decls)
    markers = tuple(
        BranchKey(key, name, {n: flat_of[(key, n)] for n in subs[key] if flat_of[(key, n)] != n}, owners)
        for key in subs
    )
    if len(set(markers)) != len(markers):
        raise SearchSpaceError(f"{name}: branch keys repeat: {list(dim.values)!r}")
    names = tuple((key, tuple((n, flat_of[(key, n)]) for n in subs[key])) for key in subs)
    resolved = dataclasses.replace(dim, values=markers, names=names)
    return Flattened({name: resolved, **dims}, owners, aliases)


def _is_placeholder(value: Any, placeholder: Any) -> bool:
    if value is placeholder:
        return True
    try:
        if value == placeholder:
            return True
        return bool(np.float32(value) == np.float32(placeholder))
    except (TypeError, ValueError):
        return False


def resolve(space, config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``config`` with branch values as :class:`BranchKey`, short names qualified and inactive
    names set to their placeholders (a given inactive value must be the placeholder).

    Raises:
      SearchSpaceError: a branch value missing or unknown, a short and a qualified name both
        given, or a value for an inactive name (naming its branches).
    """
    out = dict(config)
    for cond in space.conditions:
        dim = space[cond]
        keys = [str(k) for k in dim.values]
        if cond not in out:
            raise SearchSpaceError(f"{where} {dict(config)!r} lacks hyperparameter {cond!r} (one of {keys})")
        value = out[cond]
        marker = next((m for m in dim.values if isinstance(value, str) and m == value), None)
        if marker is None:
            raise SearchSpaceError(f"{where}: {cond}={value!r} is not one of the branches {keys}")
        out[cond] = marker
        for short, flat in marker.aliases.items():
            if short in out:
                if flat in out:
                    raise SearchSpaceError(f"{where} gives both {short!r} and {flat!r}; give one")
                out[flat] = out.pop(short)
        for flat in sorted(marker.inactive):
            ph = space.placeholder(flat)
            if flat in out and not _is_placeholder(out[flat], ph):
                raise SearchSpaceError(
                    f"{where}: {flat}={out[flat]!r} is inactive with {cond}={str(marker)!r}: it belongs "
                    f"to branch(es) {list(marker.owners[flat])} of {cond!r}; leave it out"
                )
            out[flat] = ph
        stray = [s for s, flats in space.aliases.items() if s in out and flats[0] in marker.owners]
        if stray:
            raise SearchSpaceError(
                f"{where}: {stray[0]!r} is not a hyperparameter of branch {cond}={str(marker)!r} "
                f"(its versions: {list(space.aliases[stray[0]])})"
            )
    return out


def branch_examples(space) -> list[dict[str, Any]]:
    """One configuration per combination of branches (every other value at its placeholder or
    its dimension's centre): checking the task on these checks every branch before anything
    compiles. Empty for a space without branches.

    Example:
      >>> from jopt import sweep
      >>> s = sweep.Space(opt=sweep.choice({"a": {"x": sweep.uniform(0.0, 1.0)}, "b": None}))
      >>> branch_examples(s)
      [{'opt': 'a', 'x': 0.5}, {'opt': 'b', 'x': 0.5}]
    """
    if not space.conditions:
        return []
    centre = {n: Conditional.placeholder(d) for n, d in space.items()}
    combos = itertools.product(*(space[c].values for c in space.conditions))
    return [
        space.validate_config({**centre, **dict(zip(space.conditions, keys, strict=True))}) for keys in combos
    ]
