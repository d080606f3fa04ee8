"""``jopt.sweep.run``: sample, validate, plan, run chunks segment by segment, collect results.

See :func:`run` for the arguments and :mod:`jopt.sweep.runner` for what is compiled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jopt.sweep import runner as R
from jopt.sweep.checkpoint import Checkpointer, fingerprint, flatten_leaves, unflatten_leaves
from jopt.sweep.results import SweepResult, TrialResult
from jopt.sweep.samplers import sample
from jopt.sweep.space import Hyperparams, LogUniform, SearchSpaceError, Space
from jopt.sweep.task import Task, abstract_hyperparams, check_task

__all__ = ["run"]

_STATUS = {R.RUNNING: "completed", R.DIVERGED: "diverged", R.STOPPED: "stopped"}


def _check_args(steps, eval_every, mode, folds, keep_states, patience, min_delta) -> int:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    eval_every = steps if eval_every is None else eval_every
    if not isinstance(eval_every, int) or eval_every < 1 or steps % eval_every:
        raise ValueError(f"eval_every must be a positive int dividing steps={steps}, got {eval_every!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if folds is not None and (not isinstance(folds, int) or folds < 2):
        raise ValueError(f"folds must be None or an int >= 2, got {folds!r}")
    if keep_states not in ("best", "all", "none"):
        raise ValueError(f"keep_states must be 'best', 'all' or 'none', got {keep_states!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be None or a positive int, got {patience!r}")
    if not min_delta >= 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
    return eval_every


def _configs(space: Space, trials, method: str, seed: int, grid_points: int) -> list[dict]:
    if isinstance(trials, Sequence) and not isinstance(trials, str):
        if not trials:
            raise SearchSpaceError("trials is an empty list of configurations")
        return [space.validate_config(c) for c in trials]
    return sample(space, method, trials, seed=seed, grid_points=grid_points)


class _Records:
    """Host-side per-member evaluation history."""

    def __init__(self, n: int):
        self.objective: list[list[float]] = [[] for _ in range(n)]
        self.train: list[dict[str, list[float]]] = [{} for _ in range(n)]
        self.eval: list[dict[str, list[float]]] = [{} for _ in range(n)]
        self.status = [R.RUNNING] * n
        self.steps = [0] * n
        self.done = [False] * n

    def append(self, m: int, pos: int, out: tuple) -> None:
        objective, train, evals, status, steps = out
        self.objective[m].append(float(objective[pos]))
        for k, v in train.items():
            self.train[m].setdefault(k, []).append(float(v[pos]))
        for k, v in evals.items():
            self.eval[m].setdefault(k, []).append(float(v[pos]))
        self.status[m], self.steps[m] = int(status[pos]), int(steps[pos])

    def fill(self, m: int) -> None:
        """Repeat the last evaluation for a frozen member (what the program would compute)."""
        self.objective[m].append(self.objective[m][-1])
        for k in self.train[m]:
            self.train[m][k].append(math.nan)
        for k in self.eval[m]:
            self.eval[m][k].append(self.eval[m][k][-1])

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("objective", "train", "eval", "status", "steps", "done")}

    @classmethod
    def from_json(cls, d: dict) -> _Records:
        r = cls(len(d["objective"]))
        for k in ("objective", "train", "eval", "status", "steps", "done"):
            setattr(r, k, d[k])
        return r

    def truncate(self, members: Sequence[int], n_segments: int) -> None:
        for m in members:
            self.objective[m] = self.objective[m][:n_segments]
            self.train[m] = {k: v[:n_segments] for k, v in self.train[m].items()}
            self.eval[m] = {k: v[:n_segments] for k, v in self.eval[m].items()}


def _trial_results(
    configs, ids, recs: _Records, k: int, eval_every: int, sign: float, patience
) -> list[TrialResult]:
    out = []
    worst = sign * math.inf
    for t, cfg in enumerate(configs):
        ms = list(range(t * k, (t + 1) * k))
        obj = np.mean([recs.objective[m] for m in ms], axis=0)
        statuses = [recs.status[m] for m in ms]
        if R.DIVERGED in statuses:
            status = "diverged"
        elif all(s == R.STOPPED for s in statuses):
            status = "stopped"
        else:
            status = "completed"
        signed = np.where(np.isnan(obj), np.inf, sign * obj)
        i = int(np.argmin(signed))
        best, final = float(obj[i]), float(obj[-1])
        history: dict[str, list[float]] = {"step": [eval_every * (j + 1) for j in range(len(obj))]}
        history["objective"] = [float(v) for v in obj]
        for prefix, source in (("train/", recs.train), ("eval/", recs.eval)):
            for name in source[ms[0]]:
                with np.errstate(all="ignore"):
                    vals = np.mean([source[m][name] for m in ms], axis=0)
                history[prefix + name] = [float(v) for v in vals]
        objective = worst if status == "diverged" else (best if patience is not None else final)
        folds = [float(recs.objective[m][-1]) for m in ms] if k > 1 else None
        steps = max(recs.steps[m] for m in ms)
        out.append(
            TrialResult(
                ids[t], dict(cfg), status, objective, final, best, history["step"][i], steps, history, folds
            )
        )
    return out


def run(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int | Sequence[Mapping[str, Any]] | None = None,
    *,
    steps: int,
    eval_every: int | None = None,
    method: str = "random",
    seed: int = 0,
    grid_points: int = 5,
    mode: str = "min",
    max_parallel: int | None = None,
    memory_budget: int | str | None = None,
    devices: int | Sequence[Any] | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    folds: int | None = None,
    checkpoint_dir: str | None = None,
    keep_states: str = "best",
    progress: bool = True,
    check_params: bool = True,
    trial_ids: Sequence[int] | None = None,
    _on_segment: Callable[[int], None] | None = None,
) -> SweepResult:
    """Run a vectorized hyperparameter sweep.

    Args:
      task: a :class:`~jopt.sweep.task.Task` (see :func:`~jopt.sweep.task.supervised_task`).
      space: a :class:`~jopt.sweep.space.Space` (or a dict of dimensions).
      trials: number of trials to sample, or an explicit list of configurations;
        ``None`` with ``method="grid"`` for the whole grid.
      steps: training steps per trial.
      eval_every: steps per segment (one ``lax.scan``); must divide ``steps``. Default: ``steps``.
      method: ``"grid"``, ``"random"``, ``"sobol"`` or ``"halton"``.
      seed: seeds the sampler and every trial's keys (trial ``i`` always gets the same keys).
      grid_points: grid values per continuous dimension (grid search).
      mode: ``"min"`` or ``"max"`` the objective.
      max_parallel: most members (trials x folds) run at once.
      memory_budget: bytes (or ``"2GB"``) for trial states and temporaries; sets ``max_parallel``
        from an estimate of one trial's needs (``stats["bytes_per_member"]``).
      devices: device count or list to shard the trial axis over (default: all devices).
      patience, min_delta: early stopping on the evaluation objective (per member).
      folds: k for k-fold cross-validation (``hp["fold"]`` in the task); objective averaged over folds.
      checkpoint_dir: save at segment boundaries and resume from there when rerun.
      keep_states: keep the trained state of the ``"best"`` trial, of ``"all"`` trials, or ``"none"``.
      progress: show a progress bar (tqdm) with the best objective so far.
      check_params: also treat a non-finite training *state* as divergence (not only metrics).
      trial_ids: ids of the configurations (default ``0..n-1``); a trial's random keys depend
        only on ``(seed, id)``, so ``run(task, space, [r.trials[i].hyperparams], trial_ids=[i])``
        reruns trial ``i`` of an earlier sweep alone.

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`.

    Raises:
      SearchSpaceError: invalid space, configuration or task (before any compile).
    """
    t_start = time.perf_counter()
    eval_every = _check_args(steps, eval_every, mode, folds, keep_states, patience, min_delta)
    space = space if isinstance(space, Space) else Space(space)
    configs = _configs(space, trials, method, seed, grid_points)
    check_task(task, space, configs, num_folds=folds)
    ids = list(range(len(configs))) if trial_ids is None else [int(i) for i in trial_ids]
    if len(ids) != len(configs) or len(set(ids)) != len(ids) or min(ids) < 0:
        raise ValueError(f"trial_ids must be {len(configs)} distinct non-negative ints, got {trial_ids!r}")
    k = folds or 1
    sign = 1.0 if mode == "min" else -1.0
    opts = R.EngineOptions(eval_every, sign, patience, float(min_delta), check_params)
    n_seg = steps // eval_every
    traced = {n: space[n].dtype for n in space.traced_names}
    hp_dtypes = abstract_hyperparams(traced, folds)

    member_trial = np.repeat(np.arange(len(configs)), k)
    member_fold = np.tile(np.arange(k), len(configs))
    group_of = [tuple(repr(configs[t][n]) for n in space.static_names) for t in member_trial]
    statics_of = {
        g: {n: configs[t][n] for n in space.static_names} for g, t in zip(group_of, member_trial, strict=True)
    }

    mesh = R.make_mesh(devices)
    n_dev = mesh.devices.size
    caps, member_bytes = {}, {}
    for g, statics in statics_of.items():
        hp_abs = {n: jax.ShapeDtypeStruct((), np.dtype(d)) for n, d in hp_dtypes.items()}
        task_g = _with_statics(task, statics)
        member_bytes[g] = R.estimate_member_bytes(task_g, hp_abs, folds, patience)
        cap = max_parallel
        if memory_budget is not None:
            fit = R.parse_bytes(memory_budget) // max(member_bytes[g], 1)
            if fit < 1:
                raise ValueError(
                    f"memory_budget={memory_budget!r} is too small for one trial "
                    f"(about {member_bytes[g]} bytes)"
                )
            cap = fit if cap is None else min(cap, fit)
        caps[g] = cap
    fewest = min((c for c in caps.values() if c is not None), default=n_dev)
    if fewest < n_dev:  # fewer members at once than devices: shard over as many devices as members
        mesh = R.make_mesh(list(mesh.devices.flat[:fewest]))
        n_dev = fewest
    sizes = {g: R.chunk_size(group_of.count(g), n_dev, caps[g]) for g in statics_of}
    chunks = R.plan_chunks(group_of, sizes)
    init_keys, train_keys = R.member_keys(seed, np.asarray(ids)[member_trial], member_fold)

    recs = _Records(len(member_trial))
    kept: dict[int, Any] = {}
    resume: dict[str, Any] | None = None
    ck = None
    if checkpoint_dir is not None:
        fp = fingerprint(
            configs=configs, ids=ids, steps=steps, eval_every=eval_every, seed=seed, folds=folds, mode=mode,
            patience=patience, min_delta=min_delta, check_params=check_params,
        )  # fmt: skip
        ck = Checkpointer(checkpoint_dir, fp)
        restored = ck.restore()
        if restored is not None:
            meta, arrays = restored
            recs = _Records.from_json(meta["records"])
            kept = {int(m[1:]): flat for m, flat in arrays.get("kept", {}).items()}
            if meta.get("chunk") is not None:
                resume = {"chunk": meta["chunk"], "members": meta["members"], "segment": meta["segment"]}
                resume["carry"] = arrays["carry"]

    programs: dict[tuple, R.GroupPrograms] = {}
    bar = _progress_bar(len(chunks) * n_seg, progress)
    best_seen = [math.inf]

    def checkpoint(chunk_idx, members, segment, carry) -> None:
        if ck is None:
            return
        arrays = {"kept": {f"m{m}": flatten_leaves(s) for m, s in kept.items()}}
        meta = {"records": recs.to_json(), "chunk": chunk_idx, "members": members, "segment": segment}
        if carry is not None:
            arrays["carry"] = flatten_leaves(jax.device_get(carry))
        ck.save_next(meta, arrays)

    for ci, chunk in enumerate(chunks):
        members = [m for m in chunk.members if m is not None]
        if all(recs.done[m] for m in members):
            bar.update(n_seg)
            continue
        g = chunk.group
        if g not in programs:
            programs[g] = R.compile_group(task, statics_of[g], traced, folds, opts, sizes[g], mesh)
        prog = programs[g]
        idx = np.array([m if m is not None else members[0] for m in chunk.members])
        hp_np = {
            n: np.asarray([configs[member_trial[i]][n] for i in idx], np.dtype(d)) for n, d in traced.items()
        }
        if folds:
            hp_np["fold"] = member_fold[idx].astype(np.int32)
        hp = jax.device_put(hp_np, prog.sharding)
        start = 0
        if resume is not None and resume["chunk"] == ci and resume["members"] == list(chunk.members):
            treedef = jax.tree.structure(prog.carry_abstract)
            carry = jax.device_put(unflatten_leaves(treedef, resume["carry"]), prog.sharding)
            start = resume["segment"]
            recs.truncate(members, start)
        else:
            recs.truncate(members, 0)
            status = np.array([R.RUNNING if m is not None else R.INACTIVE for m in chunk.members], np.int32)
            args = (init_keys[idx], train_keys[idx], status)
            carry = prog.init(hp, *jax.device_put(args, prog.sharding))
        bar.update(start)
        for seg in range(start, n_seg):
            carry, out = prog.segment(hp, carry)
            out = jax.device_get(out)
            for pos, m in enumerate(chunk.members):
                if m is not None:
                    recs.append(m, pos, out)
            _update_best(best_seen, out[0], chunk.members, out[3], sign)
            bar.update(1)
            bar.set_postfix(best=f"{sign * best_seen[0]:.4g}", refresh=False)
            frozen = not np.any(np.asarray(out[3])[: len(members)] == R.RUNNING)
            if frozen and seg + 1 < n_seg:
                for _ in range(seg + 1, n_seg):
                    for m in members:
                        recs.fill(m)
                bar.update(n_seg - seg - 1)
                break
            if seg + 1 < n_seg:
                checkpoint(ci, list(chunk.members), seg + 1, carry)
            if _on_segment is not None:
                _on_segment(ci * n_seg + seg)
        _keep_states(kept, carry, chunk.members, patience, keep_states)
        for m in members:
            recs.done[m] = True
        if keep_states == "best":
            _prune(kept, recs, len(configs), k, sign, patience)
        checkpoint(None, None, None, None)
        if _on_segment is not None:
            _on_segment(-1 - ci)
    bar.close()
    if ck is not None:
        ck.close()

    results = _trial_results(configs, ids, recs, k, eval_every, sign, patience)
    states = _collect_states(kept, ids, statics_of, group_of, task, hp_dtypes, folds, k)
    stats = {
        "wall_seconds": time.perf_counter() - t_start,
        "compile_seconds": sum(p.compile_seconds for p in programs.values()),
        "compiles": sum(p.compiled for p in programs.values()),
        "groups": len(statics_of),
        "chunk_sizes": {", ".join(g) or "-": s for g, s in sizes.items()},
        "chunks": len(chunks),
        "devices": n_dev,
        "members": len(member_trial),
        "bytes_per_member": max(member_bytes.values()),
    }
    logs = tuple(n for n in space if isinstance(space[n], LogUniform))
    return SweepResult(results, mode, stats, logs, states, task.params)


def _with_statics(task: Task, statics: Mapping[str, Any]) -> Task:
    def wrap(fn):
        return lambda hp, *a: fn(Hyperparams({**hp, **statics}, hp.num_folds), *a)

    return Task(wrap(task.init), wrap(task.step), wrap(task.evaluate), task.params)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="sweep", unit="seg", leave=True)


def _update_best(best_seen: list[float], objective, members, status, sign: float) -> None:
    for pos, m in enumerate(members):
        if m is not None and status[pos] != R.DIVERGED and np.isfinite(objective[pos]):
            best_seen[0] = min(best_seen[0], sign * float(objective[pos]))


def _keep_states(kept: dict, carry, members, patience, keep_states: str) -> None:
    if keep_states == "none":
        return
    states = jax.device_get(carry.best_state if patience is not None else carry.state)
    for pos, m in enumerate(members):
        if m is not None:
            kept[m] = flatten_leaves(jax.tree.map(lambda a, p=pos: a[p], states))


def _prune(kept: dict, recs: _Records, n_trials: int, k: int, sign: float, patience) -> None:
    """Keep the states of the best finished trial (ranked as in SweepResult) and of unfinished trials."""
    best_t, best_v = None, math.inf
    for t in range(n_trials):
        ms = range(t * k, (t + 1) * k)
        if all(recs.done[m] for m in ms):
            if any(recs.status[m] == R.DIVERGED for m in ms):
                continue
            hist = sign * np.mean([recs.objective[m] for m in ms], axis=0)
            hist = np.where(np.isnan(hist), np.inf, hist)
            v = float(hist.min() if patience is not None else hist[-1])
            if best_t is None or v < best_v:
                best_t, best_v = t, v
    for m in list(kept):
        t = m // k
        if recs.done[m] and t != best_t and all(recs.done[x] for x in range(t * k, (t + 1) * k)):
            del kept[m]


def _collect_states(kept, ids, statics_of, group_of, task, hp_dtypes, folds, k) -> dict:
    if not kept:
        return {}
    treedefs: dict[tuple, Any] = {}
    out: dict[int, list] = {}
    for m in sorted(kept):
        g = group_of[m]
        if g not in treedefs:
            statics = statics_of[g]
            hp_abs = {n: jax.ShapeDtypeStruct((), np.dtype(d)) for n, d in hp_dtypes.items()}
            key = jax.eval_shape(lambda: jax.random.key(0))
            shape = jax.eval_shape(
                lambda h, kk, st=statics: task.init(Hyperparams({**h, **st}, folds), kk), hp_abs, key
            )
            treedefs[g] = jax.tree.structure(shape)
        out.setdefault(ids[m // k], []).append(unflatten_leaves(treedefs[g], kept[m]))
    return {t: (v if k > 1 else v[0]) for t, v in out.items()}
