"""Search spaces: dimensions, validation, and the hyperparameter mapping a task sees.

A search space maps hyperparameter names to *dimensions*:

* :func:`uniform` / :func:`loguniform` -- continuous ranges (traced, float32),
* :func:`integer` -- integer ranges (traced, int32),
* :func:`choice` -- categorical values (traced when numeric, static otherwise); given a dict
  ``{branch: sub-space}``, a static choice of branches with their own hyperparameters
  (:mod:`jopt.sweep.conditional`),
* any plain Python value -- a fixed value (static, the same for every trial).

Traced values reach the task as JAX scalars, so one compiled program serves
every value. Dimensions declared ``static=True`` (layer width, batch size, which
optimizer) reach the task as Python values; trials are grouped by their static
values and each group compiles once.

Example:
  >>> from jopt import sweep
  >>> space = sweep.Space(
  ...     learning_rate=sweep.loguniform(1e-4, 1e-1),
  ...     b1=sweep.uniform(0.8, 0.99),
  ...     width=sweep.choice([64, 128], static=True),
  ...     batch_size=128,
  ... )
  >>> sorted(space.traced_names), sorted(space.static_names)
  (['b1', 'learning_rate'], ['batch_size', 'width'])
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Choice",
    "Dimension",
    "Fixed",
    "Hyperparams",
    "Integer",
    "LogUniform",
    "OutsideSpaceWarning",
    "SearchSpaceError",
    "Space",
    "Uniform",
    "choice",
    "fixed",
    "integer",
    "loguniform",
    "uniform",
]

RESERVED = frozenset({"fold"})


class SearchSpaceError(ValueError):
    """A search space, a configuration or a task is invalid (raised before any compile)."""


class OutsideSpaceWarning(UserWarning):
    """An explicit configuration has a value outside the space (see :meth:`Space.validate_config`);
    ``warnings.simplefilter("error", OutsideSpaceWarning)`` turns it into an error."""


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SearchSpaceError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SearchSpaceError(f"{what} must be finite, got {value!r}")
    return value


class Dimension:
    """Base class of a search-space dimension.

    Subclasses map a unit-interval coordinate ``u`` in ``[0, 1)`` to a value
    (:meth:`from_unit`, used by random and quasi-random search) and list their
    grid values (:meth:`grid`).
    """

    static: bool = False
    log: bool = False

    def validate(self, name: str) -> None:
        """Raise :class:`SearchSpaceError` naming ``name`` if the dimension is invalid."""

    def from_unit(self, u: float) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def grid(self, points: int) -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def dtype(self) -> str:
        """NumPy dtype name of the traced value ("float32", "int32" or "bool")."""
        return "float32"


@dataclass(frozen=True)
class Uniform(Dimension):
    """Continuous values uniform in ``[low, high]``; see :func:`uniform`."""

    low: float
    high: float
    static: bool = False

    def validate(self, name: str) -> None:
        lo = _check_number(self.low, f"{name}: low")
        hi = _check_number(self.high, f"{name}: high")
        if not lo < hi:
            raise SearchSpaceError(f"{name}: empty or inverted range, need low < high, got [{lo:g}, {hi:g}]")

    def from_unit(self, u: float) -> float:
        return float(self.low + u * (self.high - self.low))

    def grid(self, points: int) -> list[float]:
        return [float(v) for v in np.linspace(self.low, self.high, points)]


@dataclass(frozen=True)
class LogUniform(Uniform):
    """Continuous values whose logarithm is uniform; see :func:`loguniform`."""

    log: bool = field(default=True, init=False)

    def validate(self, name: str) -> None:
        for what, v in (("low", self.low), ("high", self.high)):
            if _check_number(v, f"{name}: {what}") <= 0:
                raise SearchSpaceError(f"{name}: loguniform bounds must be > 0, got {what}={v!r}")
        super().validate(name)

    def from_unit(self, u: float) -> float:
        lo, hi = math.log(self.low), math.log(self.high)
        # exp(log(high)) may round above high: clamp to the closed range
        return float(min(max(math.exp(lo + u * (hi - lo)), self.low), self.high))

    def grid(self, points: int) -> list[float]:
        return [float(v) for v in np.geomspace(self.low, self.high, points)]


@dataclass(frozen=True)
class Integer(Dimension):
    """Integers in ``[low, high]`` (both included); see :func:`integer`."""

    low: int
    high: int
    static: bool = False
    log: bool = False

    def validate(self, name: str) -> None:
        for what, v in (("low", self.low), ("high", self.high)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise SearchSpaceError(f"{name}: integer {what} must be an int, got {v!r}")
        if not self.low <= self.high:
            raise SearchSpaceError(f"{name}: inverted range, need low <= high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise SearchSpaceError(f"{name}: log-scaled integer bounds must be > 0, got low={self.low}")

    def from_unit(self, u: float) -> int:
        if self.log:
            lo, hi = math.log(self.low - 0.5 + 1e-9), math.log(self.high + 0.5)
            return int(min(max(round(math.exp(lo + u * (hi - lo))), self.low), self.high))
        return int(min(self.low + math.floor(u * (self.high - self.low + 1)), self.high))

    def grid(self, points: int) -> list[int]:
        n = self.high - self.low + 1
        if n <= points:
            return list(range(self.low, self.high + 1))
        space = np.geomspace if self.log else np.linspace
        return sorted({int(round(v)) for v in space(self.low, self.high, points)})

    @property
    def dtype(self) -> str:
        return "int32"


@dataclass(frozen=True)
class Choice(Dimension):
    """One of a list of values; see :func:`choice`."""

    values: tuple
    static: bool = False

    def validate(self, name: str) -> None:
        if len(self.values) == 0:
            raise SearchSpaceError(f"{name}: choice needs at least one value")
        if not self.static and not _numeric(self.values):
            raise SearchSpaceError(
                f"{name}: non-numeric choice {list(self.values)!r} cannot be traced; "
                "declare it with static=True"
            )

    def from_unit(self, u: float) -> Any:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def grid(self, points: int) -> list[Any]:
        del points
        return list(self.values)

    @property
    def dtype(self) -> str:
        if all(isinstance(v, (bool, np.bool_)) for v in self.values):
            return "bool"
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.values):
            return "int32"
        return "float32"


@dataclass(frozen=True)
class Fixed(Dimension):
    """A value shared by every trial (static: reaches the task as a Python value)."""

    value: Any
    static: bool = field(default=True, init=False)

    def from_unit(self, u: float) -> Any:
        del u
        return self.value

    def grid(self, points: int) -> list[Any]:
        del points
        return [self.value]


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float, bool, np.integer, np.floating, np.bool_)) for v in values)


def uniform(low: float, high: float, *, static: bool = False) -> Uniform:
    """Continuous hyperparameter uniform in ``[low, high]``.

    Example:
      >>> from jopt import sweep
      >>> sweep.uniform(0.8, 0.99).from_unit(0.5)
      0.895
    """
    return Uniform(low, high, static)


def loguniform(low: float, high: float, *, static: bool = False) -> LogUniform:
    """Continuous hyperparameter whose log is uniform in ``[log low, log high]`` (needs ``0 < low < high``).

    Example:
      >>> from jopt import sweep
      >>> round(sweep.loguniform(1e-4, 1e-2).from_unit(0.5), 6)
      0.001
    """
    return LogUniform(low, high, static)


def integer(low: int, high: int, *, log: bool = False, static: bool = False) -> Integer:
    """Integer hyperparameter in ``[low, high]``, both ends included.

    Example:
      >>> from jopt import sweep
      >>> sweep.integer(1, 4).grid(10)
      [1, 2, 3, 4]
    """
    return Integer(low, high, static, log)


def choice(values: Sequence[Any] | Mapping[str, Any], *, static: bool | None = None) -> Choice:
    """Categorical hyperparameter. Numeric values are traced unless ``static=True``;
    non-numeric values (strings, callables) must be static.

    A dict ``{branch key: sub-space}`` makes a *conditional* choice (static): each branch has
    its own hyperparameters, active only when it is chosen; see :mod:`jopt.sweep.conditional`.

    Example:
      >>> from jopt import sweep
      >>> sweep.choice(["adam", "sgd"], static=True).grid(0)
      ['adam', 'sgd']
      >>> space = sweep.Space(opt=sweep.choice({"adam": {"b1": sweep.uniform(0.8, 0.99)}, "sgd": None}))
      >>> space.active_names({"opt": "sgd", "b1": 0.895})
      ['opt']
    """
    if static is not None and not isinstance(static, (bool, np.bool_)):
        raise SearchSpaceError(f"choice: static must be True, False or None, got {static!r}")
    if isinstance(values, Mapping):
        from jopt.sweep.conditional import make_conditional

        return make_conditional(values, static)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SearchSpaceError(f"choice needs a list of values (or a dict of branches), got {values!r}")
    values = tuple(values)
    return Choice(values, bool(static) if static is not None else False)


def fixed(value: Any) -> Fixed:
    """A fixed (static) value; plain values in a :class:`Space` are wrapped with this."""
    return Fixed(value)


_FACTORIES = (uniform, loguniform, integer, choice, fixed)


def as_dimension(name: str, dim: Any) -> Dimension:
    """``dim`` as a :class:`Dimension` (a plain value becomes :func:`fixed`); a factory or a
    dimension class passed itself raises :class:`SearchSpaceError` naming ``name``."""
    if any(dim is f for f in _FACTORIES) or (isinstance(dim, type) and issubclass(dim, Dimension)):
        raise SearchSpaceError(
            f"{name}: got {getattr(dim, '__name__', dim)} itself, not a dimension; call it, "
            "e.g. sweep.uniform(0.0, 1.0)"
        )
    return dim if isinstance(dim, Dimension) else Fixed(dim)


class Space(Mapping[str, Dimension]):
    """A validated search space: ``name -> Dimension`` (plain values become :func:`fixed`).

    A conditional choice (``sweep.choice({branch: sub-space, ...})``) adds its branches'
    hyperparameters under flat names (see :mod:`jopt.sweep.conditional`); :meth:`active_names`
    tells which of them a configuration uses.

    Raises:
      SearchSpaceError: for empty or inverted ranges, non-positive log bounds,
        empty choices, non-numeric traced choices, reserved names (``fold``) or bad
        conditional choices (each message names the dimension).
    """

    def __init__(self, dims: Mapping[str, Any] | None = None, /, **kwargs: Any):
        merged = dict(dims or {}, **kwargs)
        if not merged:
            raise SearchSpaceError("the search space is empty")
        self._dims: dict[str, Dimension] = {}
        self._owners: dict[str, tuple[str, tuple[str, ...]]] = {}  # flat name -> (conditional, keys)
        self.aliases: dict[str, tuple[str, ...]] = {}
        """Short names of qualified conditional hyperparameters -> their qualified names."""
        for name, dim in merged.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise SearchSpaceError(f"hyperparameter names must be identifiers, got {name!r}")
            if name in RESERVED:
                raise SearchSpaceError(f"{name!r} is reserved (the engine sets it when folds= is given)")
            dim = as_dimension(name, dim)
            added, aliases = {name: dim}, {}
            if isinstance(dim, Conditional):
                flat = flatten(name, dim)
                added, aliases = flat.dims, flat.aliases
                self._owners.update({n: (name, keys) for n, keys in flat.owners.items()})
            else:
                dim.validate(name)
            for n, d in added.items():
                if n in self._dims or n in self.aliases:
                    raise SearchSpaceError(
                        f"{name}: the name {n!r} is already in the space"
                        + (f" (the short name of {list(self.aliases[n])})" if n in self.aliases else "")
                        + "; rename one of them"
                    )
                self._dims[n] = d
            for short, flats in aliases.items():
                if short in self._dims or short in self.aliases:
                    raise SearchSpaceError(
                        f"{name}: the short name {short!r} of {list(flats)} is already in the space; "
                        "rename one of them"
                    )
                self.aliases[short] = flats

    def __getitem__(self, name: str) -> Dimension:
        return self._dims[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dims)

    def __len__(self) -> int:
        return len(self._dims)

    def __repr__(self) -> str:
        return f"Space({self._dims!r})"

    @property
    def traced_names(self) -> tuple[str, ...]:
        """Names whose values are traced (JAX scalars inside the task)."""
        return tuple(n for n, d in self._dims.items() if not d.static)

    @property
    def static_names(self) -> tuple[str, ...]:
        """Names whose values are static (Python values inside the task)."""
        return tuple(n for n, d in self._dims.items() if d.static)

    # ------------------------------------------------------------------ conditional spaces
    @property
    def conditions(self) -> tuple[str, ...]:
        """Names of the conditional choices (empty for a space without branches)."""
        return tuple(n for n, d in self._dims.items() if isinstance(d, Conditional))

    def condition_of(self, name: str) -> tuple[str, tuple[str, ...]] | None:
        """``(conditional, branch keys)`` where ``name`` is active, ``None`` for an unconditional name.

        Example:
          >>> from jopt import sweep
          >>> s = sweep.Space(opt=sweep.choice({"a": {"x": sweep.uniform(0.0, 1.0)}, "b": None}), y=1)
          >>> s.condition_of("x"), s.condition_of("y")
          (('opt', ('a',)), None)
        """
        if name not in self._dims:
            raise KeyError(f"{name!r} is not in the space (the space has {list(self._dims)})")
        return self._owners.get(name)

    def placeholder(self, name: str) -> Any:
        """The value an inactive conditional hyperparameter holds (see :mod:`jopt.sweep.conditional`)."""
        if self.condition_of(name) is None:
            raise ValueError(f"{name!r} is not a hyperparameter of a branch; it has no placeholder")
        return Conditional.placeholder(self._dims[name])

    def active_names(self, config: Mapping[str, Any]) -> list[str]:
        """The names ``config`` uses, in space order: every name of a space without branches;
        else the unconditional names, the branch choices and the chosen branches' names.

        Raises:
          SearchSpaceError: ``config`` lacks a branch choice or names an unknown branch.

        Example:
          >>> from jopt import sweep
          >>> s = sweep.Space(opt=sweep.choice({"a": {"x": sweep.uniform(0.0, 1.0)}, "b": None}), y=1)
          >>> s.active_names({"opt": "a", "x": 0.2, "y": 1}), s.active_names({"opt": "b"})
          (['opt', 'x', 'y'], ['opt', 'y'])
        """
        chosen = {}
        for cond in self.conditions:
            if cond not in config:
                raise SearchSpaceError(f"configuration {dict(config)!r} lacks the branch choice {cond!r}")
            value, keys = config[cond], [str(k) for k in self._dims[cond].values]
            if not isinstance(value, str) or value not in keys:
                raise SearchSpaceError(f"{cond}={value!r} is not one of the branches {keys}")
            chosen[cond] = str(value)
        return [
            n for n in self._dims if n not in self._owners or chosen[self._owners[n][0]] in self._owners[n][1]
        ]

    def active_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` restricted to its :meth:`active_names` (what results tables show)."""
        return {n: config[n] for n in self.active_names(config) if n in config}

    def validate_config(
        self, config: Mapping[str, Any], *, where: str = "configuration", outside: str = "allow"
    ) -> dict[str, Any]:
        """Check an explicit configuration against the space; fill fixed values.

        Always raises :class:`SearchSpaceError` (``where`` names the configuration, e.g.
        ``"trials[3]"``) unless every dimension is given (fixed ones may be left out), no other
        name is, traced values are numbers, range values are numbers and integer values integers.

        A value *outside the space* -- beyond a range's bounds (compared in float32, the precision
        the task sees), not among a choice's values, or unlike a fixed value -- is used as given
        (e.g. a learning rate far above the range, to test divergence; PBT explores such a member
        back into the space). ``outside``: ``"allow"`` it, ``"warn"`` (an
        :class:`OutsideSpaceWarning` naming the configuration, the dimension and the bounds; what
        the front-ends do for explicit lists) or ``"raise"`` a :class:`SearchSpaceError`.

        With branches (:mod:`jopt.sweep.conditional`) a configuration needs its branch choice and
        the chosen branch's names only (short names of qualified ones allowed); inactive names are
        filled with their placeholders, and a value given for one (other than its placeholder)
        raises :class:`SearchSpaceError` naming the branches it belongs to.

        Example:
          >>> from jopt import sweep
          >>> space = sweep.Space(lr=sweep.loguniform(1e-3, 1.0), bs=32)
          >>> space.validate_config({"lr": 0.1})
          {'lr': 0.1, 'bs': 32}
          >>> space.validate_config({"lr": 2.0}, where="trials[1]", outside="raise")
          Traceback (most recent call last):
          ...
          jopt.sweep.space.SearchSpaceError: trials[1]: lr=2.0 is outside the space's bounds [0.001, 1]
        """
        if outside not in ("allow", "warn", "raise"):
            raise ValueError(f"outside must be 'allow', 'warn' or 'raise', got {outside!r}")
        if not isinstance(config, Mapping):
            raise SearchSpaceError(f"{where} must be a dict of hyperparameter values, got {config!r}")
        if self._owners or self.conditions:
            config = resolve(self, config, where)
        unknown = set(config) - set(self._dims)
        if unknown:
            raise SearchSpaceError(
                f"{where} has hyperparameters not in the space: {sorted(map(str, unknown))} "
                f"(the space has {list(self._dims)})"
            )
        missing = [n for n, d in self._dims.items() if n not in config and not isinstance(d, Fixed)]
        if missing:
            which = ", ".join(repr(n) for n in missing)
            raise SearchSpaceError(f"{where} {dict(config)!r} lacks hyperparameter {which}")
        out = {}
        for name, dim in self._dims.items():
            if name not in config:
                out[name] = dim.value
                continue
            value = config[name]
            if not dim.static and not _numeric([value]):
                raise SearchSpaceError(
                    f"{where}: {name}: traced hyperparameter needs a number, got {value!r}"
                )
            wrong_kind, beyond = _check_value(dim, value)
            if wrong_kind:
                raise SearchSpaceError(f"{where}: {name}={value!r} {wrong_kind}")
            if beyond and outside == "raise":
                raise SearchSpaceError(f"{where}: {name}={value!r} {beyond}")
            if beyond and outside == "warn":
                warnings.warn(
                    f"{where}: {name}={value!r} {beyond}; it is used as given",
                    OutsideSpaceWarning,
                    stacklevel=3,
                )
            out[name] = value
        return out


def _same(a: Any, b: Any) -> bool:
    """``a is b`` or ``a == b`` when that comparison gives a plain bool (arrays compare unequal)."""
    if a is b:
        return True
    try:
        eq = a == b
    except Exception:  # noqa: BLE001 - incomparable values are different
        return False
    return isinstance(eq, (bool, np.bool_)) and bool(eq)


def _check_value(dim: Dimension, value: Any) -> tuple[str | None, str | None]:
    """``(why value is the wrong kind for dim, why it is outside dim)``, ``None`` where it is not."""
    if isinstance(dim, Fixed):
        return None, None if _same(
            dim.value, value
        ) else f"differs from the space's fixed value {dim.value!r}"
    if isinstance(dim, Choice):
        if dim.static or not _numeric([value]):
            hit = any(_same(v, value) for v in dim.values)
        else:  # traced: the task sees the value in the choice's dtype
            hit = any(bool(np.asarray(v, dim.dtype) == np.asarray(value, dim.dtype)) for v in dim.values)
        return None, None if hit else f"is not one of the choices {list(dim.values)!r}"
    if isinstance(dim, (Uniform, Integer)):
        if isinstance(value, (bool, np.bool_)) or not _numeric([value]):
            return f"must be a number for a {type(dim).__name__.lower()} dimension", None
        if isinstance(dim, Integer):
            if not (math.isfinite(float(value)) and float(value).is_integer()):
                return f"must be an integer (the dimension is integer({dim.low}, {dim.high}))", None
            inside = dim.low <= value <= dim.high
            return None, None if inside else f"is outside the space's bounds [{dim.low}, {dim.high}]"
        if not math.isfinite(float(value)):
            return "must be finite", None
        v32, lo32, hi32 = (np.float32(v) for v in (value, dim.low, dim.high))
        if not lo32 <= v32 <= hi32:
            return None, f"is outside the space's bounds [{dim.low:g}, {dim.high:g}]"
    return None, None


class Hyperparams(Mapping[str, Any]):
    """The hyperparameters one trial's task functions see.

    Traced names map to JAX scalars, static names to Python values. Reading a
    name that is not in the space raises ``KeyError`` with the known names and a
    did-you-mean hint. With branches (:mod:`jopt.sweep.conditional`), reading a name of
    another branch raises ``KeyError`` naming its branches, iteration skips such names, and a
    qualified name (``"sgd.lr"``) is also read by its short name (``hp["lr"]``). ``fold`` is
    the fold index (traced int32) when the sweep has ``folds=k``, and ``num_folds`` is ``k`` (or ``None``).
    """

    def __init__(self, values: Mapping[str, Any], num_folds: int | None = None):
        self._values = dict(values)
        self.num_folds = num_folds
        self.accessed: set[str] = set()
        self._aliases: dict[str, str] = {}
        self._inactive: dict[str, BranchKey] = {}
        for v in self._values.values():
            if isinstance(v, BranchKey):
                self._aliases.update(v.aliases)
                self._inactive.update({n: v for n in v.inactive})

    def __getitem__(self, name: str) -> Any:
        if name not in self._values and name in self._aliases:
            name = self._aliases[name]
        if name in self._inactive:
            branch = self._inactive[name]
            raise KeyError(
                f"hyperparameter {name!r} is inactive with {branch.dimension}={str(branch)!r}: it belongs "
                f"to branch(es) {list(branch.owners[name])} of {branch.dimension!r}; read it only when "
                f"hp[{branch.dimension!r}] is one of them"
            )
        if name in self._values:
            self.accessed.add(name)
            return self._values[name]
        if name == "fold":
            raise KeyError("'fold' is only defined in a cross-validated sweep: pass folds=k to sweep.run")
        close = difflib.get_close_matches(str(name), list(self), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = sorted(k for k in self if k != "fold")
        raise KeyError(f"hyperparameter {name!r} is not in the search space{hint} (known: {known})")

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._values if n not in self._inactive)

    def __len__(self) -> int:
        return len(self._values) - len(self._inactive.keys() & self._values.keys())

    def __repr__(self) -> str:
        return f"Hyperparams({self._values!r})"

    @property
    def fold(self) -> Any:
        """The fold index (traced int32 scalar) in a cross-validated sweep, else ``None``."""
        return self._values.get("fold")


# the conditional module builds on the classes above
from jopt.sweep.conditional import BranchKey, Conditional, flatten, resolve  # noqa: E402
