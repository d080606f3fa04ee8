"""Population-based training (Jaderberg et al., 2017) inside the vectorized engine.

A population of ``P`` trials trains as one compiled, vmapped, sharded batch. Every ``eval_every``
steps (the *ready* interval) the members are ranked by their objective and the bottom quantile
*exploits* the top quantile: it takes an exact copy of a top member's training state and continues
with *explored* (perturbed) hyperparameters. Hyperparameters are inputs of the compiled program,
so they change during training without recompiling: the whole run compiles one ``init``, one
``segment`` and one ``update`` program (``stats["compiles"] == 3``). It runs on the engine
(:func:`jopt.sweep.search`) as the :class:`PBT` trial scheduler: after every segment but the last
it returns an :class:`~jopt.sweep.scheduler.Exploit` decision for each member of the bottom
quantile, applied on the devices by the ``update`` program (slot ``i`` <- a copy of the donor's
slot, the hyperparameters written into the traced arrays).

Algorithm (truncation selection; ``q`` = ``quantile``, ``F`` = ``perturb``,
``p`` = ``resample_probability``)::

    theta_i, h_i = init(h_i), sampled h_i        for i = 1..P
    for t = 1..T  (T = steps / eval_every):
        train every member eval_every steps with its own h_i; evaluate f_i
        if t < T:
            n_q = floor(q P);  rank by f (diverged: worst; ties: lower index first)
            Top, Bottom = the n_q best and the n_q worst members (Top without diverged ones)
            for i in Bottom (if Top is not empty):
                j ~ Uniform(Top)
                theta_i <- theta_j                         # exploit: exact copy
                h_i <- explore(h_j)

    explore(h), per traced dimension d:
        with probability p:  h_d ~ the space's prior for d (resample)
        else with f ~ Uniform(F):
            uniform / loguniform:  h_d <- clip(f h_d, low, high)           (multiplicative)
            integer:               h_d <- clip(round(f h_d), low, high), moved by one step
                                   towards f if rounding left it unchanged
            choice:                h_d <- the neighbouring value in the list (index + 1 if f > 1,
                                   - 1 if f < 1, clipped); a choice has no scale to multiply

What is copied: the whole training state (parameters, optimizer state and any step count inside it),
the engine's applied-step counter and the divergence status (a copied member is running again), bit
for bit. What is *not* copied: the training key stream. The recipient keeps its own stream, so after
an exploit it draws different minibatches from its donor (copying the key would make the two
members replay identical minibatch sequences and collapse the population's diversity). Diverged
members rank worst: they are replaced at the next ready point and never chosen as donors.

Static hyperparameters (other than fixed values) are rejected: they change the compiled program
(shapes, structure), so they cannot be perturbed without recompiling, and states of different static
groups are not interchangeable. Tune them outside PBT (e.g. one PBT run per static value).

Each member's lineage (``(step, donor)`` per exploit) and hyperparameter schedule
(``(step, values)`` per change) are recorded; :meth:`PBTResult.ancestry` follows the copies back to
give the schedule that produced a member's final state, and :func:`plot_schedules` draws them.

Example:
  >>> import jax.numpy as jnp, numpy as np
  >>> from jopt import sweep
  >>> from jopt.sweep.population_based import pbt
  >>> task = sweep.Task(lambda hp, k: jnp.float32(4.0),
  ...                   lambda hp, w, k: (w - hp["lr"] * w, {"loss": w * w}),
  ...                   lambda hp, w: w * w)
  >>> space = sweep.Space(lr=sweep.loguniform(1e-3, 0.5))
  >>> r = pbt(task, space, 8, steps=20, eval_every=2, seed=0, progress=False, devices=1)
  >>> r.stats["compiles"], r.stats["exploits"] > 0, len(r.schedules[0]) >= 1
  (3, True, True)
  >>> all(1e-3 <= h["lr"] <= 0.5 for t in r.schedules.values() for _, h in t)
  True
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jopt.sweep.engine import as_space, configs_of, search
from jopt.sweep.history import encode_config
from jopt.sweep.options import check_option_names, validate_options
from jopt.sweep.plots import finish_figure
from jopt.sweep.results import SweepResult
from jopt.sweep.samplers import ListSampler, sample
from jopt.sweep.scheduler import Exploit, TrialScheduler
from jopt.sweep.space import Choice, Dimension, Fixed, Integer, Space, Uniform
from jopt.sweep.task import Task, check_task, check_task_object

__all__ = ["PBT", "PBTResult", "exploit_explore", "explore", "pbt", "perturb_value", "plot_schedules"]


# ----------------------------------------------------------------------------- explore / exploit


def perturb_value(dim: Dimension, value: Any, factor: float) -> Any:
    """``value`` perturbed by ``factor`` within ``dim``'s bounds (see the module docstring).

    Example:
      >>> from jopt import sweep
      >>> perturb_value(sweep.loguniform(1e-3, 1e-1), 0.09, 1.2), perturb_value(sweep.integer(1, 8), 1, 1.2)
      (0.1, 2)
      >>> perturb_value(sweep.choice([16, 32, 64]), 32, 0.8)
      16
    """
    direction = (factor > 1) - (factor < 1)
    if isinstance(dim, Choice):
        i = min(range(len(dim.values)), key=lambda k: abs(float(dim.values[k]) - float(value)))
        return dim.values[min(max(i + direction, 0), len(dim.values) - 1)]
    if isinstance(dim, Integer):
        new = int(round(value * factor))
        if new == int(value):
            new += direction
        return int(min(max(new, dim.low), dim.high))
    if isinstance(dim, Uniform):  # LogUniform included
        return float(min(max(float(value) * factor, dim.low), dim.high))
    raise TypeError(f"cannot perturb a {type(dim).__name__} dimension")


def explore(
    space: Space,
    config: Mapping[str, Any],
    rng: np.random.Generator,
    *,
    perturb: Sequence[float] = (0.8, 1.2),
    resample_probability: float = 0.25,
) -> dict[str, Any]:
    """A new configuration near ``config``: each active traced dimension is resampled from the
    space with probability ``resample_probability``, else perturbed by a factor drawn from
    ``perturb`` (in a conditional space the branch, a static choice, stays)."""
    out, active = dict(config), set(space.active_names(config))
    for name in space.traced_names:
        if name not in active:  # another branch's hyperparameter keeps its placeholder
            continue
        dim = space[name]
        if rng.random() < resample_probability:
            out[name] = dim.from_unit(float(rng.random()))
        else:
            out[name] = perturb_value(dim, config[name], float(perturb[int(rng.integers(len(perturb)))]))
    return out


def exploit_explore(
    keys: np.ndarray,
    configs: Sequence[Mapping[str, Any]],
    space: Space,
    rng: np.random.Generator,
    *,
    quantile: float = 0.25,
    perturb: Sequence[float] = (0.8, 1.2),
    resample_probability: float = 0.25,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One PBT ready step on the host: ``(donor per member, new configurations)``.

    ``keys`` are minimization keys (``+inf`` for diverged members, see
    :func:`~jopt.sweep.results.signed`). ``donor[i] == i`` for members that keep their state.

    Example:
      >>> from jopt import sweep
      >>> space = sweep.Space(lr=sweep.loguniform(1e-3, 1.0))
      >>> cfgs = [{"lr": v} for v in (0.1, 0.2, 0.3, 0.4)]
      >>> donors, new = exploit_explore(np.array([3.0, 1.0, np.inf, 2.0]), cfgs, space,
      ...                               np.random.default_rng(0), quantile=0.25)
      >>> donors.tolist(), new[1] == cfgs[1]
      ([0, 1, 1, 3], True)
    """
    keys = np.asarray(keys, np.float64)
    n = len(keys)
    n_q = int(math.floor(quantile * n + 1e-9))
    order = np.lexsort((np.arange(n), keys))
    top = [int(i) for i in order[:n_q] if keys[i] < math.inf]
    donors, new = np.arange(n), [dict(c) for c in configs]
    if not top or n_q == 0:
        return donors, new
    for i in sorted(int(i) for i in order[n - n_q :]):
        j = top[int(rng.integers(len(top)))]
        donors[i] = j
        new[i] = explore(space, configs[j], rng, perturb=perturb, resample_probability=resample_probability)
    return donors, new


# ----------------------------------------------------------------------------- result


def _traced(space: Space, config: Mapping[str, Any]) -> dict[str, Any]:
    return {n: config[n] for n in space.traced_names}


@dataclass
class PBTResult(SweepResult):
    """A :class:`~jopt.sweep.results.SweepResult` of a PBT run (one trial per member; ``hyperparams``
    are the member's final values), plus:

    Attributes:
      lineage: ``trial -> [(step, donor trial), ...]``, one entry per exploit.
      schedules: ``trial -> [(step, traced values), ...]``: values in effect from ``step`` on.
    """

    lineage: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    schedules: dict[int, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)

    def ancestry(self, trial: int | None = None) -> list[tuple[int, int, int, dict[str, Any]]]:
        """``[(start, end, trial, values), ...]``: the members and hyperparameters that trained the
        final state of ``trial`` (default: the best) over each step interval, following the copies."""
        t = self.best.trial if trial is None else trial
        end, out = int(self.stats["steps"]), []
        while True:
            events = [(s, d) for s, d in self.lineage[t] if s < end]
            start, donor = events[-1] if events else (0, None)
            values = [h for s, h in self.schedules[t] if s <= start][-1]
            out.append((start, end, t, dict(values)))
            if donor is None:
                return out[::-1]
            t, end = donor, start

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["lineage"] = {str(t): [list(e) for e in v] for t, v in self.lineage.items()}
        d["schedules"] = {str(t): [[s, h] for s, h in v] for t, v in self.schedules.items()}
        return d

    def plot_schedules(self, path: str | Path | None = None, **kwargs: Any):
        """Hyperparameter schedules, objectives and lineage; see :func:`plot_schedules`."""
        return plot_schedules(self, path, **kwargs)


# ----------------------------------------------------------------------------- the scheduler


class PBT(TrialScheduler):
    """Population-based training as a trial scheduler: after every segment but the last, the
    bottom quantile of the trials that ran exploits the top quantile (:func:`exploit_explore`);
    records each member's lineage and hyperparameter schedule."""

    def __init__(self, space: Space, configs: Sequence[Mapping[str, Any]], *, quantile: float,
                 perturb: Sequence[float], resample_probability: float, seed: int):  # fmt: skip
        self.space, self.quantile, self.perturb, self.p = (
            space,
            quantile,
            tuple(perturb),
            resample_probability,
        )
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
        self.lineage: dict[int, list[tuple[int, int]]] = {t: [] for t in range(len(configs))}
        self.schedules = {t: [(0, _traced(space, c))] for t, c in enumerate(configs)}

    def decide(self, history, trials) -> dict[int, Exploit]:
        ids = sorted(trials)
        if not ids or any(history[t].status == "completed" for t in ids):
            return {}  # the last segment: nothing to exploit
        keys = np.asarray([history.score(t) if history[t].status != "diverged" else np.inf
                           for t in ids])  # fmt: skip
        configs = [history[t].config for t in ids]
        donors, new = exploit_explore(keys, configs, self.space, self.rng, quantile=self.quantile,
                                      perturb=self.perturb, resample_probability=self.p)  # fmt: skip
        out = {}
        for i, t in enumerate(ids):
            if donors[i] != i:
                step, donor = history[t].age, ids[int(donors[i])]
                out[t] = Exploit(donor, new[i])
                self.lineage[t].append((step, donor))
                self.schedules[t].append((step, _traced(self.space, new[i])))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "lineage": {str(t): v for t, v in self.lineage.items()},
                "schedules": {str(t): v for t, v in self.schedules.items()}}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.lineage = {int(t): [(int(s), int(d)) for s, d in v] for t, v in state["lineage"].items()}
        self.schedules = {int(t): [(int(s), dict(h)) for s, h in v] for t, v in state["schedules"].items()}


# ----------------------------------------------------------------------------- driver


def _check_args(steps, eval_every, quantile, perturb, resample_probability) -> tuple:
    if (
        isinstance(eval_every, bool)
        or not isinstance(eval_every, (int, np.integer))
        or eval_every < 1
        or (isinstance(steps, int) and steps >= 1 and steps % eval_every)
    ):
        raise ValueError(f"eval_every (the ready interval) must be a positive int dividing steps={steps}, "
                         f"got {eval_every!r}")  # fmt: skip
    if not isinstance(quantile, (int, float)) or isinstance(quantile, bool) or not 0 < quantile <= 0.5:
        raise ValueError(f"quantile must be in (0, 0.5], got {quantile!r}")
    try:
        factors = tuple(float(f) for f in perturb)
    except (TypeError, ValueError):
        factors = ()
    if not factors or not all(math.isfinite(f) and f > 0 for f in factors) or all(f == 1 for f in factors):
        raise ValueError(f"perturb must be a non-empty sequence of finite factors > 0, not all 1 "
                         f"(e.g. (0.8, 1.2)), got {perturb!r}")  # fmt: skip
    p = resample_probability
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"resample_probability must be in [0, 1], got {p!r}")
    return factors, float(p)


PBT_ARGS = ("population", "steps", "eval_every", "quantile", "perturb", "resample_probability", "method")


def pbt(
    task: Task,
    space: Space | Mapping[str, Any],
    population: int | Sequence[Mapping[str, Any]],
    *,
    steps: int,
    eval_every: int,
    quantile: float = 0.25,
    perturb: Sequence[float] = (0.8, 1.2),
    resample_probability: float = 0.25,
    method: str = "random",
    **options: Any,
) -> PBTResult:
    """Population-based training (see the module docstring for the algorithm).

    Args:
      task, space: as for :func:`jopt.sweep.run` (member ``i`` gets the keys ``run`` gives trial
        ``i``; ``seed`` also drives exploit/explore).
      population: number of members to sample with ``method``, or their initial configurations.
        The whole population is one chunk (sharded over ``devices``).
      steps: training steps of every member.
      eval_every: the ready interval: steps between evaluations and exploit/explore; divides ``steps``.
      quantile: fraction ``q`` in ``(0, 0.5]``: the bottom ``floor(q P)`` members copy from the top
        ``floor(q P)``; the population needs ``floor(q P) >= 1``.
      perturb: multiplicative factors (finite, > 0, not all 1) drawn uniformly when exploring.
      resample_probability: per dimension, probability of resampling from the space instead.
      **options: the shared options of :func:`jopt.sweep.options.make_options` (``seed``, ``mode``,
        ``devices``, ``folds``, ``patience``, ``memory_budget``, ``checkpoint_dir``, ``keep_states``,
        ``progress``, ``check_params``, ``timeout``).

    Returns:
      A :class:`PBTResult`.

    Raises:
      ValueError: a bad argument above, a static (non-fixed) dimension in ``space``, or a
        population that does not fit one chunk; raised before any compile.
    """
    t_start = time.perf_counter()
    check_option_names(options, where="pbt", own=PBT_ARGS, fixed=("steps", "eval_every"))
    factors, p = _check_args(steps, eval_every, quantile, perturb, resample_probability)
    opts = validate_options(options, where="pbt", own=PBT_ARGS, steps=steps, eval_every=eval_every)
    check_task_object(task)
    space = as_space(space)
    static = [n for n in space.static_names if not isinstance(space[n], Fixed)]
    if static:
        raise ValueError(
            f"pbt cannot tune static hyperparameters {static}: they change the compiled program, so "
            "they cannot be perturbed without recompiling; make them traced or fixed"
        )
    if isinstance(population, Sequence) and not isinstance(population, str):
        configs = configs_of(space, population, method, opts.seed, 5, name="population")
    else:
        if isinstance(population, bool) or not isinstance(population, (int, np.integer)):
            raise ValueError(f"population must be an int or a list of configurations, got {population!r}")
        if method not in ("random", "sobol", "halton"):
            raise ValueError(f"method must be 'random', 'sobol' or 'halton' for pbt, got {method!r}")
        configs = sample(space, method, int(population), seed=opts.seed) if population >= 1 else []
    n = len(configs)
    if math.floor(quantile * n + 1e-9) < 1:
        need = math.ceil(1 / quantile - 1e-9)
        raise ValueError(f"population must have at least ceil(1 / quantile) = {need} members for "
                         f"quantile={quantile}, got {n}")  # fmt: skip
    members = n * opts.members_per_trial
    if opts.max_parallel is not None and opts.max_parallel < members:
        raise ValueError(f"the population ({members} members) must fit one chunk: max_parallel must be "
                         f">= {members}, got {opts.max_parallel}")  # fmt: skip
    check_task(task, space, configs[:1], num_folds=opts.folds)
    scheduler = PBT(
        space, configs, quantile=quantile, perturb=factors, resample_probability=p, seed=opts.seed
    )
    described = {"name": "pbt", "quantile": quantile, "perturb": factors, "resample_probability": p,
                 "configs": [encode_config(space, c) for c in configs]}  # fmt: skip
    r = search(task, space, ListSampler(configs), scheduler, parallel=n, method=described, single_chunk=True,
               steps=steps, eval_every=eval_every, **options)  # fmt: skip
    size = next(iter(r.stats["chunk_sizes"].values()), [None])[0]  # None: reloaded, nothing ran
    stats = dict(r.stats, steps=int(steps), eval_every=int(eval_every), batch_size=size)
    stats["wall_seconds"] = time.perf_counter() - t_start
    return PBTResult(r.trials, r.mode, stats, r.log_scale, r.states, r.params_fn, r.directions, r.categorical,
                     lineage=scheduler.lineage, schedules=scheduler.schedules)  # fmt: skip


# ----------------------------------------------------------------------------- plot


def plot_schedules(result: PBTResult, path: str | Path | None = None, *, names: list[str] | None = None):
    """One panel per traced hyperparameter (every member's schedule as a step line, the best
    member's ancestry in black), the objective of every member (exploits marked), and the lineage
    (a vertical segment from donor to recipient at each exploit). Returns the ``Figure``."""
    import matplotlib.pyplot as plt

    names = names or list(next(iter(result.schedules.values()))[0][1])
    steps = int(result.stats["steps"])
    n = len(result.trials)
    fig, axes = plt.subplots(len(names) + 2, 1, figsize=(7, 2.4 * (len(names) + 2)), sharex=True)
    colors = plt.get_cmap("tab20")
    for name, ax in zip(names, axes, strict=False):
        for t, sched in result.schedules.items():
            xs = [s for s, _ in sched] + [steps]
            ys = [h[name] for _, h in sched] + [sched[-1][1][name]]
            ax.step(xs, ys, where="post", color=colors(t % 20), alpha=0.5, lw=1)
        anc = result.ancestry()
        xs = [a[0] for a in anc] + [steps]
        ys = [a[3][name] for a in anc] + [anc[-1][3][name]]
        ax.step(
            xs, ys, where="post", color="black", lw=2.2, label=f"best (trial {result.best.trial}) ancestry"
        )
        if name in result.log_scale:
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.legend(loc="best", fontsize=7)
    ax = axes[-2]
    for t in result.trials:
        y = np.asarray(t.history["objective"], float)
        ax.plot(t.history["step"], np.where(np.isfinite(y), y, np.nan), color=colors(t.trial % 20), lw=1)
        for s, _ in result.lineage[t.trial]:
            if s in t.history["step"]:
                ax.plot([s], [y[t.history["step"].index(s)]], "x", color="tab:red", ms=4)
    ax.set_ylabel("objective")
    ax = axes[-1]
    for t in range(n):
        ax.hlines(t, 0, steps, color=colors(t % 20), lw=0.8)
        for s, d in result.lineage[t]:
            ax.annotate("", xy=(s, t), xytext=(s, d), arrowprops={"arrowstyle": "->", "lw": 0.7})
    ax.set_ylabel("member (donor -> recipient)")
    ax.set_xlabel("step")
    fig.suptitle(f"PBT: {n} members, {result.stats['exploits']} exploits")
    fig.tight_layout()
    return finish_figure(fig, path, close=True)
