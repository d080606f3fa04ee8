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
from typing import Any

import numpy as np

from jopt.sweep.engine import as_space, configs_of, search
from jopt.sweep.history import FINAL, encode_config
from jopt.sweep.options import check_int, check_option_names, validate_options
from jopt.sweep.results import SweepResult
from jopt.sweep.samplers import Proposal, Sampler, sample
from jopt.sweep.scheduler import PAUSE, TrialScheduler
from jopt.sweep.space import Space
from jopt.sweep.task import Task, check_task_object

__all__ = [
    "SuccessiveHalving",
    "hyperband",
    "hyperband_brackets",
    "rung_budgets",
    "rung_sizes",
    "successive_halving",
]


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
        if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence):
            raise ValueError(
                f"budgets must be a non-empty, strictly increasing list of ints, got {budgets!r}"
            )
        if min_steps is not None:
            raise ValueError(f"give min_steps or budgets, not both (got min_steps={min_steps!r})")
        out = [_check_int(f"budgets[{i}]", b) for i, b in enumerate(budgets)]
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
        raise ValueError("min_steps (the first rung's budget) is missing: give min_steps or budgets=[...]")
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


# ----------------------------------------------------------------------------- the scheduler


class SuccessiveHalving(Sampler, TrialScheduler):
    """Synchronous successive halving over brackets, as a sampler and a trial scheduler.

    ``brackets``: per bracket ``(trial ids, budgets, first rung index)``; bracket ``b + 1``
    starts when bracket ``b`` has ended. Within a bracket every trial trains to the rung's budget
    and pauses; when the whole rung has paused, the best ``n_{k+1}`` resume (the others are
    pruned) in a chunk sized for ``n_{k+1}`` (at least ``min_batch``) -- moved on the devices
    when they all come from one chunk. ``configs``: the configuration of trial ``i`` at ``i``.
    """

    def __init__(self, configs: Sequence[Mapping[str, Any]], brackets, eta: float, *,
                 min_batch: int = 1, single_group: bool = True):  # fmt: skip
        self.configs, self.brackets, self.eta = (
            [dict(c) for c in configs],
            [list(b) for b in brackets],
            float(eta),
        )
        self.min_batch, self.single_group = int(min_batch), single_group
        self.bracket, self.rung, self.admitted = 0, 0, 0
        self.alive: list[int] = sorted(self.brackets[0][0]) if self.brackets else []
        self.rungs: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ plan
    def _plan(self) -> list[int]:
        ids, budgets, _ = self.brackets[self.bracket]
        return rung_sizes(len(ids), self.eta, len(budgets))

    @property
    def total(self) -> int:
        return len(self.configs)

    def _note_rung(self) -> None:
        ids, budgets, rung0 = self.brackets[self.bracket]
        self.rungs.append(
            {"rung": rung0 + self.rung, "budget": budgets[self.rung], "trials": len(self.alive)}
        )

    # ------------------------------------------------------------------ sampler
    def propose(self, history, k: int) -> list[Proposal]:
        if self.bracket >= len(self.brackets):
            return []
        ids = self.brackets[self.bracket][0]
        if self.admitted == 0:
            self._note_rung()
        out = [Proposal(self.configs[t], t) for t in ids[self.admitted : self.admitted + k]]
        self.admitted += len(out)
        return out

    def chunk_trials(self, history, group: tuple, waiting: int) -> int | None:
        if self.bracket >= len(self.brackets):
            return None
        plan = self._plan()
        n = plan[self.rung] if self.single_group else waiting
        return max(n, min(self.min_batch, plan[0]))

    # ------------------------------------------------------------------ scheduler
    def decide(self, history, trials) -> dict[int, Any]:
        out = {}
        ids, budgets, rung0 = self.brackets[self.bracket]
        for t in trials:
            rec = history[t]
            rec.rung = rung0 + self.rung
            if rec.status == "running" and rec.age >= budgets[self.rung]:
                out[t] = PAUSE
        return out

    def review(self, history, paused, free) -> tuple[list[int], list[int]]:
        ids, budgets, _ = self.brackets[self.bracket]
        if self.admitted < len(ids) or any(
            history[t].status not in ("paused",) + tuple(FINAL) for t in self.alive
        ):
            return [], []
        waiting = [t for t in self.alive if history[t].status == "paused"]
        ranked = sorted(waiting, key=lambda t: (history.score(t), t))
        if self.rung + 1 >= len(budgets):
            return [], ranked  # cannot happen: the last rung completes at max_steps
        keep = self._plan()[self.rung + 1]
        survivors = sorted(t for t in ranked[:keep] if history.score(t) < math.inf)
        pruned = [t for t in waiting if t not in survivors]
        self.rung += 1
        self.alive = survivors
        if survivors:
            self._note_rung()
        return survivors, pruned

    def tell(self, history, trial: int) -> None:
        if self.bracket >= len(self.brackets):
            return
        ids = self.brackets[self.bracket][0]
        if self.admitted == len(ids) and all(history[t].finished for t in ids if t in history):
            self.bracket += 1
            self.rung, self.admitted = 0, 0
            self.alive = sorted(self.brackets[self.bracket][0]) if self.bracket < len(self.brackets) else []

    def state_dict(self) -> dict[str, Any]:
        return {"bracket": self.bracket, "rung": self.rung, "admitted": self.admitted, "alive": self.alive,
                "rungs": self.rungs}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.bracket, self.rung, self.admitted = (
            int(state["bracket"]),
            int(state["rung"]),
            int(state["admitted"]),
        )
        self.alive, self.rungs = [int(t) for t in state["alive"]], [dict(r) for r in state["rungs"]]


# ----------------------------------------------------------------------------- front-ends


def _halving_search(task, space: Space, configs: list[dict], brackets, eta: float, ladder: list[int], e: int,
                    min_batch: int, method: dict, options: dict) -> SweepResult:  # fmt: skip
    t_start = time.perf_counter()
    groups = {tuple(repr(c[n]) for n in space.static_names) for c in configs}
    sh = SuccessiveHalving(configs, brackets, eta, min_batch=min_batch,
                           single_group=len(groups) == 1)  # fmt: skip
    result = search(task, space, sh, sh, steps=ladder[-1], eval_every=e, method=method, **options)
    random_steps = len(configs) * ladder[-1] * (options.get("folds") or 1)
    result.stats.update(
        eta=eta, eval_every=e, budgets=ladder, rungs=sh.rungs, random_search_trial_steps=random_steps,
        batch_sizes=sorted({s for v in result.stats["chunk_sizes"].values() for s in v}),
        compute_fraction=result.stats["trial_steps"] / random_steps,
        wall_seconds=time.perf_counter() - t_start,
    )  # fmt: skip
    return result


SH_ARGS = tuple("trials max_steps min_steps budgets eta eval_every method grid_points min_batch".split())
HYPERBAND_ARGS = tuple("max_steps min_steps eta brackets eval_every method min_batch".split())


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
    grid_points: int = 5,
    min_batch: int = 1,
    **options: Any,
) -> SweepResult:
    """Synchronous successive halving (see the module docstring for the algorithm).

    Args:
      task, space, trials, method, grid_points: as for :func:`jopt.sweep.run`; trial ``i`` gets the
        keys ``run`` would give it.
      max_steps, min_steps: last and (about) first rung budget: ``K + 1`` geometric rungs,
        ``K = floor(log_eta(max_steps / min_steps))``.
      budgets: explicit, strictly increasing rung budgets instead (the last one is ``max_steps``).
      eta: reduction factor > 1: each rung keeps the best ``floor(n_k / eta)`` trials (at least one).
      eval_every: steps per segment; must divide every budget (default: their gcd).
      min_batch: size every chunk for at least this many trials (up to the first rung's count), so
        that the small late rungs share one compiled program; default 1 (exact sizes).
      **options: the shared options of :func:`jopt.sweep.options.make_options` (``seed``,
        ``mode``, ``max_parallel``, ``memory_budget``, ``devices``, ``folds``, ``patience``,
        ``checkpoint_dir``, ``keep_states`` -- pruned trials' states at their last rung with
        ``"all"`` --, ``progress``, ``check_params``, ``timeout``).

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`; ``TrialResult.rung`` is the highest rung reached
      and ``stats`` holds ``rungs``, ``budgets``, ``trial_steps``, ``random_search_trial_steps``,
      ``compute_fraction``, ``batch_sizes``, ``compiles`` and ``gather_compiles``.

    Raises:
      ValueError: ``eta <= 1``, bad budgets, fewer trials than ``eta``, ... (before any compile).
    """
    check_option_names(options, where="successive_halving", own=SH_ARGS, fixed=("steps", "eval_every"))
    eta = _check_eta(eta)
    ladder, e = rung_budgets(max_steps, min_steps=min_steps, eta=eta, eval_every=eval_every, budgets=budgets)
    check_int("min_batch", min_batch)
    opts = validate_options(options, where="successive_halving", own=SH_ARGS, steps=ladder[-1], eval_every=e)
    check_task_object(task)
    space = as_space(space)
    configs = configs_of(space, trials, method, opts.seed, grid_points)
    if len(ladder) > 1 and len(configs) < eta:
        raise ValueError(f"successive halving needs at least eta={eta:g} trials, got {len(configs)}")
    described = {"name": "successive_halving", "budgets": ladder, "eta": eta, "min_batch": min_batch,
                 "configs": [encode_config(space, c) for c in configs]}  # fmt: skip
    brackets = [(list(range(len(configs))), ladder, 0)]
    return _halving_search(task, space, configs, brackets, eta, ladder, e, min_batch, described, options)


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
    min_batch: int = 1,
    **options: Any,
) -> SweepResult:
    """Hyperband: successive-halving brackets ``s = s_max, ..., 0`` (see the module docstring).

    Args:
      max_steps, min_steps, eta, eval_every, min_batch: as for :func:`successive_halving`.
      brackets: run only the first (most exploratory) ``brackets`` brackets (default: all).
      method: ``"random"``, ``"sobol"`` or ``"halton"``: draws ``sum_s n_s`` configurations at once;
        bracket ``s`` gets the next ``n_s`` of them (trial ids are consecutive across brackets).
      **options: the shared options, as for :func:`successive_halving`.

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`; ``TrialResult.rung`` indexes the common budget
      ladder ``stats["budgets"]``; ``stats["brackets"]`` lists ``(s, n_s, first trial id)``.
    """
    check_option_names(options, where="hyperband", own=HYPERBAND_ARGS, fixed=("steps", "eval_every"))
    eta = _check_eta(eta)
    ladder, e = rung_budgets(max_steps, min_steps=min_steps, eta=eta, eval_every=eval_every)
    check_int("min_batch", min_batch)
    opts = validate_options(options, where="hyperband", own=HYPERBAND_ARGS, steps=ladder[-1], eval_every=e)
    if method not in ("random", "sobol", "halton"):
        raise ValueError(f"method must be 'random', 'sobol' or 'halton' for hyperband, got {method!r}")
    plan = hyperband_brackets(len(ladder), eta, brackets)
    check_task_object(task)
    space = as_space(space)
    configs = sample(space, method, sum(n for _, n in plan), seed=opts.seed)
    s_max, first, info, bracket_list = len(ladder) - 1, 0, [], []
    for s, n in plan:
        # a bracket starts at ladder[s_max - s]: its first segments cover [0, budgets[0]]
        bracket_list.append((list(range(first, first + n)), ladder[s_max - s :], s_max - s))
        info.append((s, n, first))
        first += n
    described = {"name": "hyperband", "budgets": ladder, "eta": eta, "min_batch": min_batch, "plan": plan,
                 "method": method}  # fmt: skip
    result = _halving_search(
        task, space, configs, bracket_list, eta, ladder, e, min_batch, described, options
    )
    result.stats["brackets"] = info
    return result
