"""Optuna adapter: distributions, samplers driving the engine, determinism, equality with
``sweep.run``, bounded compiles, divergence, resume, stale and interrupted trials, and the
bookkeeping of workers sharing a study, in one process: waiting for other workers' running
trials, trials failed by another worker, doubly queued retries, the study-creation race.
(Separate worker processes: tests/test_optuna_workers.py.)

Tiny softmax-regression task (tests/sweep_helpers.py), 6 steps in 2 segments. Equality with
``sweep.run``: the same configurations and trial ids in the same chunk layout are bit-exact.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from jopt import sweep
from jopt.sweep import optuna_adapter as oa
from jopt.sweep import optuna_study as ost
from jopt.sweep.chunk import Chunk
from jopt.sweep.optuna_adapter import config_from_params, optuna_search, to_distributions
from jopt.sweep.programs import member_keys
from tests.sweep_helpers import SPACE, CompileCounter, make_task

STEPS, EVERY = 6, 3
KW = dict(steps=STEPS, eval_every=EVERY, progress=False)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def task():
    return make_task()


def values(study):
    return {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}


def hist(result):
    return np.array([t.history["objective"] for t in result.trials])


# ----------------------------------------------------------------------------- space mapping


def test_space_to_distributions_and_back():
    space = sweep.Space(
        lr=sweep.loguniform(1e-4, 1e-1),
        b1=sweep.uniform(0.5, 0.9),
        layers=sweep.integer(1, 4),
        width=sweep.integer(8, 64, log=True),
        momentum=sweep.choice([0.0, 0.9]),
        nesterov=sweep.choice([True, False]),
        opt=sweep.choice(["adam", "sgd"], static=True),
        act=sweep.choice([np.tanh, np.sin], static=True),
        batch_size=32,
    )
    d = to_distributions(space)
    assert d == {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "b1": FloatDistribution(0.5, 0.9),
        "layers": IntDistribution(1, 4),
        "width": IntDistribution(8, 64, log=True),
        "momentum": CategoricalDistribution((0.0, 0.9)),
        "nesterov": CategoricalDistribution((True, False)),
        "opt": CategoricalDistribution(("adam", "sgd")),
        "act": CategoricalDistribution(("numpy.tanh", "numpy.sin")),
    }
    params = {"lr": 0.01, "b1": 0.7, "layers": 3, "width": 16, "momentum": 0.9, "nesterov": False}
    params |= {"opt": "sgd", "act": "numpy.sin"}
    cfg = config_from_params(space, params)
    assert cfg == dict(params, act=np.sin, batch_size=32)
    assert cfg["act"] is np.sin and type(cfg["layers"]) is int and cfg["nesterov"] is False
    with pytest.raises(ValueError, match="not one of the choices"):
        config_from_params(space, dict(params, opt="rmsprop"))
    with pytest.raises(ValueError, match="equal labels"):
        to_distributions(sweep.Space(f=sweep.choice([lambda x: x, lambda x: -x], static=True)))


def test_module_imports_without_optuna(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    spec = importlib.util.spec_from_file_location("_oa_copy", Path(oa.__file__))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no optuna import at module level
    with pytest.raises(ImportError, match=r"jopt\[optuna\]"):
        module.optuna_search(make_task(), SPACE, 2, steps=2, progress=False)


# ----------------------------------------------------------------------------- arguments


def test_bad_arguments_raise_before_any_compile_or_study_change(task):
    study = optuna.create_study()
    bad = [
        (dict(batch=0), "batch must be a positive int"),
        (dict(max_parallel=0), "max_parallel must be None or a positive int"),
        (dict(pruner=optuna.pruners.MedianPruner(), report_intermediate=False), "intermediate"),
        (dict(pruner="median"), "BasePruner"),
        (dict(sampler="bayes"), r"\['tpe', 'cmaes', 'qmc', 'random', 'nsga2'\]"),
        (dict(sampler=object()), "sampler must be one of"),
        (dict(storage="sqlite:///x.db"), "study_name is required"),
        (dict(study=study, sampler="tpe"), "not both"),
        (dict(study=study, mode="max"), r"directions are \['minimize'\]"),
        (dict(diverged_value=float("nan")), "diverged_value"),
        (dict(keep_states="some"), "keep_states"),
        (dict(eval_every=4), "eval_every"),
        (dict(heartbeat_interval=0), "heartbeat_interval"),
    ]
    with CompileCounter() as counter:
        for kwargs, match in bad:
            with pytest.raises(ValueError, match=match):
                optuna_search(task, SPACE, 4, **{**KW, **kwargs})
        with pytest.raises(ValueError, match="trials must be a positive int"):
            optuna_search(task, SPACE, 0, **KW)
    assert counter.count == 0
    assert study.trials == []
    assert not Path("x.db").exists()


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize(
    "name, cls, trials, batch, sampled",
    [
        # TPE samples at random until 10 trials are complete (n_startup_trials), then models them
        ("tpe", optuna.samplers.TPESampler, 15, 5, {10, 11, 12, 13, 14}),
        # CMA-ES: its first generation starts after one completed trial (the first round)
        ("cmaes", optuna.samplers.CmaEsSampler, 6, 3, {3, 4, 5}),
        # QMC: trial 0 is independent (no search space known yet), then Sobol points
        ("qmc", optuna.samplers.QMCSampler, 6, 3, {1, 2, 3, 4, 5}),
    ],
)
def test_sampler_drives_the_engine(task, monkeypatch, name, cls, trials, batch, sampled):
    proposed = {}
    original = cls.sample_relative

    def spy(self, study, trial, search_space):
        out = original(self, study, trial, search_space)
        if out:
            proposed[trial.number] = dict(out)
        return out

    monkeypatch.setattr(cls, "sample_relative", spy)
    study = oa.create_study(sampler=name, sampler_seed=0)
    r = optuna_search(task, SPACE, trials, batch=batch, study=study, **KW)
    assert r.stats["sampler"] == cls.__name__
    assert r.stats["rounds"] == -(-trials // batch) and r.stats["evaluated"] == trials
    assert [t.trial for t in r.trials] == list(range(trials))
    assert sampled <= set(proposed)  # the sampler proposed these trials' configurations ...
    for n in sampled:  # ... and the engine trained exactly them
        assert r.trials[n].hyperparams == config_from_params(SPACE, proposed[n])
    assert values(study) == {t.trial: t.objective for t in r.trials}  # the sampler was told
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs["jopt_status"] == "completed"
        res = r.trials[t.number]
        assert t.intermediate_values == dict(zip(res.history["step"], res.history["objective"]))
    assert r.best.objective == study.best_value and r.best.trial == study.best_trial.number
    assert set(r.states) == {r.best.trial}  # the best state is kept (also from a padded round)


def test_seeded_search_is_deterministic(task):
    runs = [optuna_search(task, SPACE, 5, batch=2, seed=0, sampler_seed=s, **KW) for s in (0, 0, 1)]
    configs = [[t.hyperparams for t in r.trials] for r in runs]
    assert configs[0] == configs[1]
    np.testing.assert_array_equal(hist(runs[0]), hist(runs[1]))
    assert configs[0] != configs[2]
    assert [t.trial for t in runs[0].trials] == list(range(5))


def test_results_equal_sweep_run_of_the_same_trials(task):
    r = optuna_search(task, SPACE, 5, batch=3, sampler="qmc", seed=3, **KW)
    configs, ids = [t.hyperparams for t in r.trials], [t.trial for t in r.trials]
    # the same configurations and trial ids, all together and one alone, in the adapter's chunk
    # layout (one chunk over the 8 devices): bit-exact, whichever batch a trial was asked in
    together = sweep.run(task, SPACE, configs, trial_ids=ids, seed=3, **KW)
    np.testing.assert_array_equal(hist(together), hist(r))
    alone = sweep.run(task, SPACE, configs[4:], trial_ids=ids[4:], seed=3, **KW)
    np.testing.assert_array_equal(hist(alone)[0], hist(r)[4])
    other_ids = sweep.run(task, SPACE, configs[4:], trial_ids=[0], seed=3, **KW)  # ids seed the keys
    assert not np.array_equal(hist(other_ids)[0], hist(r)[4])


def test_same_size_chunks_compile_once():
    member_keys(0, np.arange(3), np.zeros(3))  # warm the (cached) eager key derivation
    fresh = make_task()  # nothing cached for this task
    with CompileCounter() as counter:
        r = optuna_search(fresh, SPACE, 7, batch=3, devices=1, sampler="random", **KW)
    # rounds of 3, 3 and 1 trials in a chunk of 3 slots (the last one with two empty): one program
    assert r.stats["rounds"] == 3 and r.stats["chunk_sizes"] == {"-": [3]}
    assert r.stats["compiles"] == 2 and counter.count == 2  # init + segment, once
    assert [t.trial for t in r.trials] == list(range(7))
    assert r.stats["utilization"] == pytest.approx(7 / 9)


def test_memory_budget_splits_rounds_into_smaller_chunks(task):
    configs = sweep.sample(SPACE, "random", 4, seed=5)
    per_member = sweep.run(task, SPACE, configs[:1], devices=1, **KW).stats["bytes_per_member"]
    kw = dict(batch=4, devices=1, sampler="qmc", seed=3, **KW)
    r = optuna_search(task, SPACE, 4, memory_budget=int(2.5 * per_member), **kw)
    assert r.stats["chunks"] == 2 and r.stats["chunk_sizes"] == {"-": [2]}  # 4 asked, chunks of two
    # the same trials as without a budget (same keys: trial numbers)
    ref = optuna_search(task, SPACE, 4, **kw)
    assert [t.hyperparams for t in r.trials] == [t.hyperparams for t in ref.trials]
    np.testing.assert_allclose(hist(r), hist(ref), rtol=1e-5)
    with pytest.raises(ValueError, match="memory_budget=1 is too small for one trial"):
        optuna_search(task, SPACE, 4, memory_budget=1, **kw)


# ----------------------------------------------------------------------------- divergence

WIDE = sweep.Space(
    learning_rate=sweep.loguniform(1e-3, 1e31),
    weight_decay=sweep.loguniform(1e-5, 1e-2),
    b1=sweep.uniform(0.5, 0.95),
)
HUGE = {"learning_rate": 1e30, "weight_decay": 1e-2, "b1": 0.9}
FINE = {"learning_rate": 0.05, "weight_decay": 1e-4, "b1": 0.9}


@pytest.mark.parametrize("diverged_value", [None, 5.0])
def test_diverged_trials_fail_or_get_the_given_value(task, diverged_value):
    study = optuna.create_study()
    for cfg in (FINE, HUGE, FINE):
        study.enqueue_trial(cfg)
    r = optuna_search(task, WIDE, 3, batch=3, study=study, diverged_value=diverged_value, **KW)
    assert [t.status for t in r.trials] == ["completed", "diverged", "completed"]
    fine, huge = study.trials[0], study.trials[1]
    assert huge.user_attrs["jopt_status"] == "diverged"
    if diverged_value is None:
        assert huge.state == TrialState.FAIL and huge.value is None
    else:
        assert huge.state == TrialState.COMPLETE and huge.value == 5.0
    # isolation: the diverged member did not change its neighbour's result
    alone = sweep.run(task, WIDE, [FINE], trial_ids=[0], **KW)
    assert fine.value == r.trials[0].objective == alone.trials[0].objective
    again = optuna_search(task, WIDE, 3, batch=3, study=study, **KW)  # a diverged trial counts
    assert again.stats["rounds"] == 0 and len(study.trials) == 3


# ----------------------------------------------------------------------------- resume, stale, interrupts


def test_resume_continues_without_redoing_trials(task, tmp_path):
    url, name = f"sqlite:///{tmp_path / 'study.db'}", "resume"
    kw = dict(KW, batch=2, storage=url, study_name=name)
    first = optuna_search(task, SPACE, 4, **kw)
    assert [t.trial for t in first.trials] == [0, 1, 2, 3]
    before = values(optuna.load_study(study_name=name, storage=url))
    second = optuna_search(task, SPACE, 8, **kw)
    assert [t.trial for t in second.trials] == [4, 5, 6, 7] and second.stats["study_trials"] == 8
    study = optuna.load_study(study_name=name, storage=url)
    after = values(study)
    assert len(after) == 8 and {n: after[n] for n in before} == before
    assert optuna_search(task, SPACE, 8, **kw).stats["rounds"] == 0  # nothing left to do
    with pytest.raises(ValueError, match="other settings"):
        optuna_search(task, SPACE, 9, **dict(kw, steps=2 * STEPS))


def _orphan(study) -> optuna.Trial:
    """A trial asked by a process that was then killed (left RUNNING)."""
    return study.ask(to_distributions(SPACE))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_stale_trial_of_a_killed_process_is_failed_and_retried(task, tmp_path):
    path = tmp_path / "study.db"
    url, name = f"sqlite:///{path}", "stale"
    optuna_search(task, SPACE, 2, batch=2, storage=url, study_name=name, **KW)
    study = oa.create_study(storage=url, study_name=name)  # loads it, with heartbeats
    orphan = _orphan(study)
    study._storage.record_heartbeat(orphan._trial_id)
    with sqlite3.connect(path) as db:  # the process died an hour ago
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')")
    r = optuna_search(task, SPACE, 4, batch=2, storage=url, study_name=name, **KW)
    study = optuna.load_study(study_name=name, storage=url)
    assert study.trials[orphan.number].state == TrialState.FAIL
    retry = [t for t in study.trials if t.user_attrs.get("jopt_retry_of") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == orphan.params and retry[0].user_attrs["jopt_retry_reason"] == "stale"
    assert [t.trial for t in r.trials] == [3, 4] and len(values(study)) == 4


def test_reset_running_and_keyboard_interrupt(task, monkeypatch):
    study = optuna.create_study()
    orphan = _orphan(study)
    r = optuna_search(task, SPACE, 3, batch=3, study=study, reset_running=True, **KW)
    assert study.trials[0].state == TrialState.FAIL and r.stats["requeued"] == 1
    assert study.trials[1].user_attrs["jopt_retry_of"] == 0 and study.trials[1].params == orphan.params
    assert len(values(study)) == 3

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Chunk, "segment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        optuna_search(task, SPACE, 5, batch=2, study=study, **KW)
    lost = study.trials[4:6]
    assert [t.state for t in lost] == [TrialState.FAIL] * 2
    assert all(t.user_attrs["jopt_status"] == "interrupted" for t in lost)
    monkeypatch.undo()
    r = optuna_search(task, SPACE, 5, batch=2, study=study, **KW)  # the queued configurations run
    assert [study.trials[n].user_attrs["jopt_retry_of"] for n in (6, 7)] == [4, 5]
    assert [study.trials[n].params for n in (6, 7)] == [t.params for t in lost]
    assert [t.trial for t in r.trials] == [6, 7]

    def broken(*args, **kwargs):  # any other error: the trials fail, nothing is queued
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Chunk, "segment", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        optuna_search(task, SPACE, 6, batch=2, study=study, **KW)
    assert study.trials[-1].state == TrialState.FAIL and study.trials[-1].user_attrs["jopt_status"] == "error"
    assert len(study.trials) == 9
    assert len(values(study)) == 5


def test_queued_trials_come_first_and_count(task):
    study = optuna.create_study()
    queued = [dict(FINE, learning_rate=lr) for lr in (0.01, 0.02, 0.03, 0.04, 0.05)]
    for cfg in queued:
        study.enqueue_trial(cfg)
    r = optuna_search(task, SPACE, 3, batch=4, study=study, **KW)
    assert [t.hyperparams for t in r.trials] == queued[:3] and r.stats["study_trials"] == 3
    assert [t.state for t in study.trials[3:]] == [TrialState.WAITING] * 2  # still queued
    r = optuna_search(task, SPACE, 6, batch=4, study=study, **KW)
    assert [t.hyperparams for t in r.trials[:2]] == queued[3:] and [t.trial for t in r.trials] == [3, 4, 5]


def test_trials_asked_beyond_the_budget_by_a_race_are_cancelled(task, monkeypatch):
    study = optuna.create_study()
    other_worker = []
    real_ask = oa._ask

    def racing_ask(study, dists, k, host, suggest=None):
        if not other_worker:  # another process asks 2 trials just before this one asks its 4
            other_worker.extend(study.ask(dists) for _ in range(2))
        return real_ask(study, dists, k, host, suggest)

    monkeypatch.setattr(oa, "_ask", racing_ask)
    r = optuna_search(task, SPACE, 4, batch=4, study=study, **KW)
    # ranks by number: the other worker's 0, 1, then this worker's 2..5; ranks >= 4 are cancelled
    assert [t.trial for t in r.trials] == [2, 3] and r.stats["cancelled"] == 2
    states = [t.state.name for t in study.trials]
    assert states == ["RUNNING", "RUNNING", "COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert [t.user_attrs["jopt_status"] for t in study.trials[4:]] == ["cancelled"] * 2
    for t in other_worker:  # the other worker finishes: exactly 4 trials trained
        study.tell(t, 1.0)
    assert len(values(study)) == 4


# ----------------------------------------------------------------------------- workers sharing a study


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_the_budget_held_by_another_workers_running_trials_is_waited_for(task, tmp_path, monkeypatch):
    url, dists = f"sqlite:///{tmp_path / 'study.db'}", to_distributions(SPACE)
    kw = dict(KW, batch=2, storage=url, heartbeat_interval=1, grace_period=2)
    waited = threading.Event()
    real_wait = oa.OptunaSampler._wait

    def spy(self, trials):
        out = real_wait(self, trials)
        waited.set() if out else None
        return out

    monkeypatch.setattr(oa.OptunaSampler, "_wait", spy)

    def other_worker(study, trial, stop, tell):  # beats its trial; tells it once the search waits
        while not stop.wait(0.3):
            study._storage.record_heartbeat(trial._trial_id)
            if tell and waited.is_set():
                study.tell(trial, 1.0)
                return

    def run_beside(study, trials, tell, **extra):
        other = ost._ask(study, dists, 1, "other:1")[0]
        waited.clear()
        stop = threading.Event()
        thread = threading.Thread(target=other_worker, args=(study, other, stop, tell))
        thread.start()
        try:
            return other, optuna_search(task, SPACE, trials, **kw, **extra)
        finally:
            stop.set()
            thread.join()

    # a live worker: the search trains its share, waits, and ends when the other trial is told
    study = oa.create_study(storage=url, study_name="live", heartbeat_interval=1, grace_period=2)
    other, r = run_beside(study, 3, tell=True, study_name="live")
    assert [t.trial for t in r.trials] == [1, 2] and r.stats["waits"] >= 1
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3  # nothing failed or redone
    # a worker that never finishes: the budget is full from the start (3 told + 1 running), so the
    # search waits at once, before training anything, and its timeout ends the wait
    other, r = run_beside(study, 4, tell=False, study_name="live", timeout=2)
    assert r.stats["waits"] >= 1 and study.trials[other.number].state == TrialState.RUNNING
    assert r.trials == [] and len(values(study)) == 3 and r.stats["study_trials"] == 4
    # without heartbeats a dead worker's trial cannot be told from a live one's: it counts, no wait
    url2 = f"sqlite:///{tmp_path / 'no_heartbeat.db'}"
    study = oa.create_study(storage=url2, study_name="off", heartbeat_interval=None)
    ost._ask(study, dists, 1, "dead:1")
    r = optuna_search(task, SPACE, 3, **dict(kw, storage=url2, heartbeat_interval=None), study_name="off")
    assert r.stats["waits"] == 0 and [t.trial for t in r.trials] == [1, 2] and len(values(study)) == 2


@pytest.mark.parametrize("report", [True, False])
def test_a_trial_failed_by_another_worker_while_training_is_dropped_and_its_retry_trained(
    task, monkeypatch, report
):
    study = optuna.create_study()
    real_segment = Chunk.segment

    def segment(self, *args, **kwargs):  # another worker takes trial 0 for dead (stale) meanwhile
        if study.trials[0].state == TrialState.RUNNING:
            ost._retry(study, study.tell(0, state=TrialState.FAIL), "stale")
        return real_segment(self, *args, **kwargs)

    monkeypatch.setattr(Chunk, "segment", segment)
    r = optuna_search(task, SPACE, 3, batch=2, study=study, report_intermediate=report, **KW)
    assert r.stats["lost"] == 1
    if report:  # noticed at its next report: pruned, its slot freed (else noticed when told)
        assert r.trials[0].status == "pruned"
    assert study.trials[0].state == TrialState.FAIL and "jopt_status" not in study.trials[0].user_attrs
    retry = study.trials[2]
    assert retry.user_attrs["jopt_retry_of"] == 0 and retry.params == study.trials[0].params
    assert sorted(values(study)) == [1, 2, 3]  # exactly 3 complete: the lost one's retry among them


def test_a_retry_queued_twice_is_trained_once(task):
    study = optuna.create_study()
    dead = study.tell(ost._ask(study, to_distributions(SPACE), 1, "dead:1")[0], state=TrialState.FAIL)
    assert ost._retry(study, dead, "stale") and not ost._retry(study, dead, "stale")  # once per trial ...
    attrs = {"jopt_retry_of": 0, "jopt_retries": 1, "jopt_retry_reason": "stale"}
    study.enqueue_trial(dead.params, user_attrs=attrs)  # ... but two workers failing it at once both queue it
    assert ost._counted(study) == ([1], 0)  # the second copy does not count
    r = optuna_search(task, SPACE, 3, batch=3, study=study, **KW)
    assert [t.trial for t in r.trials] == [1, 3, 4] and r.stats["cancelled"] == 1
    assert (
        study.trials[2].state == TrialState.FAIL and study.trials[2].user_attrs["jopt_status"] == "cancelled"
    )
    assert sorted(values(study)) == [1, 3, 4] and study.trials[1].params == dead.params


def test_create_study_retries_the_creation_race_and_nothing_else(tmp_path, monkeypatch):
    url, calls = f"sqlite:///{tmp_path / 'study.db'}", []
    real_create = optuna.create_study

    def racing(errors):
        def create(**kwargs):
            calls.append(kwargs["storage"])
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return real_create(**kwargs)

        return create

    lost = [
        sqlalchemy.exc.OperationalError(
            "CREATE TABLE studies", {}, Exception("table studies already exists")
        ),
        sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: alembic_version")),
        optuna.exceptions.DuplicatedStudyError(),
    ]
    monkeypatch.setattr(optuna, "create_study", racing(lost))
    study = oa.create_study(storage=url, study_name="s")
    assert study.study_name == "s" and len(calls) == 4 and len(set(map(id, calls))) == 4  # a new storage each
    calls.clear()
    broken = sqlalchemy.exc.OperationalError("SELECT", {}, Exception("unable to open database file"))
    monkeypatch.setattr(optuna, "create_study", racing([broken]))
    with pytest.raises(sqlalchemy.exc.OperationalError, match="unable to open"):
        oa.create_study(storage=url, study_name="s")
    assert len(calls) == 1


def test_settings_stored_first_by_another_worker_win(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    mine, theirs = (
        oa.create_study(storage=url, study_name="s"),
        optuna.load_study(study_name="s", storage=url),
    )
    # both read no settings; the other worker's insert commits first and the storage drops ours
    monkeypatch.setattr(mine, "set_user_attr", lambda key, value: theirs.set_user_attr(key, {"steps": 2}))
    with pytest.raises(ValueError, match="other settings"):
        ost._check_settings(mine, {"steps": 6})
