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


def _free_names(space: Space) -> list[str]:
    return [n for n, d in space.items() if not isinstance(d, Fixed)]


def _from_unit_points(space: Space, points: np.ndarray) -> list[dict]:
    names = _free_names(space)
    configs = []
    for row in points:
        cfg = {}
        coords = dict(zip(names, row, strict=True))
        for name, dim in space.items():
            cfg[name] = dim.value if isinstance(dim, Fixed) else dim.from_unit(float(coords[name]))
        configs.append(cfg)
    return configs


def grid(space: Space, n: int | None = None, seed: int = 0, *, grid_points: int = 5) -> list[dict]:
    """Cartesian product of every dimension's grid (continuous ranges: ``grid_points`` values,
    geometric for log-uniform; integers: all values when at most ``grid_points``).

    ``n`` must be ``None`` or the size of the grid; ``seed`` is unused.
    """
    del seed
    axes = [space[name].grid(grid_points) for name in space]
    configs = [dict(zip(space, values, strict=True)) for values in itertools.product(*axes)]
    if n is not None and n != len(configs):
        raise SearchSpaceError(
            f"grid search has {len(configs)} combinations but trials={n}; pass trials=None "
            "(or change grid_points)"
        )
    return configs


def random(space: Space, n: int, seed: int = 0, **_: object) -> list[dict]:
    """``n`` independent uniform draws (NumPy ``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return _from_unit_points(space, rng.random((n, len(_free_names(space)))))


def _qmc(engine_cls, space: Space, n: int, seed: int) -> list[dict]:
    d = len(_free_names(space))
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
        d = len(_free_names(self.space))
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
