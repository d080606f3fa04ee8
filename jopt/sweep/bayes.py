r"""Bayesian optimization: a GP surrogate proposes K configurations per round, trained as one chunk.

:func:`bayesian` runs

1. an initial quasi-random design of ``initial`` configurations (scrambled Sobol, as
   ``sweep.run(..., method="sobol")``), evaluated by :func:`jopt.sweep.run`;
2. rounds: fit the GP of :mod:`jopt.sweep.gp` to every finished trial (hyperparameters
   warm-started from the previous round's fit), :func:`propose` ``batch``
   new configurations, evaluate them together with one :func:`jopt.sweep.run` call (one
   vectorized chunk per static group), repeat until ``trials`` configurations were evaluated.

Every round's chunk has the same size, so the engine's program cache serves all rounds after
the first: the number of compiles is bounded by the number of distinct chunk sizes (initial
design, full round, a final partial round) per static group, not by the number of rounds.

Encoding (:func:`to_unit` / :func:`from_unit`). Each non-fixed dimension becomes unit-cube
columns: ``uniform`` linearly, ``loguniform`` (and ``integer(log=True)``) in log space,
``integer`` at the centre of its value's bin of :meth:`Integer.from_unit` (so proposals are
rounded to integers and the GP sees the rounded point), ``choice`` as one-hot columns (the
categories are unordered; each gets its own ARD length scale; decoding takes the largest
column). Static dimensions are encoded the same way; their values only split a round into
engine groups (one program per distinct static value set -- prefer static choices with few values).

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
from jopt.sweep.engine import run
from jopt.sweep.results import SweepResult, TrialResult
from jopt.sweep.samplers import sobol
from jopt.sweep.space import Choice, Fixed, Integer, LogUniform, Space, Uniform
from jopt.sweep.task import Task

__all__ = ["ACQUISITIONS", "bayesian", "from_unit", "propose", "to_unit", "unit_columns", "warp"]

ACQUISITIONS = ("thompson", "ei")
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
        for name, sl in cols.items():
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


def _check_propose_args(k: int, num_candidates: int, acquisition: str, mode: str, n_obs: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (batch) must be an int >= 1, got {k!r}")
    if not isinstance(num_candidates, int) or num_candidates < max(16, 2 * k):
        raise ValueError(
            f"num_candidates must be an int >= max(16, 2 * k) = {max(16, 2 * k)}, got {num_candidates!r}"
        )
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
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
) -> tuple[list[dict], gp.GPParams]:
    if len(configs) != len(objectives):
        raise ValueError(f"got {len(configs)} configurations but {len(objectives)} objectives")
    _check_propose_args(k, num_candidates, acquisition, mode, len(configs))
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
    space = space if isinstance(space, Space) else Space(space)
    out, _ = _propose(
        space, configs, objectives, k, seed, mode, acquisition, num_candidates, fit_steps, restarts, None
    )
    return out


# ----------------------------------------------------------------------------- the loop


def _check_loop_args(trials, batch, initial, max_parallel, folds, mode) -> int:
    """Validate the loop's arguments; returns ``initial`` (default ``min(trials, max(2 * batch, 4))``)."""

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(batch) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if not is_int(trials) or trials < 2:
        raise ValueError(f"trials must be an int >= 2, got {trials!r}")
    initial = min(trials, max(2 * batch, 4)) if initial is None else initial
    if not is_int(initial) or initial < 2:
        raise ValueError(f"initial must be an int >= 2 (the GP needs two points), got {initial!r}")
    if not is_int(trials) or trials < initial:
        raise ValueError(f"trials must be an int >= initial={initial}, got {trials!r}")
    if max_parallel is not None:
        members = batch * (folds or 1)
        if not is_int(max_parallel) or max_parallel < members:
            raise ValueError(
                f"batch={batch} trials (x {folds or 1} folds) must run as one chunk: max_parallel "
                f"must be None or an int >= {members}, got {max_parallel!r}"
            )
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return initial


def _gp_summary(cols: Mapping[str, slice], params: gp.GPParams) -> dict[str, Any]:
    ls = np.asarray(params.lengthscales, np.float64)
    return {
        "lengthscales": {n: [float(v) for v in ls[sl]] for n, sl in cols.items()},
        "signal_variance": float(params.signal_variance),
        "noise_variance": float(params.noise_variance),
    }


def bayesian(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int,
    *,
    steps: int,
    batch: int = 8,
    initial: int | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    mode: str = "min",
    acquisition: str = "thompson",
    num_candidates: int = 2048,
    fit_steps: int = 300,
    restarts: int = 4,
    max_parallel: int | None = None,
    memory_budget: int | str | None = None,
    devices: int | Sequence[Any] | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    folds: int | None = None,
    keep_states: str = "best",
    check_params: bool = True,
    progress: bool = True,
    callback: Callable[[int, SweepResult], bool | None] | None = None,
) -> SweepResult:
    """Bayesian optimization of ``task`` over ``space`` with ``trials`` evaluations in all.

    Args:
      task, space, steps, eval_every, seed, mode, max_parallel, memory_budget, devices, patience,
        min_delta, folds, keep_states, check_params: as in :func:`jopt.sweep.run` (every round is one
        ``run`` call with continuing ``trial_ids``; trial ``i`` gets the keys it would get in
        ``run(..., seed=seed)``).
      trials: total number of configurations evaluated, initial design included.
      batch: configurations proposed per round and trained together (one chunk; with
        ``max_parallel`` set, ``batch * folds`` must fit in it; a ``memory_budget`` too small
        for the whole batch splits it into several chunks).
      initial: size of the Sobol initial design (>= 2; default ``min(trials, max(2 * batch, 4))``).
      acquisition: ``"thompson"`` (default) or ``"ei"`` (kriging believer); see the module docstring.
      num_candidates, fit_steps, restarts: see :func:`propose`.
      progress: a progress bar over trials with the best objective so far.
      callback: called as ``callback(round, result_so_far)`` after each round; returning
        ``True`` stops the search (e.g. on a wall-clock budget).

    Returns:
      A :class:`~jopt.sweep.results.SweepResult` over all rounds (trial ids ``0..trials-1`` in
      evaluation order). ``stats`` adds ``"trial_round"`` (round of each trial, 0 = initial
      design), ``"rounds"``, ``"round_compiles"`` (engine compiles per round),
      ``"propose_seconds"`` and ``"gp"`` (fitted hyperparameters per round, length scales by
      dimension).

    Raises:
      ValueError: bad ``batch``, ``initial``, ``trials``, ``max_parallel``, ``acquisition``,
        ``num_candidates``, ``mode`` or space (before any compile); the errors of
        :func:`jopt.sweep.run` for the rest.

    Example (``task`` as in :mod:`jopt.sweep`)::

        result = sweep.bayesian(task, space, 48, batch=8, steps=300, eval_every=100)
        print(result.best_config, result.stats["trial_round"])
    """
    t_start = time.perf_counter()
    space = space if isinstance(space, Space) else Space(space)
    initial = _check_loop_args(trials, batch, initial, max_parallel, folds, mode)
    _check_propose_args(batch, num_candidates, acquisition, mode, 2)
    cols = unit_columns(space)
    run_kwargs = dict(
        steps=steps, eval_every=eval_every, seed=seed, mode=mode, max_parallel=max_parallel, devices=devices,
        memory_budget=memory_budget, patience=patience, min_delta=min_delta, folds=folds,
        keep_states=keep_states, progress=False, check_params=check_params,
    )  # fmt: skip
    done: list[TrialResult] = []
    states: dict[int, Any] = {}
    stats: dict[str, Any] = {"trial_round": [], "round_compiles": [], "gp": [], "propose_seconds": 0.0}
    engine_stats: dict[str, Any] = {"compile_seconds": 0.0, "compiles": 0, "chunk_sizes": {}}
    bar = _progress_bar(trials, progress)

    def evaluate(configs: list[dict], rnd: int) -> SweepResult:
        ids = list(range(len(done), len(done) + len(configs)))
        res = run(task, space, configs, trial_ids=ids, **run_kwargs)
        done.extend(res.trials)
        states.update(res.states)
        stats["trial_round"].extend([rnd] * len(configs))
        stats["round_compiles"].append(res.stats["compiles"])
        engine_stats["compile_seconds"] += res.stats["compile_seconds"]
        engine_stats["compiles"] += res.stats["compiles"]
        for g, s in res.stats["chunk_sizes"].items():
            engine_stats["chunk_sizes"].setdefault(g, set()).add(s)
        for k in ("devices", "bytes_per_member"):
            engine_stats[k] = res.stats[k]
        current = _combine(done, states, space, task, mode, keep_states, {})
        bar.set_postfix(best=f"{current.best.objective:.4g}", refresh=False)
        bar.update(len(configs))
        return current

    current = evaluate(sobol(space, initial, seed=seed), 0)
    stop = callback is not None and bool(callback(0, current))
    params, rnd = None, 1
    while len(done) < trials and not stop:
        k = min(batch, trials - len(done))
        t0 = time.perf_counter()
        configs, params = _propose(
            space, [t.hyperparams for t in done], [t.objective for t in done], k, (seed, rnd), mode,
            acquisition, num_candidates, fit_steps, restarts, params,
        )  # fmt: skip
        stats["propose_seconds"] += time.perf_counter() - t0
        stats["gp"].append(_gp_summary(cols, params))
        current = evaluate(configs, rnd)
        stop = callback is not None and bool(callback(rnd, current))
        rnd += 1
    bar.close()
    stats["rounds"] = rnd
    engine_stats["chunk_sizes"] = {g: sorted(s) for g, s in engine_stats["chunk_sizes"].items()}
    stats.update(engine_stats)
    stats["wall_seconds"] = time.perf_counter() - t_start
    return _combine(done, states, space, task, mode, keep_states, stats)


def _combine(done, states, space, task, mode, keep_states, stats) -> SweepResult:
    logs = tuple(n for n in space if isinstance(space[n], LogUniform))
    result = SweepResult(list(done), mode, stats, logs, dict(states), task.params)
    if keep_states == "best":
        best = result.best.trial
        result.states = {best: states[best]} if best in states else {}
    return result


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="bayesian", unit="trial", leave=True)
