"""The one execution path of every search method: plan -> run a chunk segment by segment ->
the trial scheduler decides after each segment -> refill -> collect.

:class:`Executor` runs a :class:`~jopt.sweep.samplers.Sampler` (where configurations come from)
and a :class:`~jopt.sweep.scheduler.TrialScheduler` (what happens to each trial after each
segment) under validated :class:`~jopt.sweep.options.Options`::

    while a chunk has running trials, or can get some:
        scheduler.review(paused trials)              -> resume / prune
        fill free slots: queued trials, then sampler.propose(history, free)   (refill in place)
        if the chunk is drained: a new chunk for the next static group (init, gather or transfer)
        checkpoint
        segment: eval_every steps + evaluation for every slot (one compiled program)
        history.record(...) for each trial that ran; final statuses (diverged, stopped, completed)
        scheduler.decide(history, trials)            -> continue / prune / pause / complete / exploit
        finished trials: keep their state if wanted, sampler.tell(history, trial), free the slots

Proposals of another static group wait in that group's queue until the current chunk has no
running trial; then the next group's chunk starts (one chunk on the devices at a time, so the
memory budget holds). Everything a method needs -- folds, early stopping, memory budget,
sharding, checkpoints, progress, kept states, time budget -- is handled here once.

Checkpoints (``checkpoint_dir``) are written before every segment: the history, the sampler's and
the scheduler's ``state_dict``, the queues, the chunk's slots and loop state, states kept for the
results and states of paused trials held in host memory. A rerun of the same search resumes at
the last complete one and ends with the same results as an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jopt.sweep import programs as P
from jopt.sweep.checkpoint import Checkpointer, fingerprint, flatten_leaves, unflatten_leaves
from jopt.sweep.chunk import Chunk, host_rows
from jopt.sweep.history import History
from jopt.sweep.options import Options
from jopt.sweep.plan import Plan
from jopt.sweep.results import SweepResult
from jopt.sweep.samplers import Proposal, Sampler
from jopt.sweep.scheduler import COMPLETE, PAUSE, PRUNE, Exploit, TrialScheduler
from jopt.sweep.space import Choice, LogUniform, Space
from jopt.sweep.task import Task
from jopt.sweep.transfer import check_host, restore_keys

__all__ = ["Executor", "describe_space"]

_COUNTERS = ("boundary", "segments", "slot_steps", "trial_steps", "refills", "chunks", "members", "exploits")


def describe_space(space: Space) -> list:
    """A process-independent description of a space (for fingerprints)."""
    out = []
    for name, dim in space.items():
        if isinstance(dim, Choice):
            vals = [getattr(v, "__qualname__", None) or repr(v) for v in dim.values]
            out.append([name, "choice", vals, dim.static])
        else:
            out.append([name, type(dim).__name__, repr(dim)])
    return out


class Executor:
    """Runs one search; see the module docstring. ``parallel``: trials a chunk is sized for when
    neither the scheduler nor the sampler says; ``method``: JSON-ready description of the method
    (part of the checkpoint fingerprint); ``hooks``: ``{"segment": fn(boundary)}`` (tests)."""

    def __init__(
        self,
        task: Task,
        space: Space,
        sampler: Sampler,
        scheduler: TrialScheduler,
        options: Options,
        *,
        parallel: int | None = None,
        method: Mapping[str, Any] | None = None,
        hooks: Mapping[str, Callable] | None = None,
        single_chunk: bool = False,
    ):
        self.task, self.space, self.sampler, self.scheduler, self.options = (
            task, space, sampler, scheduler, options,
        )  # fmt: skip
        self.plan = Plan(task, space, options, getattr(sampler, "configs", ()))
        self.history = History(options.mode, options.constraints)
        self.k = options.members_per_trial
        self.parallel, self.method, self.hooks = parallel, dict(method or {}), dict(hooks or {})
        self.single_chunk = single_chunk
        self.queues: dict[tuple, list[int]] = {}
        self.parked: dict[int, list[P.Carry]] = {}  # paused trials' loop states in host memory
        self.kept: dict[int, list[Any]] = {}  # trained states kept for the results
        self.best_kept: int | None = None
        self.sticky: dict[tuple, int] = {}
        self.chunk: Chunk | None = None
        self.next_id = 0
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.cut = False
        self._t0, self._last_seconds = time.perf_counter(), 0.0
        self._ck: Checkpointer | None = None
        self._bar = None
        self._best: int | None = None  # best finished trial (progress bar)
        self._key_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ================================================================== the loop
    def run(self) -> SweepResult:
        from tqdm.auto import tqdm

        quiet = not self.options.progress or jax.process_index() != 0  # one bar per job
        self._bar = tqdm(total=self.sampler.total, disable=quiet, desc="sweep", unit="trial", leave=True)
        try:
            done = self._open_checkpoint()
            while not done and self._prepare():
                self._save(False)
                if "segment" in self.hooks:
                    self.hooks["segment"](self.counters["boundary"])
                t, compiling = time.perf_counter(), self._compile_seconds()
                self._segment()  # the next one's duration, for the timeout: without compile time
                self._last_seconds = time.perf_counter() - t - (self._compile_seconds() - compiling)
                self.counters["boundary"] += 1
            if not done:
                self._wrap_up()
                self._save(True)
        finally:
            self._bar.close()
            if self._ck is not None:
                self._ck.close()
        result = self._result()
        self._notify("on_end", result)
        return result

    def _notify(self, method: str, *args: Any) -> None:
        """Call ``method`` of every callback that has it (on process 0 only)."""
        if self.options.callbacks and jax.process_index() == 0:
            from jopt.sweep.callbacks import notify

            notify(self.options.callbacks, method, *args)

    def _prepare(self) -> bool:
        """Make the current chunk ready for a segment; False when the search is over."""
        while True:
            if self._timed_out():
                self._cut_all()
                return False
            self._review()
            ch = self.chunk
            if ch is not None and self._running(ch):
                self._fill(ch)
                if "update" in self.hooks and ch.pending:
                    before, src = ch.host(), ch._src.copy()
                    ch.flush()
                    self.hooks["update"](before, ch.host(), src, {n: v.copy() for n, v in ch.hp.items()})
                ch.flush()
                return True
            if not self._next_chunk():
                return False

    def _compile_seconds(self) -> float:
        return sum(p.compile_seconds for p in self.plan._programs.values())

    def _running(self, ch: Chunk) -> list[int]:
        return [t for t in ch.trials() if self.history[t].status == "running"]

    def _timed_out(self) -> bool:
        limit = self.options.timeout
        if limit is None:
            return False
        out = time.perf_counter() - self._t0 + self._last_seconds > limit
        if jax.process_count() > 1:  # every process must take the same decision: process 0's
            from jax.experimental import multihost_utils

            out = bool(multihost_utils.broadcast_one_to_all(np.bool_(out)))
        return out

    # ================================================================== proposals and queues
    def _ask(self, k: int) -> list[tuple[int, tuple]]:
        if k <= 0 or self.cut:
            return []
        out = []
        for p in self.sampler.propose(self.history, int(k)):
            p = p if isinstance(p, Proposal) else Proposal(p)
            config = self.space.validate_config(p.config)
            trial = self.next_id if p.trial is None else int(p.trial)
            self.next_id = max(self.next_id, trial + 1)
            group = self.plan.admit(config)
            self.history.add(trial, config, group)
            self.queues.setdefault(group, []).append(trial)
            out.append((trial, group))
        if out:
            self._derive_keys([t for t, _ in out])
        return out

    def _foreign(self, group: tuple) -> bool:
        return any(q for g, q in self.queues.items() if g != group)

    def _keys(self, trial: int):
        """Init and training keys of a trial's members (derived in bulk when proposed)."""
        if trial not in self._key_cache:
            self._derive_keys([trial])
        return self._key_cache.pop(trial)

    def _derive_keys(self, trials: list[int]) -> None:
        k = self.k
        ids, folds = np.repeat(np.asarray(trials), k), np.tile(np.arange(k), len(trials))
        init, train = P.member_keys(self.options.seed, ids, folds)
        for i, t in enumerate(trials):
            self._key_cache[t] = (init[i * k : (i + 1) * k], train[i * k : (i + 1) * k])

    def _fill(self, ch: Chunk) -> None:
        """Refill free slots of a running chunk: queued trials of its group, then proposals."""
        while True:
            free = len(ch.free()) // self.k
            if free == 0:
                return
            queue = self.queues.get(ch.group, [])
            fresh = [t for t in queue if t not in self.parked]
            if fresh:
                for t in fresh[:free]:
                    queue.remove(t)
                    ch.place(t, self.history[t].config, *self._keys(t))
                    self.history[t].status = "running"
                    self.counters["refills"] += 1
                    self.counters["members"] += self.k
                continue
            if self._foreign(ch.group):
                return
            got = self._ask(free)
            if not any(g == ch.group for _, g in got):
                return

    def _first_ask(self) -> int:
        if self.parallel is not None:
            return self.parallel
        if self.sampler.total is not None:
            return self.sampler.total
        cap = self.options.max_parallel
        return max(1, (cap or self.plan.trial_shards) // self.k)

    def _chunk_trials(self, group: tuple) -> int:
        waiting = len(self.queues.get(group, []))
        n = self.scheduler.chunk_trials(self.history, group, waiting)
        if n is None:
            if group not in self.sticky:
                self.sticky[group] = self.sampler.group_size(group) or self.parallel or waiting
            n = self.sticky[group]
        return max(1, int(n))

    def _next_chunk(self) -> bool:
        """Replace a drained chunk by one for the next group with queued trials; False if none."""
        old = self.chunk
        if not any(self.queues.values()):
            self._ask(old.size // self.k if old is not None else self._first_ask())
        group = old.group if old is not None and self.queues.get(old.group) else None
        group = group or next((g for g, q in self.queues.items() if q), None)
        if group is None:
            self._retire(old, set())
            self.chunk = None
            return False
        size = self.plan.size(group, self._chunk_trials(group) * self.k)
        queue, take = self.queues[group], []
        while True:
            while queue and (len(take) + 1) * self.k <= size:
                take.append(queue.pop(0))
            room = (size - len(take) * self.k) // self.k
            if not room or queue or self._foreign(group) or not self._ask(room):
                break
        if self.single_chunk and queue:
            raise ValueError(
                f"all {len(take) + len(queue)} trials must train in one chunk, but one holds "
                f"{size // self.k} (see max_parallel and memory_budget)"
            )
        entries = [(t, self.history[t].config, self._origin(t, old)) for t in take]
        self._retire(old, set(take))
        self.chunk = Chunk.create(self.plan, group, size, entries, source=old)
        for t in take:
            self.history[t].status = "running"
        self.counters["chunks"] += 1
        self.counters["members"] += sum(self.k for _, _, o in entries if o[0] == "fresh")
        return True

    def _origin(self, trial: int, old: Chunk | None) -> tuple:
        if trial in self.parked:
            return ("host", self.parked.pop(trial))
        if old is not None and trial in old.trials():
            return ("slots", old.positions(trial))
        return ("fresh", *self._keys(trial))

    def _retire(self, old: Chunk | None, moving: set[int]) -> None:
        """Move the paused trials of a chunk being dropped (and not moving along) to host memory."""
        if old is None:
            return
        for t in old.trials():
            if t not in moving and self.history[t].status in ("paused", "queued"):
                self.parked[t] = old.rows(t)

    # ================================================================== between segments
    def _review(self) -> None:
        paused = self.history.with_status("paused")
        if not paused:
            return
        free = len(self.chunk.free()) // self.k if self.chunk is not None else 0
        resume, prune = self.scheduler.review(self.history, paused, free)
        for t in prune:
            self._finish(t, "pruned")
        in_chunk = set(self.chunk.trials()) if self.chunk is not None else set()
        running = self.chunk is not None and self._running(self.chunk)
        for t in resume:
            if t in in_chunk and running:
                self.history[t].status = "running"
                self.chunk.set_status(t, P.RUNNING)
            else:
                self.history[t].status = "queued"
                self.queues.setdefault(self.history[t].group, []).insert(0, t)

    def _segment(self) -> None:
        ch, h, E = self.chunk, self.history, self.options.eval_every
        ran = self._running(ch)
        out = ch.segment()
        self.counters["segments"] += 1
        self.counters["slot_steps"] += ch.size * E
        self.counters["trial_steps"] += E * self.k * len(ran)
        for t in ran:
            pos = ch.positions(t)
            rec = h[t]
            h.record(t, rec.age + E, out.objective[pos], {n: v[pos] for n, v in out.train.items()},
                     {n: v[pos] for n, v in out.eval.items()}, out.steps[pos])  # fmt: skip
            codes = np.asarray(out.status)[pos]
            if (codes == P.DIVERGED).any():
                rec.status = "diverged"
            elif (codes == P.STOPPED).all():
                rec.status = "stopped"
            elif rec.age >= self.options.steps:
                rec.status = "completed"
        self._notify("on_segment", self.counters["boundary"], h, list(ran))
        decisions = self.scheduler.decide(h, ran) or {}
        for t in ran:
            d, rec = decisions.get(t), h[t]
            if isinstance(d, Exploit):
                config = self.space.validate_config(d.config)
                ch.exploit(t, d.donor, config)
                rec.config, rec.status = config, "running"
                rec.steps_trained = h[d.donor].steps_trained
                self.counters["exploits"] += 1
            elif rec.status != "running":
                self._finish(t, rec.status)
            elif d == PRUNE:
                self._finish(t, "pruned")
            elif d == COMPLETE:
                self._finish(t, "completed")
            elif d == PAUSE:
                rec.status = "paused"
                ch.set_status(t, P.INACTIVE)
        if self._best is not None:
            util = self.counters["trial_steps"] / max(self.counters["slot_steps"], 1)
            best = h.result(self._best).objective
            self._bar.set_postfix(best=f"{best:.4g}", util=f"{util:.2f}", refresh=False)

    def _finish(self, trial: int, status: str) -> None:
        rec = self.history[trial]
        rec.status = status
        self._keep(trial)
        if self.chunk is not None and trial in self.chunk.trials():
            self.chunk.vacate(trial)
        self.parked.pop(trial, None)
        queue = self.queues.get(rec.group, [])
        if trial in queue:
            queue.remove(trial)
        self.sampler.tell(self.history, trial)
        self._notify("on_trial_end", self.history, trial)
        if rec.step and (self._best is None or self.history.rank(trial) < self.history.rank(self._best)):
            self._best = trial
        self._bar.update(1)

    def _keep(self, trial: int) -> None:
        mode, h = self.options.keep_states, self.history
        if mode == "none" or not h[trial].step:
            return
        if mode == "best":
            if h[trial].status == "diverged":
                return
            pat = self.options.patience
            if self.best_kept is not None and h.rank(self.best_kept, pat) <= h.rank(trial, pat):
                return
        if trial in self.parked:
            rows = self.parked[trial]
        elif self.chunk is not None and trial in self.chunk.trials():
            rows = self.chunk.rows(trial)
        else:
            return
        use_best = self.options.patience is not None
        self.kept[trial] = [r.best_state if use_best else r.state for r in rows]
        if mode == "best":
            self.kept.pop(self.best_kept, None)
            self.best_kept = trial

    def _cut_all(self) -> None:
        """The time budget is spent: prune every unfinished trial, ask for no more."""
        self.cut = True
        for t in self.history.with_status("running", "paused", "queued"):
            self._finish(t, "pruned")
        self.chunk = None

    def _wrap_up(self) -> None:
        for t in self.history.with_status("paused", "queued", "running"):
            self._finish(t, "pruned")
        self.chunk = None

    # ================================================================== results
    def _result(self) -> SweepResult:
        h, k = self.history, self.k
        trials = h.results(self.options.patience)
        if self.space.conditions:  # tables and exports show each trial's active hyperparameters
            for t in trials:
                t.hyperparams = self.space.active_config(t.hyperparams)
        states = {}
        for t, rows in self.kept.items():
            abstract = self.plan.abstract_carry(h[t].group).state
            rows = [restore_keys(r, abstract) for r in rows]
            states[t] = rows if k > 1 else rows[0]
        c = self.counters
        stats = dict(self.plan.stats(), wall_seconds=time.perf_counter() - self._t0)
        stats.update(
            members=c["members"], chunks=c["chunks"], segments=c["segments"], refills=c["refills"],
            exploits=c["exploits"], trial_steps=c["trial_steps"], slot_steps=c["slot_steps"],
            utilization=c["trial_steps"] / max(c["slot_steps"], 1), timed_out=self.cut,
        )  # fmt: skip
        logs = tuple(n for n in self.space if isinstance(self.space[n], LogUniform))
        return SweepResult(
            trials, self.options.mode, stats, logs, states, self.task.params, self.options.directions
        )

    # ================================================================== checkpoints
    def _fingerprint(self) -> dict[str, str]:
        o = self.options
        parts = {n: getattr(o, n) for n in ("steps", "eval_every", "mode", "seed", "patience", "min_delta",
                                             "folds", "check_params", "directions")}  # fmt: skip
        return fingerprint(options=parts, space=describe_space(self.space), method=self.method,
                           task=self.plan.task_identity())  # fmt: skip

    def _open_checkpoint(self) -> bool:
        """Open ``checkpoint_dir`` and restore the newest usable checkpoint; True if the search had
        ended."""
        if self.options.checkpoint_dir is None:
            return False
        self._ck = Checkpointer(self.options.checkpoint_dir, self._fingerprint())
        meta = self._ck.restore(self._load)
        if meta is None:
            return False
        for t in self.sampler.abandoned(self.history):
            self._forget(t)
        return bool(meta["done"])

    def _forget(self, trial: int) -> None:
        if self.chunk is not None and trial in self.chunk.trials():
            self.chunk.vacate(trial)
            if not self._running(self.chunk):
                self.chunk = None
        self.parked.pop(trial, None)
        self.kept.pop(trial, None)
        if self.best_kept == trial:
            self.best_kept = None
        for q in self.queues.values():
            if trial in q:
                q.remove(trial)
        self.history.remove(trial)

    def _save(self, done: bool) -> None:
        if self._ck is None:
            return
        ch = self.chunk
        meta = {
            "done": done, "counters": self.counters, "next_id": self.next_id, "best_kept": self.best_kept,
            "history": self.history.to_json(self.space), "sampler": self.sampler.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not self.sampler else None,
            "queues": [[list(g), q] for g, q in self.queues.items()],
            "sticky": [[list(g), n] for g, n in self.sticky.items()],
            "kept": sorted(self.kept), "parked": sorted(self.parked), "chunk": None,
        }  # fmt: skip
        arrays: dict[str, Any] = {
            "kept": {f"t{t}": flatten_leaves(v) for t, v in self.kept.items()},
            "parked": {f"t{t}": flatten_leaves(v) for t, v in self.parked.items()},
        }
        if ch is not None:
            meta["chunk"] = {"group": list(ch.group), "size": ch.size, "slots": ch.slots,
                             "status": ch.status.tolist()}  # fmt: skip
            arrays["carry"] = flatten_leaves(ch.host())
        json.dumps(meta)  # fail here, not inside orbax, on a value that is not JSON-ready
        self._ck.save_next(meta, arrays)

    def _load(self, meta: dict, arrays: dict) -> None:
        """Take over a checkpoint's records (raises on inconsistent ones; see Checkpointer.restore)."""
        self.kept, self.parked, self.chunk = {}, {}, None
        self.history = History.from_json(
            self.space, meta["history"], self.options.mode, self.options.constraints
        )
        for t in self.history:
            self.plan.admit(self.history[t].config)
        self.sampler.load_state_dict(meta["sampler"])
        if meta["scheduler"] is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        self.counters.update(meta["counters"])
        self.next_id, self.best_kept = int(meta["next_id"]), meta["best_kept"]
        self.queues = {tuple(g): list(q) for g, q in meta["queues"]}
        self.sticky = {tuple(g): int(n) for g, n in meta["sticky"]}
        known = set(self.history)
        listed = [t for q in self.queues.values() for t in q] + list(meta["kept"]) + list(meta["parked"])
        if not set(listed) <= known:
            raise ValueError(f"queued, kept or parked trials {sorted(set(listed) - known)} have no record")
        for name, target in (("kept", self.kept), ("parked", self.parked)):
            for t in meta[name]:
                abstract = self.plan.abstract_carry(self.history[t].group)
                abstract = self.k * [abstract if name == "parked" else abstract.state]
                target[int(t)] = unflatten_leaves(jax.tree.structure(abstract), arrays[name][f"t{t}"])
                check_host(target[int(t)], abstract, f"{name} state of trial {t}")
        c = meta["chunk"]
        if c is not None:
            group, size = tuple(c["group"]), int(c["size"])
            leaves = [np.asarray(arrays["carry"][k]) for k in sorted(arrays["carry"])]
            slots = [None if m is None else (int(m[0]), int(m[1])) for m in c["slots"]]
            status = np.asarray(c["status"])
            if len(slots) != size or status.shape != (size,) or not {m[0] for m in slots if m} <= known:
                raise ValueError(
                    f"the chunk's {size} slots, {len(slots)} members and {status.shape} statuses disagree"
                )
            self.chunk = self._restore_chunk(group, size, slots, status, leaves)

    def _restore_chunk(self, group, size, slots, status, leaves) -> Chunk:
        hp = {n: np.zeros(size, np.dtype(d)) for n, d in self.plan.traced.items()}
        if self.options.folds is not None:
            hp["fold"] = np.zeros(size, np.int32)
        first = next(m for m in slots if m is not None)
        for p, m in enumerate(slots):
            config = self.history[(m or first)[0]].config
            for n in self.plan.traced:
                hp[n][p] = config[n]
            if m is not None and "fold" in hp:
                hp["fold"][p] = m[1]
        abstract = self.plan.abstract_carry(group)
        host = jax.tree.unflatten(jax.tree.structure(abstract), leaves)
        batched = jax.tree.map(lambda a: jax.ShapeDtypeStruct((size, *a.shape), a.dtype), abstract)
        check_host(host, batched, "the chunk's loop state")
        if size % self.plan.trial_shards == 0:
            return Chunk.restore(self.plan, group, size, slots, status, jax.tree.leaves(host), hp)
        # another device count: repack the occupied slots into a chunk of a valid size
        trials = list(dict.fromkeys(m[0] for m in slots if m is not None))
        positions = {t: [p for f, p in sorted((m[1], p) for p, m in enumerate(slots) if m and m[0] == t)]
                     for t in trials}  # fmt: skip
        entries = [(t, self.history[t].config, ("host", host_rows(host, positions[t]))) for t in trials]
        new = Chunk.create(self.plan, group, self.plan.size(group, len(trials) * self.k), entries)
        for t in trials:
            if self.history[t].status != "running":
                new.set_status(t, P.INACTIVE)
        return new
