"""Samplers: where a search's configurations come from (the *ask/tell* protocol), and the
non-adaptive methods grid, random and quasi-random (Sobol, Halton).

The sampler protocol (:class:`Sampler`): the engine calls ``propose(history, k)`` whenever a
chunk has room for ``k`` more trials, and ``tell(history, trial)`` when a trial has finished.
``propose`` returns up to ``k`` configurations (dicts, or :class:`Proposal` to choose the trial
id); returning fewer is fine (``[]`` while trials are running means "wait for results"; ``[]``
when nothing is running ends the search). ``history`` is the
:class:`~jopt.sweep.history.History` of every trial so far. A sampler whose behaviour depends on
more than the history (a random generator, a counter) returns it from ``state_dict`` and takes it
back in ``load_state_dict`` (JSON-ready values), so that checkpoints resume exactly.

:class:`ListSampler` proposes a fixed list in order (``sweep.run``); :class:`StreamSampler` draws
random or quasi-random configurations one batch at a time, without end unless given a ``limit``
(ASHA and median stopping under a ``timeout``).

Every sampling method is a pure function of ``(space, n, seed)`` returning a list of
configurations (``name -> value`` dicts), so a sweep is reproducible from its seed. Random and
quasi-random methods draw a point ``u`` in the unit cube (one coordinate per non-fixed dimension)
and map each coordinate with :meth:`Dimension.from_unit`; a :class:`StreamSampler` draws the same
sequence in pieces.

Conditional spaces (:mod:`jopt.sweep.conditional`). Grid: a conditional choice is one axis of
the product whose values are its branches one after another, each branch contributing the
product of its own names' grids. Random and quasi-random: a conditional choice takes one
coordinate for the branch (``from_unit`` over the branch keys), then ``K`` coordinates its
branches share (``K``: the most non-fixed names of one branch): the chosen branch's i-th
non-fixed name, in declaration order, reads the i-th of them. So the branch is drawn first and
then its sub-space, the cube stays small (good QMC balance), and with a power-of-two number of
branches each branch receives a Sobol net of its own. Every other branch's names take their
placeholders.

Example:
  >>> from jopt import sweep
  >>> space = sweep.Space(lr=sweep.loguniform(1e-3, 1e-1), momentum=sweep.choice([0.0, 0.9]))
  >>> len(sweep.sample(space, "grid", grid_points=3))
  6
  >>> sweep.sample(space, "sobol", 4, seed=0) == sweep.sample(space, "sobol", 4, seed=0)
  True
  >>> stream = StreamSampler(space, "sobol", seed=0)
  >>> stream.propose(None, 3) + stream.propose(None, 1) == sweep.sample(space, "sobol", 4, seed=0)
  True
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from jopt.sweep.conditional import Conditional
from jopt.sweep.space import Fixed, SearchSpaceError, Space

if TYPE_CHECKING:  # pragma: no cover
    from jopt.sweep.history import History

__all__ = [
    "METHODS",
    "ListSampler",
    "Proposal",
    "Sampler",
    "StreamSampler",
    "grid",
    "halton",
    "random",
    "sample",
    "sobol",
]


def _unit_layout(space: Space) -> list[tuple[str, int, dict[str, list[str]]]]:
    """The unit-cube coordinates: ``(name, first column, slots)`` per non-fixed top-level entry.

    An unconditional dimension takes one column (``slots`` empty). A conditional choice takes a
    column for the branch, then ``K`` columns shared by its branches (``K``: the most non-fixed
    names of one branch): ``slots[key]`` lists branch ``key``'s non-fixed names in declaration
    order, the i-th reading column ``first + 1 + i``."""
    layout, col = [], 0
    for name, dim in space.items():
        if isinstance(dim, Conditional):
            slots = {
                str(key): [flat for _, flat in pairs if not isinstance(space[flat], Fixed)]
                for key, pairs in dim.names
            }
            layout.append((name, col, slots))
            col += 1 + max((len(v) for v in slots.values()), default=0)
        elif not isinstance(dim, Fixed) and space.condition_of(name) is None:
            layout.append((name, col, {}))
            col += 1
    return layout


def _unit_dims(space: Space) -> int:
    """How many unit-cube coordinates a configuration takes (see :func:`_unit_layout`)."""
    layout = _unit_layout(space)
    if not layout:
        return 0
    name, col, slots = layout[-1]
    return col + 1 + max((len(v) for v in slots.values()), default=0)


def _from_unit_points(space: Space, points: np.ndarray) -> list[dict]:
    layout = _unit_layout(space)
    base = {n: d.value for n, d in space.items() if isinstance(d, Fixed)}
    base.update({n: space.placeholder(n) for n in space if space.condition_of(n) is not None})
    configs = []
    for row in points:
        cfg = dict(base)
        for name, col, slots in layout:
            cfg[name] = value = space[name].from_unit(float(row[col]))
            for i, flat in enumerate(slots.get(str(value), [])):
                cfg[flat] = space[flat].from_unit(float(row[col + 1 + i]))
        configs.append({n: cfg[n] for n in space})
    return configs


def _grid_axis(space: Space, name: str, grid_points: int) -> list[dict[str, Any]]:
    """The grid values of one top-level entry as partial configurations; a conditional choice's
    axis is its branches one after another, each the product of its own names' grids (the other
    branches' names at their placeholders)."""
    dim = space[name]
    if not isinstance(dim, Conditional):
        return [{name: v} for v in dim.grid(grid_points)]
    owned = [n for n in space if (space.condition_of(n) or ("",))[0] == name]
    rest = {n: space.placeholder(n) for n in owned}
    out = []
    for key, (_, pairs) in zip(dim.values, dim.names, strict=True):
        flats = [flat for _, flat in pairs]
        for values in itertools.product(*(space[f].grid(grid_points) for f in flats)):
            out.append({name: key, **rest, **dict(zip(flats, values, strict=True))})
    return out


def grid(space: Space, n: int | None = None, seed: int = 0, *, grid_points: int = 5) -> list[dict]:
    """Cartesian product of every dimension's grid (continuous ranges: ``grid_points`` values,
    geometric for log-uniform; integers: all values when at most ``grid_points``).

    ``n`` must be ``None`` or the size of the grid; ``seed`` is unused.
    """
    del seed
    tops = [n for n in space if space.condition_of(n) is None]
    axes = [_grid_axis(space, name, grid_points) for name in tops]
    configs = []
    for parts in itertools.product(*axes):
        merged = {k: v for part in parts for k, v in part.items()}
        configs.append({n: merged[n] for n in space})
    if n is not None and n != len(configs):
        raise SearchSpaceError(
            f"grid search has {len(configs)} combinations but trials={n}; pass trials=None "
            "(or change grid_points)"
        )
    return configs


def random(space: Space, n: int, seed: int = 0, **_: object) -> list[dict]:
    """``n`` independent uniform draws (NumPy ``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return _from_unit_points(space, rng.random((n, _unit_dims(space))))


def _qmc(engine_cls, space: Space, n: int, seed: int) -> list[dict]:
    d = _unit_dims(space)
    if d == 0:
        return _from_unit_points(space, np.zeros((n, 0)))
    engine = engine_cls(d, scramble=True, seed=np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Sobol balance warning for n not a power of two
        points = engine.random(n)
    return _from_unit_points(space, points)


def sobol(space: Space, n: int, seed: int = 0, **_: object) -> list[dict]:
    """``n`` points of a scrambled Sobol sequence (``scipy.stats.qmc.Sobol``); best with n a power of 2."""
    from scipy.stats import qmc

    return _qmc(qmc.Sobol, space, n, seed)


def halton(space: Space, n: int, seed: int = 0, **_: object) -> list[dict]:
    """``n`` points of a scrambled Halton sequence (``scipy.stats.qmc.Halton``)."""
    from scipy.stats import qmc

    return _qmc(qmc.Halton, space, n, seed)


METHODS: dict[str, Callable[..., list[dict]]] = {
    "grid": grid,
    "random": random,
    "sobol": sobol,
    "halton": halton,
}


def sample(
    space: Space, method: str = "random", n: int | None = None, *, seed: int = 0, grid_points: int = 5
):
    """Configurations for ``method`` in ``{"grid", "random", "sobol", "halton"}``.

    Raises:
      SearchSpaceError: unknown method, or ``n`` missing / not positive for a sampling method.
    """
    if method not in METHODS:
        raise SearchSpaceError(f"unknown search method {method!r}; choose one of {sorted(METHODS)}")
    _check_count("seed", seed, 0)
    if method == "grid":
        _check_count("grid_points", grid_points, 1)
        return grid(space, n, grid_points=grid_points)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SearchSpaceError(f"method {method!r} needs trials >= 1 (an int), got {n!r}")
    return METHODS[method](space, int(n), seed)


def _check_count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- the sampler protocol


class Proposal(NamedTuple):
    """A proposed configuration; ``trial`` chooses its id (its keys), ``None``: the next free id."""

    config: Mapping[str, Any]
    trial: int | None = None


class Sampler:
    """Base class of the ask/tell protocol (see the module docstring); override :meth:`propose`."""

    def propose(self, history: History, k: int) -> Sequence[Mapping[str, Any] | Proposal]:
        """Up to ``k`` configurations to train next."""
        raise NotImplementedError

    def tell(self, history: History, trial: int) -> None:
        """``trial`` has finished (its record in ``history`` is final)."""

    def group_size(self, group: tuple) -> int | None:
        """How many trials of static ``group`` it will propose, if known (sizes the chunks)."""
        return None

    @property
    def total(self) -> int | None:
        """How many trials the sampler will propose in all, if known (for the progress bar)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state beyond the history (checkpoints)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""

    def abandoned(self, history: History) -> Sequence[int]:
        """After a checkpoint is restored: unfinished trials that must not continue (e.g. another
        worker has failed them meanwhile); the engine forgets them."""
        return ()


class ListSampler(Sampler):
    """Proposes ``configs`` in order, with trial ids ``ids`` (default ``0, 1, ...``), grouped by
    ``group_of`` (configurations of one static group consecutively, in order of first appearance)."""

    def __init__(
        self,
        configs: Sequence[Mapping[str, Any]],
        ids: Sequence[int] | None = None,
        group_of: Callable[[Mapping[str, Any]], tuple] | None = None,
    ):
        ids = list(range(len(configs))) if ids is None else [int(i) for i in ids]
        order = list(range(len(configs)))
        if group_of is not None:
            first: dict[tuple, int] = {}
            keys = [first.setdefault(group_of(c), len(first)) for c in configs]
            order.sort(key=lambda i: keys[i])
            self._counts = {g: keys.count(n) for g, n in first.items()}
        else:
            self._counts = {}
        self.configs = [dict(configs[i]) for i in order]
        self.ids = [ids[i] for i in order]
        self.position = 0

    def propose(self, history: History, k: int) -> list[Proposal]:
        out = [Proposal(c, t) for c, t in zip(self.configs, self.ids, strict=True)][self.position :][:k]
        self.position += len(out)
        return out

    def group_size(self, group: tuple) -> int | None:
        return self._counts.get(group)

    @property
    def total(self) -> int:
        return len(self.configs)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.position = int(state["position"])


class StreamSampler(Sampler):
    """Random, Sobol or Halton configurations drawn a few at a time: the same sequence as
    :func:`sample` with the same seed; at most ``limit`` in all (``None``: no end)."""

    def __init__(self, space: Space, method: str = "random", seed: int = 0, limit: int | None = None):
        if method not in ("random", "sobol", "halton"):
            raise ValueError(f"method must be 'random', 'sobol' or 'halton', got {method!r}")
        _check_count("seed", seed, 0)
        limit = None if limit is None else _check_count("trials (the limit)", limit, 1)
        self.space, self.method, self.seed, self.limit = space, method, seed, limit
        self.drawn = 0
        self._start()

    def _start(self) -> None:
        d = _unit_dims(self.space)
        if self.method == "random" or d == 0:
            rng = np.random.default_rng(self.seed)
            self._draw = lambda n: rng.random((n, d))
            return
        from scipy.stats import qmc

        cls = qmc.Sobol if self.method == "sobol" else qmc.Halton
        engine = cls(d, scramble=True, seed=np.random.default_rng(self.seed))

        def draw(n: int) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Sobol balance warning for n not a power of two
                return engine.random(n)

        self._draw = draw

    def propose(self, history: History, k: int) -> list[dict]:
        if self.limit is not None:
            k = min(k, self.limit - self.drawn)
        if k <= 0:
            return []
        self.drawn += k
        return _from_unit_points(self.space, self._draw(k))

    @property
    def total(self) -> int | None:
        return self.limit

    def state_dict(self) -> dict[str, Any]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.drawn = int(state["drawn"])
        self._start()
        if self.drawn:
            self._draw(self.drawn)
