"""Populations: batches of trials advanced segment by segment, gathered and re-parameterized exactly.

The low-level layer under adaptive search (:mod:`~jopt.sweep.halving`, :mod:`~jopt.sweep.population_based`).
It reuses the two compiled programs of :mod:`jopt.sweep.runner` -- ``init`` and ``segment``
(``eval_every`` training steps then one evaluation, vmapped over members, sharded over the
``("trials",)`` mesh) -- and adds what adaptive methods need between segments:

* :class:`Population` -- the configurations of *one static group* (every static hyperparameter
  equal), their random keys (trial ``i`` gets the keys :func:`jopt.sweep.run` gives trial ``i``),
  and the compiled programs per batch size;
* :class:`Cohort` -- one batch of ``size`` slots: per slot a member (``-1`` for padding), its traced
  hyperparameter values and its :class:`~jopt.sweep.runner.Carry` (training state, key stream,
  status, steps); all slots of a cohort have trained the same number of steps.

Operations (``P`` = population, ``C`` = cohort)::

    C = P.init(members, size)              # program init(size)        -- compiled once per size
    C = P.advance(C, k)                    # k x segment(size)         -- compiled once per size
    C = P.gather(sources, picks, size)     # slot j <- carry of slot picks[j] = (b, p) of sources[b]
    C = P.set_hparams(C, hp)               # new traced values; the same compiled segment program

``gather`` is a copy: every carry leaf is indexed, ``x_out[j] = x_in[p_j]``, so parameters, optimizer
state, step count and key stream continue bit for bit; training a member 0 -> r steps in one batch,
gathering it into a smaller batch and training it r -> R steps gives the same result (to float32
rounding of batched matmuls) as training it 0 -> R steps alone. With one device-resident source the
gather is one jitted program whose input and output are sharded over the trial axis (compiled once
per task and ``(input size, output size)``, then cached); with several sources, or sources moved
to the host to bound device memory, it is NumPy indexing followed by a sharded ``device_put``.
``key_picks`` lets a slot take its state from one slot and its key stream from another (PBT keeps
the recipient's keys).

Hyperparameters are *inputs* of the compiled programs, so ``set_hparams`` changes them between
segments without recompiling (the point of "hyperparameters are data"). Every ``Population``
counts what it compiled in ``stats`` (``compiles``: init and segment programs, ``gather_compiles``).

Example (a hand-written task; two members, then the better one alone in a batch of one):
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from jopt import sweep
  >>> from jopt.sweep.population import Population
  >>> task = sweep.Task(lambda hp, k: jnp.float32(1.0),
  ...                   lambda hp, w, k: (w - hp["lr"] * w, {"loss": w * w}),
  ...                   lambda hp, w: w * w)
  >>> space = sweep.Space(lr=sweep.uniform(0.0, 1.0))
  >>> pop = Population(task, space, [{"lr": 0.1}, {"lr": 0.5}], eval_every=2, devices=1)
  >>> c = pop.advance(pop.init([0, 1], size=2), 1)
  >>> [round(float(v), 4) for v in c.last_objective]
  [0.6561, 0.0625]
  >>> c = pop.advance(pop.gather([c], [(0, 1)], size=1), 1)   # member 1 continues alone
  >>> round(float(c.last_objective[0]), 6), c.step, pop.stats["compiles"]
  (0.003906, 4, 3)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.sweep import runner as R
from jopt.sweep.results import TrialResult
from jopt.sweep.space import Space
from jopt.sweep.task import Task

__all__ = [
    "Cohort",
    "Population",
    "Recorder",
    "clear_gather_cache",
    "group_by_statics",
    "progress_bar",
    "rank_keys",
]


@dataclass(frozen=True)
class Cohort:
    """One batch of slots advanced together by one compiled segment program.

    Attributes:
      members: ``[size]`` population-local member index per slot, ``-1`` for padding.
      hp: traced hyperparameter values per slot (host NumPy arrays of the space's dtypes).
      hp_device: the same, placed on the devices (sharded over the trial axis).
      carry: the :class:`~jopt.sweep.runner.Carry` -- on the devices, or NumPy arrays after
        :meth:`Population.to_host`.
      step: training steps taken by every slot (slots advance in lockstep).
      last: ``(objective, status)`` NumPy arrays of the last segment, or ``None`` before the first.
    """

    members: np.ndarray
    hp: dict[str, np.ndarray]
    hp_device: dict[str, jax.Array]
    carry: Any
    step: int = 0
    last: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def size(self) -> int:
        return int(self.members.shape[0])

    @property
    def active(self) -> np.ndarray:
        """Boolean mask of the slots holding a member."""
        return self.members >= 0

    @property
    def on_host(self) -> bool:
        return isinstance(self.carry.status, np.ndarray)

    @property
    def last_objective(self) -> np.ndarray:
        if self.last is None:
            raise ValueError("the cohort has not been advanced yet")
        return self.last[0]


def rank_keys(objective: np.ndarray, status: np.ndarray, sign: float) -> np.ndarray:
    """Minimization keys ``sign * objective``; ``+inf`` for diverged or non-finite values (rank worst).

    Example:
      >>> rank_keys(np.array([0.5, 0.2, np.nan]), np.array([0, 1, 0]), -1.0).tolist()
      [-0.5, inf, inf]
    """
    key = sign * np.asarray(objective, np.float64)
    bad = ~np.isfinite(key) | (np.asarray(status) == R.DIVERGED)
    return np.where(bad, np.inf, key)


def group_by_statics(space: Space, configs: Sequence[Mapping[str, Any]]) -> dict[tuple, list[int]]:
    """Indices of ``configs`` per static group, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(tuple(repr(cfg[n]) for n in space.static_names), []).append(i)
    return groups


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar (disabled unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="seg", leave=True)


_GATHER_CACHE: dict[tuple, Any] = {}  # compiled gathers, shared by populations of the same task


def clear_gather_cache() -> None:
    """Forget the compiled gather programs (see also :func:`jopt.sweep.runner.clear_program_cache`)."""
    _GATHER_CACHE.clear()


class Population:
    """Configurations of one static group, their keys and their compiled programs per batch size.

    Args:
      task, space: as for :func:`jopt.sweep.run`; every configuration must share the static values.
      configs: the members' configurations (validated against ``space``).
      eval_every: steps per segment.
      seed, ids: member ``i`` gets the keys of trial ``ids[i]`` (default ``i``) under ``seed``, as
        in :func:`jopt.sweep.run`.
      mode: ``"min"`` or ``"max"``.
      devices, mesh: the trial-axis mesh (a device count or list, or a ready mesh).
      check_params: also treat a non-finite training state as divergence.
    """

    def __init__(
        self,
        task: Task,
        space: Space | Mapping[str, Any],
        configs: Sequence[Mapping[str, Any]],
        *,
        eval_every: int,
        seed: int = 0,
        ids: Sequence[int] | None = None,
        mode: str = "min",
        devices: int | Sequence[Any] | None = None,
        mesh: jax.sharding.Mesh | None = None,
        check_params: bool = True,
    ):
        self.space = space if isinstance(space, Space) else Space(space)
        self.configs = [self.space.validate_config(c) for c in configs]
        if not self.configs:
            raise ValueError("a Population needs at least one configuration")
        if len(group_by_statics(self.space, self.configs)) != 1:
            raise ValueError("a Population is one static group: configs must share every static value")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.ids = np.arange(len(self.configs)) if ids is None else np.asarray(ids, np.int64)
        if self.ids.shape != (len(self.configs),) or len(set(self.ids.tolist())) != len(self.ids):
            raise ValueError(f"ids must be {len(self.configs)} distinct ints, got {ids!r}")
        self.task = task
        self.statics = {n: self.configs[0][n] for n in self.space.static_names}
        self.traced = {n: self.space[n].dtype for n in self.space.traced_names}
        self.sign = 1.0 if mode == "min" else -1.0
        self.eval_every = int(eval_every)
        self.opts = R.EngineOptions(self.eval_every, self.sign, None, 0.0, check_params)
        self.mesh = mesh if mesh is not None else R.make_mesh(devices)
        self.init_keys, self.train_keys = R.member_keys(seed, self.ids, np.zeros(len(self.ids), np.int64))
        self._programs: dict[int, R.GroupPrograms] = {}
        statics_key = tuple((k, repr(v)) for k, v in self.statics.items())
        self._cache_key = (task, statics_key, tuple(self.traced.items()), self.opts, self.mesh)
        self.stats: dict[str, Any] = {
            "compiles": 0,
            "gather_compiles": 0,
            "compile_seconds": 0.0,
            "member_steps": 0,
        }

    # ------------------------------------------------------------------ programs
    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    def padded_size(self, n: int, max_parallel: int | None = None) -> int:
        """Batch size for ``n`` members: a multiple of the device count, at most ``max_parallel``."""
        return R.chunk_size(n, self.num_devices, max_parallel)

    def programs(self, size: int, *, with_init: bool = False) -> R.GroupPrograms:
        """The compiled programs for batches of ``size`` (compiled on first use, then cached)."""
        prog = self._programs.get(size)
        if prog is None or (with_init and prog.init is None):
            prog = R.compile_group(
                self.task, self.statics, self.traced, None, self.opts, size, self.mesh, with_init=with_init
            )
            self.stats["compiles"] += prog.compiled
            self.stats["compile_seconds"] += prog.compile_seconds
            self._programs[size] = prog
        return prog

    def _gather_program(self, in_size: int, out_size: int):
        key = (self._cache_key, in_size, out_size)
        if key not in _GATHER_CACHE:
            src, dst = self.programs(in_size), self.programs(out_size)

            def gather(carry, idx, key_idx, active):
                out = jax.tree.map(lambda x: x[idx], carry)
                status = jnp.where(active, out.status, R.INACTIVE)
                return out._replace(key=carry.key[key_idx], status=status)

            idx_abs = jax.ShapeDtypeStruct((out_size,), np.int32, sharding=dst.sharding)
            act_abs = jax.ShapeDtypeStruct((out_size,), np.bool_, sharding=dst.sharding)
            jitted = jax.jit(gather, in_shardings=(src.sharding, dst.sharding, dst.sharding, dst.sharding),
                             out_shardings=dst.sharding)  # fmt: skip
            if len(_GATHER_CACHE) >= 32:
                _GATHER_CACHE.pop(next(iter(_GATHER_CACHE)))
            _GATHER_CACHE[key] = jitted.lower(src.carry_abstract, idx_abs, idx_abs, act_abs).compile()
            self.stats["gather_compiles"] += 1
        return _GATHER_CACHE[key]

    # ------------------------------------------------------------------ cohorts
    def _slots(self, members: Sequence[int], size: int | None) -> np.ndarray:
        members = np.asarray(list(members), np.int64)
        if members.size == 0 or members.min() < 0 or members.max() >= len(self.configs):
            raise ValueError(f"members must be indices in [0, {len(self.configs)}), got {members.tolist()}")
        size = self.padded_size(len(members)) if size is None else int(size)
        if size < len(members):
            raise ValueError(f"size={size} is smaller than the {len(members)} members")
        return np.concatenate([members, np.full(size - len(members), -1, np.int64)])

    def config_hparams(self, members: np.ndarray) -> dict[str, np.ndarray]:
        """Traced values of ``members`` (padding slots repeat the first member)."""
        idx = np.where(members >= 0, members, members[0])
        return {n: np.asarray([self.configs[i][n] for i in idx], np.dtype(d)) for n, d in self.traced.items()}

    def init(self, members: Sequence[int], size: int | None = None) -> Cohort:
        """A new cohort of ``members`` (padded with inactive slots to ``size``) at step 0."""
        slots = self._slots(members, size)
        prog = self.programs(len(slots), with_init=True)
        hp = self.config_hparams(slots)
        idx = np.where(slots >= 0, slots, slots[0])
        status = np.where(slots >= 0, R.RUNNING, R.INACTIVE).astype(np.int32)
        hp_dev = jax.device_put(hp, prog.sharding)
        keys = jax.device_put((self.init_keys[idx], self.train_keys[idx], status), prog.sharding)
        return Cohort(slots, hp, hp_dev, prog.init(hp_dev, *keys), 0, None)

    def advance(
        self,
        cohort: Cohort,
        segments: int,
        recorder: Recorder | None = None,
        on_segment: Callable[[Cohort], None] | None = None,
    ) -> Cohort:
        """Run ``segments`` segments (``segments * eval_every`` steps, one evaluation after each)."""
        if cohort.on_host:
            raise ValueError("the cohort is on the host; gather it back onto the devices first")
        prog = self.programs(cohort.size)
        for _ in range(segments):
            carry, out = prog.segment(cohort.hp_device, cohort.carry)
            out = jax.device_get(out)
            step = cohort.step + self.eval_every
            last = (np.asarray(out[0]), np.asarray(out[3]))
            cohort = replace(cohort, carry=carry, step=step, last=last)
            self.stats["member_steps"] += cohort.size * self.eval_every
            if recorder is not None:
                recorder.record(self.ids, cohort.members, step, out)
            if on_segment is not None:
                on_segment(cohort)
        return cohort

    def gather(
        self,
        sources: Sequence[Cohort],
        picks: Sequence[tuple[int, int]],
        size: int | None = None,
        *,
        members: Sequence[int] | None = None,
        key_picks: Sequence[tuple[int, int]] | None = None,
    ) -> Cohort:
        """A cohort whose slot ``j`` holds an exact copy of slot ``p`` of ``sources[b]``, where
        ``(b, p) = picks[j]``.

        The traced hyperparameters and the member index follow the picked slot unless ``members``
        is given; the key stream follows ``key_picks`` (default ``picks``). Slots past
        ``len(picks)`` are inactive padding. Every source must be at the same step.
        """
        picks = [(int(b), int(p)) for b, p in picks]
        key_picks = picks if key_picks is None else [(int(b), int(p)) for b, p in key_picks]
        if not picks or len(key_picks) != len(picks):
            raise ValueError("picks must be non-empty and as long as key_picks")
        if len({c.step for c in sources}) != 1:
            raise ValueError("all source cohorts must be at the same step")
        size = self.padded_size(len(picks)) if size is None else int(size)
        if size < len(picks):
            raise ValueError(f"size={size} is smaller than the {len(picks)} picks")
        pad = size - len(picks)
        full, full_keys = picks + [picks[0]] * pad, key_picks + [key_picks[0]] * pad
        if members is None:
            members = [sources[b].members[p] for b, p in picks]
        slots = np.concatenate([np.asarray(members, np.int64), np.full(pad, -1, np.int64)])
        active = slots >= 0
        hp = {
            n: np.asarray([sources[b].hp[n][p] for b, p in full], np.dtype(d)) for n, d in self.traced.items()
        }
        prog = self.programs(size)
        if len(sources) == 1 and not sources[0].on_host:
            src = sources[0]
            idx = np.asarray([p for _, p in full], np.int32)
            kidx = np.asarray([p for _, p in full_keys], np.int32)
            args = jax.device_put((idx, kidx, active), prog.sharding)
            carry = self._gather_program(src.size, size)(src.carry, *args)
        else:
            hosts = [c.carry if c.on_host else jax.device_get(c.carry) for c in sources]
            flat = [jax.tree.leaves(h) for h in hosts]
            leaves = [np.stack([flat[b][i][p] for b, p in full]) for i in range(len(flat[0]))]
            carry = jax.tree.unflatten(jax.tree.structure(hosts[0]), leaves)
            keys = np.stack([hosts[b].key[p] for b, p in full_keys])
            status = np.where(active, carry.status, R.INACTIVE).astype(np.int32)
            carry = jax.device_put(carry._replace(key=keys, status=status), prog.sharding)
        return Cohort(slots, hp, jax.device_put(hp, prog.sharding), carry, sources[0].step, None)

    def set_hparams(self, cohort: Cohort, hp: Mapping[str, np.ndarray]) -> Cohort:
        """The cohort with new traced hyperparameter values (same shapes: no recompilation)."""
        if set(hp) != set(self.traced):
            raise ValueError(f"hp must have exactly the traced names {sorted(self.traced)}, got {sorted(hp)}")
        new = {n: np.asarray(hp[n], np.dtype(d)) for n, d in self.traced.items()}
        if any(v.shape != (cohort.size,) for v in new.values()):
            raise ValueError(f"every hp array must have shape ({cohort.size},)")
        return replace(cohort, hp=new, hp_device=jax.device_put(new, self.programs(cohort.size).sharding))

    def to_host(self, cohort: Cohort) -> Cohort:
        """The cohort with its carry copied to host memory (frees device memory once dropped)."""
        return cohort if cohort.on_host else replace(cohort, carry=jax.device_get(cohort.carry))

    def states(self, cohort: Cohort, positions: Sequence[int]) -> list[Any]:
        """Training states (NumPy pytrees) of the given slots."""
        host = cohort.carry.state if cohort.on_host else jax.device_get(cohort.carry.state)
        return [jax.tree.map(lambda x, p=int(p): np.asarray(x[p]), host) for p in positions]


class Recorder:
    """Host-side evaluation history per trial id (objective, train and eval metrics, status, steps)."""

    def __init__(self) -> None:
        self.history: dict[int, dict[str, list[float]]] = {}
        self.status: dict[int, int] = {}
        self.steps: dict[int, int] = {}

    def record(self, ids: np.ndarray, members: np.ndarray, step: int, out: tuple) -> None:
        objective, train, evals, status, steps = out
        for pos, m in enumerate(members):
            if m < 0:
                continue
            t = int(ids[m])
            h = self.history.setdefault(t, {"step": [], "objective": []})
            h["step"].append(int(step))
            h["objective"].append(float(objective[pos]))
            for prefix, source in (("train/", train), ("eval/", evals)):
                for k, v in source.items():
                    h.setdefault(prefix + k, []).append(float(v[pos]))
            self.status[t], self.steps[t] = int(status[pos]), int(steps[pos])

    def last(self, t: int) -> float:
        """The trial's latest objective."""
        return self.history[t]["objective"][-1]

    def trial_result(
        self, t: int, config: Mapping[str, Any], sign: float, *, status: str | None = None, rung=None
    ) -> TrialResult:
        """A :class:`TrialResult` from the recorded history (objective = last evaluation)."""
        h = {k: list(v) for k, v in self.history[t].items()}
        obj = np.asarray(h["objective"], np.float64)
        diverged = self.status[t] == R.DIVERGED
        status = "diverged" if diverged else (status or "completed")
        keys = np.where(np.isfinite(obj), sign * obj, np.inf)
        i = int(np.argmin(keys))
        worst = sign * math.inf
        objective = worst if diverged else float(obj[-1])
        return TrialResult(
            t, dict(config), status, objective, float(obj[-1]), float(obj[i]), h["step"][i],
            self.steps[t], h, None, rung,
        )  # fmt: skip
