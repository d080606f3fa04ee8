"""Search methods: grid, random and quasi-random (Sobol, Halton) sampling.

Every method is a pure function of ``(space, n, seed)`` returning a list of
configurations (``name -> value`` dicts), so a sweep is reproducible from its
seed. Random and quasi-random methods draw a point ``u`` in the unit cube (one
coordinate per non-fixed dimension) and map each coordinate with
:meth:`Dimension.from_unit`.

Example:
  >>> from jopt import sweep
  >>> space = sweep.Space(lr=sweep.loguniform(1e-3, 1e-1), momentum=sweep.choice([0.0, 0.9]))
  >>> len(sweep.sample(space, "grid", grid_points=3))
  6
  >>> sweep.sample(space, "sobol", 4, seed=0) == sweep.sample(space, "sobol", 4, seed=0)
  True
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import numpy as np

from jopt.sweep.space import Fixed, SearchSpaceError, Space

__all__ = ["METHODS", "grid", "halton", "random", "sample", "sobol"]


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
    if method == "grid":
        return grid(space, n, grid_points=grid_points)
    if n is None or int(n) < 1:
        raise SearchSpaceError(f"method {method!r} needs trials >= 1, got {n!r}")
    return METHODS[method](space, int(n), seed)
