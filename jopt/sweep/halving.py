"""Successive halving and Hyperband inside the vectorized engine.

Successive halving (Jamieson & Talwalkar, 2016) trains many trials for a small step budget, keeps
the best ``1/eta`` of them, trains those for ``eta`` times longer, and so on; Hyperband (Li et al.,
2017) runs several such *brackets* trading the number of trials against the first budget. This is
the synchronous form of ASHA (Li et al., 2020): every rung is one vectorized batch, and the next rung
starts when the whole batch reached its budget. (Asynchronous ASHA promotes a trial as soon as it is
in the top ``1/eta`` of the trials seen so far at its rung -- useful when workers finish at different
times; here a rung is a single program, so the synchronous decision is exact and deterministic.)

Algorithm, for ``n`` trials, reduction factor ``eta > 1`` and budgets ``r_0 < ... < r_K = max_steps``::

    K   = floor(log_eta(max_steps / min_steps))
    r_k = eval_every * round(max_steps * eta^(k - K) / eval_every)        (or explicit budgets=)
    n_0 = n,   n_{k+1} = max(1, floor(n_k / eta))
    S_0 = all trials, one batch per static group padded to a multiple of the device count
    for k = 0, ..., K:
        train every trial of S_k from r_{k-1} to r_k steps (r_{-1} = 0), continuing its carry
        if k < K:
            rank S_k by the objective at r_k  (diverged: worst; ties: lower trial id first)
            S_{k+1} = the n_{k+1} best non-diverged trials of S_k
            gather the carries of S_{k+1} into a batch of size pad(n_{k+1})   (exact copies)

The survivors' states are *gathered* (``x_new = x_old[idx]`` on every leaf of the training state,
optimizer state, step count and key stream), so the batch really shrinks and a survivor continues
exactly as if it had been trained straight to ``r_k`` alone (up to float32 rounding of batched
matmuls). Trial-steps spent: ``sum_k |S_k| (r_k - r_{k-1})`` against ``n * r_K`` for random search
with the same trials (``stats["trial_steps"]``, ``stats["random_search_trial_steps"]``,
``stats["compute_fraction"]``). Compiles: one ``segment`` program per distinct padded batch size of a
static group, one ``init`` program for the first rung, and one small gather program per
(size, next size) pair (``stats["compiles"]``, ``stats["gather_compiles"]``). With one static group
the batch of rung ``k`` has the planned size ``pad(n_k)`` even if diverged trials left fewer
survivors, so the number of compiles depends only on ``n``, ``eta``, the budgets and the devices.
When a rung needs several batches (``max_parallel``), finished batches wait in host memory.
Compiling dominates on small tasks: ``min_batch=m`` pads every rung to at least ``m`` trials, so the
rungs smaller than ``m`` share one program (fewer compiles, more padded compute -- free on an
accelerator that is not saturated, not on a CPU).

Hyperband, with ``s_max = K``: for ``s = s_max, ..., 0`` run successive halving on
``n_s = ceil((s_max + 1) / (s + 1) * eta^s)`` fresh trials over the budgets ``r_{K-s}, ..., r_K``.
Every bracket uses the same budget ladder, so a trial's ``rung`` (the index of the highest budget it
reached) is comparable across brackets; programs of equal batch size are shared.

Results rank trials that reached a higher rung first (objectives at different budgets are not
comparable), then by objective. Pruned trials have ``status="pruned"``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt import sweep
  >>> from jopt.sweep.halving import rung_budgets, rung_sizes, successive_halving
  >>> rung_budgets(27, min_steps=1, eta=3), rung_sizes(27, 3, 4)
  (([1, 3, 9, 27], 1), [27, 9, 3, 1])
  >>> task = sweep.Task(lambda hp, k: jnp.float32(0.0),
  ...                   lambda hp, w, k: (w + 0.5 * (hp["x"] - w), {"loss": w}),
  ...                   lambda hp, w: (w - 0.3) ** 2)
  >>> space = sweep.Space(x=sweep.uniform(0.0, 1.0))
  >>> r = successive_halving(task, space, 9, max_steps=9, min_steps=1, eta=3, progress=False, devices=1)
  >>> [len([t for t in r.trials if (t.rung or 0) >= k]) for k in range(3)]
  [9, 3, 1]
  >>> r.stats["trial_steps"], r.stats["random_search_trial_steps"], r.stats["compiles"]
  (21, 81, 4)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jopt.sweep import runner as R
from jopt.sweep.population import Cohort, Population, Recorder, group_by_statics, progress_bar, rank_keys
from jopt.sweep.results import SweepResult
from jopt.sweep.samplers import sample
from jopt.sweep.space import LogUniform, SearchSpaceError, Space
from jopt.sweep.task import Task, check_task

__all__ = ["hyperband", "hyperband_brackets", "rung_budgets", "rung_sizes", "successive_halving"]


# ----------------------------------------------------------------------------- planning


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_eta(eta: Any) -> float:
    ok = isinstance(eta, (int, float, np.integer, np.floating)) and not isinstance(eta, bool)
    if not ok or not math.isfinite(eta) or eta <= 1:
        raise ValueError(f"eta must be a finite number > 1 (the reduction factor), got {eta!r}")
    return float(eta)


def rung_budgets(
    max_steps: int | None,
    *,
    min_steps: int | None = None,
    eta: float = 3,
    eval_every: int | None = None,
    budgets: Sequence[int] | None = None,
) -> tuple[list[int], int]:
    """Step budgets of the rungs and the segment length ``eval_every``.

    Geometric budgets ``max_steps * eta^(k - K)`` rounded to multiples of ``eval_every`` (default
    ``gcd(min_steps, max_steps)``), ``K = floor(log_eta(max_steps / min_steps))``; or explicit,
    strictly increasing ``budgets`` (``eval_every`` default: their gcd).

    Example:
      >>> rung_budgets(100, min_steps=10, eta=3), rung_budgets(None, budgets=[4, 12, 40])
      (([10, 30, 100], 10), ([4, 12, 40], 4))
    """
    eta = _check_eta(eta)
    if budgets is not None:
        out = [_check_int("budgets[i]", b) for b in budgets]
        if not out or any(b <= a for a, b in zip(out, out[1:], strict=False)):
            raise ValueError(
                f"budgets must be a non-empty, strictly increasing list of ints, got {budgets!r}"
            )
        if max_steps is not None and out[-1] != max_steps:
            raise ValueError(f"the last budget must equal max_steps={max_steps}, got {out[-1]}")
        e = math.gcd(*out) if eval_every is None else _check_int("eval_every", eval_every)
        if any(b % e for b in out):
            raise ValueError(f"eval_every={e} must divide every budget {out}")
        return out, e
    max_steps = _check_int("max_steps", max_steps)
    if min_steps is None:
        raise ValueError("give min_steps (the first rung's budget) or explicit budgets=[...]")
    min_steps = _check_int("min_steps", min_steps)
    if min_steps > max_steps:
        raise ValueError(f"min_steps must be in [1, max_steps={max_steps}], got {min_steps}")
    e = math.gcd(min_steps, max_steps) if eval_every is None else _check_int("eval_every", eval_every)
    if max_steps % e:
        raise ValueError(f"eval_every={e} must divide max_steps={max_steps}")
    top = int(math.floor(math.log(max_steps / min_steps) / math.log(eta) + 1e-9))
    out: list[int] = []
    for k in range(top + 1):
        b = max_steps if k == top else e * max(1, math.floor(max_steps / eta ** (top - k) / e + 0.5))
        if not out or b > out[-1]:
            out.append(b)
    return out, e


def rung_sizes(n: int, eta: float, rungs: int) -> list[int]:
    """Trials per rung: ``n_0 = n``, ``n_{k+1} = max(1, floor(n_k / eta))``.

    Example:
      >>> rung_sizes(10, 3, 4), rung_sizes(30, 2.5, 3)
      ([10, 3, 1, 1], [30, 12, 4])
    """
    out = [int(n)]
    for _ in range(rungs - 1):
        out.append(max(1, math.floor(out[-1] / eta + 1e-9)))
    return out


def hyperband_brackets(rungs: int, eta: float, brackets: int | None = None) -> list[tuple[int, int]]:
    """``(s, n_s)`` per bracket, most exploratory first: ``n_s = ceil((s_max+1)/(s+1) * eta^s)``.

    Example:
      >>> hyperband_brackets(3, 3)
      [(2, 9), (1, 5), (0, 3)]
    """
    s_max = rungs - 1
    count = s_max + 1 if brackets is None else _check_int("brackets", brackets)
    if count > s_max + 1:
        raise ValueError(f"brackets must be in [1, {s_max + 1}] (the number of rungs), got {brackets!r}")
    return [(s, math.ceil((s_max + 1) / (s + 1) * eta**s - 1e-9)) for s in range(s_max, s_max - count, -1)]


# ----------------------------------------------------------------------------- execution


@dataclass
class _Search:
    """Shared state of one halving / Hyperband run."""

    pops: dict[tuple, Population]
    group_of: list[tuple]
    local: list[int]
    sign: float
    eta: float
    eval_every: int
    max_parallel: int | None
    keep_states: str
    min_batch: int = 1
    recorder: Recorder = field(default_factory=Recorder)
    rung: dict[int, int] = field(default_factory=dict)
    kept: dict[int, Any] = field(default_factory=dict)
    trial_steps: int = 0
    rungs: list[dict] = field(default_factory=list)
    bar: Any = None

    def key(self, t: int) -> float:
        rec = self.recorder
        return float(rank_keys(np.array([rec.last(t)]), np.array([rec.status[t]]), self.sign)[0])

    def keep(self, cohorts: list[tuple[tuple, Cohort]], trials: set[int]) -> None:
        for g, c in cohorts:
            pop = self.pops[g]
            pos = [p for p, m in enumerate(c.members) if m >= 0 and int(pop.ids[m]) in trials]
            if pos:
                for p, s in zip(pos, pop.states(c, pos), strict=True):
                    self.kept[int(pop.ids[c.members[p]])] = s


def _continue(pop: Population, sources: list[Cohort], picks: list[tuple[int, int]], size: int) -> Cohort:
    src = sources[0]
    if len(sources) == 1 and src.size == size and not src.on_host:
        if picks == [(0, int(p)) for p in np.flatnonzero(src.active)]:
            return src  # nobody was dropped: keep the batch as it is
    return pop.gather(sources, picks, size)


def _rung_cohorts(
    S: _Search, alive: list[int], k: int, planned: int, first: int, prev, slot
) -> list[tuple[tuple, Cohort]]:
    """The batches of rung ``k``: new (``k == 0``) or gathered from the previous rung's batches."""
    by_group: dict[tuple, list[int]] = {}
    for t in alive:
        by_group.setdefault(S.group_of[t], []).append(t)
    cohorts = []
    for g, ts in by_group.items():
        pop = S.pops[g]
        # one static group: the planned size, so compiles do not depend on divergence
        n = max(planned if len(S.pops) == 1 else len(ts), min(S.min_batch, first))
        size = pop.padded_size(n, S.max_parallel)
        for start in range(0, len(ts), size):
            part = ts[start : start + size]
            if k == 0:
                cohorts.append((g, pop.init([S.local[t] for t in part], size)))
            else:
                cohorts.append((g, _continue(pop, prev[g], [slot[t] for t in part], size)))
    return cohorts


def _where(S: _Search, cohorts: list[tuple[tuple, Cohort]]) -> tuple[dict, dict]:
    """Batches per group and ``trial -> (batch index in its group, slot)``."""
    prev: dict[tuple, list[Cohort]] = {}
    slot: dict[int, tuple[int, int]] = {}
    for g, c in cohorts:
        prev.setdefault(g, []).append(c)
        for p, m in enumerate(c.members):
            if m >= 0:
                slot[int(S.pops[g].ids[m])] = (len(prev[g]) - 1, p)
    return prev, slot


def _run_bracket(S: _Search, trials: list[int], budgets: list[int], rung0: int) -> None:
    """Successive halving of ``trials`` over ``budgets``; rung ``k`` is ``rung0 + k`` on the ladder."""
    plan = rung_sizes(len(trials), S.eta, len(budgets))
    alive, done, prev, slot = sorted(trials), 0, {}, {}
    for k, budget in enumerate(budgets):
        cohorts = _rung_cohorts(S, alive, k, plan[k], plan[0], prev, slot)
        offload = len(cohorts) > 1  # several batches: finished ones wait in host memory
        for i, (g, c) in enumerate(cohorts):
            c = S.pops[g].advance(c, (budget - done) // S.eval_every, S.recorder, lambda _: S.bar.update(1))
            cohorts[i] = (g, S.pops[g].to_host(c) if offload else c)
            S.trial_steps += int(c.active.sum()) * (budget - done)
        sizes = [c.size for _, c in cohorts]
        S.rungs.append({"rung": rung0 + k, "budget": budget, "trials": len(alive), "batch_sizes": sizes})
        for t in alive:
            S.rung[t] = rung0 + k
        done = budget
        ranked = sorted((S.key(t), t) for t in alive)
        if k + 1 == len(budgets):
            keep = {t for _, t in ranked} if S.keep_states == "all" else set()
            if S.keep_states == "best" and ranked[0][0] < math.inf:
                keep = {ranked[0][1]}
            S.keep(cohorts, keep)
            return
        survivors = [t for key, t in ranked if key < math.inf][: plan[k + 1]]
        if S.keep_states == "all":
            S.keep(cohorts, set(alive) - set(survivors))
        prev, slot = _where(S, cohorts)
        alive = sorted(survivors)
        if not alive:
            return


def _check_common(mode: str, max_parallel, keep_states: str, min_batch) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if max_parallel is not None:
        _check_int("max_parallel", max_parallel)
    _check_int("min_batch", min_batch)
    if keep_states not in ("best", "all", "none"):
        raise ValueError(f"keep_states must be 'best', 'all' or 'none', got {keep_states!r}")


def _setup(task, space: Space, configs, *, eta, e, seed, mode, devices, max_parallel, check_params,
           keep_states, min_batch) -> _Search:  # fmt: skip
    check_task(task, space, configs)
    groups = group_by_statics(space, configs)
    mesh = R.make_mesh(devices)
    pops, group_of, local = {}, [None] * len(configs), [0] * len(configs)
    for g, idx in groups.items():
        pops[g] = Population(task, space, [configs[i] for i in idx], eval_every=e, seed=seed, ids=idx,
                             mode=mode, mesh=mesh, check_params=check_params)  # fmt: skip
        for j, i in enumerate(idx):
            group_of[i], local[i] = g, j
    sign = 1.0 if mode == "min" else -1.0
    return _Search(pops, group_of, local, sign, eta, e, max_parallel, keep_states, min_batch)


def _planned_segments(n: int, budgets: list[int], eta: float, e: int, devices: int, cap) -> int:
    total, done = 0, 0
    for n_k, b in zip(rung_sizes(n, eta, len(budgets)), budgets, strict=True):
        total += -(-n_k // R.chunk_size(n_k, devices, cap)) * ((b - done) // e)
        done = b
    return total


def _finish(S: _Search, task: Task, space: Space, configs, mode: str, top: int, max_steps: int,
            t_start: float, extra: Mapping[str, Any]) -> SweepResult:  # fmt: skip
    S.bar.close()
    trials = []
    for t, cfg in enumerate(configs):
        status = "completed" if S.rung[t] == top else "pruned"
        trials.append(S.recorder.trial_result(t, cfg, S.sign, status=status, rung=S.rung[t]))
    pops = list(S.pops.values())
    random_steps = len(configs) * max_steps
    stats = {
        "wall_seconds": time.perf_counter() - t_start,
        "compile_seconds": sum(p.stats["compile_seconds"] for p in pops),
        "compiles": sum(p.stats["compiles"] for p in pops),
        "gather_compiles": sum(p.stats["gather_compiles"] for p in pops),
        "groups": len(pops),
        "devices": pops[0].num_devices,
        "members": len(configs),
        "eta": S.eta,
        "eval_every": S.eval_every,
        "rungs": S.rungs,
        "batch_sizes": sorted({s for r in S.rungs for s in r["batch_sizes"]}),
        "trial_steps": S.trial_steps,
        "member_steps": sum(p.stats["member_steps"] for p in pops),
        "random_search_trial_steps": random_steps,
        "compute_fraction": S.trial_steps / random_steps,
        **extra,
    }
    logs = tuple(n for n in space if isinstance(space[n], LogUniform))
    result = SweepResult(trials, mode, stats, logs, {}, task.params)
    if S.keep_states == "best" and S.kept:
        best = next((t.trial for t in result.ranked() if t.trial in S.kept), None)
        S.kept = {best: S.kept[best]} if best is not None else {}
    result.states = S.kept
    return result


def successive_halving(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int | Sequence[Mapping[str, Any]] | None = None,
    *,
    max_steps: int | None = None,
    min_steps: int | None = None,
    budgets: Sequence[int] | None = None,
    eta: float = 3,
    eval_every: int | None = None,
    method: str = "random",
    seed: int = 0,
    grid_points: int = 5,
    mode: str = "min",
    max_parallel: int | None = None,
    min_batch: int = 1,
    devices: int | Sequence[Any] | None = None,
    progress: bool = True,
    check_params: bool = True,
    keep_states: str = "best",
) -> SweepResult:
    """Synchronous successive halving (see the module docstring for the algorithm).

    Args:
      task, space, trials, method, seed, grid_points, mode, devices, progress, check_params:
        as for :func:`jopt.sweep.run`; trial ``i`` gets the keys ``run`` would give it.
      max_steps, min_steps: last and (about) first rung budget: ``K + 1`` geometric rungs,
        ``K = floor(log_eta(max_steps / min_steps))``.
      budgets: explicit, strictly increasing rung budgets instead (the last one is ``max_steps``).
      eta: reduction factor > 1: each rung keeps the best ``floor(n_k / eta)`` trials (at least one).
      eval_every: steps per segment; must divide every budget (default: their gcd).
      max_parallel: most trials per batch (a rung with more runs in several batches).
      min_batch: pad every batch to at least this many trials (up to the first rung's count), so
        that the small late rungs share one compiled program; default 1 (exact sizes).
      keep_states: keep the final state of the ``"best"`` trial, of ``"all"`` trials (pruned ones at
        their last rung), or ``"none"``.

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`; ``TrialResult.rung`` is the highest rung reached
      and ``stats`` holds ``rungs``, ``trial_steps``, ``random_search_trial_steps``,
      ``compute_fraction``, ``compiles`` and ``gather_compiles``.

    Raises:
      ValueError: ``eta <= 1``, bad budgets, fewer trials than ``eta``, ... (before any compile).
    """
    t_start = time.perf_counter()
    eta = _check_eta(eta)
    ladder, e = rung_budgets(max_steps, min_steps=min_steps, eta=eta, eval_every=eval_every, budgets=budgets)
    _check_common(mode, max_parallel, keep_states, min_batch)
    space = space if isinstance(space, Space) else Space(space)
    if isinstance(trials, Sequence) and not isinstance(trials, str):
        if not trials:
            raise SearchSpaceError("trials is an empty list of configurations")
        configs = [space.validate_config(c) for c in trials]
    else:
        configs = sample(space, method, trials, seed=seed, grid_points=grid_points)
    if len(ladder) > 1 and len(configs) < eta:
        raise ValueError(f"successive halving needs at least eta={eta:g} trials, got {len(configs)}")
    S = _setup(task, space, configs, eta=eta, e=e, seed=seed, mode=mode, devices=devices,
               max_parallel=max_parallel, check_params=check_params, keep_states=keep_states,
               min_batch=min_batch)  # fmt: skip
    n_dev = next(iter(S.pops.values())).num_devices
    total = _planned_segments(len(configs), ladder, eta, e, n_dev, max_parallel)
    S.bar = progress_bar(total, progress, "halving")
    _run_bracket(S, list(range(len(configs))), ladder, 0)
    return _finish(S, task, space, configs, mode, len(ladder) - 1, ladder[-1], t_start, {"budgets": ladder})


def hyperband(
    task: Task,
    space: Space | Mapping[str, Any],
    *,
    max_steps: int,
    min_steps: int,
    eta: float = 3,
    brackets: int | None = None,
    eval_every: int | None = None,
    method: str = "random",
    seed: int = 0,
    mode: str = "min",
    max_parallel: int | None = None,
    min_batch: int = 1,
    devices: int | Sequence[Any] | None = None,
    progress: bool = True,
    check_params: bool = True,
    keep_states: str = "best",
) -> SweepResult:
    """Hyperband: successive-halving brackets ``s = s_max, ..., 0`` (see the module docstring).

    Args:
      max_steps, min_steps, eta, eval_every: the budget ladder, as for :func:`successive_halving`.
      brackets: run only the first (most exploratory) ``brackets`` brackets (default: all).
      method: ``"random"``, ``"sobol"`` or ``"halton"``: draws ``sum_s n_s`` configurations at once;
        bracket ``s`` gets the next ``n_s`` of them (trial ids are consecutive across brackets).
      Others as for :func:`successive_halving`.

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`; ``TrialResult.rung`` indexes the common budget
      ladder ``stats["budgets"]``; ``stats["brackets"]`` lists ``(s, n_s, first trial id)``.
    """
    t_start = time.perf_counter()
    eta = _check_eta(eta)
    ladder, e = rung_budgets(max_steps, min_steps=min_steps, eta=eta, eval_every=eval_every)
    _check_common(mode, max_parallel, keep_states, min_batch)
    if method not in ("random", "sobol", "halton"):
        raise ValueError(f"method must be 'random', 'sobol' or 'halton' for hyperband, got {method!r}")
    plan = hyperband_brackets(len(ladder), eta, brackets)
    space = space if isinstance(space, Space) else Space(space)
    configs = sample(space, method, sum(n for _, n in plan), seed=seed)
    S = _setup(task, space, configs, eta=eta, e=e, seed=seed, mode=mode, devices=devices,
               max_parallel=max_parallel, check_params=check_params, keep_states=keep_states,
               min_batch=min_batch)  # fmt: skip
    s_max, first, info = len(ladder) - 1, 0, []
    n_dev = next(iter(S.pops.values())).num_devices
    total = sum(_planned_segments(n, ladder[s_max - s :], eta, e, n_dev, max_parallel) for s, n in plan)
    S.bar = progress_bar(total, progress, "hyperband")
    for s, n in plan:
        budgets = ladder[s_max - s :]
        # a bracket starts at ladder[s_max - s]: its first segments cover [0, budgets[0]]
        _run_bracket(S, list(range(first, first + n)), budgets, s_max - s)
        info.append((s, n, first))
        first += n
    extra = {"budgets": ladder, "brackets": info}
    return _finish(S, task, space, configs, mode, s_max, ladder[-1], t_start, extra)
