r"""Bayesian optimization: a GP surrogate proposes configurations as slots of a chunk free up.

:func:`bayesian` is a :class:`BayesSampler` on the engine (:func:`jopt.sweep.search`):

1. an initial quasi-random design of ``initial`` configurations (scrambled Sobol, as
   ``sweep.run(..., method="sobol")``), proposed as slots are free;
2. then, whenever slots are free and fewer than ``batch`` trials are training: fit the GP of
   :mod:`jopt.sweep.gp` to every finished trial (hyperparameters warm-started from the
   previous fit) and :func:`propose` up to ``batch`` minus the running trials new
   configurations (never one already evaluated or training); until ``trials`` were proposed.

Chunks are sized for ``batch`` trials, so one ``init`` and one ``segment`` program per static
group serve the whole search; a refill writes the new configuration into the traced arrays.

Encoding (:func:`to_unit` / :func:`from_unit`). Each non-fixed dimension becomes unit-cube
columns: ``uniform`` linearly, ``loguniform`` (and ``integer(log=True)``) in log space,
``integer`` at the centre of its value's bin of :meth:`Integer.from_unit` (so proposals are
rounded to integers and the GP sees the rounded point), ``choice`` as one-hot columns (the
categories are unordered; each gets its own ARD length scale; decoding takes the largest
column). Static dimensions are encoded the same way; their values only split a round into
engine groups (one program per distinct static value set -- prefer static choices with few values).

Conditional spaces (:mod:`jopt.sweep.conditional`). One GP over the whole flattened space: the
branch choice is a one-hot block like any choice, and a hyperparameter inactive in a
configuration's branch is encoded at the constant :data:`INACTIVE` (``0.5``) -- imputation, so
two configurations of one branch differ only in that branch's coordinates, and configurations
of different branches are apart by the branch block (its own length scales) plus their
active coordinates; a name shared by several branches is one coordinate, so what one branch
learns about it informs the others. Decoding a candidate (and so the snapping of candidates)
sets the inactive names to their placeholders and their coordinates back to ``0.5``; the local
perturbations resample the branch with the categories' probability. Before anything compiles,
the task is checked on one configuration of every branch.

Objectives. The GP models :math:`y = s \cdot \text{objective}` (``s = 1`` minimizing, ``-1``
maximizing). Diverged trials (``objective`` infinite or NaN) are given the worst finite value
observed, so the GP never sees a non-finite target. Training objectives have huge bad outliers
(a nearly diverged run's loss of 1e27 would flatten every other value after standardization),
so the targets are *half-rank warped* (:func:`warp`): with :math:`m` the median and
:math:`\sigma` the root-mean-square deviation of the better half from :math:`m`, the better half
keeps its values, :math:`z = (y - m) / \sigma \le 0`, and the worse half is replaced by normal
quantiles of its ranks, :math:`z = \Phi^{-1}(\tfrac12 + \tfrac12 (r - \tfrac12) / n_{bad}) > 0`;
the result is monotone in :math:`y`, insensitive to how bad the bad values are, and then
standardized to mean 0, variance 1.

Batch acquisition. Default ``"thompson"``: over a candidate set (``num_candidates`` points:
three quarters scrambled Sobol over the cube, one quarter local perturbations
:math:`x_i + \sigma \epsilon` of the best observed points with :math:`\sigma` log-uniform in
:math:`[0.005, 0.2]` and categories resampled with probability 0.2), draw K *joint* posterior
samples :math:`f^{(1)}, \dots, f^{(K)}` and propose :math:`\arg\min_c f^{(j)}(c)` for each.
Independent samples disagree where the posterior is uncertain, so the batch spreads between
exploitation and exploration without any tuning, costs one Cholesky per round, and needs no
sequential fantasies; a candidate already proposed or already evaluated is skipped (next best
of the same sample), so the K proposals are distinct. ``"ei"``: kriging believer -- pick the
candidate of largest expected improvement, add it as a fantasy observation at its posterior
mean (hyperparameters kept), recompute, K times.

Example:
  >>> from jopt import sweep
  >>> from jopt.sweep.bayes import propose
  >>> space = sweep.Space(x=sweep.uniform(0.0, 1.0))
  >>> seen = [{"x": 0.1}, {"x": 0.5}, {"x": 0.9}]
  >>> new = propose(space, seen, [(c["x"] - 0.3) ** 2 for c in seen], k=2, seed=0)
  >>> len(new), new[0] != new[1]
  (2, True)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep import gp
from jopt.sweep.conditional import branch_examples
from jopt.sweep.engine import SCHEDULER_METHODS, as_space, check_protocol, search
from jopt.sweep.options import check_int, validate_options
from jopt.sweep.results import SweepResult, signed
from jopt.sweep.samplers import Proposal, Sampler, sobol
from jopt.sweep.scheduler import TrialScheduler
from jopt.sweep.space import Choice, Fixed, Integer, LogUniform, Space, Uniform
from jopt.sweep.task import Task, check_task, check_task_object

__all__ = [
    "ACQUISITIONS",
    "INACTIVE",
    "BayesSampler",
    "bayesian",
    "from_unit",
    "propose",
    "to_unit",
    "unit_columns",
    "warp",
]

ACQUISITIONS = ("thompson", "ei")
INACTIVE = 0.5  # the unit-cube coordinate of an inactive (other-branch) hyperparameter
_LOCAL_FRACTION = 0.25
_LOCAL_CENTRES = 5
_LOCAL_SCALES = (0.005, 0.2)
_RESAMPLE_CATEGORY = 0.2


# ----------------------------------------------------------------------------- unit-cube encoding


def unit_columns(space: Space) -> dict[str, slice]:
    """The unit-cube columns of each non-fixed dimension (one-hot blocks for choices).

    Raises:
      ValueError: a dimension type the encoding does not know, or no non-fixed dimension.

    Example:
      >>> from jopt import sweep
      >>> unit_columns(sweep.Space(lr=sweep.loguniform(1e-3, 1.0), act=sweep.choice(["a", "b"], static=True)))
      {'lr': slice(0, 1, None), 'act': slice(1, 3, None)}
    """
    cols, start = {}, 0
    for name, dim in space.items():
        if isinstance(dim, Fixed):
            continue
        if isinstance(dim, Choice):
            width = len(dim.values)
        elif isinstance(dim, (Uniform, Integer)):
            width = 1
        else:
            raise ValueError(
                f"{name}: Bayesian search supports uniform, loguniform, integer, choice and fixed "
                f"dimensions, got {type(dim).__name__}"
            )
        cols[name] = slice(start, start + width)
        start += width
    if not cols:
        raise ValueError("space: Bayesian search needs at least one non-fixed dimension")
    return cols


def _width(cols: Mapping[str, slice]) -> int:
    return max(s.stop for s in cols.values())


def _value_to_unit(dim, value: Any, name: str) -> np.ndarray:
    if isinstance(dim, Choice):
        hits = [i for i, v in enumerate(dim.values) if v == value]
        if not hits:
            raise ValueError(f"{name}: {value!r} is not one of the choices {list(dim.values)!r}")
        out = np.zeros(len(dim.values))
        out[hits[0]] = 1.0
        return out
    if isinstance(dim, Integer):
        if dim.log:
            lo, hi = math.log(dim.low - 0.5 + 1e-9), math.log(dim.high + 0.5)
            u = (math.log(max(float(value), 1e-12)) - lo) / (hi - lo)
        else:
            u = (float(value) - dim.low + 0.5) / (dim.high - dim.low + 1)
    elif isinstance(dim, LogUniform):
        lo, hi = math.log(dim.low), math.log(dim.high)
        u = (math.log(max(float(value), 1e-300)) - lo) / (hi - lo)
    else:
        u = (float(value) - dim.low) / (dim.high - dim.low)
    return np.array([min(max(u, 0.0), 1.0)])


def to_unit(space: Space, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Encode configurations as rows of the unit cube (the inverse of :func:`from_unit` on its image).

    Example:
      >>> from jopt import sweep
      >>> space = sweep.Space(lr=sweep.loguniform(1e-4, 1e-2), n=sweep.integer(1, 4))
      >>> to_unit(space, [{"lr": 1e-3, "n": 2}]).round(3).tolist()
      [[0.5, 0.375]]
    """
    cols = unit_columns(space)
    out = np.zeros((len(configs), _width(cols)))
    for i, cfg in enumerate(configs):
        active = set(space.active_names(cfg)) if space.conditions else cols.keys()
        for name, sl in cols.items():
            if name not in active:
                out[i, sl] = INACTIVE
                continue
            if name not in cfg:
                raise ValueError(f"configuration {dict(cfg)!r} lacks hyperparameter {name!r}")
            out[i, sl] = _value_to_unit(space[name], cfg[name], name)
    return out


def from_unit(space: Space, points: np.ndarray) -> list[dict[str, Any]]:
    """Decode unit-cube rows into configurations (one-hot blocks by their largest column).

    Example:
      >>> from jopt import sweep
      >>> space = sweep.Space(lr=sweep.loguniform(1e-4, 1e-2), n=sweep.integer(1, 4), bs=32)
      >>> cfg = from_unit(space, [[0.5, 0.375]])[0]
      >>> round(cfg["lr"], 9), cfg["n"], cfg["bs"]
      (0.001, 2, 32)
    """
    cols = unit_columns(space)
    points = np.asarray(points, np.float64)
    configs = []
    for row in points:
        cfg = {}
        for name, dim in space.items():
            if isinstance(dim, Fixed):
                cfg[name] = dim.value
            elif isinstance(dim, Choice):
                cfg[name] = dim.values[int(np.argmax(row[cols[name]]))]
            else:
                value = dim.from_unit(float(np.clip(row[cols[name]][0], 0.0, 1.0)))
                cfg[name] = min(max(value, dim.low), dim.high)  # exp(log(high)) may overshoot high
        if space.conditions:  # the other branches' names: their placeholders
            active = set(space.active_names(cfg))
            cfg = {n: v if n in active else space.placeholder(n) for n, v in cfg.items()}
        configs.append(cfg)
    return configs


def _snap(space: Space, points: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Decode then re-encode: integers to their bin centre, choices to one-hot."""
    configs = from_unit(space, points)
    return to_unit(space, configs), configs


# ----------------------------------------------------------------------------- proposals


def _targets(objectives: Sequence[float], mode: str) -> np.ndarray:
    sign = 1.0 if mode == "min" else -1.0
    y = sign * np.asarray(objectives, np.float64)
    bad = ~np.isfinite(y)
    y[bad] = np.max(y[~bad]) if np.any(~bad) else 0.0
    return y


def warp(y: np.ndarray) -> np.ndarray:
    """Half-rank warping of minimization targets (see the module docstring); finite input.

    Example:
      >>> a, b = warp(np.array([0.0, 1.0, 2.0, 5.0])), warp(np.array([0.0, 1.0, 2.0, 1e27]))
      >>> bool(np.allclose(a, b)), a.round(2).tolist()
      (True, [-1.34, -0.45, 0.32, 1.15])
    """
    from scipy.special import ndtri
    from scipy.stats import rankdata

    y = np.asarray(y, np.float64)
    med = float(np.median(y))
    good = y <= med
    scale = float(np.sqrt(np.mean((y[good] - med) ** 2)))
    z = (y - med) / (scale if scale > 1e-12 else 1.0)
    bad = ~good
    if np.any(bad):
        ranks = rankdata(y[bad], method="average")
        z[bad] = ndtri(0.5 + 0.5 * (ranks - 0.5) / bad.sum())
    return z


def _candidates(space: Space, x_obs: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator):
    from scipy.stats import qmc

    cols = unit_columns(space)
    d = _width(cols)
    n_local = int(n * _LOCAL_FRACTION)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Sobol balance warning for n not a power of two
        points = [qmc.Sobol(d, scramble=True, seed=rng).random(n - n_local)]
    centres = x_obs[np.argsort(y, kind="stable")[:_LOCAL_CENTRES]]
    local = centres[np.arange(n_local) % len(centres)].copy()
    scale = np.exp(rng.uniform(*np.log(_LOCAL_SCALES), size=(n_local, 1)))
    local += scale * rng.standard_normal((n_local, d))
    for name, sl in cols.items():
        if isinstance(space[name], Choice):
            local[:, sl] = centres[np.arange(n_local) % len(centres)][:, sl]
            redo = rng.random(n_local) < _RESAMPLE_CATEGORY
            local[redo, sl] = rng.random((int(redo.sum()), sl.stop - sl.start))
    points.append(np.clip(local, 0.0, 1.0))
    return _snap(space, np.concatenate(points))


def _pad_columns(x: np.ndarray) -> np.ndarray:
    """Zero columns up to a multiple of 4: they add nothing to any distance (so nothing to the GP)
    and let spaces of similar width share the GP's compiled programs."""
    extra = -x.shape[1] % 4
    return np.concatenate([x, np.zeros((x.shape[0], extra))], 1) if extra else x


def _pick(
    orders: np.ndarray, keys: list[tuple], seen: set[tuple], taken: set[tuple] | None = None
) -> list[int]:
    """For each row of candidate orderings (best first) the first candidate neither evaluated
    (``seen``) nor already proposed (``taken``, updated in place)."""
    chosen: list[int] = []
    taken = set() if taken is None else taken
    for order in orders:
        pick = next((c for c in order if keys[c] not in seen and keys[c] not in taken), None)
        if pick is None:  # every candidate evaluated already: allow repeats of evaluated points
            pick = next((c for c in order if keys[c] not in taken), int(order[0]))
        chosen.append(int(pick))
        taken.add(keys[pick])
    return chosen


def _expected_improvement(mean: np.ndarray, var: np.ndarray, best: float) -> np.ndarray:
    from scipy.special import ndtr

    sd = np.sqrt(var)
    z = (best - mean) / sd
    return sd * (z * ndtr(z) + np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi))


def _check_propose_args(k: int, num_candidates: int, acquisition: str, mode: str, n_obs: int,
                        fit_steps: int = 1, restarts: int = 1) -> None:  # fmt: skip
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (batch) must be an int >= 1, got {k!r}")
    ok = isinstance(num_candidates, (int, np.integer)) and not isinstance(num_candidates, bool)
    if not ok or num_candidates < max(16, 2 * k):
        raise ValueError(
            f"num_candidates must be an int >= max(16, 2 * k) = {max(16, 2 * k)}, got {num_candidates!r}"
        )
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    check_int("fit_steps", fit_steps)
    check_int("restarts", restarts)
    if n_obs < 2:
        raise ValueError(f"the GP needs at least 2 observed configurations, got {n_obs}")


def _propose(
    space: Space,
    configs: Sequence[Mapping[str, Any]],
    objectives: Sequence[float],
    k: int,
    seed: int | Sequence[int],
    mode: str,
    acquisition: str,
    num_candidates: int,
    fit_steps: int,
    restarts: int,
    init: gp.GPParams | None,
    pending: Sequence[Mapping[str, Any]] = (),
) -> tuple[list[dict], gp.GPParams]:
    if len(configs) != len(objectives):
        raise ValueError(f"got {len(configs)} configurations but {len(objectives)} objectives")
    _check_propose_args(k, num_candidates, acquisition, mode, len(configs), fit_steps, restarts)
    rng = np.random.default_rng(seed)
    key_fit, key_sample = jax.random.split(jax.random.key(int(rng.integers(2**31))))
    x_obs = to_unit(space, configs)
    y = _targets(objectives, mode)
    y_std, _, _ = gp.standardize(warp(y))
    n = len(y)
    size = n + (k if acquisition == "ei" else 0)
    xp, yp, mask = gp.pad(_pad_columns(x_obs), y_std, max(16, 1 << max(size - 1, 0).bit_length()))
    params = gp.fit(xp, yp, key=key_fit, mask=mask, steps=fit_steps, restarts=restarts, init=init)
    xc, cand_configs = _candidates(space, x_obs, y, num_candidates, rng)
    keys = [tuple(row) for row in np.round(xc, 6)]
    seen = {tuple(row) for row in np.round(x_obs, 6)}
    if pending:  # configurations being trained: not proposed again
        seen |= {tuple(row) for row in np.round(to_unit(space, pending), 6)}
    xc32 = jnp.asarray(_pad_columns(xc), jnp.float32)
    if acquisition == "thompson":
        # draw a power-of-two number of samples (at least 8) so that any k <= 8 shares one program
        num = max(8, 1 << max(k - 1, 0).bit_length())
        f = np.asarray(gp.posterior_samples(params, xp, yp, xc32, key_sample, num_samples=num, mask=mask))[:k]
        chosen = _pick(np.argsort(f, axis=1, kind="stable"), keys, seen)
    else:
        chosen, taken = [], set()
        best = float(np.min(y_std))
        for j in range(k):
            mean, var = (np.asarray(a, np.float64) for a in gp.posterior(params, xp, yp, xc32, mask))
            ei = _expected_improvement(mean, var, best)
            c = _pick(np.argsort(-ei, kind="stable")[None], keys, seen, taken)[0]
            chosen.append(c)
            xp[n + j], yp[n + j], mask[n + j] = xc32[c], mean[c], 1.0  # the kriging-believer fantasy
    return [dict(cand_configs[c]) for c in chosen], params


def propose(
    space: Space | Mapping[str, Any],
    configs: Sequence[Mapping[str, Any]],
    objectives: Sequence[float],
    k: int,
    seed: int | Sequence[int] = 0,
    *,
    mode: str = "min",
    acquisition: str = "thompson",
    num_candidates: int = 2048,
    fit_steps: int = 300,
    restarts: int = 4,
) -> list[dict[str, Any]]:
    """``k`` new distinct configurations from a GP fit to ``(configs, objectives)``.

    A pure function of its arguments (same inputs and seed, same proposals); no training
    happens here, so any cheap objective can drive it (see the module docstring for the model,
    the candidate set and the acquisitions).

    Args:
      space: the search space.
      configs: evaluated configurations (at least 2).
      objectives: their objectives (``inf``/``NaN`` for diverged trials).
      k: number of configurations to propose (>= 1).
      seed: seeds the candidate set, the GP restarts and the posterior samples.
      mode: ``"min"`` or ``"max"`` the objective.
      acquisition: ``"thompson"`` (joint posterior samples) or ``"ei"`` (kriging believer).
      num_candidates: size of the candidate set (>= max(16, 2k)).
      fit_steps, restarts: Adam steps and starting points of the GP hyperparameter fit.

    Raises:
      ValueError: bad ``k``, ``num_candidates``, ``acquisition`` or ``mode``, fewer than two
        observations, or configurations that do not fit the space.
    """
    space = as_space(space)
    out, _ = _propose(
        space, configs, objectives, k, seed, mode, acquisition, num_candidates, fit_steps, restarts, None
    )
    return out


# ----------------------------------------------------------------------------- the sampler


def _gp_summary(cols: Mapping[str, slice], params: gp.GPParams) -> dict[str, Any]:
    ls = np.asarray(params.lengthscales, np.float64)
    return {
        "lengthscales": {n: [float(v) for v in ls[sl]] for n, sl in cols.items()},
        "signal_variance": float(params.signal_variance),
        "noise_variance": float(params.noise_variance),
    }


PAREGO_RHO = 0.05  # weight of the linear term of ParEGO's augmented Chebyshev scalarization


def minimization_targets(
    results: Sequence[Any], mode: str, directions: Sequence[str] | None, rng: np.random.Generator
) -> list[float]:
    r"""The values the GP models (smaller is better) for finished trials' results.

    One objective: ``objective`` oriented by ``mode``. Several (``directions``), ParEGO (Knowles,
    2006): each objective oriented and scaled to [0, 1] over the finite values, then
    :math:`\max_i \lambda_i f_i + \rho \sum_i \lambda_i f_i` with weights :math:`\lambda` drawn
    uniformly from the simplex once per proposal round (``rng``), so successive rounds aim at
    different parts of the Pareto front. Constraints: an infeasible trial's value is the worst
    feasible value plus 1 plus its violation (the GP learns to avoid the infeasible region).
    Non-finite values stay non-finite (diverged; see :func:`_targets`).

    Example:
      >>> from types import SimpleNamespace as R
      >>> rs = [R(objective=1.0, objectives=(1.0, 3.0), violation=0.0),
      ...       R(objective=2.0, objectives=(2.0, 1.0), violation=0.0),
      ...       R(objective=0.5, objectives=(0.5, 0.5), violation=2.0)]
      >>> minimization_targets(rs[:2], "max", None, np.random.default_rng(0))
      [-1.0, -2.0]
      >>> v = minimization_targets(rs, "min", ("min", "min"), np.random.default_rng(0))
      >>> v[2] > max(v[:2])
      True
    """
    if directions is None:
        values = np.asarray([signed(r.objective, mode) for r in results], np.float64)
    else:
        f = np.asarray([r.objectives for r in results], np.float64)
        f = f * np.asarray([1.0 if d == "min" else -1.0 for d in directions])
        ok = np.isfinite(f).all(axis=1)
        if ok.any():
            lo, hi = f[ok].min(axis=0), f[ok].max(axis=0)
            f = (f - lo) / np.where(hi > lo, hi - lo, 1.0)
        weights = rng.dirichlet(np.ones(f.shape[1]))
        values = np.max(weights * f, axis=1) + PAREGO_RHO * np.sum(weights * f, axis=1)
        values[~ok] = np.inf
    violation = np.asarray([r.violation for r in results], np.float64)
    feasible = (violation <= 0) & np.isfinite(values)
    if (violation > 0).any():
        worst = values[feasible].max() if feasible.any() else 0.0
        values = np.where((violation > 0) & np.isfinite(values), worst + 1.0 + violation, values)
    return values.tolist()


class BayesSampler(Sampler):
    """Bayesian optimization as a sampler: the Sobol initial design, then GP proposals.

    Round 0 is the ``initial`` Sobol points (proposed as slots free up); every later
    :meth:`propose` fits the GP to the finished trials (warm-started from the previous fit) and
    proposes up to ``batch`` minus the trials still training, none of them a configuration
    already evaluated or in training; at least two finished trials are needed (until then it
    proposes nothing: the engine waits). ``callback(round, result)`` runs when every trial of
    rounds ``0..round`` has finished (``result``: a :class:`SweepResult` so far, from
    ``result_of(history)``); returning ``True`` stops the proposals.
    """

    def __init__(self, space: Space, trials: int, *, batch: int, initial: int, seed: int, mode: str,
                 acquisition: str, num_candidates: int, fit_steps: int, restarts: int,
                 patience: int | None = None, callback: Callable | None = None,
                 result_of: Callable | None = None, directions: tuple[str, ...] | None = None):  # fmt: skip
        self.space, self.trials, self.batch, self.seed, self.mode = space, trials, batch, seed, mode
        self.directions = directions
        self.acquisition, self.num_candidates = acquisition, num_candidates
        self.fit_steps, self.restarts = fit_steps, restarts
        self.patience, self.callback, self.result_of = patience, callback, result_of
        self.design = sobol(space, initial, seed=seed)
        self.round_of: list[int] = []  # round of trial i (trial ids are 0, 1, ...)
        self.rounds, self.reported, self.stopped = 1, 0, False
        self.params: gp.GPParams | None = None
        self.gp: list[dict] = []
        self.propose_seconds = 0.0

    @property
    def total(self) -> int:
        return self.trials

    def propose(self, history, k: int) -> list[Proposal]:
        n = len(self.round_of)
        k = min(k, self.trials - n)
        if self.stopped or k <= 0:
            return []
        if n < len(self.design):
            configs, rnd = self.design[n : n + k], 0
        else:
            done = [history[t] for t in history.finished() if history[t].step]
            pending = [history[t].config for t in history if not history[t].finished]
            k = min(k, self.batch - len(pending))
            if k <= 0 or len(done) < 2:
                return []
            t0 = time.perf_counter()
            results = [history.result(r.trial, self.patience) for r in done]
            rng = np.random.default_rng((self.seed, self.rounds, 7))
            objectives = minimization_targets(results, self.mode, self.directions, rng)
            configs, self.params = _propose(
                self.space, [r.config for r in done], objectives, k,
                (self.seed, self.rounds), "min", self.acquisition, self.num_candidates, self.fit_steps,
                self.restarts, self.params, pending,
            )  # fmt: skip
            self.propose_seconds += time.perf_counter() - t0
            self.gp.append(_gp_summary(unit_columns(self.space), self.params))
            rnd, self.rounds = self.rounds, self.rounds + 1
        self.round_of += [rnd] * len(configs)
        return [Proposal(c, n + i) for i, c in enumerate(configs)]

    def tell(self, history, trial: int) -> None:
        while self.callback is not None and not self.stopped and self.reported < self.rounds:
            members = [t for t, r in enumerate(self.round_of) if r <= self.reported]
            incomplete = self.reported == 0 and len(self.round_of) < len(self.design)
            if incomplete or not members or not all(history[t].finished for t in members if t in history):
                return
            self.stopped = bool(self.callback(self.reported, self.result_of(history)))
            self.reported += 1

    def state_dict(self) -> dict[str, Any]:
        params = None if self.params is None else [np.asarray(a, np.float64).tolist() for a in self.params]
        return {"round_of": self.round_of, "rounds": self.rounds, "reported": self.reported,
                "stopped": self.stopped, "params": params, "gp": self.gp}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.round_of, self.rounds = list(state["round_of"]), int(state["rounds"])
        self.reported, self.stopped, self.gp = (
            int(state["reported"]),
            bool(state["stopped"]),
            list(state["gp"]),
        )
        p = state["params"]
        self.params = None if p is None else gp.GPParams(*(jnp.asarray(a, jnp.float32) for a in p))


def _check_loop_args(trials, batch, initial) -> int:
    """Validate the loop's arguments; returns ``initial`` (default ``min(trials, max(2 * batch, 4))``)."""
    batch = check_int("batch", batch)
    trials = check_int("trials", trials, 2)
    initial = min(trials, max(2 * batch, 4)) if initial is None else initial
    if isinstance(initial, bool) or not isinstance(initial, (int, np.integer)) or initial < 2:
        raise ValueError(f"initial must be an int >= 2 (the GP needs two points), got {initial!r}")
    if trials < initial:
        raise ValueError(f"trials must be an int >= initial={initial}, got {trials!r}")
    return initial


BAYESIAN_ARGS = tuple(
    "trials steps batch initial acquisition num_candidates fit_steps restarts callback scheduler".split()
)


def bayesian(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int,
    *,
    steps: int,
    batch: int = 8,
    initial: int | None = None,
    acquisition: str = "thompson",
    num_candidates: int = 2048,
    fit_steps: int = 300,
    restarts: int = 4,
    callback: Callable[[int, SweepResult], bool | None] | None = None,
    scheduler: TrialScheduler | None = None,
    **options: Any,
) -> SweepResult:
    """Bayesian optimization of ``task`` over ``space`` with ``trials`` evaluations in all.

    A :class:`BayesSampler` on the engine (:func:`jopt.sweep.search`): chunks are sized for
    ``batch`` trials; a slot that frees up (a trial finished, stopped early, diverged or was pruned
    by ``scheduler``) is refilled with a new proposal, so at most ``batch`` trials train at once.
    Trial ``i`` gets the keys it would get in ``run(..., seed=seed)``.

    Args:
      task, space, steps: as in :func:`jopt.sweep.run`.
      trials: total number of configurations evaluated, initial design included.
      batch: most trials training at once (and the size of a proposal round).
      initial: size of the Sobol initial design (>= 2; default ``min(trials, max(2 * batch, 4))``).
      acquisition: ``"thompson"`` (default) or ``"ei"`` (kriging believer); see the module docstring.
      num_candidates, fit_steps, restarts: see :func:`propose`.
      callback: ``callback(round, result_so_far)`` once the trials of rounds ``0..round`` have
        finished (round 0: the initial design); returning ``True`` stops the search.
      scheduler: an optional trial scheduler (e.g. :class:`~jopt.sweep.scheduler.MedianStopping`).
      **options: the shared options of :func:`jopt.sweep.options.make_options` (``eval_every``,
        ``seed``, ``mode``, ``folds``, ``patience``, ``memory_budget``, ``checkpoint_dir``, ...).

    Returns:
      A :class:`~jopt.sweep.results.SweepResult` (trial ids ``0..trials-1`` in proposal order).
      ``stats`` adds ``"trial_round"`` (round of each trial, 0 = initial design), ``"rounds"``,
      ``"propose_seconds"`` and ``"gp"`` (fitted hyperparameters per round, length scales by
      dimension).

    Raises:
      ValueError: bad ``batch``, ``initial``, ``trials``, ``acquisition``, ``num_candidates``,
        options or space (before any compile).

    Example (``task`` as in :mod:`jopt.sweep`)::

        result = sweep.bayesian(task, space, 48, batch=8, steps=300, eval_every=100)
        print(result.best_config, result.stats["trial_round"])
    """
    opts = validate_options(options, where="sweep.bayesian", own=BAYESIAN_ARGS, steps=steps)
    check_task_object(task)
    space = as_space(space)
    initial = _check_loop_args(trials, batch, initial)
    _check_propose_args(batch, num_candidates, acquisition, opts.mode, 2, fit_steps, restarts)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be None or a function (round, result) -> bool, got {callback!r}")
    if scheduler is not None:
        check_protocol("scheduler", scheduler, TrialScheduler, SCHEDULER_METHODS)
    unit_columns(space)
    logs = tuple(n for n in space if isinstance(space[n], LogUniform))

    def result_of(history) -> SweepResult:
        return SweepResult(history.results(opts.patience), opts.mode, {}, logs)

    sampler = BayesSampler(space, trials, batch=batch, initial=initial, seed=opts.seed, mode=opts.mode,
                           acquisition=acquisition, num_candidates=num_candidates, fit_steps=fit_steps,
                           restarts=restarts, patience=opts.patience, callback=callback,
                           result_of=result_of, directions=opts.directions)  # fmt: skip
    method = {"name": "bayesian", "trials": trials, "batch": batch, "initial": initial,
              "acquisition": acquisition, "num_candidates": num_candidates, "fit_steps": fit_steps,
              "restarts": restarts}  # fmt: skip
    check_task(task, space, sampler.design[:1] + branch_examples(space), num_folds=opts.folds)
    result = search(task, space, sampler, scheduler, parallel=batch, method=method, steps=steps, **options)
    result.stats.update(
        trial_round=sampler.round_of[: len(result.trials)], rounds=sampler.rounds, gp=sampler.gp,
        propose_seconds=sampler.propose_seconds,
    )  # fmt: skip
    return result
