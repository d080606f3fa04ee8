"""Slots that refill inside a compiled chunk: no recompile however many refills, a refilled slot's
trial equals that trial run alone, utilization, and the schedulers built on it -- the median
stopping rule and ASHA against plain transcriptions of their rules, Optuna's pruners.

Float tolerance: a trial in a chunk and the same trial alone agree to rtol=1e-5, atol=1e-6
(batched and unbatched float32 matmuls round differently); within one chunk layout everything is
bit-exact, so a trial refilled into a slot equals the same trial started in that slot by ``init``.
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest

from jopt import sweep
from jopt.sweep.history import History
from jopt.sweep.programs import member_keys
from tests.sweep_helpers import SPACE, CompileCounter, make_task

optuna.logging.set_verbosity(optuna.logging.WARNING)
RTOL, ATOL = 1e-5, 1e-6


class PruneAt(sweep.TrialScheduler):
    """Prune the given trials when they reach ``step``."""

    def __init__(self, trials, step):
        self.trials, self.step = set(trials), step

    def decide(self, history, trials):
        return {t: sweep.PRUNE for t in trials if t in self.trials and history[t].age == self.step}


def _hist(r, t):
    return next(x for x in r.trials if x.trial == t).history


@pytest.fixture(scope="module")
def refilled():
    """12 trials in a chunk of 4 (4 devices); the even ones are pruned after 2 of 8 steps."""
    member_keys(0, np.arange(3), np.zeros(3))  # warm the key derivation
    task = make_task()  # fresh: its compiles are counted
    configs = sweep.sample(SPACE, "sobol", 12, seed=0)
    kw = dict(steps=8, eval_every=2, devices=4, max_parallel=4, progress=False, keep_states="all")
    with CompileCounter() as counter:
        r = sweep.run(task, SPACE, configs, scheduler=PruneAt(range(0, 12, 2), 2), **kw)
    return r, counter.count, task, configs, kw


def test_refills_do_not_recompile(refilled):
    r, count, task, configs, kw = refilled
    assert r.stats["refills"] >= 6 and r.stats["chunk_sizes"] == {"-": [4]}
    assert r.stats["compiles"] == 3 and count == 3  # init, segment, update: once each
    with CompileCounter() as counter:  # all but trial 3 pruned early: refills, nothing compiles
        more = sweep.run(task, SPACE, configs, scheduler=PruneAt(set(range(12)) - {3}, 2), **kw)
    assert more.stats["refills"] == 8 and counter.count == 0
    assert [t.status for t in more.trials].count("pruned") == 11 and more.trials[3].steps_trained == 8


def test_refilled_trial_equals_the_trial_alone(refilled):
    r, _, task, configs, kw = refilled
    pruned = [t for t in r.trials if t.status == "pruned"]
    assert [t.trial for t in pruned] == list(range(0, 12, 2)) and all(t.steps_trained == 2 for t in pruned)
    assert all(t.status == "completed" and t.steps_trained == 8 for t in r.trials if t.trial % 2)
    # trials 4.. entered slots freed by pruned trials (the first chunk held trials 0-3)
    plain = sweep.run(task, SPACE, configs, **kw)  # the same chunk layout, no refills
    for t in (5, 7, 9, 11):
        alone = sweep.run(task, SPACE, [configs[t]], trial_ids=[t], **dict(kw, devices=1))
        for name in ("objective", "train/loss", "eval/accuracy"):
            np.testing.assert_allclose(_hist(r, t)[name], alone.trials[0].history[name], rtol=RTOL, atol=ATOL)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), r.state(t),
                     alone.state(t))  # fmt: skip
        # refilled by the update program vs started by init in the same chunk size: bit-exact
        np.testing.assert_array_equal(_hist(r, t)["objective"], _hist(plain, t)["objective"])
        jax.tree.map(np.testing.assert_array_equal, r.state(t), plain.state(t))


def test_utilization_counts_trial_steps_over_slot_steps(refilled):
    r, *_ = refilled
    steps = sum(t.steps_trained for t in r.trials)
    assert r.stats["trial_steps"] == steps == 6 * 2 + 6 * 8
    assert r.stats["slot_steps"] == 4 * 2 * r.stats["segments"]
    assert r.stats["utilization"] == pytest.approx(steps / r.stats["slot_steps"])
    # refills keep the chunk full until the trials run out: 9 segments, where 60 steps need at least 8
    # (without refills the pruned trials' slots would idle: 3 chunks x 4 segments = 12)
    assert r.stats["segments"] == 9 and r.stats["utilization"] == pytest.approx(60 / 72)


def test_diverged_slot_is_refilled_and_neighbours_unchanged():
    task = make_task()
    configs = sweep.sample(SPACE, "sobol", 6, seed=3)
    bad = list(configs)
    bad[1] = {"learning_rate": 1e30, "weight_decay": 1e-2, "b1": 0.9}  # diverges in its first segment
    kw = dict(steps=6, eval_every=2, devices=2, max_parallel=2, progress=False)
    r = sweep.run(task, SPACE, bad, **kw)
    assert r.trials[1].status == "diverged" and r.stats["refills"] >= 1
    clean = sweep.run(task, SPACE, configs, **kw)
    for t in (0, 2, 3, 4, 5):  # trial 2 was refilled into the diverged trial's slot
        np.testing.assert_allclose(
            _hist(r, t)["objective"], _hist(clean, t)["objective"], rtol=RTOL, atol=ATOL
        )


# ----------------------------------------------------------------------------- median stopping


def median_rule(done, trial, mode="min", min_trials=3, grace=0):
    """NumPy transcription of Golovin et al. (2017): prune if the best value so far is worse than
    the median of the completed trials' running means up to the same step."""
    steps, values = trial
    s = steps[-1]
    if s < grace:
        return False
    sign = 1.0 if mode == "min" else -1.0
    means = [np.mean([sign * v for st, v in zip(*d, strict=True) if st <= s]) for d in done]
    means = [m for m in means if np.isfinite(m)] + [m for m in means if not np.isfinite(m)]
    if len(means) < min_trials:
        return False
    return bool(min(sign * v for v in values) > statistics.median(means))


@pytest.mark.parametrize("mode", ["min", "max"])
def test_median_stopping_matches_the_rule(mode):
    rng = np.random.default_rng(0)
    for case in range(40):
        h = History(mode)
        done = []
        for t in range(int(rng.integers(0, 6))):
            n = int(rng.integers(1, 6))
            steps, vals = [10 * (i + 1) for i in range(n)], list(rng.normal(size=n))
            h.add(t, {}, ())
            for s, v in zip(steps, vals, strict=True):
                h.record(t, s, [v], {}, {}, [s])
            h[t].status = "completed"
            done.append((steps, vals))
        t = 99
        n = int(rng.integers(1, 5))
        steps, vals = [10 * (i + 1) for i in range(n)], list(rng.normal(size=n))
        h.add(t, {}, ())
        for s, v in zip(steps, vals, strict=True):
            h.record(t, s, [v], {}, {}, [s])
        h[t].status = "running"
        min_trials, grace = int(rng.integers(1, 4)), int(rng.choice([0, 20]))
        got = sweep.MedianStopping(min_trials=min_trials, grace_steps=grace).decide(h, [t])
        want = median_rule(done, (steps, vals), mode, min_trials, grace)
        assert (got.get(t) == sweep.PRUNE) == want, case


# ----------------------------------------------------------------------------- ASHA


def asha_rule(arrivals, budgets, eta, mode="min"):
    """Plain transcription of ASHA's stopping rule: ``arrivals`` is a list of boundaries, each a
    list of ``(trial, step, value)`` reaching a rung then; returns the set of pruned trials."""
    sign = 1.0 if mode == "min" else -1.0
    recorded = {b: [] for b in budgets[:-1]}
    pruned = set()
    for boundary in arrivals:
        for _, step, value in boundary:
            if step in recorded:
                recorded[step].append(sign * value)
        for trial, step, value in boundary:
            if step in recorded:
                best = sorted(recorded[step])
                m = max(1, len(best) // eta)
                if sign * value > best[m - 1]:
                    pruned.add(trial)
    return pruned


def _admission_replay(results, slots: int, budgets: list[int]) -> list[list[tuple]]:
    """The boundaries at which each trial reached each rung, replaying the engine's admission:
    free slots take the next trial ids in order before every segment; a trial leaves its slot at
    the boundary where it ends (one evaluation per step here)."""
    rec = {t.trial: t for t in results.trials}
    queue, held, age, events = sorted(rec), [None] * slots, {}, []
    while queue or any(t is not None for t in held):
        for i in range(slots):
            if held[i] is None and queue:
                held[i] = queue.pop(0)
                age[held[i]] = 0
        boundary = []
        for i, t in enumerate(held):
            if t is None:
                continue
            age[t] += 1
            if age[t] in budgets:
                boundary.append((t, age[t], rec[t].history["objective"][age[t] - 1]))
            if age[t] >= rec[t].steps_trained:
                held[i] = None
        events.append(boundary)
    return events


def _curve_task() -> sweep.Task:
    def evaluate(hp, w):  # a known ordering at every budget: closer to x = 0.3 is better
        return (hp["x"] - 0.3) ** 2 + 1.0 / (1.0 + w)

    return sweep.Task(lambda hp, k: jnp.float32(0.0), lambda hp, w, k: (w + 1.0, {"loss": w}), evaluate)


def test_asha_prunes_exactly_by_the_rule_and_keeps_the_chunk_full():
    space = sweep.Space(x=sweep.uniform(0.0, 1.0))
    budgets = [1, 3, 9]
    member_keys(0, np.arange(3), np.zeros(3))  # warm the key derivation
    with CompileCounter() as counter:
        r = sweep.asha(
            _curve_task(), space, 40, budgets=budgets, eta=3, parallel=4, devices=2, progress=False
        )
    assert r.stats["compiles"] == 3 and counter.count == 3 and r.stats["refills"] == 40 - 4
    events = _admission_replay(r, 4, budgets)
    assert asha_rule(events, budgets, 3) == {t.trial for t in r.trials if t.status == "pruned"}
    assert all(t.rung == budgets.index(t.steps_trained) for t in r.trials)
    assert {t.status for t in r.trials} == {"pruned", "completed"}
    # with a time budget and no trial limit the chunk never runs short of trials
    timed = sweep.asha(_curve_task(), space, None, budgets=budgets, eta=3, parallel=4, devices=2, timeout=2.0,
                       progress=False)  # fmt: skip
    assert timed.stats["timed_out"] and timed.stats["utilization"] == 1.0
    assert timed.stats["wall_seconds"] < 2.0 + 1.0


# ----------------------------------------------------------------------------- Optuna pruners


def test_optuna_pruner_prunes_through_the_engine(tmp_path):
    task = make_task()
    url = f"sqlite:///{tmp_path / 'p.db'}"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    r = sweep.optuna_search(task, SPACE, 12, steps=8, eval_every=2, batch=3, sampler="random", pruner=pruner,
                            storage=url, study_name="p", devices=1, progress=False)  # fmt: skip
    pruned = [t for t in r.trials if t.status == "pruned"]
    assert pruned and r.stats["refills"] >= 1 and r.stats["compiles"] == 3  # pruned slots refilled
    assert all(t.steps_trained < 8 for t in pruned) and r.stats["study_trials"] == 12
    study = optuna.load_study(study_name="p", storage=url)
    states = {t.number: t.state.name for t in study.trials}
    assert {t.trial for t in pruned} == {n for n, s in states.items() if s == "PRUNED"}
    for t in study.trials:  # every segment reported as an intermediate value, at the trial's age
        res = next(x for x in r.trials if x.trial == t.number)
        assert t.intermediate_values == dict(zip(res.history["step"], res.history["objective"], strict=True))
